"""The baseline arm: the data layer that most peft + bitsandbytes samples copy, on our loop.

Same model build, optimizer, learning rate, schedule, precision and seed as the project's
recipe (it is a `FineTuneRecipe`); only the data layer differs, as in those samples:
- every example is padded to one maximum length (`tokenizer(..., padding="max_length")`);
- the loss covers every real token, prompt included (labels = input_ids, padding masked);
- batches come in dataset order.

The tokens are the project's own (same prompt template, same summary tokens, same EOS), so the
two arms train on identical sequences and their eval losses compare directly. Padding is
masked by the attention mask, not by the pad token id: with pad = EOS, as in many samples,
masking by id would also hide every EOS and the model would never learn to stop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common import INPUT_KEY, TARGET_KEY, prompt_ids, read_jsonl, split_file, target_ids
from train import FineTuneRecipe, TrainArguments
from transformers import default_data_collator


def pad_to_max_length(ids: list[int], max_length: int, pad_id: int) -> dict[str, list[int]]:
    """One example as the common recipe encodes it: truncated or right-padded to max_length,
    with a loss on every real token."""
    ids = ids[:max_length]
    padding = max_length - len(ids)
    return {
        "input_ids": ids + [pad_id] * padding,
        "attention_mask": [1] * len(ids) + [0] * padding,
        "labels": ids + [-100] * padding,
    }


def example_ids(tokenizer: Any, row: dict[str, str]) -> list[int]:
    """Prompt + summary + EOS, the same tokens the project's recipe trains on."""
    chat = bool(getattr(tokenizer, "chat_template", None))
    return prompt_ids(tokenizer, row[INPUT_KEY]) + target_ids(tokenizer, row[TARGET_KEY], chat=chat)


def encode_naive(
    tokenizer: Any, rows: list[dict[str, str]], max_length: int
) -> list[dict[str, list[int]]]:
    return [
        pad_to_max_length(example_ids(tokenizer, row), max_length, tokenizer.pad_token_id)
        for row in rows
    ]


class NaiveRecipe(FineTuneRecipe):
    """`FineTuneRecipe` with the common recipe's data layer; `naive_max_length` is the length
    every example is padded to."""

    def __init__(self, args: TrainArguments, *, naive_max_length: int) -> None:
        self.naive_max_length = naive_max_length
        super().__init__(args)

    def encode_train_rows(self) -> list[dict[str, list[int]]]:
        rows = read_jsonl(split_file(Path(self.args.train_dir)))
        ids = [example_ids(self.tokenizer, row) for row in rows]
        self.stats.examples += len(ids)
        self.stats.truncated_inputs += sum(len(i) > self.naive_max_length for i in ids)
        pad_id = self.tokenizer.pad_token_id
        return [pad_to_max_length(i, self.naive_max_length, pad_id) for i in ids]

    def make_train_collator(self, base_model: Any) -> Any:
        return default_data_collator  # rows are already padded: stack them

    @property
    def train_sampling_strategy(self) -> str:
        return "sequential"

    @property
    def summary_logits_only(self) -> bool:
        return False  # its training loss needs logits at every position (evaluation does not)
