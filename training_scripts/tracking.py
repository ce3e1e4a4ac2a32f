"""Experiment tracking with MLflow: each training and evaluation job is one MLflow run.

On when the job's environment names a tracking server (`MLFLOW_TRACKING_URI`): a SQLite
store under runs/ in a local run, the ARN of a SageMaker managed MLflow tracking server in
the cloud (the sagemaker-mlflow plugin signs the requests with the job role). Runs go into
the experiment `MLFLOW_EXPERIMENT_NAME` (the pipeline's name). Off, every call here is a no-op.

A training run logs its parameters, the training loss at every logged step, the validation
loss, throughput and peak memory; the evaluation run logs every model's scores, the 95%
intervals of the comparisons, the gate's margins, and the report, predictions and model card
as artifacts. evaluation.json names the evaluation run and the training runs behind it, and
the registered version records them.

Only the main process of a distributed job logs. Starting a run fails the job (a tracking URI
that is set but wrong is a configuration error worth stopping for); a metric that cannot be
logged during training is a warning, not the end of a six-hour job.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__:
    from . import contracts
else:  # a sibling module inside the SageMaker job
    import contracts

# Where `mlflow ui --backend-store-uri sqlite:///...` serves a local store.
LOCAL_UI = "http://127.0.0.1:5000"
DEFAULT_EXPERIMENT = "peftops"
UNTRACKED = "none"  # the run id recorded where a job was not tracked

logger = logging.getLogger("peftops")


def enabled() -> bool:
    return bool(os.environ.get(contracts.TRACKING_URI_VARIABLE))


def is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


@dataclass(frozen=True)
class Tracked:
    """The MLflow run a job logs to."""

    run_id: str
    experiment_id: str
    experiment_name: str = ""
    tracking_uri: str = ""

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        import mlflow

        finite = {
            k: float(v)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        }
        if finite:
            mlflow.log_metrics(finite, step=step, run_id=self.run_id)

    def log_params(self, params: Mapping[str, Any]) -> None:
        import mlflow

        # MLflow's client cuts a value at its 6,000-character limit (MLFLOW_TRUNCATE_LONG_VALUES).
        mlflow.log_params({k: v for k, v in params.items() if v is not None}, run_id=self.run_id)

    def log_artifact(self, path: Path) -> None:
        import mlflow

        if path.is_file():
            mlflow.log_artifact(str(path), run_id=self.run_id)


@contextmanager
def run(
    name: str, *, params: Mapping[str, Any], tags: Mapping[str, str] | None = None
) -> Iterator[Tracked | None]:
    """An MLflow run around a job's work; None when tracking is off or this is not the main
    process. The run ends FAILED if the work raises."""
    if not enabled() or not is_main_process():
        yield None
        return
    import mlflow

    experiment = mlflow.set_experiment(
        os.environ.get(contracts.EXPERIMENT_NAME_VARIABLE) or DEFAULT_EXPERIMENT
    )
    job = os.environ.get("TRAINING_JOB_NAME") or os.environ.get("PROCESSING_JOB_NAME")
    label = os.environ.get(contracts.RUN_LABEL_VARIABLE)
    with mlflow.start_run(
        run_name=f"{label} · {name}" if label else name,
        experiment_id=experiment.experiment_id,
        tags={"peftops.step": name, **({"peftops.job": job} if job else {}), **(tags or {})},
    ) as active:
        tracked = Tracked(
            active.info.run_id,
            experiment.experiment_id,
            experiment.name,
            os.environ.get(contracts.TRACKING_URI_VARIABLE, ""),
        )
        tracked.log_params(params)
        logger.info("tracking: MLflow run %s in experiment %s", tracked.run_id, experiment.name)
        yield tracked


def local_ui_link(tracked: Tracked | None) -> str | None:
    """The run's page in `mlflow ui` over a local SQLite store; None for a tracking server
    (SageMaker's managed MLflow opens through a presigned URL) or an untracked job."""
    if tracked is None or not tracked.tracking_uri.startswith("sqlite:"):
        return None
    return f"{LOCAL_UI}/#/experiments/{tracked.experiment_id}/runs/{tracked.run_id}"


class MetricLogger:
    """Logs metrics during training, warning (once) instead of failing when a call does."""

    def __init__(self, tracked: Tracked | None) -> None:
        self.tracked = tracked
        self.warned = False

    def __call__(self, metrics: Mapping[str, Any], step: int) -> None:
        if self.tracked is None:
            return
        try:
            self.tracked.log_metrics(metrics, step=step)
        except Exception as err:  # a tracking outage must not end the training job
            if not self.warned:
                logger.warning("tracking: could not log metrics at step %s (%s)", step, err)
                self.warned = True


# --- what the evaluation logs -----------------------------------------------------------------


def evaluation_params(args: Any) -> dict[str, Any]:
    return {
        "base_model": args.base_model,
        "dataset_version": args.dataset_version,
        "max_examples": args.max_examples,
        "max_new_tokens": args.max_new_tokens,
        "baseline": "reused" if args.baseline_evaluation else "trained",
    }


def evaluation_metrics(evaluation: Mapping[str, Any]) -> dict[str, float]:
    """Every model's scores and speed, each comparison's difference and 95% bounds, the gate's
    margins and thresholds: flat names MLflow can chart and compare across runs."""
    metrics: dict[str, float] = {}
    metric = evaluation["gate"]["metric"]
    for model, entry in evaluation["models"].items():
        for key in dict.fromkeys(
            [metric, "rouge1", "rouge2", "rougeL", "rougeLsum", "generated_tokens_per_second"]
        ):
            if entry.get(key) is not None:
                metrics[f"{model}.{key}"] = entry[key]
    for name, per_metric in evaluation["comparisons"].items():
        for key, figures in per_metric.items():
            for field in ("difference", "low", "high", "min_detectable_difference"):
                metrics[f"{name}.{key}.{field}"] = figures[field]
    metrics.update(
        {f"gate.{k}": v for k, v in evaluation["gate"].items() if isinstance(v, int | float)}
    )
    # The thresholds of the evaluated task's gate (known once its test set is read).
    metrics.update({f"gate_thresholds.{k}": v for k, v in evaluation["gate_thresholds"].items()})
    metrics["test_examples"] = evaluation["test_examples"]
    return metrics


EVALUATION_ARTIFACTS = (
    "evaluation.json",
    "report.html",
    "predictions.jsonl",
    "model_card.md",
    "model_card.json",
)


def log_evaluation(tracked: Tracked | None, evaluation: Mapping[str, Any], out: Path) -> None:
    if tracked is None:
        return
    tracked.log_metrics(evaluation_metrics(evaluation))
    for name in EVALUATION_ARTIFACTS:
        tracked.log_artifact(out / name)
