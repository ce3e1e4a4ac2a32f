"""The prompt format: the text and tokens a model reads before its answer, rendered from a task's
messages (tasks.py), and the answer's tokens. Training, evaluation and the local endpoint all
render prompts here, so what serving sees is what training learned.

Data stays text: only the tokenizer's chat template writes control tokens. A `<|im_end|>`
typed into a message is tokenized as characters, never as the token that ends a turn (prompt
injection). Host code (the local server) imports it too.
"""

from __future__ import annotations

import bisect
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .tasks import TaskInput, TaskSpec

Messages = list[dict[str, str]]
_SLOT = "\x00{}\x00"  # where a message's content goes in a rendered template
_SLOTS = re.compile("\x00(\\d+)\x00")


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer: Any, messages: Messages, *, seq2seq: bool, cue: str) -> str:
    """The text a model reads before its answer; train, evaluate and serve agree on it. A
    tokenizer without a chat template reads the turns' text, then `cue` (a seq2seq encoder
    reads the turns only)."""
    if seq2seq:
        return "\n\n".join(m["content"] for m in messages)
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return "\n\n".join([*(m["content"] for m in messages), cue])


def control_tokens(tokenizer: Any) -> tuple[str, ...]:
    """The strings a tokenizer turns into control tokens (`<|im_start|>`, `</s>`, ...): its
    named special tokens and every added token marked special (SmolLM2 has 17, `all_special_tokens`
    lists 3)."""
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    special = [t.content for t in added.values() if getattr(t, "special", False)]
    return tuple(t for t in dict.fromkeys([*tokenizer.all_special_tokens, *special]) if t)


def holds_control_tokens(tokenizer: Any, text: str) -> bool:
    return any(token in text for token in control_tokens(tokenizer))


def plain_text_ids(tokenizer: Any, text: str) -> list[int]:
    """Data as text only: a `<|im_end|>` typed into a record stays characters and never
    becomes a control token that ends the turn or starts another (prompt injection)."""
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def causal_prompt_ids(tokenizer: Any, messages: Messages, *, cue: str) -> list[int]:
    # A chat template writes its own special tokens; a plain prompt gets the tokenizer's BOS.
    add_special = not has_chat_template(tokenizer)
    if not any(holds_control_tokens(tokenizer, m["content"]) for m in messages):
        text = render_prompt(tokenizer, messages, seq2seq=False, cue=cue)
        return tokenizer(text, add_special_tokens=add_special)["input_ids"]
    # The template's tokens from the template, each message's from its content as text.
    slotted = [{**m, "content": _SLOT.format(i)} for i, m in enumerate(messages)]
    pieces = _SLOTS.split(render_prompt(tokenizer, slotted, seq2seq=False, cue=cue))
    ids = list(tokenizer(pieces[0], add_special_tokens=add_special)["input_ids"])
    for slot, after in zip(pieces[1::2], pieces[2::2], strict=True):
        ids += plain_text_ids(tokenizer, messages[int(slot)]["content"])
        ids += tokenizer(after, add_special_tokens=False)["input_ids"]
    return ids


def target_ids(tokenizer: Any, answer: str, *, chat: bool) -> list[int]:
    text = answer if chat else " " + answer
    return [*plain_text_ids(tokenizer, text), tokenizer.eos_token_id]


def truncate_words_to_tokens(tokenizer: Any, text: str, max_tokens: int) -> str:
    """`text` cut at a token boundary so that it encodes to at most `max_tokens` tokens."""
    encoding = tokenizer(
        text, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True
    )
    ends = [end for _, end in encoding["offset_mapping"]]
    if len(ends) <= max_tokens:
        return text
    # The longest prefix whose tokens number at most max_tokens. Tokens can end together: a
    # SentencePiece word marker and the character after it both end at that character, so the
    # cut after a token keeps every token that ends there too.
    for index in reversed(range(max_tokens)):
        if bisect.bisect_right(ends, ends[index]) <= max_tokens:
            return text[: ends[index]]
    return ""


def prompt_ids(tokenizer: Any, messages: Messages, *, seq2seq: bool, cue: str) -> list[int]:
    """What a causal or seq2seq model reads before its answer, as train.py encodes it: the
    data's control-token strings stay text."""
    if not seq2seq:
        return causal_prompt_ids(tokenizer, messages, cue=cue)
    text = render_prompt(tokenizer, messages, seq2seq=True, cue=cue)
    return tokenizer(text, split_special_tokens=True)["input_ids"]


class NoRoomForInputError(ValueError):
    """A prompt whose template alone leaves no room for its input in the token budget."""


def fitted_prompt_ids(
    tokenizer: Any, task: TaskSpec, task_input: TaskInput, *, max_tokens: int, seq2seq: bool
) -> tuple[list[int], bool]:
    """The prompt's ids in at most `max_tokens`, and whether the input was cut to fit. The
    input's texts give way from the longest down (the longest is cut to the next one's length,
    then both together, ...), each at a token boundary; the template, the system turn and the
    answer cue around them never do. Training fits its examples, and evaluation its test
    prompts, by this one rule."""

    def ids_of(value: TaskInput) -> list[int]:
        return prompt_ids(tokenizer, task.messages(value), seq2seq=seq2seq, cue=task.answer_cue)

    ids = ids_of(task_input)
    if len(ids) <= max_tokens:
        return ids, False
    texts = task.texts(task_input)
    lengths = [len(plain_text_ids(tokenizer, text)) for text in texts]
    while len(ids) > max_tokens:
        cap = leveled_cap(lengths, len(ids) - max_tokens)
        if cap < 1:
            raise NoRoomForInputError(
                f"a budget of {max_tokens} prompt tokens leaves no room for the input of task "
                f"{task.name}: its template alone takes most of it"
            )
        lengths = [min(n, cap) for n in lengths]
        cut = [
            truncate_words_to_tokens(tokenizer, text, n)
            for text, n in zip(texts, lengths, strict=True)
        ]
        ids = ids_of(task.with_texts(task_input, cut))
    return ids, True


def leveled_cap(lengths: list[int], overflow: int) -> int:
    """The largest cap on every text's length that removes at least `overflow` tokens in all
    (texts above it are cut down to it); 0 when even empty texts would not remove that much."""
    low, high = 0, max(lengths)
    while low < high:
        middle = (low + high + 1) // 2
        if sum(max(0, n - middle) for n in lengths) >= overflow:
            low = middle
        else:
            high = middle - 1
    return low if sum(max(0, n - low) for n in lengths) >= overflow else 0
