"""One local run: build the pipeline definition with a preset's config and run it here.

The definition comes from the same builder as the cloud's, so what runs here is what runs
there; this module lays out the run folder, publishes the dataset into the S3 mirror as
`peftops data publish` publishes it into the stack's bucket, and collects what a user looks
at afterwards (the evaluation and its report).

The run folder is a deployment: its mirror (`s3/`) and step cache (`service/`) persist from
one run to the next, as a bucket and SageMaker's cache do, so a second run over the same data
reuses the first run's jobs and a new dataset trains anew. `fresh=True` starts from nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.definition import definition_json
from pipelines.definition.config import (
    CHECK_REGISTERED,
    RESOLVE_INPUTS,
    PipelineConfig,
    function_name,
)
from pipelines.definition.parameter_ranges import parameter_range_error
from pipelines.fixtures.sample_data import SAMPLE_PATH
from pipelines.functions.registered_adapter import find_registered
from pipelines.functions.resolve_inputs import resolve_inputs
from pipelines.local.errors import LocalRunError
from pipelines.local.executor import Function, LocalExecutor, RunResult
from pipelines.local.presets import LOCAL_DEPLOYMENT, PRESETS
from pipelines.local.s3_mirror import S3Mirror
from pipelines.local.step_cache import StepCache
from pipelines.publishing import PublishedDataset, PublishError, publish_dataset
from pipelines.registry import LocalRegistry
from training_scripts import contracts, report
from training_scripts.logs import PROJECT_LOGGERS
from training_scripts.tasks import DEFAULT_TASK, TaskSpec, resolve_task_spec

MIRROR_DIR = "s3"  # the bucket(s), under the run folder
SERVICE_DIR = "service"  # what the service remembers between runs: its step cache
SAMPLE_DATA = SAMPLE_PATH  # what a run trains on without --data
# What the evaluation step writes beside evaluation.json, copied to the run folder's top.
EVALUATION_OUTPUTS = (
    contracts.EVALUATION.file_name,
    "predictions.jsonl",
    "report.html",
    contracts.MODEL_CARD_MARKDOWN,
)
# Job output shown live: the scripts' own log lines (progress with the time left among them);
# the rest, the Trainer's own records included, is in each job's log file.
WORTH_SHOWING = re.compile(rf"\s*({'|'.join(PROJECT_LOGGERS)}):")


@dataclass
class LocalRun:
    result: RunResult
    dataset: PublishedDataset | None = None
    evaluation: dict[str, Any] | None = None
    evaluation_path: Path | None = None
    evaluation_dir: Path | None = None  # this run's own evaluation outputs


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise LocalRunError(f"output folder {out} is not writable ({err.strerror})") from err


def collect_evaluation(result: RunResult, out: Path) -> LocalRun:
    """The run's evaluation.json (the property file the gate read) and its report, copied to
    the top of the run folder."""
    evaluations = [
        f for f in result.property_files if f.path.name == contracts.EVALUATION.file_name
    ]
    if not evaluations:
        return LocalRun(result)
    produced = evaluations[-1]
    for name in EVALUATION_OUTPUTS:
        if (produced.path.parent / name).is_file():
            replace_atomically(out / name, (produced.path.parent / name).read_bytes())
    return LocalRun(
        result,
        evaluation=produced.document,
        evaluation_path=out / contracts.EVALUATION.file_name,
        evaluation_dir=produced.path.parent,
    )


def replace_atomically(path: Path, content: bytes) -> None:
    """`path` holds the old bytes or the new ones, never half of them: two runs at once in one
    folder each copy their outputs to its top while the other may be reading them."""
    staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    staging.write_bytes(content)
    staging.replace(path)


def prepare_tracking_store(store: Path, experiment: str) -> str:
    """A local MLflow store: a SQLite file, and the experiment the jobs log to created with its
    artifacts beside the file (MLflow would otherwise put them under each job's working
    folder). Returns the tracking URI. Two runs starting at once take turns (a lock file):
    MLflow creates a new store's tables on first use, and two creators would collide."""
    import fcntl

    import mlflow

    # MLflow announces creating and migrating the store's tables at INFO: not the user's news.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    uri = f"sqlite:///{store}"
    with (store.parent / f".{store.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        client = mlflow.MlflowClient(tracking_uri=uri)
        if client.get_experiment_by_name(experiment) is None:
            artifacts = store.parent / f"{store.stem}-artifacts"
            client.create_experiment(experiment, artifact_location=artifacts.as_uri())
    return uri


def local_functions(
    config: PipelineConfig, mirror: S3Mirror, registry: LocalRegistry
) -> dict[str, Function]:
    """The pipeline's Lambda functions, by the ARN the definition calls, over the mirror and
    the local registry."""

    def registered_versions(group: str) -> list[tuple[str, str]]:
        versions = registry.list() if registry.path.is_file() else []
        return [(v.arn, v.model_data_url) for v in sorted(versions, key=lambda v: -v.version)]

    def arn(function: str) -> str:
        return LOCAL_DEPLOYMENT.function_arn(function_name(config, function))

    return {
        arn(RESOLVE_INPUTS): lambda event: resolve_inputs(event, mirror.list_keys, mirror.read),
        arn(CHECK_REGISTERED): lambda event: find_registered(
            event, registered_versions, lambda uri: mirror.path(uri).read_bytes()
        ),
    }


def check_run_inputs(preset_name: str, data: Path) -> None:
    """A known preset and data that exists, before anything is written."""
    if preset_name not in PRESETS:
        raise LocalRunError(f"unknown preset {preset_name!r}; choose one of {sorted(PRESETS)}")
    if not data.is_file() and not data.is_dir():
        raise LocalRunError(
            f"data {data} does not exist; pass --data with a .jsonl/.csv/.parquet file or folder"
        )


def run_config(
    preset_config: PipelineConfig,
    *,
    task: TaskSpec,
    registry_group: str,
    precision: str | None,
) -> PipelineConfig:
    """The preset's deployment settings with what this run sets: the task, the model group it
    registers into, and its arithmetic."""
    config = dataclasses.replace(preset_config, task=task.name)
    if registry_group:
        config = dataclasses.replace(config, model_package_group=registry_group)
    if precision:
        config = dataclasses.replace(config, precision=precision)
    return config


def publish_run_data(
    data: Path, mirror: S3Mirror, task: TaskSpec, log: Callable[[str], None]
) -> PublishedDataset:
    """`--data` published with its task spec into the run's bucket as `data publish` would (a
    new version only when the files or the spec changed)."""
    try:
        dataset = publish_dataset(data, mirror, LOCAL_DEPLOYMENT.bucket, task=task)
    except PublishError as err:
        raise LocalRunError(str(err)) from None
    log(
        f"peftops: dataset version {dataset.version} ({dataset.records} records"
        f"{', published now' if dataset.new else ', already published'})"
    )
    return dataset


def tracking_environment(
    store: Path | None, config: PipelineConfig, run_label: str
) -> dict[str, str]:
    """What the runner hands every job for experiment tracking, as the cloud's definition hands
    them a tracking server's ARN: where the store lives is no input of any step, so turning
    tracking on or off, or moving the store, keeps every step-cache hit. One experiment per
    model group: a smoke preset's runs stay apart from real ones."""
    if store is None:
        return {}
    return {
        contracts.TRACKING_URI_VARIABLE: prepare_tracking_store(store, config.model_package_group),
        contracts.EXPERIMENT_NAME_VARIABLE: config.model_package_group,
        contracts.RUN_LABEL_VARIABLE: run_label,
    }


def run_local(
    *,
    preset_name: str,
    data: Path,
    out: Path,
    registry_path: Path,
    registry_group: str = "",  # empty: the preset's model package group
    task: TaskSpec | None = None,  # None: the shipped default task
    method: str | None = None,
    precision: str | None = None,  # None: the preset's
    parameters: dict[str, str] | None = None,
    fresh: bool = False,
    tracking_store: Path | None = None,
    log: Callable[[str], None] = print,
) -> LocalRun:
    check_run_inputs(preset_name, data)
    # Jobs run in their own working folders: every path handed to them must be absolute.
    out, data, registry_path = out.resolve(), data.resolve(), registry_path.resolve()
    check_writable(out)
    check_writable(registry_path.parent)
    preset = PRESETS[preset_name]
    task = task or resolve_task_spec(DEFAULT_TASK)
    for name, value in {**preset.parameters, **(parameters or {})}.items():
        if refused := parameter_range_error(name, value):
            raise LocalRunError(f"--param {name}={value}: {refused.removeprefix('parameter ')}")
    named = (parameters or {}).get("Task", task.name)
    if named != task.name:
        raise LocalRunError(
            f"--param Task={named} names another task than the spec's ({task.name}); drop it: "
            "the task's name is its spec's"
        )
    config = run_config(
        preset.config,
        task=task,
        registry_group=registry_group,
        precision=precision,
    )
    if tracking_store is not None:
        tracking_store = tracking_store.resolve()
        check_writable(tracking_store.parent)
    task_name = task.name

    body, assets = definition_json(config, LOCAL_DEPLOYMENT)
    (out / "pipeline.json").write_text(body, encoding="utf-8")
    log(f"peftops: preset {preset_name}: {preset.description}")
    model = preset.prepare_model()
    # The run's parameters: the preset's, then --method and --task, then every --param.
    values: dict[str, Any] = {
        "BaseModel": str(model),
        **preset.parameters,
        **({"PeftMethod": method} if method else {}),
        **(parameters or {}),
        "Task": task.name,
    }
    if fresh:
        for folder in (MIRROR_DIR, SERVICE_DIR):
            shutil.rmtree(out / folder, ignore_errors=True)
    mirror = S3Mirror(out / MIRROR_DIR)
    registry = LocalRegistry(registry_path, config.model_package_group)
    registry.check_writable()  # before any step: a run must not fail only at its registration
    executor = LocalExecutor(
        json.loads(body),
        mirror=mirror,
        jobs_root=out / "jobs",
        registry=registry,
        parameters=values,
        pipeline_name=config.name,
        functions=local_functions(config, mirror, registry),
        cache=StepCache(out / SERVICE_DIR / "step-cache", config.name),
        log=log,
        worth_showing=lambda line: bool(WORTH_SHOWING.match(line)),
    )
    mirror.put_assets(LOCAL_DEPLOYMENT.bucket, assets)
    dataset = publish_run_data(data, mirror, task, log)
    # Made once parameters and data are known good: a refused run leaves no store behind.
    tracking = tracking_environment(tracking_store, config, f"{task_name} · {preset_name}")
    run = collect_evaluation(executor.execute(observer_environment=tracking), out)
    run.dataset = dataset
    outcome = registration_outcome(run.result)
    if outcome is not None and run.evaluation_path is not None:
        # The report the evaluation step wrote could not know what became of the adapter.
        # Rendered from this run's own evaluation folder: the top of `out` may already hold
        # another run's.
        rendered = report.render_folder(run.evaluation_dir, registered=outcome)
        replace_atomically(out / "report.html", rendered.encode("utf-8"))
    return run


def registration_outcome(result: RunResult) -> str | None:
    """What the run's report says of registration once the run is over: the new version, the
    version that already holds this adapter (a step-cache rerun), or why a passing adapter is
    not registered; None where the evaluation's own report already says it (a failed gate)."""
    if result.registered is not None:
        return f"{result.registered.group} version {result.registered.version}"
    for record in result.steps:
        if record.name.startswith("CheckRegistered") and "already registered" in record.detail:
            return record.detail
        if record.name.startswith("NotServable"):  # a Fail step: it ran, so it failed
            return f"no: {record.detail}"
    return None
