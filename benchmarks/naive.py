"""The baseline arm: the data layer that most peft + bitsandbytes samples copy, on our loop.

`NaiveBatches` is a data layer (`training_scripts.batching.DataLayer`) handed to the project's
`FineTuneRecipe`, so the model build, optimizer, learning rate, schedule, precision and seed
are the recipe's own; only the data layer differs, as in those samples:
- every example is padded to one maximum length (`tokenizer(..., padding="max_length")`);
- the loss covers every real token, prompt included (labels = input_ids, padding masked);
- batches come in dataset order.

The tokens are the project's own (same prompt template, same summary tokens, same EOS), so the
two arms train on identical sequences and their eval losses compare directly. Padding is
masked by the attention mask, not by the pad token id: with pad = EOS, as in many samples,
masking by id would also hide every EOS and the model would never learn to stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import default_data_collator

from training_scripts.batching import EncodingStats, SummaryBatches
from training_scripts.contracts import INPUT_KEY, TARGET_KEY
from training_scripts.prompts import causal_prompt_ids, has_chat_template, target_ids
from training_scripts.tasks import TaskSpec
from training_scripts.train import TrainArguments

# The strong baseline: what a well-informed TRL user sets up. Length-grouped padded batches
# under the same token budget as ours, loss on the summary tokens only (completion-only
# loss), the LM head on every position; the project's own encoding and collator otherwise.
STRONG_BATCHES = SummaryBatches(seq2seq=False, padding_free=False, summary_logits_only=False)


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


def example_ids(tokenizer: Any, task: TaskSpec, row: dict[str, Any]) -> list[int]:
    """Prompt + summary + EOS, the same tokens the project's recipe trains on."""
    prompt = causal_prompt_ids(tokenizer, task.messages(row[INPUT_KEY]), cue=task.answer_cue)
    return prompt + target_ids(tokenizer, row[TARGET_KEY], chat=has_chat_template(tokenizer))


def encode_naive(
    tokenizer: Any, task: TaskSpec, rows: list[dict[str, Any]], max_length: int
) -> list[dict[str, list[int]]]:
    return [
        pad_to_max_length(example_ids(tokenizer, task, row), max_length, tokenizer.pad_token_id)
        for row in rows
    ]


@dataclass(frozen=True)
class NaiveBatches:
    """The common recipe's data layer: every example padded to `max_length`, loss on every real
    token, batches in dataset order."""

    max_length: int
    padding_free: bool = False
    batch_cost: None = None  # fixed batches of --per-device-batch-size examples
    sampling_strategy: str = "sequential"
    # Its training loss needs logits at every position (evaluation, the recipe's own, does not).
    summary_logits_only: bool = False

    def encode(
        self,
        rows: list[dict[str, Any]],
        task: TaskSpec,
        tokenizer: Any,
        args: TrainArguments,
        stats: EncodingStats,
    ) -> list[dict[str, list[int]]]:
        ids = [example_ids(tokenizer, task, row) for row in rows]
        stats.examples += len(ids)
        stats.truncated_inputs += sum(len(i) > self.max_length for i in ids)
        return [pad_to_max_length(i, self.max_length, tokenizer.pad_token_id) for i in ids]

    def collator(self, tokenizer: Any, base_model: Any, args: TrainArguments) -> Any:
        return default_data_collator  # rows are already padded: stack them
