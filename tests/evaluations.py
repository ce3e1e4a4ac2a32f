"""evaluation.json documents for tests, built the way evaluate.py builds them: from per-example
scores, through the same intervals and gate sections."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from training_scripts import contracts, tasks
from training_scripts.evaluate import compared

TASK = tasks.resolve_task_spec(tasks.DEFAULT_TASK)


def scored(per_example: Sequence[float], **extra: Any) -> dict[str, Any]:
    """One model's entry: every ROUGE variant with these per-example scores."""
    scores = [float(v) for v in per_example]
    mean = sum(scores) / len(scores)
    return {
        **dict.fromkeys(contracts.ROUGE_KEYS, mean),
        "per_example": dict.fromkeys(contracts.ROUGE_KEYS, scores),
        "trainable_params": 10,
        "trainable_percent": 1.0,
        **extra,
    }


def evaluation(
    *,
    adapter: Sequence[float] | float,
    full_finetune: Sequence[float] | float,
    base: Sequence[float] | float,
    **extra: Any,
) -> dict[str, Any]:
    """A stamped evaluation.json; a single number stands for that score on every example (as
    many as the sequences given hold, or 8)."""
    given = [v for v in (adapter, full_finetune, base) if not isinstance(v, int | float)]
    examples = len(given[0]) if given else 8

    def series(value: Sequence[float] | float) -> Sequence[float]:
        return [value] * examples if isinstance(value, int | float) else value

    models = {
        "base": scored(series(base)),
        "adapter": scored(series(adapter)),
        "full_finetune": scored(series(full_finetune)),
    }
    document = {
        "models": models,
        **compared(models, TASK.metric),
        "test_examples": len(series(adapter)),
        "test_set_sha256": "0" * 64,
        "baseline_source": {"kind": "trained", "test_set_matches": True},
        "gate_thresholds": {"metric_tolerance": 0.05, "min_metric_gain": 0.0},
        "tracking": {
            "evaluation_run_id": "none",
            "training_run_ids": {"adapter": "none", "full_finetune": "none"},
        },
        "task": {
            "name": TASK.name,
            "sha256": TASK.sha256,
            "spec": TASK.document(),
            "smoke_request": tasks.chat_request(TASK, "#Person1#: Hi.\n#Person2#: Hello.", 16),
        },
        **extra,
    }
    return contracts.EVALUATION.check(contracts.EVALUATION.stamp(document), "test")
