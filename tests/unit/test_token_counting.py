"""What training reports of its batches (batching.py): the positions the model computes and
the real ones, counted exactly over every micro-batch of each layout; the validation batches'
encoding and collator; where a token budget closes a micro-batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

from training_scripts.batching import (
    PACKED_ROW_TOKENS,
    BatchCost,
    EncodingStats,
    PackedRows,
    SummaryBatches,
    TokenCountingCollator,
    budget_batches,
    encode_causal,
    encode_seq2seq,
    make_collator,
)
from training_scripts.contracts import INPUT_KEY, TARGET_KEY
from training_scripts.model_loading import load_tokenizer
from training_scripts.tasks import DEFAULT_TASK, resolve_task_spec

TASK = resolve_task_spec(DEFAULT_TASK)


def causal_features(*lengths: int) -> list[dict[str, list[int]]]:
    return [{"input_ids": [5] * n, "labels": [-100] * (n - 2) + [5, 5]} for n in lengths]


def seq2seq_features(*pairs: tuple[int, int]) -> list[dict[str, list[int]]]:
    return [{"input_ids": [5] * source, "labels": [6] * target} for source, target in pairs]


@pytest.fixture(scope="module")
def causal(tiny_causal: Path) -> tuple[Any, Any]:
    return load_tokenizer(str(tiny_causal)), AutoModelForCausalLM.from_pretrained(tiny_causal)


@pytest.fixture(scope="module")
def seq2seq(tiny_seq2seq: Path) -> tuple[Any, Any]:
    return load_tokenizer(str(tiny_seq2seq)), AutoModelForSeq2SeqLM.from_pretrained(tiny_seq2seq)


def test_padded_rows_count_their_mask_as_real_and_every_position_as_processed(causal) -> None:
    counting = TokenCountingCollator(make_collator(*causal, padding_free=False))
    assert (counting.real_tokens, counting.processed_tokens, counting.non_pad_fraction) == (
        0,
        0,
        0.0,
    )
    first = counting(causal_features(3, 5, 2))
    assert first["input_ids"].shape == (3, 5)
    assert (counting.real_tokens, counting.processed_tokens) == (10, 15)
    counting(causal_features(4, 4))
    assert (counting.real_tokens, counting.processed_tokens) == (18, 23)
    assert counting.non_pad_fraction == pytest.approx(18 / 23)


def test_seq2seq_rows_count_the_encoders_mask_and_the_decoders_labels(seq2seq) -> None:
    counting = TokenCountingCollator(make_collator(*seq2seq, padding_free=False))
    batch = counting(seq2seq_features((4, 2), (6, 3)))
    assert batch["input_ids"].shape == (2, 6) and batch["decoder_input_ids"].shape == (2, 3)
    assert (counting.real_tokens, counting.processed_tokens) == (10 + 5, 12 + 6)
    counting(seq2seq_features((2, 4)))
    assert (counting.real_tokens, counting.processed_tokens) == (15 + 2 + 4, 18 + 2 + 4)


@pytest.mark.parametrize("bounded_rows", [False, True])
def test_packed_rows_count_the_examples_tokens_and_not_the_filler(
    causal, bounded_rows: bool
) -> None:
    inner = make_collator(*causal, padding_free=True, bounded_rows=bounded_rows)
    counting = TokenCountingCollator(inner)
    batch = counting(causal_features(3, 5, 2))
    assert "attention_mask" not in batch
    assert (counting.real_tokens, counting.processed_tokens) == (10, batch["input_ids"].numel())
    counting(causal_features(4))
    assert counting.real_tokens == 14


@pytest.mark.parametrize(("options", "rows"), [({}, 1), ({"bounded_rows": True}, 2)])
def test_packed_examples_restart_their_positions_and_never_predict_the_next_one(
    causal, options: dict[str, bool], rows: int
) -> None:
    """Unbounded, one row holds every example however long; bounded, rows hold about
    PACKED_ROW_TOKENS positions each."""
    lengths = (PACKED_ROW_TOKENS - 100, 150, 50)
    batch = make_collator(*causal, padding_free=True, **options)(causal_features(*lengths))
    assert batch["input_ids"].shape[0] == rows
    positions = [p for row in batch["position_ids"].tolist() for p in row]
    starts = [i for i, p in enumerate(positions) if p == 0]
    labels = [label for row in batch["labels"].tolist() for label in row]
    assert all(labels[i] == -100 for i in starts)  # no example predicts from the one before
    segments = [(a, b) for a, b in zip(starts, [*starts[1:], len(positions)], strict=True)]
    # a bounded row may end in filler: its own positions from 0, nothing to learn
    examples = [b - a for a, b in segments if any(label != -100 for label in labels[a:b])]
    assert sorted(examples) == sorted(lengths)


def test_a_row_of_filler_is_processed_but_not_real() -> None:
    """Bounded rows of a long and two short examples: the shorter row ends in filler."""
    counting = TokenCountingCollator(PackedRows(row_tokens=6, pad_token_id=0))
    batch = counting(causal_features(6, 2, 2))
    assert batch["input_ids"].shape == (2, 6)
    assert (counting.real_tokens, counting.processed_tokens) == (10, 12)


@pytest.mark.parametrize("seq2seq_model", [False, True])
def test_validation_batches_encode_and_collate_as_the_model_kind_needs(
    seq2seq_model: bool, causal, seq2seq
) -> None:
    from training_scripts.train import TrainArguments

    tokenizer = (seq2seq if seq2seq_model else causal)[0]
    args = TrainArguments(model_name_or_path="m", max_seq_length=128, max_target_tokens=16)
    rows = [{INPUT_KEY: "#Person1#: Hello.\n#Person2#: Hi.", TARGET_KEY: "They greet."}]
    encoded = SummaryBatches(seq2seq_model, padding_free=False).encode(
        rows, TASK, tokenizer, args, EncodingStats()
    )
    encode = encode_seq2seq if seq2seq_model else encode_causal
    expected = encode(
        tokenizer,
        TASK,
        rows[0][INPUT_KEY],
        rows[0][TARGET_KEY],
        max_seq_length=128,
        max_target_tokens=16,
        stats=EncodingStats(),
    )
    assert encoded == [expected]


def test_packed_validation_batches_are_bounded_rows(causal) -> None:
    from training_scripts.train import TrainArguments

    packed = SummaryBatches(False, padding_free=True).collator(
        *causal, TrainArguments(model_name_or_path="m")
    )
    assert packed == PackedRows(row_tokens=PACKED_ROW_TOKENS, pad_token_id=causal[0].pad_token_id)
    padded = SummaryBatches(False, padding_free=False).collator(
        *causal, TrainArguments(model_name_or_path="m")
    )
    assert padded.model is causal[1] and padded.label_pad_token_id == -100


@pytest.mark.parametrize(
    ("lengths", "budget", "cost", "batches"),
    [
        ([2, 2, 2], 4, BatchCost.PACKED, [[0, 1], [2]]),  # a batch may spend the budget whole
        ([2, 3], 4, BatchCost.PACKED, [[0], [1]]),
        ([2, 2, 2], 4, BatchCost.PADDED, [[0, 1], [2]]),
        ([1, 3], 4, BatchCost.PADDED, [[0], [1]]),  # 2 rows of the longest, 3, cost 6
        ([5], 4, BatchCost.PACKED, [[0]]),  # an example over the budget goes alone
    ],
)
def test_a_micro_batch_closes_only_when_the_next_example_would_overspend(
    lengths: list[int], budget: int, cost: BatchCost, batches: list[list[int]]
) -> None:
    order = list(range(len(lengths)))
    assert budget_batches(lengths, order, budget=budget, cost=cost, max_examples=8) == batches
