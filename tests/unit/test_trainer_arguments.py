"""The Trainer's arguments (guarded_trainer.trainer_arguments), each traced to the run's
argument, the step plan or the data layer it must come from, or to the fixed value the recipe
needs; one table for every field we set."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from training_scripts.enums import PeftMethod
from training_scripts.guarded_trainer import trainer_arguments
from training_scripts.train import TrainArguments


def run_arguments(tmp_path: Path, **overrides: Any) -> TrainArguments:
    settings: dict[str, Any] = {
        "method": PeftMethod.LORA,
        "model_name_or_path": "base",
        "checkpoint_dir": str(tmp_path / "checkpoints"),
        "per_device_batch_size": 3,
        "gradient_accumulation_steps": 5,
        "learning_rate": 0.0123,
        "lr_scheduler": "linear",
        "warmup_ratio": 0.07,
        "weight_decay": 0.03,
        "max_grad_norm": 0.7,
        "gradient_checkpointing": True,
        "logging_steps": 7,
        "save_steps": 9,
        "save_total_limit": 4,
        "seed": 17,
        "precision": "fp32",
    }
    return TrainArguments(**(settings | overrides))


def fields_of(arguments: Any, names: list[str]) -> dict[str, Any]:
    return {name: getattr(arguments, name) for name in names}


@pytest.mark.parametrize(
    ("overrides", "steps", "bf16", "sampling"),
    [
        ({}, 37, False, "group_by_length"),
        (
            {"gradient_checkpointing": False, "seed": 5, "method": PeftMethod.QLORA},
            11,
            True,
            "random",
        ),
    ],
)
def test_every_field_comes_from_the_run_the_plan_or_the_recipe(
    tmp_path: Path, overrides: dict[str, Any], steps: int, bf16: bool, sampling: str
) -> None:
    args = run_arguments(tmp_path, **overrides)
    expected = {
        # the run's arguments
        "output_dir": args.checkpoint_dir,
        "per_device_train_batch_size": 3,
        "gradient_accumulation_steps": 5,
        "learning_rate": args.resolved_learning_rate,
        "lr_scheduler_type": "linear",
        "warmup_steps": 0.07,
        "weight_decay": 0.03,
        "max_grad_norm": 0.7,
        "optim": args.resolved_optim,
        "activation_checkpointing": args.gradient_checkpointing,
        "logging_steps": 7,
        "save_steps": 9,
        "save_total_limit": 4,
        "seed": args.seed,
        "data_seed": args.seed,
        # the step plan, the precision and the data layer
        "max_steps": steps,
        "bf16": bf16,
        "train_sampling_strategy": sampling,
        # the recipe
        "use_cpu": not torch.cuda.is_available(),
        "activation_checkpointing_kwargs": {"use_reentrant": False},
        "logging_first_step": True,
        "save_strategy": "steps",
        "eval_strategy": "no",
        "remove_unused_columns": False,
        "dataloader_num_workers": 0,
        "ddp_find_unused_parameters": False,
        "disable_tqdm": not sys.stderr.isatty(),
        "report_to": [],
        "average_tokens_across_devices": True,
    }
    built = trainer_arguments(args, steps=steps, bf16=bf16, sampling=sampling)
    assert fields_of(built, list(expected)) == expected


@pytest.mark.parametrize(
    ("save_steps", "strategy", "every"), [(0, "no", 1), (1, "steps", 1), (25, "steps", 25)]
)
def test_checkpoints_are_saved_every_save_steps_or_never(
    tmp_path: Path, save_steps: int, strategy: str, every: int
) -> None:
    args = run_arguments(tmp_path, save_steps=save_steps)
    built = trainer_arguments(args, steps=30, bf16=False, sampling="random")
    assert (built.save_strategy, built.save_steps) == (strategy, every)


class Stderr:
    def __init__(self, terminal: bool) -> None:
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_bars_show_in_a_terminal_and_not_in_a_jobs_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, terminal: bool
) -> None:
    monkeypatch.setattr(sys, "stderr", Stderr(terminal))
    built = trainer_arguments(run_arguments(tmp_path), steps=3, bf16=False, sampling="random")
    assert built.disable_tqdm is not terminal
