"""The prompt format: the text and tokens a model sees before its summary, and the summary's
tokens. Training, evaluation and the local endpoint all render prompts here, so what serving
sees is what training learned; data stays text (a control token typed into a record never
becomes one). Host code (the local server) imports it too.
"""

from __future__ import annotations

from typing import Any

INSTRUCTION = "Summarize the following dialogue in one or two sentences."
SEQ2SEQ_PREFIX = "summarize: "


def render_prompt(tokenizer: Any, dialogue: str, *, seq2seq: bool) -> str:
    """The text a model sees before its summary; train and evaluate must agree on it."""
    if seq2seq:
        return SEQ2SEQ_PREFIX + dialogue
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": f"{INSTRUCTION}\n\n{dialogue}"}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return f"{INSTRUCTION}\n\n{dialogue}\n\nSummary:"


_SLOT = "\x00dialogue\x00"  # where the dialogue goes in a rendered prompt


def control_tokens(tokenizer: Any) -> tuple[str, ...]:
    """The strings a tokenizer turns into control tokens (`<|im_start|>`, `</s>`, ...)."""
    return tuple(t for t in tokenizer.all_special_tokens if t)


def holds_control_tokens(tokenizer: Any, text: str) -> bool:
    return any(token in text for token in control_tokens(tokenizer))


def plain_text_ids(tokenizer: Any, text: str) -> list[int]:
    """Data as text only: a `<|im_end|>` typed into a record stays characters and never
    becomes a control token that ends the turn or starts another (prompt injection)."""
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def causal_prompt_ids(tokenizer: Any, dialogue: str) -> list[int]:
    # A chat template writes its own special tokens; a plain prompt gets the tokenizer's BOS.
    add_special = not getattr(tokenizer, "chat_template", None)
    if not holds_control_tokens(tokenizer, dialogue):
        text = render_prompt(tokenizer, dialogue, seq2seq=False)
        return tokenizer(text, add_special_tokens=add_special)["input_ids"]
    # The template's tokens from the template, the dialogue's from the dialogue as text.
    before, _, after = render_prompt(tokenizer, _SLOT, seq2seq=False).partition(_SLOT)
    return [
        *tokenizer(before, add_special_tokens=add_special)["input_ids"],
        *plain_text_ids(tokenizer, dialogue),
        *tokenizer(after, add_special_tokens=False)["input_ids"],
    ]


def target_ids(tokenizer: Any, summary: str, *, chat: bool) -> list[int]:
    text = summary if chat else " " + summary
    return [*plain_text_ids(tokenizer, text), tokenizer.eos_token_id]


def truncate_words_to_tokens(tokenizer: Any, text: str, max_tokens: int) -> str:
    """`text` cut at a token boundary so that it encodes to at most `max_tokens` tokens."""
    encoding = tokenizer(
        text, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True
    )
    offsets = encoding["offset_mapping"]
    if len(offsets) <= max_tokens:
        return text
    if max_tokens <= 0:
        return ""
    return text[: offsets[max_tokens - 1][1]]


def prompt_ids(tokenizer: Any, dialogue: str, *, seq2seq: bool) -> list[int]:
    """What a causal or seq2seq model reads before its summary, as train.py encodes it: the
    data's control-token strings stay text."""
    if not seq2seq:
        return causal_prompt_ids(tokenizer, dialogue)
    text = render_prompt(tokenizer, dialogue, seq2seq=True)
    return tokenizer(text, split_special_tokens=True)["input_ids"]
