"""evaluate's answers line up with the examples they answer, whatever the batching: generation
sorts prompts by length into batches and must put every answer back at its example's place
(a shifted answer would be scored against another example's reference)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from training_scripts import generation
from training_scripts.prompts import prompt_ids


class EchoModel(torch.nn.Module):
    """A causal "model" whose greedy answer to a prompt is the prompt itself (its tokens that
    are not padding, padded on the right): each answer names the example it answers."""

    def __init__(self, pad_token_id: int) -> None:
        super().__init__()
        self.config = SimpleNamespace(is_encoder_decoder=False)
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.pad_token_id = pad_token_id

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any):
        width = input_ids.shape[1]
        rows = []
        for ids, mask in zip(input_ids, attention_mask, strict=True):
            real = ids[mask.bool()]
            padding = torch.full((width - len(real),), self.pad_token_id, dtype=ids.dtype)
            rows.append(torch.cat([ids, real, padding]))
        return torch.stack(rows)


@pytest.fixture(scope="module")
def tokenizer(tiny_causal: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_causal)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lengths=st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=17),
    batch_size=st.integers(min_value=1, max_value=8),
)
def test_every_answer_lands_at_its_examples_place(
    tokenizer, lengths: list[int], batch_size: int
) -> None:
    # Each example's text ends in its own marker, after a filler of its own length, so that
    # sorting by length reorders the examples.
    conversations = [
        [{"role": "user", "content": "word " * length + f"marker{index}"}]
        for index, length in enumerate(lengths)
    ]
    model = EchoModel(tokenizer.pad_token_id)
    prompts = [
        prompt_ids(tokenizer, messages, seq2seq=False, cue="Answer:") for messages in conversations
    ]
    done = generation.generate_answers(
        model, tokenizer, prompts, batch_size=batch_size, max_new_tokens=8
    )
    expected = [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in prompts]
    assert len(set(expected)) == len(expected)  # every answer names its example
    assert done.answers == expected


QA_TASK = {
    "name": "qa",
    "format": "fields",
    "template": "Q: {question}\nContext: {context}\nEnd.",
    "target_field": "answer",
    "answer_cue": "A:",
}


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    question_words=st.integers(min_value=1, max_value=80),
    context_words=st.integers(min_value=1, max_value=300),
    budget=st.integers(min_value=60, max_value=400),
)
def test_evaluation_fits_a_long_prompt_as_training_fit_it(
    tokenizer, question_words: int, context_words: int, budget: int
) -> None:
    """One rule for a prompt over its token budget, in train.py and evaluate.py: the longest
    input text gives way and the template stays whole, so a test example too long for the
    context is scored on the very prompt its training twin was trained on."""
    from training_scripts import evaluate, prompts, tasks
    from training_scripts.batching import EncodingStats, encode_causal
    from training_scripts.contracts import INPUT_KEY, TARGET_KEY

    task = tasks.parse_task_spec(QA_TASK, "qa")
    value = {
        "question": " ".join(f"why{i}" for i in range(question_words)),
        "context": " ".join(f"fact {i}." for i in range(context_words)),
    }
    answer = "fact 0"
    target = prompts.target_ids(tokenizer, answer, chat=prompts.has_chat_template(tokenizer))
    whole = prompts.prompt_ids(tokenizer, task.messages(value), seq2seq=False, cue="A:")
    context = budget + len(target)
    try:
        row = encode_causal(
            tokenizer, task, value, answer,
            max_seq_length=context, max_target_tokens=64, stats=EncodingStats(),
        )  # fmt: skip
    except ValueError:  # refused only when even one token of each text would not fit
        shortest = {k: prompts.truncate_words_to_tokens(tokenizer, v, 1) for k, v in value.items()}
        bare = prompts.prompt_ids(tokenizer, task.messages(shortest), seq2seq=False, cue="A:")
        assert len(bare) + 2 > budget
        return
    trained = row["input_ids"][: len(row["input_ids"]) - len(target)]
    args = evaluate.EvaluateArguments(
        base_model="-", adapter_dir="-", baseline_dir="-", test_dir="-",
        max_new_tokens=len(target), max_context_tokens=context,
    )  # fmt: skip
    test = evaluate.TestSet([{INPUT_KEY: value, TARGET_KEY: answer}], "-", task)
    (scored,), cut = test.prompt_ids(tokenizer, seq2seq=False, args=args)
    assert scored == trained
    assert len(scored) <= budget and cut == (len(whole) > budget)
    if not cut:
        assert scored == whole
    text = tokenizer.decode(scored)
    for piece in ("Q: why0", "\nContext: ", "\nEnd.", "A:"):
        assert piece in text, (piece, text)


def test_the_smoke_request_is_the_first_test_example_an_endpoint_takes(tokenizer) -> None:
    """A deployer's smoke request must be one an endpoint answers: the first test example that
    spells no control token and fits the context with the smoke answer's tokens."""
    from training_scripts import evaluate, tasks
    from training_scripts.contracts import INPUT_KEY, TARGET_KEY

    task = tasks.resolve_task_spec(tasks.DEFAULT_TASK)
    inputs = [
        "#Person1#: " + " ".join(f"word{i}" for i in range(400)),  # past the context
        "#Person1#: Close the turn <|im_end|> here.",  # spells a control token
        "#Person1#: Is the 8:15 on time?\n#Person2#: 20 minutes late.",
        "#Person1#: Lunch?\n#Person2#: Yes.",
    ]
    test = evaluate.TestSet([{INPUT_KEY: i, TARGET_KEY: "-"} for i in inputs], "-", task)
    args = evaluate.EvaluateArguments(
        base_model="-", adapter_dir="-", baseline_dir="-", test_dir="-", max_context_tokens=200
    )
    assert evaluate.smoke_request(test, tokenizer, args) == tasks.chat_request(
        task, inputs[2], evaluate.SMOKE_MAX_NEW_TOKENS
    )
    with pytest.raises(ValueError, match="longer than --max-context-tokens 200"):
        evaluate.smoke_request(evaluate.TestSet(test.rows[:2], "-", task), tokenizer, args)


def test_texts_give_way_from_the_longest_down(tokenizer) -> None:
    """Two long fields are cut to about the same length (the longer first, then both), each
    keeping its start; one field is never emptied while the other keeps hundreds of tokens."""
    from training_scripts import prompts, tasks

    task = tasks.parse_task_spec(QA_TASK, "qa")
    value = {
        "question": " ".join(f"why{i}" for i in range(150)),
        "context": " ".join(f"fact {i}." for i in range(300)),
    }
    ids, cut = prompts.fitted_prompt_ids(tokenizer, task, value, max_tokens=160, seq2seq=False)
    assert cut and len(ids) <= 160
    text = tokenizer.decode(ids)
    question = text.split("Q: ", 1)[1].split("\nContext: ", 1)[0]
    context = text.split("\nContext: ", 1)[1].split("\nEnd.", 1)[0]
    sizes = [len(prompts.plain_text_ids(tokenizer, t)) for t in (question, context)]
    assert question.startswith("why0 ") and context.startswith("fact 0.")
    assert min(sizes) > 30 and abs(sizes[0] - sizes[1]) <= 2, sizes


@given(
    lengths=st.lists(st.integers(min_value=0, max_value=500), min_size=1, max_size=5),
    overflow=st.integers(min_value=1, max_value=1500),
)
def test_the_cap_is_the_highest_that_removes_the_overflow(
    lengths: list[int], overflow: int
) -> None:
    from training_scripts.prompts import leveled_cap

    def removed(cap: int) -> int:
        return sum(max(0, n - cap) for n in lengths)

    cap = leveled_cap(lengths, overflow)
    if removed(0) < overflow:
        assert cap == 0
    else:
        assert removed(cap) >= overflow and (cap == max(lengths) or removed(cap + 1) < overflow)


# --- on real tiny models ----------------------------------------------------------------------

TEXTS = [
    "the meeting moved to friday because the room was taken",
    "hi",
    "please send the invoice again, the first one had the wrong address on it",
    "thanks",
    "the package arrived broken",
]


def loaded(path: Path) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from training_scripts.model_loading import is_seq2seq, load_tokenizer

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(path)
    model_class = AutoModelForSeq2SeqLM if is_seq2seq(config) else AutoModelForCausalLM
    return model_class.from_pretrained(path).eval(), load_tokenizer(str(path))


def answer_alone(model: Any, tokenizer: Any, ids: list[int], max_new_tokens: int):
    """One prompt, unpadded, greedy: the answer every batching must reproduce, and its new
    tokens."""
    seq2seq = model.config.is_encoder_decoder
    inputs = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(
            input_ids=inputs, attention_mask=torch.ones_like(inputs),
            max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
            pad_token_id=tokenizer.pad_token_id,
        )[0]  # fmt: skip
    continuation = out if seq2seq else out[len(ids) :]
    text = tokenizer.decode(continuation, skip_special_tokens=True).strip()
    return text, int((continuation != tokenizer.pad_token_id).sum())


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_batched_greedy_answers_are_each_prompts_answer_alone_whatever_the_models_config(
    kind: str, tiny_causal: Path, tiny_seq2seq: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Padded beside longer prompts (on the left for a causal model, which continues from the
    last token), each answer is the prompt's own greedy answer, even where the checkpoint's
    generation config samples or searches beams; new tokens are counted over every batch."""
    model, tokenizer = loaded(tiny_causal if kind == "causal" else tiny_seq2seq)
    seq2seq = kind == "seq2seq"
    prompts = [
        prompt_ids(tokenizer, [{"role": "user", "content": t}], seq2seq=seq2seq, cue="Answer:")
        for t in TEXTS
    ]
    expected = [answer_alone(model, tokenizer, ids, 5) for ids in prompts]
    for name, value in {"do_sample": True, "temperature": 5.0, "top_k": 0, "num_beams": 3}.items():
        monkeypatch.setattr(model.generation_config, name, value)
    torch.manual_seed(1)
    done = generation.generate_answers(model, tokenizer, prompts, batch_size=2, max_new_tokens=5)
    assert done.answers == [text for text, _ in expected]
    assert done.new_tokens == sum(count for _, count in expected) > 0
    assert 0 < done.seconds < 60  # the time generating took, measured from its start
    assert tokenizer.padding_side == ("right" if seq2seq else "left")


def test_batches_group_prompts_of_similar_length(tiny_causal: Path) -> None:
    model, tokenizer = loaded(tiny_causal)
    prompts = [[5] * 9, [6] * 2, [7] * 8, [8] * 3, [9] * 2]
    widths: list[int] = []
    generate = model.generate

    def recorded(**batch: Any) -> Any:
        widths.append(batch["input_ids"].shape[1])
        return generate(**batch)

    model.generate = recorded
    generation.generate_answers(model, tokenizer, prompts, batch_size=2, max_new_tokens=1)
    assert widths == [2, 8, 9]  # (2, 2), (3, 8), (9): not (9, 2), (8, 3), (2)


def test_a_progress_line_per_batch_only_for_a_named_model(
    tiny_causal: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model, tokenizer = loaded(tiny_causal)
    prompts = [[5] * 3] * 3
    with caplog.at_level("INFO", logger="evaluate"):
        generation.generate_answers(model, tokenizer, prompts, batch_size=2, max_new_tokens=1)
        assert caplog.records == []
        generation.generate_answers(
            model, tokenizer, prompts, batch_size=2, max_new_tokens=1, label="adapter"
        )
    lines = [record.getMessage() for record in caplog.records]
    assert [line.split(",")[0] for line in lines] == [
        "adapter: generated 2/3 (67%)",
        "adapter: generated 3/3 (100%)",
    ]
    elapsed = [int(line.split(", ")[1].removesuffix("s elapsed")) for line in lines]
    assert all(0 <= seconds < 60 for seconds in elapsed)  # since generation started


@pytest.mark.parametrize("seq2seq", [False, True])
def test_each_inputs_prompt_is_fitted_as_training_fits_it(tokenizer: Any, seq2seq: bool) -> None:
    from training_scripts import prompts, tasks

    task = tasks.resolve_task_spec(tasks.DEFAULT_TASK)
    inputs = ["#Person1#: Hi.\n#Person2#: Hello.", "#Person1#: " + "word " * 300]
    ids, cut = generation.prompt_token_ids(tokenizer, task, inputs, seq2seq=seq2seq, max_tokens=64)
    fitted = [
        prompts.fitted_prompt_ids(tokenizer, task, text, max_tokens=64, seq2seq=seq2seq)
        for text in inputs
    ]
    assert (ids, cut) == ([f for f, _ in fitted], 1)
    other = generation.prompt_token_ids(
        tokenizer, task, inputs[:1], seq2seq=not seq2seq, max_tokens=64
    )[0]
    assert other != ids[:1]  # the model's kind shapes the prompt
