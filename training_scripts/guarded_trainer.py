"""The Trainer as the recipe runs it: the loss on summary tokens only (the LM head computed only
where a summary token is predicted), token-budget batches, a stop at the first non-finite loss
or gradient norm, and the callbacks that report progress and loss curves."""

from __future__ import annotations

import inspect
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if __package__:  # imported as part of the training_scripts package (pipeline, tests, benchmarks)
    from . import measurements, model_loading, tracking
else:  # run as a file in the SageMaker job: sibling modules are top-level
    import measurements
    import model_loading
    import tracking

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

if TYPE_CHECKING:
    from .train import TrainArguments

logger = logging.getLogger("train")


# The fewest optimizer steps whose adapter a gate can judge: below this a run has barely left
# its warm-up, and the verdict measures the seed more than the data (the demo's adapter trailed
# its full fine-tune by 0.086 ROUGE-L after 20 steps, 0.042 after 38). `--min-steps`' default.
FEW_STEPS = 20


class NonFiniteError(RuntimeError):
    pass


@dataclass(frozen=True)
class StepPlan:
    """How many optimizer steps a run takes on its data, and why: what --epochs alone gives,
    raised to --min-steps, or --max-steps as given."""

    steps: int
    steps_per_epoch: int
    by_epochs: int | None  # None when --max-steps decides
    min_steps: int

    @property
    def epochs(self) -> float:
        """Passes over the train split the steps make."""
        return self.steps / self.steps_per_epoch

    @property
    def raised_to_floor(self) -> bool:
        return self.by_epochs is not None and self.by_epochs < self.steps

    def describe(self) -> str:
        if self.by_epochs is None:
            why = "--max-steps"
        elif self.raised_to_floor:
            why = f"--epochs gives {self.by_epochs}, raised to --min-steps {self.min_steps}"
        else:
            why = "--epochs"
        return (
            f"{self.steps} optimizer steps, {self.epochs:.2f} epochs of "
            f"{self.steps_per_epoch} steps ({why})"
        )

    def warning(self) -> str | None:
        """Said when the run trains too little for its gate's verdict to mean anything, or
        fewer steps than its floor."""
        if self.steps < self.min_steps:
            return (
                f"{self.steps} optimizer steps, fewer than --min-steps {self.min_steps}: "
                "--max-steps overrides the floor, so the gate judges a shorter run than the "
                "recipe's; drop --max-steps to train at least the floor (the MinSteps parameter)"
            )
        if self.steps >= FEW_STEPS:
            return None
        fix = (
            "raise --max-steps, or drop it"
            if self.by_epochs is None
            else "raise --min-steps (the MinSteps parameter) or --epochs"
        )
        return (
            f"only {self.steps} optimizer steps: a model trained under {FEW_STEPS} steps "
            f"has barely left its warm-up, so its scores and the gate's verdict say little; {fix}"
        )


def plan_steps(
    *,
    epochs: float,
    max_steps: int,
    min_steps: int,
    micro_batches: int,
    world_size: int,
    accumulation: int,
) -> StepPlan:
    """The Trainer's own count of steps for --epochs, raised to `min_steps`; --max-steps > 0 as
    given. An epoch is each rank's share of the micro-batches (accelerate deals them out
    evenly, the last ranks repeating some) in optimizer steps of `accumulation`, the last one
    short."""
    per_rank = math.ceil(micro_batches / world_size)
    per_epoch = max(math.ceil(per_rank / accumulation), 1)
    if max_steps > 0:
        return StepPlan(max_steps, per_epoch, None, min_steps)
    by_epochs = math.ceil(epochs * per_epoch)
    return StepPlan(max(by_epochs, min_steps), per_epoch, by_epochs, min_steps)


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
        batch_sampler: torch.utils.data.Sampler[list[int]] | None = None,
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
    """Up front, the run's steps and why (and a warning when they are too few to judge); then
    one line per logged step: the step out of the run's steps, the loss, and the time left at
    the pace so far (Hugging Face's own progress bar only shows on a terminal)."""

    def __init__(self, plan: StepPlan) -> None:
        self.plan = plan
        self.started = 0.0
        self.first_step = 0  # a resumed run's pace counts the steps it ran itself

    def on_train_begin(self, args, state, control, **kwargs):
        self.started, self.first_step = time.perf_counter(), state.global_step
        if state.is_world_process_zero:
            logger.info("training: %s", self.plan.describe())
            if warning := self.plan.warning():
                logger.warning("%s", warning)
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs and state.is_world_process_zero:
            logger.info(
                "step %s, loss %.4f",
                measurements.progress(
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
    with model_loading.evaluation_mode(model):
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


def trainer_arguments(
    args: TrainArguments, *, steps: int, bf16: bool, sampling: str
) -> TrainingArguments:
    """The Trainer's arguments for a run of ours: its planned steps, mixed precision,
    checkpoints, logging and the data order as the run's arguments and data layer ask."""
    return TrainingArguments(
        output_dir=args.checkpoint_dir,
        max_steps=steps,
        per_device_train_batch_size=args.per_device_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=args.resolved_learning_rate,
        lr_scheduler_type=args.lr_scheduler,
        warmup_steps=args.warmup_ratio,  # a float below 1 is a share of the steps
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        optim=args.resolved_optim,
        bf16=bf16,
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
        train_sampling_strategy=sampling,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        disable_tqdm=not sys.stderr.isatty(),
        report_to="none",
        # Each rank's loss divides by the summary tokens of the whole step on every rank
        # (and is scaled back by the rank count, which DDP's gradient mean undoes).
        average_tokens_across_devices=True,
    )
