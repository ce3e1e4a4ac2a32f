"""Fine-tune a causal or seq2seq language model to summarize dialogues: QLoRA, LoRA, prompt
tuning, or a full fine-tune baseline. This file holds the arguments, the recipe and `main`.

    python training_scripts/train.py --method qlora --model-name-or-path HuggingFaceTB/SmolLM2-135M-Instruct \
        --train-dir runs/prep/train --validation-dir runs/prep/validation --output-dir runs/adapter

The same file runs as a SageMaker training job (paths from SM_CHANNEL_TRAIN,
SM_CHANNEL_VALIDATION, SM_CHANNEL_MODEL, SM_MODEL_DIR, SM_OUTPUT_DATA_DIR; hyperparameters as
CLI arguments; under torchrun for several GPUs or instances) and on a laptop CPU. Its parts:
- trainable_model.py: qlora (4-bit NF4 base with double quantization, LoRA on all linear
  layers, paged 8-bit AdamW), lora, prompt_tuning (virtual tokens initialised from text) or
  full (the baseline); the artifacts (the adapter alone or the full model, tokenizer,
  training_metrics.json; `--merge` adds `merged/`, merged into an unquantized base).
- batching.py: the loss on summary tokens only; padding-free packed rows for causal LMs
  (attention per example, packed_attention.py), length-grouped padded batches for seq2seq
  models and prompt tuning (`--batching` chooses), micro-batches within a token budget.
- guarded_trainer.py: the LM head only where a summary token is predicted, and a stop at the
  first non-finite loss or gradient norm.
- checkpoints.py: sealed checkpoints in --checkpoint-dir (/opt/ml/checkpoints, synced to S3);
  a re-run with the same arguments resumes from the newest one whose files match their seal.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# isort: off
if __package__:  # imported as part of the training_scripts package (pipeline, tests, benchmarks)
    from . import logs  # first: it quiets bitsandbytes' import-time warning
    from . import (
        batching,
        checkpoints,
        contracts,
        enums,
        guarded_trainer,
        job_environment,
        measurements,
        model_loading,
        packed_attention,
        tasks,
        tracking,
        trainable_model,
    )
    from .batching import DEFAULT_TOKEN_BUDGETS, Attention, Batching
else:  # run as `python train.py`, as in the SageMaker job: sibling modules are top-level
    import logs  # first, as above
    import batching
    import checkpoints
    import contracts
    import enums
    import guarded_trainer
    import job_environment
    import measurements
    import model_loading
    import packed_attention
    import tasks
    import tracking
    import trainable_model
    from batching import DEFAULT_TOKEN_BUDGETS, Attention, Batching
# isort: on

import torch

logger = logging.getLogger("train")

DEFAULT_LEARNING_RATES = {
    enums.PeftMethod.QLORA: 2e-4,
    enums.PeftMethod.LORA: 2e-4,
    enums.PeftMethod.PROMPT_TUNING: 3e-2,
    enums.PeftMethod.FULL: 2e-5,
}


@dataclass
class TrainArguments:
    method: enums.PeftMethod = field(
        default=enums.PeftMethod.QLORA, metadata={"help": "qlora | lora | prompt_tuning | full"}
    )
    model_name_or_path: str = job_environment.sagemaker_path_field(
        "/opt/ml/input/data/model",
        "",
        "Base model: a hub id, or a folder (the `model` channel on SageMaker).",
        env_var="SM_CHANNEL_MODEL",
    )
    train_dir: str = job_environment.sagemaker_path_field(
        "/opt/ml/input/data/train",
        "runs/local/preprocess/train",
        "Preprocessed train split (folder or data.jsonl).",
        env_var="SM_CHANNEL_TRAIN",
    )
    validation_dir: str = job_environment.sagemaker_path_field(
        "/opt/ml/input/data/validation",
        "runs/local/preprocess/validation",
        "Preprocessed validation split; its loss is measured before and after training.",
        env_var="SM_CHANNEL_VALIDATION",
    )
    output_dir: str = job_environment.sagemaker_path_field(
        "/opt/ml/model",
        "runs/local/model",
        "Where the adapter (or full model), tokenizer and metrics are written.",
        env_var="SM_MODEL_DIR",
    )
    output_data_dir: str = job_environment.sagemaker_path_field(
        "/opt/ml/output/data",
        "runs/local/output",
        "A copy of training_metrics.json goes here (SageMaker's output.tar.gz).",
        env_var="SM_OUTPUT_DATA_DIR",
    )
    checkpoint_dir: str = job_environment.sagemaker_path_field(
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
        default=-1,
        metadata={"help": "Optimizer steps; > 0 overrides --epochs and --min-steps."},
    )
    min_steps: int = field(
        default=guarded_trainer.FEW_STEPS,
        metadata={
            "help": "At least N optimizer steps whatever --epochs gives on this data: a small "
            "dataset trains more than one pass instead of a few steps (the adapter and the "
            "full fine-tune take the same floor). Runs under "
            f"{guarded_trainer.FEW_STEPS} steps warn that their gate verdict says little."
        },
    )
    learning_rate: float = field(
        default=0.0, metadata={"help": "Peak learning rate; 0 picks the method's default."}
    )
    per_device_batch_size: int = field(
        default=8,
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
            f"({DEFAULT_TOKEN_BUDGETS['cpu']} on a CPU, {DEFAULT_TOKEN_BUDGETS['cuda']} on a GPU); "
            "--per-device-batch-size caps the examples a micro-batch holds."
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
        default=tasks.MAX_CONTEXT_TOKENS,
        metadata={
            "help": "Causal: prompt + answer tokens; seq2seq: input tokens. A longer example's "
            "longest input text is cut to fit (the template around it stays whole)."
        },
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
    precision: enums.Precision = field(
        default=enums.Precision.AUTO,
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
        default=50,
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
        self.method = enums.PeftMethod(self.method)
        self.precision = enums.Precision(self.precision)
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
        if self.min_steps < 0:
            raise ValueError(f"--min-steps must be >= 0, got {self.min_steps}")
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
        return "paged_adamw_8bit" if self.method is enums.PeftMethod.QLORA else "adamw_torch"


class FineTuneRecipe:
    """One fine-tuning run in named steps: `setup` loads the model (`load_model`), encodes the
    data through a data layer (`encode_data`) and builds the Trainer (`build_trainer`); `train`
    runs (or resumes) it and measures; `save` writes the artifacts. Constructing one loads
    nothing, so tests and benchmarks can drive (or replace) the steps one by one."""

    def __init__(
        self,
        args: TrainArguments,
        data: batching.DataLayer | None = None,
        metric_log: tracking.MetricLogger | None = None,
    ) -> None:
        self.args = args
        self.custom_data = data
        self.metric_log = metric_log or tracking.MetricLogger(None)
        self.dtype = model_loading.resolve_dtype(args.precision)

    def setup(self) -> FineTuneRecipe:
        self.load_model()
        self.encode_data()
        self.build_trainer()
        return self

    def load_model(self) -> None:
        """The tokenizer and the model the method trains (`trainable_model.build_model`), its
        new weights (LoRA, virtual tokens) drawn from --seed."""
        args = self.args
        torch.manual_seed(args.seed)
        if not torch.cuda.is_available():
            # Random-init and small-magnitude weights fill CPU backward passes with denormals (10x slower).
            torch.set_flush_denormal(True)
        self.tokenizer = model_loading.load_tokenizer(args.model_name_or_path)
        self.model, self.seq2seq = trainable_model.build_model(args, self.dtype)
        # Validation loss is always measured on the project's batches, whatever trains.
        self.summary_batches = batching.SummaryBatches(
            self.seq2seq,
            batching.uses_padding_free_batches(args.method, self.seq2seq, args.batching),
        )
        self.data: batching.DataLayer = self.custom_data or self.summary_batches

    @property
    def base_model(self) -> Any:
        return self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model

    def encode_data(self) -> None:
        """Both splits as token rows, and how they are batched: the train split through the
        data layer, the validation split through the project's batches, in the same budget."""
        args = self.args
        self.stats = batching.EncodingStats()
        self.task = batching.split_task(args.train_dir, args.validation_dir)
        self.train_rows = self.data.encode(
            batching.read_split(args.train_dir), self.task, self.tokenizer, args, self.stats
        )
        self.validation_rows = self.summary_batches.encode(
            batching.read_split(args.validation_dir),
            self.task,
            self.tokenizer,
            args,
            batching.EncodingStats(),
        )
        if args.validation_max_examples > 0:
            self.validation_rows = self.validation_rows[: args.validation_max_examples]
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.token_budget = batching.resolved_token_budget(
            args.token_budget, device, args.max_seq_length
        )
        self.batch_sampler = (
            None
            if self.data.batch_cost is None
            else batching.TokenBudgetSampler(
                [len(row["input_ids"]) for row in self.train_rows],
                budget=self.token_budget,
                cost=self.data.batch_cost,
                max_examples=args.per_device_batch_size,
                seed=args.seed,
            )
        )
        # Validation in the same budget, in order: its memory is bounded like a step's.
        self.validation_batches = batching.budget_batches(
            [len(row["input_ids"]) for row in self.validation_rows],
            list(range(len(self.validation_rows))),
            budget=self.token_budget,
            cost=self.summary_batches.batch_cost,
            max_examples=args.per_device_batch_size,
        )

    def build_trainer(self) -> None:
        """The attention packed rows need, the collators, and the guarded Trainer."""
        args, base = self.args, self.base_model
        # Packed rows: attention within each example only, not over the whole row.
        self.attention = (
            packed_attention.use_packed_attention(base)
            if self.data.padding_free and args.attention is Attention.AUTO
            else base.config._attn_implementation
        )
        self.collator = batching.TokenCountingCollator(
            self.data.collator(self.tokenizer, base, args)
        )
        self.eval_collator = self.summary_batches.collator(self.tokenizer, base, args)
        self.curves = guarded_trainer.LossCurves(
            self.validation_loss, args.validation_steps, self.metric_log
        )
        self.step_plan = guarded_trainer.plan_steps(
            epochs=args.epochs,
            max_steps=args.max_steps,
            min_steps=args.min_steps,
            micro_batches=self.micro_batches_per_epoch,
            world_size=int(os.environ.get("WORLD_SIZE", "1")),  # torchrun's
            accumulation=args.gradient_accumulation_steps,
        )
        self.trainer = guarded_trainer.GuardedTrainer(
            model=self.model,
            args=guarded_trainer.trainer_arguments(
                args,
                steps=self.step_plan.steps,
                bf16=self.dtype == torch.bfloat16,
                sampling=self.data.sampling_strategy,
            ),
            train_dataset=batching.ListDataset(self.train_rows),
            data_collator=self.collator,
            processing_class=self.tokenizer,
            callbacks=[
                guarded_trainer.GradientNormGuard(),
                checkpoints.SealCheckpoints(),
                self.curves,
                guarded_trainer.ProgressLog(self.step_plan),
            ],
            summary_logits_only=self.summary_logits_only,
            batch_sampler=self.batch_sampler,
        )

    @property
    def micro_batches_per_epoch(self) -> int:
        """The train split's micro-batches in one pass, over all ranks."""
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        return math.ceil(len(self.train_rows) / self.args.per_device_batch_size)

    @property
    def computes_summary_logits_only(self) -> bool:
        """Whether the LM head can run on the summary-predicting positions alone."""
        return batching.plain_positions(
            self.args.method, self.seq2seq
        ) and guarded_trainer.accepts_logits_to_keep(self.model)

    @property
    def summary_logits_only(self) -> bool:
        """Whether training computes the LM head only where a summary token is predicted."""
        return self.data.summary_logits_only and self.computes_summary_logits_only

    @property
    def is_main_process(self) -> bool:
        return self.trainer.is_world_process_zero()

    def validation_loss(self) -> float:
        return guarded_trainer.target_token_loss(
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
        checkpoints.check_run_config(checkpoint_dir, args, is_main=self.is_main_process)
        resume_from = checkpoints.newest_complete_checkpoint(checkpoint_dir)

        eval_loss_before = self.validation_loss()
        self.metric_log({guarded_trainer.VALIDATION_LOSS: eval_loss_before}, 0)
        model_loading.assert_4bit_weights_trainable(self.model)
        if resume_from is not None:
            logger.info(
                "resuming from %s (step %s)",
                resume_from.name,
                checkpoints.checkpoint_step(resume_from),
            )
        started = time.perf_counter()
        result = self.trainer.train(
            resume_from_checkpoint=str(resume_from) if resume_from else None
        )
        # Training alone: validation passes during training are not part of its throughput.
        runtime = time.perf_counter() - started - self.curves.validation_seconds
        eval_loss_after = self.validation_loss()
        state = self.trainer.state
        training_curve, validation_curve = guarded_trainer.loss_curves(
            state.log_history, eval_loss_before, eval_loss_after, state.global_step
        )
        trainable, total = model_loading.count_parameters(self.model)
        metrics = {
            "method": args.method.value,
            "base_model": args.model_name_or_path,
            "model_kind": "seq2seq" if self.seq2seq else "causal",
            "trainable_params": trainable,
            "total_params": total,
            "trainable_percent": 100.0 * trainable / total,
            "train_runtime_s": runtime,
            "global_step": self.trainer.state.global_step,
            "resumed_from_step": checkpoints.checkpoint_step(resume_from) if resume_from else None,
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
            "adapter": trainable_model.lora_lineage(self.model),
            "epochs": args.epochs,
            "max_steps": args.max_steps,
            "min_steps": args.min_steps,
            "planned_steps": self.step_plan.steps,
            "epochs_trained": self.step_plan.epochs,
            "per_device_batch_size": args.per_device_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "seed": args.seed,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "dataset_version": args.dataset_version or None,
            "train_data_sha256": checkpoints.content_hash(args.train_dir),
            "task": {"name": self.task.name, "sha256": self.task.sha256},
            "loss_curve": training_curve,
            "validation_curve": validation_curve,
            **measurements.peak_memory(),
        }
        self.metric_log(
            {
                guarded_trainer.VALIDATION_LOSS: eval_loss_after,
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
            trainable_model.save_outputs(
                self.args, self.trainer, self.tokenizer, self.task, metrics
            )


def tracked_params(args: TrainArguments) -> dict[str, Any]:
    """What an MLflow run records of a training run's settings."""
    return {
        "method": args.method.value,
        "base_model": args.model_name_or_path,
        "dataset_version": args.dataset_version,
        "learning_rate": args.resolved_learning_rate,
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "min_steps": args.min_steps,
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
            if args.method is enums.PeftMethod.PROMPT_TUNING
            else {}
        ),
    }


def train(args: TrainArguments) -> dict[str, Any]:
    with tracking.run(f"train-{args.method.value}", params=tracked_params(args)) as tracked:
        recipe = FineTuneRecipe(args, metric_log=tracking.MetricLogger(tracked)).setup()
        metrics = recipe.train()
        metrics["tracking_run_id"] = tracked.run_id if tracked else None
        recipe.save(metrics)
        if tracked is not None:
            tracked.log_artifact(contracts.TRAINING_METRICS.path(args.output_dir))
    return metrics


def main(argv: list[str] | None = None) -> int:
    logs.setup_logging()
    try:
        args = job_environment.parsed_arguments(TrainArguments, argv)
        job_environment.use_hub_token_from_secrets_manager()
        metrics = train(args)
    except (ValueError, FileNotFoundError, guarded_trainer.NonFiniteError) as err:
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


# SageMaker shows the file `failure` of this folder as the job's failure reason.
FAILURE_DIR = Path("/opt/ml/output")


def write_failure_reason(message: str) -> None:
    """The job's failure reason, where SageMaker shows it (inside a job only)."""
    if FAILURE_DIR.is_dir():
        (FAILURE_DIR / "failure").write_text(message[:1000], encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
