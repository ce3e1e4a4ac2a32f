"""Fine-tune a causal or seq2seq language model to summarize dialogues: QLoRA, LoRA, prompt
tuning, or a full fine-tune baseline.

    python training_scripts/train.py --method qlora --model-name-or-path HuggingFaceTB/SmolLM2-135M-Instruct \
        --train-dir runs/prep/train --validation-dir runs/prep/validation --output-dir runs/adapter

The same file runs as a SageMaker training job (paths from SM_CHANNEL_TRAIN,
SM_CHANNEL_VALIDATION, SM_CHANNEL_MODEL, SM_MODEL_DIR, SM_OUTPUT_DATA_DIR; hyperparameters as
CLI arguments; under torchrun for several GPUs or instances) and on a laptop CPU.

- qlora: base in 4-bit NF4 with double quantization, `prepare_model_for_kbit_training`, LoRA
  on all linear layers, gradient checkpointing, paged 8-bit AdamW.
- lora: the same adapter on an unquantized base. prompt_tuning: virtual tokens initialised
  from text. full: every weight trains (the baseline).
- Loss on the summary tokens only, and for causal LMs the LM head computed only where a summary
  token is predicted. Batches: padding-free (examples concatenated, positions restarting per
  example, attention computed per example by packed_attention.py) for causal LMs;
  length-grouped padded batches for seq2seq models and prompt tuning (`--batching` chooses).
- Checkpoints go to --checkpoint-dir (/opt/ml/checkpoints, which SageMaker syncs to S3), each
  sealed with its files' digests once saved; a re-run with the same arguments resumes from the
  newest checkpoint whose files match their seal, removing unfinished or damaged ones.
- A non-finite loss or gradient norm stops the run with an error.
- Output: the adapter alone (or the full model) plus the tokenizer and training_metrics.json;
  `--merge` also writes `merged/`, merged into an unquantized copy of the base.
"""

from __future__ import annotations

import enum
import hashlib
import inspect
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

# common before torch and transformers: importing transformers' Trainer loads bitsandbytes,
# whose import-time warning about an optional hub kernel common filters out.
if __package__:  # imported as part of the training_scripts package (pipeline, tests, benchmarks)
    from . import common, contracts, model_card, packed_attention, tracking
else:  # run as `python train.py`, as in the SageMaker job: sibling modules are top-level
    import common
    import contracts
    import model_card
    import packed_attention
    import tracking

import torch
from transformers import (
    DataCollatorForSeq2Seq,
    DataCollatorWithFlattening,
    HfArgumentParser,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

logger = logging.getLogger("train")

DEFAULT_LEARNING_RATES = {
    common.PeftMethod.QLORA: 2e-4,
    common.PeftMethod.LORA: 2e-4,
    common.PeftMethod.PROMPT_TUNING: 3e-2,
    common.PeftMethod.FULL: 2e-5,
}


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


RUN_CONFIG_FILE = "run_config.json"
CHECKPOINT_SEAL = "checkpoint_seal.json"  # written last: the digests of a checkpoint's files


@dataclass
class TrainArguments:
    method: common.PeftMethod = field(
        default=common.PeftMethod.QLORA, metadata={"help": "qlora | lora | prompt_tuning | full"}
    )
    model_name_or_path: str = common.sagemaker_path_field(
        "/opt/ml/input/data/model",
        "",
        "Base model: a hub id, or a folder (the `model` channel on SageMaker).",
        env_var="SM_CHANNEL_MODEL",
    )
    train_dir: str = common.sagemaker_path_field(
        "/opt/ml/input/data/train",
        "runs/local/preprocess/train",
        "Preprocessed train split (folder or data.jsonl).",
        env_var="SM_CHANNEL_TRAIN",
    )
    validation_dir: str = common.sagemaker_path_field(
        "/opt/ml/input/data/validation",
        "runs/local/preprocess/validation",
        "Preprocessed validation split; its loss is measured before and after training.",
        env_var="SM_CHANNEL_VALIDATION",
    )
    output_dir: str = common.sagemaker_path_field(
        "/opt/ml/model",
        "runs/local/model",
        "Where the adapter (or full model), tokenizer and metrics are written.",
        env_var="SM_MODEL_DIR",
    )
    output_data_dir: str = common.sagemaker_path_field(
        "/opt/ml/output/data",
        "runs/local/output",
        "A copy of training_metrics.json goes here (SageMaker's output.tar.gz).",
        env_var="SM_OUTPUT_DATA_DIR",
    )
    checkpoint_dir: str = common.sagemaker_path_field(
        "/opt/ml/checkpoints",
        "runs/local/checkpoints",
        "Checkpoints; SageMaker syncs /opt/ml/checkpoints to S3 for spot resume.",
    )
    # LoRA: rank and alpha trade adapter size and memory for capacity.
    lora_r: int = field(
        default=16, metadata={"help": "LoRA rank; higher learns more and costs more memory."}
    )
    lora_alpha: int = field(
        default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."}
    )
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    target_modules: str = field(
        default="all-linear",
        metadata={
            "help": "Comma-separated module names, or all-linear (the QLoRA paper: q/v only does not match full fine-tuning)."
        },
    )
    num_virtual_tokens: int = field(
        default=20, metadata={"help": "Prompt tuning: number of trainable virtual tokens."}
    )
    prompt_tuning_init_text: str = field(
        default="Summarize the following dialogue in one or two sentences:",
        metadata={"help": "Prompt tuning: text whose embeddings initialise the virtual tokens."},
    )
    epochs: float = field(
        default=1.0,
        metadata={"help": "Passes over the train split (ignored when --max-steps > 0)."},
    )
    max_steps: int = field(
        default=-1, metadata={"help": "Optimizer steps; > 0 overrides --epochs."}
    )
    learning_rate: float = field(
        default=0.0, metadata={"help": "Peak learning rate; 0 picks the method's default."}
    )
    per_device_batch_size: int = field(
        default=64,
        metadata={
            "help": "At most N examples per device per micro-batch; the token budget decides "
            "how many fit (and the validation loss's batch size)."
        },
    )
    token_budget: int = field(
        default=0,
        metadata={
            "help": "Tokens per device per micro-batch: real tokens of packed rows, or rows x "
            "longest for padded batches. 0 = the device's default "
            f"({DEFAULT_TOKEN_BUDGETS['cpu']} on a CPU, {DEFAULT_TOKEN_BUDGETS['cuda']} on a GPU)."
        },
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches per optimizer step."}
    )
    warmup_ratio: float = field(
        default=0.03, metadata={"help": "Share of steps with linear warm-up."}
    )
    lr_scheduler: str = field(default="cosine", metadata={"help": "transformers scheduler name."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    optim: str = field(
        default="auto",
        metadata={
            "help": "transformers optimizer; auto = paged_adamw_8bit for qlora, adamw_torch otherwise."
        },
    )
    validation_max_examples: int = field(
        default=0,
        metadata={
            "help": "Validation loss on the first N validation examples (0 = all): it costs two passes."
        },
    )
    max_seq_length: int = field(
        default=1024, metadata={"help": "Causal: prompt + summary tokens; seq2seq: input tokens."}
    )
    max_target_tokens: int = field(
        default=256, metadata={"help": "Summary tokens kept for training."}
    )
    batching: Batching = field(
        default=Batching.AUTO,
        metadata={
            "help": "auto | padding_free | length_grouped. auto: padding-free (examples packed "
            "into one row) for causal LMs with qlora/lora/full, length-grouped padded batches "
            "for seq2seq models and prompt tuning."
        },
    )
    attention: Attention = field(
        default=Attention.AUTO,
        metadata={
            "help": "auto | sdpa. auto: packed rows attend per example (packed_sdpa) where the "
            "model allows it; sdpa: transformers' sdpa everywhere (a block-diagonal mask over "
            "each packed row). Both compute the same attention."
        },
    )
    precision: common.Precision = field(
        default=common.Precision.AUTO,
        metadata={"help": "auto | bf16 | fp32 (auto: bf16 on GPUs that support it)."},
    )
    gradient_checkpointing: bool = field(
        default=True,
        metadata={
            "help": "Recompute activations in backward: less memory, about a third more compute."
        },
    )
    save_steps: int = field(
        default=50,
        metadata={
            "help": "Checkpoint every N optimizer steps; 0 saves none (no spot resume, no disk I/O)."
        },
    )
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept."})
    logging_steps: int = field(default=10, metadata={"help": "Log the loss every N steps."})
    validation_steps: int = field(
        default=0,
        metadata={
            "help": "Also measure the validation loss every N optimizer steps (a validation "
            "curve); 0 = before and after training only."
        },
    )
    dataset_version: str = field(
        default="",
        metadata={"help": "The published dataset version the splits came from (recorded)."},
    )
    seed: int = field(
        default=42, metadata={"help": "Seed for weights init, dropout and data order."}
    )
    merge: bool = field(
        default=False,
        metadata={"help": "Also write merged/: the adapter merged into an unquantized base."},
    )

    def __post_init__(self) -> None:
        self.method = common.PeftMethod(self.method)
        self.precision = common.Precision(self.precision)
        self.batching = Batching(self.batching)
        self.attention = Attention(self.attention)
        if not self.model_name_or_path:
            raise ValueError("--model-name-or-path is required (a hub id or a model folder)")
        if self.merge and not self.method.is_lora:
            raise ValueError(
                f"--merge applies to lora and qlora adapters, not to {self.method.value}"
            )
        # Training that cannot train must not produce an adapter that looks trained.
        if self.max_steps <= 0 and self.epochs <= 0:
            raise ValueError(
                f"--epochs {self.epochs} trains nothing; pass --epochs > 0 or --max-steps > 0"
            )
        if self.validation_steps < 0:
            raise ValueError(f"--validation-steps must be >= 0, got {self.validation_steps}")
        if self.token_budget < 0 or 0 < self.token_budget < self.max_seq_length:
            raise ValueError(
                f"--token-budget {self.token_budget} cannot hold one example of up to "
                f"--max-seq-length {self.max_seq_length} tokens; pass a budget >= "
                f"{self.max_seq_length}, or 0 for the device's default"
            )
        for name in ("lora_r", "lora_alpha", "num_virtual_tokens", "per_device_batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}"
                )
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")
        if self.learning_rate < 0:
            raise ValueError(
                f"--learning-rate must be >= 0 (0 picks the method's default), got {self.learning_rate}"
            )

    @property
    def resolved_learning_rate(self) -> float:
        return self.learning_rate or DEFAULT_LEARNING_RATES[self.method]

    @property
    def resolved_optim(self) -> str:
        if self.optim != "auto":
            return self.optim
        return "paged_adamw_8bit" if self.method is common.PeftMethod.QLORA else "adamw_torch"

    def identity(self) -> dict[str, Any]:
        """What must not change between a run and its resumption: the arguments (paths and
        --merge may change), the data's content and the base model's identity."""
        volatile = {
            "output_dir",
            "output_data_dir",
            "checkpoint_dir",
            "merge",
            "train_dir",
            "validation_dir",
            "model_name_or_path",
            "logging_steps",
            "validation_steps",
            "dataset_version",  # named by the data's content below
            "attention",  # implementations of the same attention
        }
        stable = {k: str(v) for k, v in asdict(self).items() if k not in volatile}
        stable["data"] = {
            "train": content_hash(self.train_dir),
            "validation": content_hash(self.validation_dir),
        }
        stable["base_model"] = base_model_identity(self.model_name_or_path)
        return stable

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()


def content_hash(split_dir: str) -> str:
    try:
        return hashlib.sha256(common.split_file(split_dir).read_bytes()).hexdigest()
    except (FileNotFoundError, OSError):
        return "none"  # no such split (validation is optional): nothing to tell runs apart by


def base_model_identity(name_or_path: str) -> str:
    """A base model as resume cares about it: a folder (a job's channel, whose path may
    change) by its config and the names and sizes of its files; a hub id by itself."""
    folder = Path(name_or_path)
    if not folder.is_dir():
        return name_or_path
    config = folder / "config.json"
    listing = sorted(
        (p.relative_to(folder).as_posix(), p.stat().st_size)
        for p in folder.rglob("*")
        if p.is_file()
    )
    content = (config.read_text(encoding="utf-8") if config.is_file() else "") + json.dumps(listing)
    return hashlib.sha256(content.encode()).hexdigest()


class NonFiniteError(RuntimeError):
    pass


# --- data ----------------------------------------------------------------------------------


@dataclass
class EncodingStats:
    examples: int = 0
    truncated_inputs: int = 0
    truncated_targets: int = 0


def encode_causal(
    tokenizer: Any,
    dialogue: str,
    summary: str,
    *,
    max_seq_length: int,
    max_target_tokens: int,
    stats: EncodingStats,
) -> dict[str, list[int]]:
    """input_ids = prompt + summary + EOS; labels mask the prompt so loss is on the summary only."""
    chat = bool(getattr(tokenizer, "chat_template", None))
    target = common.target_ids(tokenizer, summary, chat=chat)
    if len(target) > max_target_tokens:
        target = [*target[: max_target_tokens - 1], tokenizer.eos_token_id]
        stats.truncated_targets += 1
    prompt = common.prompt_ids(tokenizer, dialogue)
    overflow = len(prompt) + len(target) - max_seq_length
    if overflow > 0:
        # Cut the dialogue, not the template around it, so the prompt keeps its format.
        n_dialogue = len(common.plain_text_ids(tokenizer, dialogue))
        while overflow > 0:
            n_dialogue -= overflow
            if n_dialogue <= 0:
                raise ValueError(
                    f"--max-seq-length {max_seq_length} leaves no room for the dialogue; raise it"
                )
            prompt = common.prompt_ids(
                tokenizer, common.truncate_words_to_tokens(tokenizer, dialogue, n_dialogue)
            )
            overflow = len(prompt) + len(target) - max_seq_length
        stats.truncated_inputs += 1
    stats.examples += 1
    return {
        "input_ids": prompt + target,
        "labels": [-100] * len(prompt) + target,
        "attention_mask": [1] * (len(prompt) + len(target)),
    }


def encode_seq2seq(
    tokenizer: Any,
    dialogue: str,
    summary: str,
    *,
    max_seq_length: int,
    max_target_tokens: int,
    stats: EncodingStats,
) -> dict[str, list[int]]:
    # The prefix holds no control tokens and the data's are text: split them all.
    source = tokenizer(
        common.render_prompt(tokenizer, dialogue, seq2seq=True),
        truncation=True,
        max_length=max_seq_length,
        split_special_tokens=True,
    )
    labels = tokenizer(
        text_target=summary,
        truncation=True,
        max_length=max_target_tokens,
        split_special_tokens=True,
    )["input_ids"]
    stats.truncated_inputs += len(source["input_ids"]) == max_seq_length
    stats.truncated_targets += len(labels) == max_target_tokens
    stats.examples += 1
    return {
        "input_ids": source["input_ids"],
        "attention_mask": source["attention_mask"],
        "labels": labels,
    }


def read_split(path: str | Path) -> list[dict[str, Any]]:
    rows = common.read_jsonl(common.split_file(path))
    if not rows:
        raise ValueError(f"{path}: the split is empty; check the preprocess step's manifest")
    return rows


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict[str, list[int]]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return self.rows[index]


def plain_positions(method: common.PeftMethod, seq2seq: bool) -> bool:
    """Whether each input position is a token of the example: peft's prompt tuning prepends
    virtual tokens per row (and ignores position_ids), and a seq2seq decoder's labels are not
    shifted inputs."""
    return not seq2seq and method is not common.PeftMethod.PROMPT_TUNING


def uses_padding_free_batches(method: common.PeftMethod, seq2seq: bool, batching: Batching) -> bool:
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
        self, rows: list[dict[str, Any]], tokenizer: Any, args: TrainArguments, stats: EncodingStats
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
        self, rows: list[dict[str, Any]], tokenizer: Any, args: TrainArguments, stats: EncodingStats
    ) -> list[dict[str, list[int]]]:
        encode = encode_seq2seq if self.seq2seq else encode_causal
        return [
            encode(
                tokenizer,
                row[common.INPUT_KEY],
                row[common.TARGET_KEY],
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


# --- model ---------------------------------------------------------------------------------


def build_model(args: TrainArguments, dtype: torch.dtype):
    from peft import (
        LoraConfig,
        PromptTuningConfig,
        PromptTuningInit,
        TaskType,
        get_peft_model,
        prepare_model_for_kbit_training,
    )

    quantize = args.method is common.PeftMethod.QLORA
    # Full fine-tuning keeps fp32 master weights (mixed precision runs through autocast);
    # adapters train on a base stored in the compute dtype.
    model = common.load_model(
        args.model_name_or_path,
        quantize_4bit=quantize,
        dtype=dtype if args.method.is_adapter else torch.float32,
    )
    model.config.use_cache = False
    seq2seq = common.is_seq2seq(model.config)
    task_type = TaskType.SEQ_2_SEQ_LM if seq2seq else TaskType.CAUSAL_LM
    if quantize:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=args.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    if args.method.is_lora:
        modules = (
            args.target_modules
            if args.target_modules == "all-linear"
            else [m.strip() for m in args.target_modules.split(",") if m.strip()]
        )
        config = LoraConfig(
            r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            target_modules=modules,
            bias="none",
            task_type=task_type,
        )
        return get_peft_model(model, config), seq2seq
    if args.method is common.PeftMethod.PROMPT_TUNING:
        config = PromptTuningConfig(
            task_type=task_type,
            prompt_tuning_init=PromptTuningInit.TEXT,
            prompt_tuning_init_text=args.prompt_tuning_init_text,
            num_virtual_tokens=args.num_virtual_tokens,
            tokenizer_name_or_path=args.model_name_or_path,
        )
        return get_peft_model(model, config), seq2seq
    return model, seq2seq


def lora_lineage(model: Any) -> dict[str, Any]:
    config = getattr(model, "peft_config", {}).get("default")
    if config is None:
        return {}
    lineage: dict[str, Any] = {
        "peft_type": str(
            config.peft_type.value if hasattr(config.peft_type, "value") else config.peft_type
        )
    }
    if hasattr(config, "r"):
        lineage.update(
            r=config.r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=sorted(config.target_modules),
        )
    if hasattr(config, "num_virtual_tokens"):
        lineage.update(num_virtual_tokens=config.num_virtual_tokens)
    return lineage


# --- loss guard and evaluation -------------------------------------------------------------


def next_token_labels(labels: torch.Tensor) -> torch.Tensor:
    """The label each position predicts (the next token's), -100 where there is none."""
    return torch.nn.functional.pad(labels[..., 1:], (0, 1), value=-100)


def supervised_positions(labels: torch.Tensor) -> torch.Tensor:
    """Boolean (batch, length) mask of the positions whose next token is a summary token."""
    return next_token_labels(labels) != -100


def summary_token_loss(
    outputs: Any, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None
) -> torch.Tensor:
    """Cross-entropy of logits computed only at `supervised_positions(labels)` (flattened, in
    order), reduced exactly as the model's own causal-LM loss reduces the full logits."""
    from transformers.loss.loss_utils import ForCausalLMLoss

    targets = next_token_labels(labels)
    logits = outputs["logits"]
    return ForCausalLMLoss(
        logits,
        None,
        vocab_size=logits.shape[-1],
        num_items_in_batch=num_items_in_batch,
        shift_labels=targets[targets != -100],
    )


def accepts_logits_to_keep(model: Any) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


class GuardedTrainer(Trainer):
    """Stops at the first non-finite loss instead of training on garbage.

    With `summary_logits_only`, the LM head runs only at the positions that predict a summary
    token: on dialogue data that is ~1/6 of the positions, and the head (vocabulary x hidden)
    is the largest matrix of a small model. Prompt positions carry no loss, so the gradients
    are the same; the logits tensor, in fp32 for the loss, shrinks by as much.
    """

    def __init__(
        self,
        *args: Any,
        summary_logits_only: bool = False,
        batch_sampler: TokenBudgetSampler | None = None,
        **kwargs: Any,
    ) -> None:
        if summary_logits_only:
            kwargs["compute_loss_func"] = summary_token_loss
        super().__init__(*args, **kwargs)
        self.summary_logits_only = summary_logits_only
        self.batch_sampler = batch_sampler

    def get_train_dataloader(self) -> torch.utils.data.DataLoader:
        """Token-budget micro-batches when a sampler is given. accelerate shards the batches
        across data-parallel ranks; the Trainer counts the summary tokens of every micro-batch
        of an optimizer step (on every rank) and the loss divides by that count, so a step's
        loss and gradients are per target token whatever the micro-batches hold."""
        if self.batch_sampler is None:
            return super().get_train_dataloader()
        loader = torch.utils.data.DataLoader(
            self.train_dataset,
            batch_sampler=self.batch_sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
        return self.accelerator.prepare(loader)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.summary_logits_only and "labels" in inputs:
            inputs = {**inputs, "logits_to_keep": supervised_positions(inputs["labels"])}
        result = super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )
        loss = result[0] if return_outputs else result
        if not torch.isfinite(loss.detach()).all():
            raise NonFiniteError(
                f"non-finite training loss ({loss.detach().float().mean().item()}) at step {self.state.global_step + 1}; "
                "lower --learning-rate, use --precision fp32, or check the data"
            )
        return result


class GradientNormGuard(TrainerCallback):
    """Checks the clipped gradients before each optimizer step: clipping an infinite norm
    yields NaN gradients, which AdamW would write into the weights."""

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grads = [
            p.grad.detach().float().norm()
            for p in model.parameters()
            if p.requires_grad and p.grad is not None
        ]
        if grads:
            norm = torch.stack(grads).norm()
            if not torch.isfinite(norm):
                raise NonFiniteError(
                    f"non-finite gradient norm ({norm.item()}) at step {state.global_step + 1}; "
                    "lower --learning-rate or --max-grad-norm, or use --precision fp32"
                )
        return control


class SealCheckpoints(TrainerCallback):
    """Writes each checkpoint's seal (its files' digests) once the Trainer has saved it
    (on_save runs after every file, trainer_state.json included, is written)."""

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            seal_checkpoint(folder)
        return control


VALIDATION_LOSS = "validation_loss"


class LossCurves(TrainerCallback):
    """Sends the training loss at every logged step to experiment tracking, and measures the
    validation loss every `--validation-steps` steps. Validation points go into the Trainer's
    log history, which checkpoints keep, so a resumed run's curve is whole."""

    def __init__(
        self, validation_loss: Callable[[], float], every: int, log: tracking.MetricLogger
    ) -> None:
        self.validation_loss = validation_loss
        self.every = every
        self.log = log
        self.validation_seconds = 0.0  # not training: kept out of the throughput

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs and state.is_world_process_zero:
            self.log(
                {
                    "train_loss": logs["loss"],
                    "learning_rate": logs.get("learning_rate"),
                    "grad_norm": logs.get("grad_norm"),
                },
                state.global_step,
            )
        return control

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if self.every and step % self.every == 0 and step < state.max_steps:
            started = time.perf_counter()
            # Every rank computes it (the same value): a rank that skipped it would only wait
            # for the others at the next step's gradient all-reduce.
            loss = self.validation_loss()
            self.validation_seconds += time.perf_counter() - started
            state.log_history.append({VALIDATION_LOSS: loss, "step": step})
            if state.is_world_process_zero:
                logger.info("step %d: validation loss %.4f", step, loss)
                self.log({VALIDATION_LOSS: loss}, step)
        return control


class ProgressLog(TrainerCallback):
    """One line per logged step: the step out of the run's steps, the loss, and the time left
    at the pace so far (Hugging Face's own progress bar only shows on a terminal)."""

    def __init__(self) -> None:
        self.started = 0.0
        self.first_step = 0  # a resumed run's pace counts the steps it ran itself

    def on_train_begin(self, args, state, control, **kwargs):
        self.started, self.first_step = time.perf_counter(), state.global_step
        if state.is_world_process_zero:
            logger.info("training: %d optimizer steps", state.max_steps)
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs and state.is_world_process_zero:
            logger.info(
                "step %s, loss %.4f",
                common.progress(
                    state.global_step,
                    state.max_steps,
                    time.perf_counter() - self.started,
                    since=self.first_step,
                ),
                float(logs["loss"]),
            )
        return control


def loss_curves(
    log_history: list[dict[str, Any]], before: float, after: float, last_step: int
) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """The training loss per logged step, and the validation loss from step 0 to the end."""
    training = [{"step": e["step"], "loss": e["loss"]} for e in log_history if "loss" in e]
    validation = [{"step": 0, "loss": before}]
    validation += [
        {"step": e["step"], "loss": e[VALIDATION_LOSS]}
        for e in log_history
        if VALIDATION_LOSS in e and 0 < e["step"] < last_step
    ]
    validation.append({"step": last_step, "loss": after})
    return training, validation


def target_token_loss(
    model: Any,
    rows: list[dict[str, list[int]]],
    collator: Any,
    batches: list[list[int]],
    *,
    seq2seq: bool,
    summary_logits_only: bool = False,
) -> float:
    """Mean cross-entropy over the summary tokens of `rows`, computed in `batches` (row
    indices); with `summary_logits_only` the LM head runs only where a summary token is
    predicted (same value, less work)."""
    device = next(p.device for p in model.parameters())
    total, count = 0.0, 0
    with common.evaluation_mode(model):
        for indices in batches:
            features = [rows[i] for i in indices]
            batch = {k: v.to(device) for k, v in collator(features).items()}
            labels = batch["labels"]
            n = int((labels != -100).sum() if seq2seq else (labels[..., 1:] != -100).sum())
            # No cache: with one, transformers would not detect packed rows and examples
            # would attend to each other.
            if summary_logits_only:
                inputs = {k: v for k, v in batch.items() if k != "labels"}
                outputs = model(
                    **inputs, use_cache=False, logits_to_keep=supervised_positions(labels)
                )
                loss = summary_token_loss(outputs, labels)
            else:
                loss = model(**batch, use_cache=False).loss
            total += float(loss) * n
            count += n
    return total / count if count else float("nan")


# --- checkpoints ---------------------------------------------------------------------------


def checkpoint_step(path: Path) -> int | None:
    prefix, _, step = path.name.partition("-")
    return int(step) if prefix == "checkpoint" and step.isdigit() else None


def file_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file of a checkpoint but the seal itself."""
    digests = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != CHECKPOINT_SEAL:
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            digests[path.relative_to(folder).as_posix()] = digest.hexdigest()
    return digests


def seal_checkpoint(folder: Path) -> None:
    contracts.write_json_atomic(folder / CHECKPOINT_SEAL, file_digests(folder))


def damage(folder: Path) -> str | None:
    """Why a checkpoint cannot be resumed from, or None when its files are the ones sealed."""
    seal = folder / CHECKPOINT_SEAL
    if not seal.is_file():
        return "its save did not finish (no seal)"
    try:
        sealed = json.loads(seal.read_text())
    except (OSError, ValueError) as err:
        return f"its seal is unreadable ({err})"
    found = file_digests(folder)
    changed = sorted(
        name for name in sealed.keys() | found.keys() if sealed.get(name) != found.get(name)
    )
    return f"its files differ from the seal ({', '.join(changed)})" if changed else None


def newest_complete_checkpoint(directory: Path) -> Path | None:
    """The newest checkpoint whose files are those its save sealed. A spot interruption
    mid-save leaves a folder without a seal, and storage or a sync can damage one later (a
    truncated weights file would crash every rerun): such folders are removed, so the run
    falls back to the previous good checkpoint, or starts over."""
    if not directory.is_dir():
        return None
    steps = sorted(
        ((step, path) for path in directory.iterdir()
         if (step := checkpoint_step(path)) is not None and path.is_dir()),
        reverse=True,
    )  # fmt: skip
    for _, path in steps:
        problem = damage(path)
        if problem is None:
            return path
        logger.warning("removing checkpoint %s: %s", path, problem)
        shutil.rmtree(path, ignore_errors=True)
    return None


def check_run_config(checkpoint_dir: Path, args: TrainArguments, *, is_main: bool) -> None:
    path = checkpoint_dir / RUN_CONFIG_FILE
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous["fingerprint"] != args.fingerprint():
            earlier, now = previous.get("identity", {}), args.identity()
            differing = sorted(k for k in now if earlier.get(k) != now[k]) or ["unknown"]
            raise ValueError(
                f"{checkpoint_dir} holds checkpoints of another run (differing: "
                f"{', '.join(differing)}); resume with the same arguments, data and base model, "
                "or use an empty --checkpoint-dir"
            )
    elif is_main:
        contracts.write_json_atomic(
            path,
            {
                "fingerprint": args.fingerprint(),
                "identity": args.identity(),
                "arguments": {k: str(v) for k, v in asdict(args).items()},
            },
        )


# --- the run -------------------------------------------------------------------------------


class FineTuneRecipe:
    """One fine-tuning run: construction loads the model and encodes the data through a data
    layer, `train` runs (or resumes) the Trainer and measures, `save` writes the artifacts.
    Tests drive the steps one by one."""

    def __init__(
        self,
        args: TrainArguments,
        data: DataLayer | None = None,
        metric_log: tracking.MetricLogger | None = None,
    ) -> None:
        self.args = args
        self.metric_log = metric_log or tracking.MetricLogger(None)
        torch.manual_seed(args.seed)
        if not torch.cuda.is_available():
            # Random-init and small-magnitude weights fill CPU backward passes with denormals (10x slower).
            torch.set_flush_denormal(True)
        self.dtype = common.resolve_dtype(args.precision)
        self.tokenizer = common.load_tokenizer(args.model_name_or_path)
        self.model, self.seq2seq = build_model(args, self.dtype)
        # Validation loss is always measured on the project's batches, whatever trains.
        summary_batches = SummaryBatches(
            self.seq2seq, uses_padding_free_batches(args.method, self.seq2seq, args.batching)
        )
        self.data: DataLayer = summary_batches if data is None else data

        self.stats = EncodingStats()
        self.train_rows = self.data.encode(
            read_split(args.train_dir), self.tokenizer, args, self.stats
        )
        self.validation_rows = summary_batches.encode(
            read_split(args.validation_dir), self.tokenizer, args, EncodingStats()
        )
        if args.validation_max_examples > 0:
            self.validation_rows = self.validation_rows[: args.validation_max_examples]
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        # Packed rows: attention within each example only, not over the whole row.
        self.attention = (
            packed_attention.use_packed_attention(base)
            if self.data.padding_free and args.attention is Attention.AUTO
            else base.config._attn_implementation
        )
        self.collator = TokenCountingCollator(self.data.collator(self.tokenizer, base, args))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.token_budget = resolved_token_budget(args.token_budget, device, args.max_seq_length)
        self.batch_sampler = (
            None
            if self.data.batch_cost is None
            else TokenBudgetSampler(
                [len(row["input_ids"]) for row in self.train_rows],
                budget=self.token_budget,
                cost=self.data.batch_cost,
                max_examples=args.per_device_batch_size,
                seed=args.seed,
            )
        )
        # Validation in the same budget, in order: its memory is bounded like a step's.
        self.validation_batches = budget_batches(
            [len(row["input_ids"]) for row in self.validation_rows],
            list(range(len(self.validation_rows))),
            budget=self.token_budget,
            cost=summary_batches.batch_cost,
            max_examples=args.per_device_batch_size,
        )
        self.curves = LossCurves(self.validation_loss, args.validation_steps, self.metric_log)
        self.eval_collator = summary_batches.collator(self.tokenizer, base, args)
        self.trainer = GuardedTrainer(
            model=self.model,
            args=self._training_arguments(),
            train_dataset=ListDataset(self.train_rows),
            data_collator=self.collator,
            processing_class=self.tokenizer,
            callbacks=[
                GradientNormGuard(),
                SealCheckpoints(),
                self.curves,
                ProgressLog(),
            ],
            summary_logits_only=self.summary_logits_only,
            batch_sampler=self.batch_sampler,
        )

    @property
    def computes_summary_logits_only(self) -> bool:
        """Whether the LM head can run on the summary-predicting positions alone."""
        return plain_positions(self.args.method, self.seq2seq) and accepts_logits_to_keep(
            self.model
        )

    @property
    def summary_logits_only(self) -> bool:
        """Whether training computes the LM head only where a summary token is predicted."""
        return self.data.summary_logits_only and self.computes_summary_logits_only

    def _training_arguments(self) -> TrainingArguments:
        args = self.args
        return TrainingArguments(
            output_dir=args.checkpoint_dir,
            num_train_epochs=args.epochs,
            max_steps=args.max_steps,
            per_device_train_batch_size=args.per_device_batch_size,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            learning_rate=args.resolved_learning_rate,
            lr_scheduler_type=args.lr_scheduler,
            warmup_steps=args.warmup_ratio,  # a float below 1 is a share of the steps
            weight_decay=args.weight_decay,
            max_grad_norm=args.max_grad_norm,
            optim=args.resolved_optim,
            bf16=self.dtype == torch.bfloat16,
            use_cpu=not torch.cuda.is_available(),
            activation_checkpointing=args.gradient_checkpointing,
            activation_checkpointing_kwargs={"use_reentrant": False},
            logging_steps=args.logging_steps,
            logging_first_step=True,
            save_strategy="steps" if args.save_steps > 0 else "no",
            save_steps=max(1, args.save_steps),
            save_total_limit=args.save_total_limit,
            eval_strategy="no",
            seed=args.seed,
            data_seed=args.seed,
            remove_unused_columns=False,
            train_sampling_strategy=self.data.sampling_strategy,
            dataloader_num_workers=0,
            ddp_find_unused_parameters=False,
            disable_tqdm=not sys.stderr.isatty(),
            report_to="none",
            # Each rank's loss divides by the summary tokens of the whole step on every rank
            # (and is scaled back by the rank count, which DDP's gradient mean undoes).
            average_tokens_across_devices=True,
        )

    @property
    def is_main_process(self) -> bool:
        return self.trainer.is_world_process_zero()

    def validation_loss(self) -> float:
        return target_token_loss(
            self.model,
            self.validation_rows,
            self.eval_collator,
            self.validation_batches,
            seq2seq=self.seq2seq,
            summary_logits_only=self.computes_summary_logits_only,
        )

    def train(self) -> dict[str, Any]:
        args = self.args
        checkpoint_dir = Path(args.checkpoint_dir)
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        check_run_config(checkpoint_dir, args, is_main=self.is_main_process)
        resume_from = newest_complete_checkpoint(checkpoint_dir)

        eval_loss_before = self.validation_loss()
        self.metric_log({VALIDATION_LOSS: eval_loss_before}, 0)
        common.assert_4bit_weights_trainable(self.model)
        if resume_from is not None:
            logger.info(
                "resuming from %s (step %s)", resume_from.name, checkpoint_step(resume_from)
            )
        started = time.perf_counter()
        result = self.trainer.train(
            resume_from_checkpoint=str(resume_from) if resume_from else None
        )
        # Training alone: validation passes during training are not part of its throughput.
        runtime = time.perf_counter() - started - self.curves.validation_seconds
        eval_loss_after = self.validation_loss()
        state = self.trainer.state
        training_curve, validation_curve = loss_curves(
            state.log_history, eval_loss_before, eval_loss_after, state.global_step
        )
        trainable, total = common.count_parameters(self.model)
        metrics = {
            "method": args.method.value,
            "base_model": args.model_name_or_path,
            "model_kind": "seq2seq" if self.seq2seq else "causal",
            "trainable_params": trainable,
            "total_params": total,
            "trainable_percent": 100.0 * trainable / total,
            "train_runtime_s": runtime,
            "global_step": self.trainer.state.global_step,
            "resumed_from_step": checkpoint_step(resume_from) if resume_from else None,
            "train_examples": len(self.train_rows),
            "real_tokens": self.collator.real_tokens,
            "processed_tokens": self.collator.processed_tokens,
            "tokens_per_second": self.collator.real_tokens / runtime if runtime > 0 else 0.0,
            "non_pad_fraction": self.collator.non_pad_fraction,
            "padding_free": self.data.padding_free,
            "summary_logits_only": self.summary_logits_only,
            "attention": self.attention,
            "final_loss": training_curve[-1]["loss"] if training_curve else None,
            "mean_train_loss": result.training_loss,
            "eval_loss_before": eval_loss_before,
            "eval_loss_after": eval_loss_after,
            "truncated_inputs": self.stats.truncated_inputs,
            "truncated_targets": self.stats.truncated_targets,
            "learning_rate": args.resolved_learning_rate,
            "optimizer": args.resolved_optim,
            "precision": str(self.dtype).removeprefix("torch."),
            "world_size": self.trainer.args.world_size,
            "adapter": lora_lineage(self.model),
            "epochs": args.epochs,
            "max_steps": args.max_steps,
            "per_device_batch_size": args.per_device_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "seed": args.seed,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "dataset_version": args.dataset_version or None,
            "train_data_sha256": content_hash(args.train_dir),
            "loss_curve": training_curve,
            "validation_curve": validation_curve,
            **common.peak_memory(),
        }
        self.metric_log(
            {
                VALIDATION_LOSS: eval_loss_after,
                "train_runtime_s": runtime,
                "tokens_per_second": metrics["tokens_per_second"],
                "peak_memory_bytes": metrics.get("peak_memory_bytes"),
                "non_pad_fraction": metrics["non_pad_fraction"],
            },
            state.global_step,
        )
        return metrics

    def save(self, metrics: dict[str, Any]) -> None:
        if self.is_main_process:
            save_outputs(self.args, self.trainer, self.tokenizer, metrics)


def tracked_params(args: TrainArguments) -> dict[str, Any]:
    """What an MLflow run records of a training run's settings."""
    return {
        "method": args.method.value,
        "base_model": args.model_name_or_path,
        "dataset_version": args.dataset_version,
        "learning_rate": args.resolved_learning_rate,
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "per_device_batch_size": args.per_device_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "optimizer": args.resolved_optim,
        "precision": args.precision.value,
        "seed": args.seed,
        **(
            {"lora_r": args.lora_r, "lora_alpha": args.lora_alpha, "target_modules": "all-linear"}
            if args.method.is_lora
            else {}
        ),
        **(
            {"num_virtual_tokens": args.num_virtual_tokens}
            if args.method is common.PeftMethod.PROMPT_TUNING
            else {}
        ),
    }


def train(args: TrainArguments) -> dict[str, Any]:
    with tracking.run(f"train-{args.method.value}", params=tracked_params(args)) as tracked:
        recipe = FineTuneRecipe(args, metric_log=tracking.MetricLogger(tracked))
        metrics = recipe.train()
        metrics["tracking_run_id"] = tracked.run_id if tracked else None
        recipe.save(metrics)
        if tracked is not None:
            tracked.log_artifact(contracts.TRAINING_METRICS.path(args.output_dir))
    return metrics


def save_outputs(
    args: TrainArguments, trainer: Trainer, tokenizer: Any, metrics: dict[str, Any]
) -> None:
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.method.is_adapter:
        trainer.model.save_pretrained(out)  # adapter_config.json + adapter_model.safetensors only
    else:
        trainer.save_model(str(out))
    tokenizer.save_pretrained(out)
    if args.method.is_adapter:
        # peft writes an empty model card template; this one says what the adapter is.
        (out / "README.md").write_text(
            model_card.adapter_readme(
                metrics,
                model_card.prompt_format(tokenizer, seq2seq=metrics["model_kind"] == "seq2seq"),
            ),
            encoding="utf-8",
        )
    if args.merge:
        metrics["merged_dir"] = str(merge_adapter(args, out))
    contracts.TRAINING_METRICS.write(out, metrics)
    contracts.TRAINING_METRICS.write(args.output_data_dir, metrics)


def merge_adapter(args: TrainArguments, adapter_dir: Path) -> Path:
    """Merge into a freshly loaded unquantized base: merging into the 4-bit base would
    re-quantize the sum and change the model's outputs."""
    dtype = common.resolve_dtype(args.precision) if torch.cuda.is_available() else torch.float32
    merged = common.load_peft_model(
        args.model_name_or_path, str(adapter_dir), quantize_4bit=False, dtype=dtype
    ).merge_and_unload()
    target = adapter_dir / "merged"
    merged.save_pretrained(target)
    common.load_tokenizer(args.model_name_or_path).save_pretrained(target)
    return target


def main(argv: list[str] | None = None) -> int:
    common.setup_logging()
    try:
        (args,) = HfArgumentParser(TrainArguments).parse_args_into_dataclasses(args=argv)
        common.use_hub_token_from_secrets_manager()
        metrics = train(args)
    except (ValueError, FileNotFoundError, NonFiniteError) as err:
        logger.error("error: %s", err)
        write_failure_reason(str(err))
        return 2
    summary = {
        k: metrics[k]
        for k in (
            "method",
            "trainable_params",
            "total_params",
            "train_runtime_s",
            "final_loss",
            "eval_loss_before",
            "eval_loss_after",
            "non_pad_fraction",
        )
    }
    logger.info("done %s", json.dumps(summary))
    return 0


def write_failure_reason(message: str) -> None:
    """SageMaker shows /opt/ml/output/failure as the job's failure reason."""
    failure_dir = Path("/opt/ml/output")
    if failure_dir.is_dir():
        (failure_dir / "failure").write_text(message[:1000], encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
