"""What passes between the jobs and the pipeline, each defined once: the files the training
scripts hand over (`manifest.json` from preprocess, `training_metrics.json` from train,
`evaluation.json` from evaluate, with their schema versions, the key paths the pipeline reads,
and the quality gate's rule), the preprocessed splits they hand each other (fields and file),
the environment the pipeline hands them (tracking, the hub token's secret), and the model card
files registration reads.

Writers and readers both go through a `FileContract`: a write is refused when a key the
pipeline reads is missing, and a read names the file and the fix when a document is from
another schema version. The pipeline definition's `JsonGet` paths, the registry's approval
check and the local runner take their paths and the gate rule from here, so they cannot drift
from what evaluate.py writes.

This module runs inside the SageMaker containers too: standard library only.
"""

from __future__ import annotations

import json
import operator
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Fields of the preprocessed splits that train.py and evaluate.py read.
INPUT_KEY = "input"
TARGET_KEY = "target"
SPLITS = ("train", "validation", "test")
SPLIT_FILE = "data.jsonl"


# The environment the pipeline hands its jobs. With a gated base model: the ARN of the
# Hugging Face token's secret, never the token.
HUB_TOKEN_SECRET_VARIABLE = "HF_TOKEN_SECRET_ARN"
# Experiment tracking (tracking.py): the server (or local store) and the experiment, MLflow's own
# variables, and what started the jobs, put before each job's run name (a local run's task and
# preset).
TRACKING_URI_VARIABLE = "MLFLOW_TRACKING_URI"
EXPERIMENT_NAME_VARIABLE = "MLFLOW_EXPERIMENT_NAME"
RUN_LABEL_VARIABLE = "PEFTOPS_RUN_LABEL"

# The model card evaluate.py writes beside evaluation.json: for people, and as SageMaker's model
# package card ({"content": <the card's JSON, a string>}), which registration reads at this path.
MODEL_CARD_MARKDOWN = "model_card.md"
MODEL_CARD_SAGEMAKER = "model_card.json"
MODEL_CARD_CONTENT_PATH = "content"

SCHEMA_VERSION_KEY = "schema_version"

# The models evaluate.py scores side by side, and the ROUGE variants it reports for each.
MODEL_NAMES = ("base", "adapter", "full_finetune")
ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


class ContractError(ValueError):
    """A document that does not match its file contract; the message names the file and fix."""


def value_at(document: dict[str, Any], path: str) -> Any:
    """The value at a dotted key path (`gate.gain_vs_base_lower95`), as SageMaker's JsonGet
    resolves it."""
    value: Any = document
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ContractError(f"no value at {path!r}")
        value = value[part]
    return value


@dataclass(frozen=True)
class FileContract:
    """One JSON file between a script and the pipeline: its name, schema version, and the key
    paths every document holds (those the pipeline reads)."""

    file_name: str
    version: int
    required: tuple[str, ...]
    writer: str  # the script that writes it, named in errors

    def path(self, location: str | Path) -> Path:
        """The file itself, or the contract's file inside a folder."""
        location = Path(location)
        return location / self.file_name if location.is_dir() else location

    def check(self, document: Any, source: str) -> dict[str, Any]:
        if not isinstance(document, dict):
            raise ContractError(f"{source}: expected a JSON object as {self.file_name}")
        # Documents written before versioning have version 1's shape.
        version = document.get(SCHEMA_VERSION_KEY, 1)
        if version != self.version:
            raise ContractError(
                f"{source}: {self.file_name} schema version {version}, expected {self.version}; "
                f"produce it again with this version's {self.writer}"
            )
        for path in self.required:
            try:
                value_at(document, path)
            except ContractError as err:
                raise ContractError(
                    f"{source}: {self.file_name} has {err}, which the pipeline reads"
                ) from None
        return document

    def stamp(self, document: dict[str, Any]) -> dict[str, Any]:
        return {SCHEMA_VERSION_KEY: self.version, **document}

    def write(self, directory: str | Path, document: dict[str, Any]) -> dict[str, Any]:
        """Write `document` into `directory` atomically, after checking it; returns what was
        written (the document with its schema version)."""
        target = Path(directory) / self.file_name
        stamped = self.check(self.stamp(document), str(target))
        write_json_atomic(target, stamped)
        return stamped

    def parse(self, text: str | bytes, source: str) -> dict[str, Any]:
        try:
            document = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ContractError(f"{source}: {self.file_name} is not valid JSON ({err})") from None
        except RecursionError:
            raise ContractError(
                f"{source}: {self.file_name} is nested too deeply to read"
            ) from None
        except ValueError as err:  # e.g. an integer of thousands of digits
            raise ContractError(
                f"{source}: {self.file_name} holds an unreadable value ({err})"
            ) from None
        return self.check(document, source)

    def read(self, location: str | Path) -> dict[str, Any]:
        path = self.path(location)
        try:
            text = path.read_bytes()
        except OSError as err:
            raise ContractError(
                f"{path}: cannot read {self.file_name} ({err.strerror}); run {self.writer} first"
            ) from None
        return self.parse(text, str(path))


def write_json_atomic(target: Path, payload: dict[str, Any]) -> None:
    """A reader sees the old file or the whole new one, never a partial write."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        Path(temporary).replace(target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# --- evaluation.json -------------------------------------------------------------------------


def model_path(model: str) -> str:
    """Where one model's figures are: `models.<base|adapter|full_finetune>`."""
    return f"models.{model}"


def metric_path(model: str, key: str = "rougeL") -> str:
    return f"{model_path(model)}.{key}"


ADAPTER_TRAINABLE_PERCENT = "models.adapter.trainable_percent"
# The thresholds the run's gate applied: the report and the registry judge with these.
GATE_THRESHOLDS = "gate_thresholds"
# The MLflow runs behind the figures (tracking.UNTRACKED where tracking was off): registration
# records them as the version's metadata.
EVALUATION_RUN_ID = "tracking.evaluation_run_id"
ADAPTER_TRAINING_RUN_ID = "tracking.training_run_ids.adapter"
TEST_SET_SHA256 = "test_set_sha256"
# The task the adapter was trained and evaluated with (tasks.py): its spec's digest, the spec,
# and the request body a deployer sends before the version serves.
TASK_SPEC_NAME = "task.name"
TASK_SPEC_SHA256 = "task.sha256"
TASK_SPEC = "task.spec"
TASK_SMOKE_REQUEST = "task.smoke_request"

# The comparisons evaluate.py draws paired bootstrap intervals for: name -> (a, b), a - b.
COMPARISONS = {
    "adapter_vs_full_finetune": ("adapter", "full_finetune"),
    "adapter_vs_base": ("adapter", "base"),
}
# The gate reads bounds of the 95% intervals, stated so that the pipeline's condition step
# compares each with a deployment threshold directly (it can do no arithmetic): how far the
# adapter may trail the full fine-tune at worst, and how much it beats the base at least.
# Both are in the task's metric (tasks.Metric), which the gate names.
SHORTFALL_VS_FULL_FINETUNE = "gate.shortfall_vs_full_finetune_upper95"
GAIN_VS_BASE = "gate.gain_vs_base_lower95"
GATE_METRIC = "gate.metric"


def comparison_path(name: str, key: str = "rougeL", field: str = "low") -> str:
    return f"comparisons.{name}.{key}.{field}"


EVALUATION = FileContract(
    file_name="evaluation.json",
    version=3,
    required=(
        *(metric_path(model, key) for model in MODEL_NAMES for key in ROUGE_KEYS),
        *(f"{model_path(model)}.per_example.{key}" for model in MODEL_NAMES for key in ROUGE_KEYS),
        *(
            comparison_path(name, key, field)
            for name in COMPARISONS
            for key in ROUGE_KEYS
            for field in ("difference", "low", "high")
        ),
        ADAPTER_TRAINABLE_PERCENT,
        SHORTFALL_VS_FULL_FINETUNE,
        GAIN_VS_BASE,
        GATE_METRIC,
        TEST_SET_SHA256,
        f"{GATE_THRESHOLDS}.metric_tolerance",
        f"{GATE_THRESHOLDS}.min_metric_gain",
        EVALUATION_RUN_ID,
        ADAPTER_TRAINING_RUN_ID,
        TASK_SPEC_NAME,
        TASK_SPEC_SHA256,
        TASK_SPEC,
        TASK_SMOKE_REQUEST,
    ),
    writer="evaluate.py",
)


def gate_margins(
    comparisons: dict[str, dict[str, dict[str, float]]], metric: str
) -> dict[str, Any]:
    """The `gate` section of evaluation.json, from the comparisons' intervals on the task's
    metric: the upper 95% bound of (full fine-tune - adapter), and the lower 95% bound of
    (adapter - base)."""
    return {
        SHORTFALL_VS_FULL_FINETUNE.removeprefix("gate."): -comparisons["adapter_vs_full_finetune"][
            metric
        ]["low"],
        GAIN_VS_BASE.removeprefix("gate."): comparisons["adapter_vs_base"][metric]["low"],
        GATE_METRIC.removeprefix("gate."): metric,
    }


# --- the quality gate --------------------------------------------------------------------------


@dataclass(frozen=True)
class GateThresholds:
    # The adapter may trail the full fine-tune by at most this much of the task's metric, at
    # the far end of the 95% interval of their difference,
    metric_tolerance: float
    # and must beat the base model by at least this much, at the near end of its interval.
    min_metric_gain: float


@dataclass(frozen=True)
class GateCondition:
    """One comparison of the gate: the evaluation value at `path` against a threshold.
    `comparison` is the SageMaker condition type the pipeline definition uses."""

    path: str
    comparison: str
    threshold: str  # a GateThresholds field
    failure: str  # why it fails, formatted with the metric, the value and the threshold
    statement: str  # the rule in words, with the metric and the threshold (reports, the CLI)


CONDITION_TESTS: dict[str, Callable[[Any, Any], bool]] = {
    "LessThanOrEqualTo": operator.le,
    "GreaterThanOrEqualTo": operator.ge,
}

GATE_CONDITIONS = (
    GateCondition(
        SHORTFALL_VS_FULL_FINETUNE,
        "LessThanOrEqualTo",
        "metric_tolerance",
        "{metric} may trail the full fine-tune by up to {value:.4f} (upper end of the 95% "
        "interval; tolerance {limit})",
        "the adapter trails the full fine-tune by at most {limit} {metric}, at the upper end of "
        "the 95% interval of their difference",
    ),
    GateCondition(
        GAIN_VS_BASE,
        "GreaterThanOrEqualTo",
        "min_metric_gain",
        "{metric} gain over the base model may be as small as {value:.4f} (lower end of the 95% "
        "interval; required {limit})",
        "the adapter beats the base model by at least {limit} {metric}, at the lower end of the "
        "95% interval of their difference",
    ),
)


@dataclass(frozen=True)
class ConditionOutcome:
    condition: GateCondition
    value: float
    limit: float
    holds: bool
    metric: str = "rougeL"

    @property
    def failure(self) -> str:
        return self.condition.failure.format(metric=self.metric, value=self.value, limit=self.limit)

    @property
    def statement(self) -> str:
        return self.condition.statement.format(metric=self.metric, limit=self.limit)


def gate_outcomes(evaluation: dict[str, Any], thresholds: GateThresholds) -> list[ConditionOutcome]:
    """Each gate condition applied to an evaluation: the one rule the pipeline's condition step
    (from the same GATE_CONDITIONS), the registry's approval check and the report share."""
    outcomes = []
    metric = value_at(evaluation, GATE_METRIC)
    for condition in GATE_CONDITIONS:
        value = value_at(evaluation, condition.path)
        limit = getattr(thresholds, condition.threshold)
        holds = CONDITION_TESTS[condition.comparison](value, limit)
        outcomes.append(ConditionOutcome(condition, value, limit, holds, metric))
    return outcomes


def gate_verdict(evaluation: dict[str, Any], thresholds: GateThresholds) -> tuple[bool, str]:
    """Whether an evaluation passes the gate: every condition holds. The reason names the
    first condition that fails."""
    if evaluation.get("baseline_source", {}).get("test_set_matches") is False:
        return False, "the full fine-tune figures were scored on another test set"
    for outcome in gate_outcomes(evaluation, thresholds):
        if not outcome.holds:
            return False, outcome.failure
    return True, "gate passed"


# --- training_metrics.json and manifest.json -----------------------------------------------------

TRAINING_METRICS = FileContract(
    file_name="training_metrics.json",
    version=1,
    required=("method", "trainable_params", "total_params", "train_runtime_s", "global_step"),
    writer="train.py",
)

MANIFEST = FileContract(
    file_name="manifest.json",
    version=1,
    required=("records_in", "records_out", "dropped", "splits"),
    writer="preprocess.py",
)


def read_split_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a preprocessed split's JSONL file (preprocess.py wrote them valid)."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def split_file(directory: str | Path) -> Path:
    """The JSONL file of a split folder (a SageMaker channel holds one)."""
    directory = Path(directory)
    if directory.is_file():
        return directory
    candidate = directory / SPLIT_FILE
    if candidate.is_file():
        return candidate
    files = sorted(directory.glob("*.jsonl"))
    if len(files) != 1:
        raise FileNotFoundError(
            f"{directory}: expected one preprocessed split file ({SPLIT_FILE}); found "
            f"{[f.name for f in files] or 'none'}. Run preprocess.py and point at its output."
        )
    return files[0]
