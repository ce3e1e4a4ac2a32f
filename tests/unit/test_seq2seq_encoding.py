"""How a seq2seq model's training example is encoded (training_scripts/batching.py's
encode_seq2seq): the prompt the encoder reads, cut to the token budget at the input as the
causal rule cuts it; the answer as the decoder's labels, cut at the answer budget; and each cut
counted. On a tiny random T5 with a real tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from training_scripts import prompts
from training_scripts.batching import EncodingStats, encode_seq2seq
from training_scripts.model_loading import load_tokenizer
from training_scripts.tasks import DEFAULT_TASK, resolve_task_spec

TASK = resolve_task_spec(DEFAULT_TASK)
SHORT = "#Person1#: Hello.\n#Person2#: Hi."
LONG = "#Person1#: " + " ".join(f"sentence number {i}." for i in range(200))


@pytest.fixture(scope="module")
def tokenizer(tiny_seq2seq: Path) -> Any:
    return load_tokenizer(str(tiny_seq2seq))


def encode(tokenizer: Any, text: str, answer: str, stats: EncodingStats, **budget: int) -> dict:
    limits = {"max_seq_length": 512, "max_target_tokens": 64} | budget
    return encode_seq2seq(tokenizer, TASK, text, answer, stats=stats, **limits)


def test_the_encoder_reads_the_prompt_and_the_decoder_learns_the_whole_answer(
    tokenizer: Any,
) -> None:
    stats = EncodingStats()
    row = encode(tokenizer, SHORT, "They greet.", stats)
    expected = prompts.prompt_ids(
        tokenizer, TASK.messages(SHORT), seq2seq=True, cue=TASK.answer_cue
    )
    assert row["input_ids"] == expected
    assert row["attention_mask"] == [1] * len(expected)
    assert row["labels"] == tokenizer(text_target="They greet.")["input_ids"]
    assert row["labels"][-1] == tokenizer.eos_token_id
    assert (stats.examples, stats.truncated_inputs, stats.truncated_targets) == (1, 0, 0)


def test_an_over_long_input_and_answer_are_cut_to_their_budgets_and_counted(
    tokenizer: Any,
) -> None:
    stats = EncodingStats()
    row = encode(
        tokenizer, LONG, "A long talk " * 40, stats, max_seq_length=64, max_target_tokens=8
    )
    assert len(row["input_ids"]) <= 64 and len(row["attention_mask"]) == len(row["input_ids"])
    assert len(row["labels"]) == 8
    fitted, cut = prompts.fitted_prompt_ids(tokenizer, TASK, LONG, max_tokens=64, seq2seq=True)
    assert (row["input_ids"], cut) == (fitted, True)
    encode(tokenizer, SHORT, "Hi.", stats)
    assert (stats.examples, stats.truncated_inputs, stats.truncated_targets) == (2, 1, 1)


def test_a_budget_the_template_fills_is_refused_naming_the_argument(tokenizer: Any) -> None:
    with pytest.raises(ValueError) as refused:
        encode(tokenizer, SHORT, "Hi.", EncodingStats(), max_seq_length=4)
    assert str(refused.value) == "--max-seq-length 4 leaves no room for the input; raise it"


def test_an_answer_that_spells_a_control_token_learns_its_characters_not_the_token(
    tiny_causal: Path,
) -> None:
    """A reference reading "</s>" mid-answer must not teach the decoder to stop there. On the
    tiny causal model's tokenizer: the tiny T5's word-level vocabulary holds "</s>" as a word of
    its own, so no tokenizer flag can tell the text from the token there."""
    tokenizer = load_tokenizer(str(tiny_causal))
    stats = EncodingStats()
    answer = f"They stop {tokenizer.eos_token} and go on."
    row = encode(tokenizer, SHORT, answer, stats)
    assert tokenizer.eos_token_id not in row["labels"]  # this tokenizer appends none
    text = tokenizer.decode(row["labels"], skip_special_tokens=True)
    assert text.replace(" ", "") == answer.replace(" ", "")
