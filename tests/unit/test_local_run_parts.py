"""The parts of one local run (pipelines/local/run.py) around the executor: the refusals
`run_local` makes before it writes anything, the config a run builds from its preset, the
evaluation outputs copied to the run folder's top, what the report says of registration, the
tracking store the jobs log to, and the pipeline's functions over the mirror and registry.
The whole run is tested in tests/integration/test_local_run.py."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.definition.config import CHECK_REGISTERED, RESOLVE_INPUTS, function_name
from pipelines.local import run
from pipelines.local.errors import LocalRunError
from pipelines.local.executor import PropertyFileRecord, RunResult, StepRecord
from pipelines.local.presets import LOCAL_DEPLOYMENT, PRESETS
from pipelines.local.s3_mirror import S3Mirror
from pipelines.registry import LocalRegistry, Registration
from pipelines.registry.versions import ModelVersion
from training_scripts import contracts, tasks

SPEC = tasks.resolve_task_spec(tasks.DEFAULT_TASK)


def run_tiny(tmp_path: Path, **options: Any) -> run.LocalRun:
    defaults: dict[str, Any] = {
        "preset_name": "tiny",
        "data": run.SAMPLE_DATA,
        "out": tmp_path / "run",
        "registry_path": tmp_path / "registry.sqlite",
        "log": lambda _: None,
    }
    return run.run_local(**{**defaults, **options})


@pytest.mark.parametrize(
    ("options", "refusal"),
    [
        (
            {"preset_name": "huge"},
            f"unknown preset 'huge'; choose one of {sorted(PRESETS)}",
        ),
        (
            {"data": Path("/nonexistent/data.jsonl")},
            "data /nonexistent/data.jsonl does not exist; pass --data with a .jsonl/.csv/.parquet "
            "file or folder",
        ),
        (
            {"parameters": {"LoraRank": "0"}},
            "--param LoraRank=0: LoraRank must be a whole number in [1, 1024], got '0'",
        ),
        (
            {"parameters": {"Epochs": "0"}},
            "--param Epochs=0: Epochs must be in (0, 1000], got '0'",
        ),
        (
            {"parameters": {"Task": "support-routing"}},
            "--param Task=support-routing names another task than the spec's "
            "(dialogue-summary); drop it: the task's name is its spec's",
        ),
    ],
)
def test_a_run_the_pipeline_would_refuse_is_refused_before_anything_is_written(
    tmp_path: Path, options: dict[str, Any], refusal: str
) -> None:
    with pytest.raises(LocalRunError) as refused:
        run_tiny(tmp_path, **options)
    assert str(refused.value) == refusal
    assert not (tmp_path / "run" / "pipeline.json").exists()
    assert not (tmp_path / "registry.sqlite").exists()


def test_a_task_named_by_parameter_as_its_spec_names_it_is_not_refused_for_it(
    tmp_path: Path,
) -> None:
    """Refused later, for the out-of-range rank, not for the Task it names rightly."""
    with pytest.raises(LocalRunError, match="LoraRank"):
        run_tiny(tmp_path, parameters={"Task": SPEC.name, "LoraRank": "0"})


def test_an_output_folder_that_cannot_be_written_is_refused_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(LocalRunError) as refused:
        run.check_writable(blocker / "run")
    assert (
        str(refused.value) == f"output folder {blocker / 'run'} is not writable (Not a directory)"
    )
    run.check_writable(tmp_path / "new" / "run")
    assert list((tmp_path / "new" / "run").iterdir()) == []  # the probe is gone


@pytest.mark.parametrize(
    ("group", "precision", "expected"),
    [
        ("", None, {}),
        ("team-adapters", None, {"model_package_group": "team-adapters"}),
        ("", "fp32", {"precision": "fp32"}),
        ("g", "bf16", {"model_package_group": "g", "precision": "bf16"}),
    ],
)
def test_a_runs_config_is_its_presets_with_the_task_group_and_precision_it_sets(
    group: str, precision: str | None, expected: dict[str, str]
) -> None:
    preset = PRESETS["tiny"].config
    routing = tasks.resolve_task_spec("support-routing")
    assert preset.task != routing.name
    config = run.run_config(preset, task=routing, registry_group=group, precision=precision)
    assert config == dataclasses.replace(preset, task=routing.name, **expected)


def version(number: int) -> ModelVersion:
    return ModelVersion("g", number, "PendingManualApproval", "s3://b/m.tar.gz", "2026-12-07")


@pytest.mark.parametrize(
    ("result", "outcome"),
    [
        (RunResult("Succeeded", registered=version(3)), "g version 3"),
        (
            RunResult(
                "Succeeded",
                steps=[
                    StepRecord("CheckRegistered", "Lambda", "Succeeded", detail="not registered"),
                    StepRecord(
                        "CheckRegisteredStoredBaseline",
                        "Lambda",
                        "Succeeded",
                        detail="already registered as g version 2",
                    ),
                ],
            ),
            "already registered as g version 2",
        ),
        (
            RunResult(
                "Failed",
                steps=[StepRecord("NotServable", "Fail", "Failed", detail="rank 128 > 64")],
            ),
            "no: rank 128 > 64",
        ),
        (RunResult("Failed", steps=[StepRecord("GateFailed", "Fail", "Failed", detail="x")]), None),
        (RunResult("Succeeded"), None),
    ],
)
def test_the_report_says_what_became_of_the_adapter_once_the_run_is_over(
    result: RunResult, outcome: str | None
) -> None:
    assert run.registration_outcome(result) == outcome


def property_file(folder: Path, document: dict[str, Any], *others: str) -> PropertyFileRecord:
    folder.mkdir(parents=True)
    path = folder / contracts.EVALUATION.file_name
    path.write_text(json.dumps(document))
    for name in others:
        (folder / name).write_text(f"{name} of {folder.name}")
    return PropertyFileRecord("Evaluate", "EvaluationReport", path, document)


def test_the_runs_last_evaluation_and_its_outputs_are_copied_to_the_folders_top(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.html").write_text("another run's")
    first = property_file(tmp_path / "first", {"run": 1}, "report.html", "predictions.jsonl")
    last = property_file(tmp_path / "last", {"run": 2}, "report.html", "model_card.md")
    other = PropertyFileRecord("Train", "Metrics", tmp_path / "metrics.json", {"loss": 1})
    collected = run.collect_evaluation(
        RunResult("Succeeded", property_files=[first, last, other]), out
    )
    assert (collected.evaluation, collected.evaluation_dir) == ({"run": 2}, tmp_path / "last")
    assert collected.evaluation_path == out / contracts.EVALUATION.file_name
    assert json.loads(collected.evaluation_path.read_text()) == {"run": 2}
    assert (out / "report.html").read_text() == "report.html of last"
    assert (out / "model_card.md").read_text() == "model_card.md of last"
    assert not (out / "predictions.jsonl").exists()  # the last evaluation wrote none
    assert sorted(p.name for p in out.iterdir()) == [
        contracts.EVALUATION.file_name,
        "model_card.md",
        "report.html",
    ]


def test_a_run_without_an_evaluation_collects_nothing(tmp_path: Path) -> None:
    result = RunResult("Failed")
    assert run.collect_evaluation(result, tmp_path) == run.LocalRun(result)
    assert list(tmp_path.iterdir()) == []


def test_a_tracking_store_is_a_sqlite_file_with_the_groups_experiment_beside_it(
    tmp_path: Path,
) -> None:
    import mlflow

    config = PRESETS["tiny"].config
    assert run.tracking_environment(None, config, "label") == {}
    store = tmp_path / "mlflow.db"
    environment = run.tracking_environment(store, config, "dialogue-summary · tiny")
    assert environment == {
        contracts.TRACKING_URI_VARIABLE: f"sqlite:///{store}",
        contracts.EXPERIMENT_NAME_VARIABLE: config.model_package_group,
        contracts.RUN_LABEL_VARIABLE: "dialogue-summary · tiny",
    }
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiment = client.get_experiment_by_name(config.model_package_group)
    assert experiment.artifact_location == (tmp_path / "mlflow-artifacts").as_uri()
    # A second run finds the experiment and keeps it.
    run.tracking_environment(store, config, "again")
    again = client.get_experiment_by_name(config.model_package_group)
    assert (again.experiment_id, again.artifact_location) == (
        experiment.experiment_id,
        experiment.artifact_location,
    )


def test_the_pipelines_functions_answer_at_the_arns_the_definition_calls(tmp_path: Path) -> None:
    config = PRESETS["tiny"].config
    mirror = S3Mirror(tmp_path / "s3")
    registry = LocalRegistry(tmp_path / "registry.sqlite", config.model_package_group)
    functions = run.local_functions(config, mirror, registry)
    assert sorted(functions) == sorted(
        LOCAL_DEPLOYMENT.function_arn(function_name(config, f))
        for f in (RESOLVE_INPUTS, CHECK_REGISTERED)
    )


def test_run_data_is_published_into_the_mirror_once_and_said_so(tmp_path: Path) -> None:
    mirror = S3Mirror(tmp_path / "s3")
    said: list[str] = []
    dataset = run.publish_run_data(run.SAMPLE_DATA, mirror, SPEC, said.append)
    again = run.publish_run_data(run.SAMPLE_DATA, mirror, SPEC, said.append)
    assert (again.version, again.new, dataset.new) == (dataset.version, False, True)
    assert said == [
        f"peftops: dataset version {dataset.version} ({dataset.records} records, published now)",
        f"peftops: dataset version {dataset.version} ({dataset.records} records, already "
        "published)",
    ]
    assert mirror.list_keys(LOCAL_DEPLOYMENT.bucket, f"datasets/{SPEC.name}/")


def test_data_that_cannot_be_published_is_a_run_error_in_the_publishers_words(
    tmp_path: Path,
) -> None:
    from pipelines.publishing import PublishError, publish_dataset

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    mirror = S3Mirror(tmp_path / "s3")
    with pytest.raises(PublishError) as direct:
        publish_dataset(empty, mirror, LOCAL_DEPLOYMENT.bucket, task=SPEC)
    with pytest.raises(LocalRunError) as refused:
        run.publish_run_data(empty, mirror, SPEC, lambda _: None)
    assert str(refused.value) == str(direct.value)


def test_the_functions_resolve_a_runs_inputs_and_find_a_registered_adapter_newest_first(
    tmp_path: Path,
) -> None:
    config = PRESETS["tiny"].config
    mirror = S3Mirror(tmp_path / "s3")
    registry = LocalRegistry(tmp_path / "registry.sqlite", config.model_package_group)
    functions = run.local_functions(config, mirror, registry)

    def call(function: str, event: dict[str, str]) -> dict[str, str]:
        return functions[LOCAL_DEPLOYMENT.function_arn(function_name(config, function))](event)

    dataset = run.publish_run_data(run.SAMPLE_DATA, mirror, SPEC, lambda _: None)
    bucket = LOCAL_DEPLOYMENT.bucket
    resolved = call(RESOLVE_INPUTS, {
        "Bucket": bucket, "Task": SPEC.name, "DatasetVersion": "latest",
        "StageTasks": SPEC.name, "BaselineEvaluationUri": "s3://other/baseline.json",
        "BaselineMode": "train",
    })  # fmt: skip
    assert resolved["DatasetVersion"] == dataset.version
    mirror.put_assets(bucket, {"runs/1/evaluation.json": b"{}"})
    event = {
        "ModelDataUrl": "s3://bucket/runs/1/model.tar.gz",
        "EvaluationUri": f"s3://{bucket}/runs/1/evaluation.json",
        "ModelPackageGroupName": config.model_package_group,
    }
    assert call(CHECK_REGISTERED, event)["Registered"] == "false"  # no registry file yet
    for _ in range(2):  # the same adapter registered twice: the newest version is named
        registry.register(Registration(
            group=registry.group, model_data_url=event["ModelDataUrl"],
            status="PendingManualApproval", metadata={}, evaluation_uri=None, evaluation=None,
            description="adapter",
        ))  # fmt: skip
    found = call(CHECK_REGISTERED, event)
    assert (found["Registered"], found["ModelPackageArn"]) == ("true", registry.get(2).arn)
