"""How training examples become batches: prompt + summary encoded with the loss on the summary
only, padding-free rows (examples packed, positions restarting per example) or length-grouped
padded batches, micro-batches bounded by a token budget, and the data-layer protocol that lets
other batchings run on the same recipe."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if __package__:  # imported as part of the training_scripts package (pipeline, tests, benchmarks)
    from . import contracts, enums, prompts, tasks
else:  # run as a file in the SageMaker job: sibling modules are top-level
    import contracts
    import enums
    import prompts
    import tasks

import torch
from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening

if TYPE_CHECKING:
    from .train import TrainArguments


# Tokens per device per micro-batch when --token-budget is 0 (README, Performance). QLoRA
# dequantizes every 4-bit weight on every matmul, a fixed cost per micro-batch that more tokens
# amortize until memory and attention bend the curve. On a 2-core CPU (SmolLM2-135M, QLoRA,
# bf16) real tokens/s were 154 / 168 / 159 / 132 at budgets 512 / 1024 / 2048 / 4096, with
# peak memory 2.0 / 4.1 / 6.9 / 12.2 GB, and dequantization took 2% of a step: the curve
# peaks at 1024. The GPU figure is the starting point benchmarks/gpu_check.sh sweeps around.
DEFAULT_TOKEN_BUDGETS = {"cpu": 1024, "cuda": 16384}


def resolved_token_budget(requested: int, device: str, max_seq_length: int) -> int:
    """The budget a run uses: the one asked for, or the device's default (at least one
    example of the longest length)."""
    return requested or max(DEFAULT_TOKEN_BUDGETS[device], max_seq_length)


class Attention(enum.StrEnum):
    AUTO = "auto"  # packed_sdpa for packed rows where the architecture allows it
    SDPA = "sdpa"  # transformers' own


class Batching(enum.StrEnum):
    AUTO = "auto"
    PADDING_FREE = "padding_free"  # examples packed into one row, no padding
    LENGTH_GROUPED = "length_grouped"  # rows padded to the longest of similar-length examples


@dataclass
class EncodingStats:
    examples: int = 0
    truncated_inputs: int = 0
    truncated_targets: int = 0


def encode_causal(
    tokenizer: Any,
    task: tasks.TaskSpec,
    task_input: tasks.TaskInput,
    answer: str,
    *,
    max_seq_length: int,
    max_target_tokens: int,
    stats: EncodingStats,
) -> dict[str, list[int]]:
    """input_ids = prompt + answer + EOS; labels mask the prompt so loss is on the answer only."""
    chat = prompts.has_chat_template(tokenizer)
    target = prompts.target_ids(tokenizer, answer, chat=chat)
    if len(target) > max_target_tokens:
        target = [*target[: max_target_tokens - 1], tokenizer.eos_token_id]
        stats.truncated_targets += 1

    try:
        prompt, cut = prompts.fitted_prompt_ids(
            tokenizer, task, task_input, max_tokens=max_seq_length - len(target), seq2seq=False
        )
    except prompts.NoRoomForInputError:
        raise ValueError(
            f"--max-seq-length {max_seq_length} leaves no room for the input; raise it"
        ) from None
    stats.truncated_inputs += cut
    stats.examples += 1
    return {
        "input_ids": prompt + target,
        "labels": [-100] * len(prompt) + target,
        "attention_mask": [1] * (len(prompt) + len(target)),
    }


def encode_seq2seq(
    tokenizer: Any,
    task: tasks.TaskSpec,
    task_input: tasks.TaskInput,
    answer: str,
    *,
    max_seq_length: int,
    max_target_tokens: int,
    stats: EncodingStats,
) -> dict[str, list[int]]:
    try:
        source, cut = prompts.fitted_prompt_ids(
            tokenizer, task, task_input, max_tokens=max_seq_length, seq2seq=True
        )
    except prompts.NoRoomForInputError:
        raise ValueError(
            f"--max-seq-length {max_seq_length} leaves no room for the input; raise it"
        ) from None
    labels = tokenizer(
        text_target=answer,
        truncation=True,
        max_length=max_target_tokens,
        split_special_tokens=True,
    )["input_ids"]
    stats.truncated_inputs += cut
    stats.truncated_targets += len(labels) == max_target_tokens
    stats.examples += 1
    return {"input_ids": source, "attention_mask": [1] * len(source), "labels": labels}


def read_split(path: str | Path) -> list[dict[str, Any]]:
    rows = contracts.read_split_rows(contracts.split_file(path))
    if not rows:
        raise ValueError(f"{path}: the split is empty; check the preprocess step's manifest")
    return rows


def split_task(*split_dirs: str | Path) -> tasks.TaskSpec:
    """The one task that the splits were preprocessed for."""
    specs = {str(path): tasks.split_task(path) for path in split_dirs}
    names = {spec.sha256: path for path, spec in specs.items()}
    if len(names) > 1:
        raise ValueError(
            f"the splits were preprocessed for different task specs ({', '.join(names.values())}); "
            "preprocess the data once and train on its splits"
        )
    return next(iter(specs.values()))


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict[str, list[int]]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return self.rows[index]


def plain_positions(method: enums.PeftMethod, seq2seq: bool) -> bool:
    """Whether each input position is a token of the example: peft's prompt tuning prepends
    virtual tokens per row (and ignores position_ids), and a seq2seq decoder's labels are not
    shifted inputs."""
    return not seq2seq and method is not enums.PeftMethod.PROMPT_TUNING


def uses_padding_free_batches(method: enums.PeftMethod, seq2seq: bool, batching: Batching) -> bool:
    if not plain_positions(method, seq2seq):
        if batching is Batching.PADDING_FREE:
            raise ValueError(
                f"--batching padding_free needs a causal model and qlora, lora or full; "
                f"use --batching auto for {'seq2seq' if seq2seq else method.value}"
            )
        return False
    # auto: padding-free wherever positions allow it; the README's performance section has
    # the measurements behind this choice per device and method.
    return batching is not Batching.LENGTH_GROUPED


class TokenCountingCollator:
    """Wraps a collator and counts the positions the model computes and the real ones."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.real_tokens = 0
        self.processed_tokens = 0

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.inner(features)
        for ids_key, mask_key in (("input_ids", "attention_mask"), ("decoder_input_ids", None)):
            if ids_key not in batch:
                continue
            ids = batch[ids_key]
            self.processed_tokens += ids.numel()
            if mask_key and mask_key in batch:
                self.real_tokens += int(batch[mask_key].sum())
            elif ids_key == "decoder_input_ids":
                self.real_tokens += int((batch["labels"] != -100).sum())
            else:  # packed rows: the examples' own tokens (a row may end in filler)
                self.real_tokens += sum(len(f["input_ids"]) for f in features)
        return batch

    @property
    def non_pad_fraction(self) -> float:
        return self.real_tokens / self.processed_tokens if self.processed_tokens else 0.0


# Packed rows hold about this many positions (more when one example is longer). The project's
# packed attention (packed_attention.py) costs the sum of the examples' squared lengths however
# long the row; where a model keeps transformers' sdpa (a sliding window), the block-diagonal
# attention of a row costs its length squared, so rows stay bounded whatever the token budget,
# while rows shorter than a few examples would end in much filler.
PACKED_ROW_TOKENS = 1024


def make_collator(
    tokenizer: Any, model: Any, *, padding_free: bool, bounded_rows: bool = False
) -> Any:
    """Padding-free: examples packed into one row, or (`bounded_rows`) into rows of about
    PACKED_ROW_TOKENS positions; else rows padded to the longest example of the batch."""
    if padding_free:
        if not bounded_rows:
            return DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)
        return PackedRows(row_tokens=PACKED_ROW_TOKENS, pad_token_id=tokenizer.pad_token_id)
    return DataCollatorForSeq2Seq(
        tokenizer, model=model, label_pad_token_id=-100, padding="longest"
    )


@dataclass(frozen=True)
class PackedRows:
    """Packs a micro-batch's examples into rows of at most `row_tokens` positions (or of its
    longest example, if longer), so a row's attention stays bounded however large the token
    budget (see PACKED_ROW_TOKENS). position_ids restart at 0 for every example, which makes
    the model attend within each example only (attention_mask stays None); each example's
    first label is -100, so no position predicts the next example's first token. Rows shorter
    than the longest end in a filler segment of pad tokens: its own positions from 0, no
    labels, attended by nothing else."""

    row_tokens: int
    pad_token_id: int

    def rows(self, lengths: list[int]) -> list[list[int]]:
        """Example indices per row: the fewest rows within the cap that the longest first,
        least-filled row rule finds, so rows come out about equally long and the filler
        stays small."""
        cap = max(self.row_tokens, max(lengths))
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        count = -(-sum(lengths) // cap)
        while True:
            rows: list[list[int]] = [[] for _ in range(count)]
            filled = [0] * count
            for index in order:
                row = min(range(count), key=filled.__getitem__)
                rows[row].append(index)
                filled[row] += lengths[index]
            if max(filled) <= cap:
                return rows
            count += 1

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = [len(f["input_ids"]) for f in features]
        packed = []
        for row in self.rows(lengths):
            ids: list[int] = []
            labels: list[int] = []
            positions: list[int] = []
            for index in row:
                example = features[index]
                ids += example["input_ids"]
                labels += [-100, *example["labels"][1:]]
                positions += range(len(example["input_ids"]))
            packed.append((ids, labels, positions))
        width = max(len(ids) for ids, _, _ in packed)
        for ids, labels, positions in packed:
            filler = width - len(ids)
            ids += [self.pad_token_id] * filler
            labels += [-100] * filler
            positions += range(filler)
        return {
            "input_ids": torch.tensor([r[0] for r in packed]),
            "labels": torch.tensor([r[1] for r in packed]),
            "position_ids": torch.tensor([r[2] for r in packed]),
        }


class BatchCost(enum.StrEnum):
    """What a micro-batch spends of the token budget."""

    PACKED = "packed"  # its real tokens
    PADDED = "padded"  # its rows x its longest example


def budget_batches(
    lengths: list[int], order: list[int], *, budget: int, cost: BatchCost, max_examples: int
) -> list[list[int]]:
    """Consecutive examples of `order` in micro-batches that each fit `budget` (and hold at
    most `max_examples`); every example in exactly one batch."""
    batches: list[list[int]] = []
    batch: list[int] = []
    total = longest = 0
    for index in order:
        length = lengths[index]
        if cost is BatchCost.PACKED:
            spent = total + length
        else:
            spent = max(longest, length) * (len(batch) + 1)
        if batch and (spent > budget or len(batch) == max_examples):
            batches.append(batch)
            batch, total, longest = [], 0, 0
        batch.append(index)
        total += length
        longest = max(longest, length)
    if batch:
        batches.append(batch)
    return batches


class TokenBudgetSampler(torch.utils.data.Sampler[list[int]]):
    """Micro-batches by token budget, reshuffled each epoch (`set_epoch`, which the Trainer
    calls, also when it resumes mid-run). Padded batches are length-grouped: examples are
    shuffled, sorted by length within windows of `GROUP_WINDOW` batches' worth, cut into
    batches, and the batches shuffled, the longest first (an out-of-memory shows at step 1).
    Packed batches take examples in random order: packing wastes nothing whatever the mix."""

    GROUP_WINDOW = 50

    def __init__(
        self, lengths: list[int], *, budget: int, cost: BatchCost, max_examples: int, seed: int
    ) -> None:
        self.lengths = lengths
        self.budget = budget
        self.cost = cost
        self.max_examples = max_examples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        if self.cost is BatchCost.PACKED:
            return budget_batches(
                self.lengths, order, budget=self.budget, cost=self.cost,
                max_examples=self.max_examples,
            )  # fmt: skip
        mean = sum(self.lengths) / max(1, len(self.lengths))
        window = max(1, self.GROUP_WINDOW * int(self.budget // max(1.0, mean)))
        grouped = []
        for start in range(0, len(order), window):
            grouped += sorted(order[start : start + window], key=lambda i: -self.lengths[i])
        batches = budget_batches(
            self.lengths, grouped, budget=self.budget, cost=self.cost,
            max_examples=self.max_examples,
        )  # fmt: skip
        longest = max(range(len(batches)), key=lambda b: self.lengths[batches[b][0]])
        rest = [b for i, b in enumerate(batches) if i != longest]
        shuffled = [rest[i] for i in torch.randperm(len(rest), generator=generator).tolist()]
        return [batches[longest], *shuffled]

    def __iter__(self):
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


class DataLayer(Protocol):
    """How the train split becomes batches. `FineTuneRecipe` takes one, `SummaryBatches` by
    default, so other batchings run on the same model, optimizer and loop."""

    @property
    def padding_free(self) -> bool:
        """Whether every position the model computes is a real token."""

    @property
    def batch_cost(self) -> BatchCost | None:
        """How micro-batches spend the token budget; None: fixed batches of
        --per-device-batch-size examples, in `sampling_strategy`'s order."""

    @property
    def sampling_strategy(self) -> str:
        """The Trainer's `train_sampling_strategy` for fixed-size batches."""

    @property
    def summary_logits_only(self) -> bool:
        """Whether the LM head runs only where a summary token is predicted (the labels must
        mask the prompt)."""

    def encode(
        self,
        rows: list[dict[str, Any]],
        task: tasks.TaskSpec,
        tokenizer: Any,
        args: TrainArguments,
        stats: EncodingStats,
    ) -> list[dict[str, list[int]]]: ...

    def collator(
        self, tokenizer: Any, base_model: Any, args: TrainArguments
    ) -> Callable[[list[dict[str, Any]]], Any]: ...


@dataclass(frozen=True)
class SummaryBatches:
    """The project's batching: loss on the summary tokens only; padding-free rows (examples
    packed, positions restarting per example) or length-grouped padded batches."""

    seq2seq: bool
    padding_free: bool
    summary_logits_only: bool = True

    @property
    def batch_cost(self) -> BatchCost:
        return BatchCost.PACKED if self.padding_free else BatchCost.PADDED

    @property
    def sampling_strategy(self) -> str:
        # Padding-free batches hold no padding whatever their order; padded ones waste least
        # when examples of similar length share a batch.
        return "random" if self.padding_free else "group_by_length"

    def encode(
        self,
        rows: list[dict[str, Any]],
        task: tasks.TaskSpec,
        tokenizer: Any,
        args: TrainArguments,
        stats: EncodingStats,
    ) -> list[dict[str, list[int]]]:
        encode = encode_seq2seq if self.seq2seq else encode_causal
        return [
            encode(
                tokenizer,
                task,
                row[contracts.INPUT_KEY],
                row[contracts.TARGET_KEY],
                max_seq_length=args.max_seq_length,
                max_target_tokens=args.max_target_tokens,
                stats=stats,
            )
            for row in rows
        ]

    def collator(self, tokenizer: Any, base_model: Any, args: TrainArguments) -> Any:
        return make_collator(
            tokenizer, base_model, padding_free=self.padding_free, bounded_rows=True
        )
