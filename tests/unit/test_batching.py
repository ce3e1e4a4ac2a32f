"""How a training example becomes tokens, and examples batches (batching.py): the loss on the
answer only, the answer cut to its budget with EOS kept, the encoding's counts over many calls,
the refusals' words, which method and model kind may pack examples, and the length grouping of
padded batches."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CHATML
from training_scripts import enums, prompts
from training_scripts.batching import (
    BatchCost,
    Batching,
    EncodingStats,
    TokenBudgetSampler,
    budget_batches,
    encode_causal,
    read_split,
    split_task,
    uses_padding_free_batches,
)
from training_scripts.contracts import SPLIT_FILE
from training_scripts.model_loading import load_tokenizer
from training_scripts.tasks import (
    DEFAULT_TASK,
    SPECS_DIR,
    TASK_SPEC_FILE,
    resolve_task_spec,
)

TASK = resolve_task_spec(DEFAULT_TASK)
DIALOGUE = "#Person1#: Shall we meet at noon?\n#Person2#: Noon works, see you at the cafe."
ANSWER = "They agree to meet at the cafe at noon."


@pytest.fixture(scope="module", params=["plain", "chat"])
def tokenizer(request: pytest.FixtureRequest, tiny_causal: Path) -> Any:
    loaded = load_tokenizer(str(tiny_causal))
    if request.param == "chat":
        loaded.chat_template = CHATML
    return loaded


def encoded(tokenizer: Any, answer: str = ANSWER, **limits: int) -> tuple[dict, EncodingStats]:
    stats = EncodingStats()
    example = encode_causal(
        tokenizer, TASK, DIALOGUE, answer,
        max_seq_length=limits.get("max_seq_length", 512),
        max_target_tokens=limits.get("max_target_tokens", 64),
        stats=stats,
    )  # fmt: skip
    return example, stats


def test_the_loss_falls_on_the_answer_and_eos_only_after_the_prompt_the_model_reads(
    tokenizer: Any,
) -> None:
    example, _ = encoded(tokenizer)
    chat = prompts.has_chat_template(tokenizer)
    prompt, _ = prompts.fitted_prompt_ids(tokenizer, TASK, DIALOGUE, max_tokens=512, seq2seq=False)
    # With a chat template the answer follows the assistant turn's header; without one it
    # follows the cue, after a space, as it would in running text.
    target = prompts.plain_text_ids(tokenizer, ANSWER if chat else " " + ANSWER)
    target = [*target, tokenizer.eos_token_id]
    assert example["input_ids"] == prompt + target
    assert example["labels"] == [-100] * len(prompt) + target
    assert example["attention_mask"] == [1] * (len(prompt) + len(target))


@pytest.mark.parametrize("max_target_tokens", [2, 3, 5])
def test_a_long_answer_is_cut_to_its_budget_and_still_ends_in_eos(
    tokenizer: Any, max_target_tokens: int
) -> None:
    full, _ = encoded(tokenizer)
    cut, stats = encoded(tokenizer, max_target_tokens=max_target_tokens)
    full_target = [t for t in full["labels"] if t != -100]
    target = [t for t in cut["labels"] if t != -100]
    assert target == [*full_target[: max_target_tokens - 1], tokenizer.eos_token_id]
    assert cut["input_ids"][-max_target_tokens:] == target
    assert (stats.truncated_targets, stats.truncated_inputs, stats.examples) == (1, 0, 1)


def test_an_answer_that_fits_its_budget_exactly_is_not_cut(tokenizer: Any) -> None:
    full, _ = encoded(tokenizer)
    length = sum(t != -100 for t in full["labels"])
    exact, stats = encoded(tokenizer, max_target_tokens=length)
    assert exact == full
    assert stats == EncodingStats(examples=1)


def test_the_counts_add_up_over_calls_from_where_they_stood(tokenizer: Any) -> None:
    """One counts object spans a split: every call adds to it."""
    stats = EncodingStats(examples=5, truncated_inputs=2, truncated_targets=1)
    full, _ = encoded(tokenizer)
    prompt_length = full["labels"].count(-100)
    cases = [
        {},  # fits
        {"max_target_tokens": 3},  # the answer cut
        {"max_seq_length": prompt_length - 5},  # the dialogue cut
        {"max_seq_length": prompt_length - 5, "max_target_tokens": 3},  # both
    ]
    for limits in cases:
        encode_causal(
            tokenizer, TASK, DIALOGUE, ANSWER,
            max_seq_length=limits.get("max_seq_length", 512),
            max_target_tokens=limits.get("max_target_tokens", 64),
            stats=stats,
        )  # fmt: skip
    assert stats == EncodingStats(examples=9, truncated_inputs=4, truncated_targets=3)


def test_a_sequence_budget_with_no_room_for_the_input_names_the_option(tokenizer: Any) -> None:
    with pytest.raises(ValueError) as raised:
        encoded(tokenizer, max_seq_length=12)
    assert str(raised.value) == "--max-seq-length 12 leaves no room for the input; raise it"


def test_an_empty_split_is_refused_with_its_folder(tmp_path: Path) -> None:
    (tmp_path / SPLIT_FILE).write_text("\n", encoding="utf-8")
    with pytest.raises(ValueError) as raised:
        read_split(tmp_path)
    assert str(raised.value) == (
        f"{tmp_path}: the split is empty; check the preprocess step's manifest"
    )


def split_folder(root: Path, name: str, task: str) -> Path:
    folder = root / name
    folder.mkdir()
    shutil.copy(SPECS_DIR / f"{task}.json", folder / TASK_SPEC_FILE)
    return folder


def test_splits_of_one_task_give_that_task(tmp_path: Path) -> None:
    train = split_folder(tmp_path, "train", "support-routing")
    validation = split_folder(tmp_path, "validation", "support-routing")
    assert split_task(train, validation) == resolve_task_spec("support-routing")


def test_splits_preprocessed_for_two_tasks_are_refused_naming_both(tmp_path: Path) -> None:
    train = split_folder(tmp_path, "train", "support-routing")
    validation = split_folder(tmp_path, "validation", DEFAULT_TASK)
    with pytest.raises(ValueError) as raised:
        split_task(train, validation)
    assert str(raised.value) == (
        f"the splits were preprocessed for different task specs ({train}, {validation}); "
        "preprocess the data once and train on its splits"
    )


REFUSAL = (
    "--batching padding_free needs a causal model and qlora, lora or full; use --batching auto for "
)


@pytest.mark.parametrize(
    ("method", "seq2seq", "batching", "expected"),
    [
        *(
            (method, False, batching, batching is not Batching.LENGTH_GROUPED)
            for method in (enums.PeftMethod.QLORA, enums.PeftMethod.LORA, enums.PeftMethod.FULL)
            for batching in Batching
        ),
        # prompt tuning prepends virtual tokens per row, a seq2seq decoder does not shift
        # its inputs: neither can pack examples, whatever auto would choose.
        *(
            (method, True, batching, False)
            for method in enums.PeftMethod
            for batching in (Batching.AUTO, Batching.LENGTH_GROUPED)
        ),
        (enums.PeftMethod.PROMPT_TUNING, False, Batching.AUTO, False),
        (enums.PeftMethod.PROMPT_TUNING, False, Batching.LENGTH_GROUPED, False),
        (enums.PeftMethod.PROMPT_TUNING, False, Batching.PADDING_FREE, REFUSAL + "prompt_tuning"),
        (enums.PeftMethod.LORA, True, Batching.PADDING_FREE, REFUSAL + "seq2seq"),
        (enums.PeftMethod.PROMPT_TUNING, True, Batching.PADDING_FREE, REFUSAL + "seq2seq"),
    ],
)
def test_which_runs_pack_their_examples(
    method: enums.PeftMethod, seq2seq: bool, batching: Batching, expected: bool | str
) -> None:
    if isinstance(expected, str):
        with pytest.raises(ValueError) as raised:
            uses_padding_free_batches(method, seq2seq, batching)
        assert str(raised.value) == expected
    else:
        assert uses_padding_free_batches(method, seq2seq, batching) is expected


@pytest.mark.parametrize(
    ("lengths", "budget", "cost", "expected"),
    [
        # a batch that closed starts again from nothing: 3 + 1 fits a budget of 4
        ([2, 2, 3, 1], 4, BatchCost.PACKED, [[0, 1], [2, 3]]),
        ([2, 2, 3, 1], 3, BatchCost.PACKED, [[0], [1], [2], [3]]),
        # padded: rows x the longest; after a close, the next batch's longest is its own
        ([3, 1, 1, 1], 3, BatchCost.PADDED, [[0], [1, 2, 3]]),
        ([4, 2, 1, 1], 4, BatchCost.PADDED, [[0], [1, 2], [3]]),
    ],
)
def test_a_closed_batch_leaves_nothing_spent_to_the_next(
    lengths: list[int], budget: int, cost: BatchCost, expected: list[list[int]]
) -> None:
    order = list(range(len(lengths)))
    assert budget_batches(lengths, order, budget=budget, cost=cost, max_examples=8) == expected


@pytest.mark.parametrize("seed", range(6))
def test_padded_batches_are_cut_from_examples_sorted_longest_first(seed: int) -> None:
    """Within a window, the longest examples share a batch: [2, 2] and [1] pad nothing, where
    cutting from the shortest up would give [1, 2] and [2]."""
    sampler = TokenBudgetSampler(
        [1, 2, 2], budget=4, cost=BatchCost.PADDED, max_examples=8, seed=seed
    )
    lengths = [sorted(sampler.lengths[i] for i in batch) for batch in sampler.batches()]
    assert lengths == [[2, 2], [1]]


@pytest.mark.parametrize("seed", range(4))
def test_padded_batches_hold_every_example_once_the_longest_batch_first(seed: int) -> None:
    lengths = [5, 1, 9, 3, 3, 7, 2, 8, 4, 6, 1, 2]
    sampler = TokenBudgetSampler(
        lengths, budget=16, cost=BatchCost.PADDED, max_examples=3, seed=seed
    )
    batches = sampler.batches()
    assert sorted(itertools.chain(*batches)) == list(range(len(lengths)))
    assert max(lengths[i] for i in batches[0]) == max(lengths)
    for batch in batches:
        assert len(batch) <= 3 and max(lengths[i] for i in batch) * len(batch) <= 16
