"""The local executor runs the cloud's definition: end to end on the tiny preset, following
builder changes, refusing what it does not implement, and failing cleanly on bad input."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from pipelines.definition import builder as definition_module
from pipelines.definition import definition_json
from pipelines.definition.config import PipelineConfig
from pipelines.local.errors import UnsupportedConstructError
from pipelines.local.executor import LocalExecutor
from pipelines.local.presets import LOCAL_DEPLOYMENT, PRESETS
from pipelines.local.run import local_functions
from pipelines.local.s3_mirror import S3Mirror
from pipelines.publishing import publish_dataset
from pipelines.registry import LocalRegistry
from tests.conftest import REPO, peftops, write_jsonl
from training_scripts import contracts
from training_scripts.tasks import DEFAULT_TASK, resolve_task_spec


def test_tiny_preset_runs_every_step_and_registers(tiny_run) -> None:
    root, done = tiny_run
    assert done.returncode == 0, done.stderr[-3000:]
    # Every job ran in its folder: CheckBaselineMode took the train branch (TrainBaseline ran),
    # and QualityGate the registration branch (the version below).
    (jobs,) = (root / "run" / "jobs").iterdir()
    assert sorted(p.name for p in jobs.iterdir()) == [
        "Evaluate",
        "Preprocess",
        "TrainAdapter",
        "TrainBaseline",
    ]
    evaluation = contracts.EVALUATION.read(root / "run")
    assert set(evaluation["models"]) == {"base", "adapter", "full_finetune"}
    assert set(evaluation["comparisons"]) == {"adapter_vs_full_finetune", "adapter_vs_base"}
    for entry in evaluation["models"].values():
        assert {
            "rouge1",
            "rouge2",
            "rougeL",
            "rougeLsum",
            "trainable_params",
            "total_params",
            "artifact_bytes",
        } <= set(entry)
    # One line per scored example with every model's output; ROUGE is the mean over them.
    predictions = [
        json.loads(line) for line in (root / "run" / "predictions.jsonl").read_text().splitlines()
    ]
    assert len(predictions) == evaluation["test_examples"] > 0
    assert {"id", "input", "reference", "base", "adapter", "full_finetune"} <= set(predictions[0])
    assert len({p["id"] for p in predictions}) == len(predictions)
    # What the README lists at the top of the run folder is there: the model card too.
    for name in ("evaluation.json", "predictions.jsonl", "report.html", "model_card.md"):
        assert (root / "run" / name).is_file(), name
    assert (root / "run" / "model_card.md").read_text() == (
        jobs / "Evaluate" / "container/opt/ml/processing/output/evaluation/model_card.md"
    ).read_text()
    # The run's report names the version it describes, registered after the evaluation step.
    assert "peftops-smoke version 1" in (root / "run" / "report.html").read_text()
    # A smoke test registers into its own group, never beside real adapters.
    assert LocalRegistry(root / "registry.sqlite", "peftops-adapters").list() == []
    (version,) = LocalRegistry(root / "registry.sqlite", "peftops-smoke").list()
    assert version.status == "PendingManualApproval" and version.metadata["smoke_test"] == "true"
    # CheckRegistered recorded the digest of the very evaluation the registry holds.
    assert version.metadata["evaluation_sha256"] == version.evaluation_sha256
    assert version.evaluation == evaluation
    assert version.metadata["peft_method"] == "qlora" and version.metadata[
        "dataset_uri"
    ].startswith("s3://peftops-local/")
    assert (root / "run" / "s3" / version.model_data_url.removeprefix("s3://")).is_file()
    # Checkpoints live once, in the bucket, as SageMaker leaves them: not also in the job folder.
    (jobs,) = (root / "run" / "jobs").iterdir()
    for step in ("TrainAdapter", "TrainBaseline"):
        assert not (jobs / step / "container" / "opt" / "ml" / "checkpoints").exists(), step
        stored = root / "run" / "s3" / "peftops-local" / "pipelines" / "peftops-adapter"
        assert list((stored / "checkpoints" / step).rglob("checkpoint_seal.json")), step


def test_the_run_computes_in_the_demos_cpu_precision_whatever_this_cpu_offers(tiny_run) -> None:
    """A local run's verdict must not depend on the machine: both presets fix one arithmetic
    (fp32, which every CPU computes natively), and the tiny run exercises it through the gate
    even on a CPU whose `auto` would pick bf16, where the smollm2 demo's path was never run."""
    root, done = tiny_run
    assert done.returncode == 0, done.stderr[-3000:]
    evaluation = contracts.EVALUATION.read(root / "run")
    computed = {
        "evaluation": evaluation["generation"]["precision"],
        **{
            name: evaluation["models"][name]["training"]["precision"]
            for name in ("adapter", "full_finetune")
        },
    }
    assert computed == dict.fromkeys(computed, "float32")
    assert {p.config.precision for p in PRESETS.values()} == {"fp32"}
    # ... through the gate, to a registered version.
    assert "QualityGate" in done.stderr and "version 1 (PendingManualApproval)" in done.stdout


def test_long_steps_show_progress_with_the_time_left(tiny_run) -> None:
    """Training shows its step out of the run's steps, evaluation each model's generated
    examples, both with the time left; the Trainer's own dicts stay in the job's log."""
    root, done = tiny_run
    console = done.stderr.splitlines()
    for job, pattern in (
        ("TrainAdapter", r"train: step \d+/(\d+) \(\d+%\), \d+s elapsed, about \d+s left, loss "),
        ("TrainBaseline", r"train: step \d+/(\d+) \(\d+%\), \d+s elapsed, about \d+s left, loss "),
        ("Evaluate", r"evaluate: (?:base|adapter|full_finetune): generated \d+/(\d+) \(\d+%\)"),
    ):
        shown = [
            re.search(pattern, line) for line in console if line.lstrip().startswith(f"[{job}]")
        ]
        progress = [m for m in shown if m]
        assert len(progress) >= 2, (job, console[-40:])
    assert not any("{'loss'" in line for line in console)
    (jobs,) = (root / "run" / "jobs").iterdir()
    assert "{'loss'" in (jobs / "TrainAdapter" / "job.log").read_text()


def test_tiny_run_is_tracked_in_mlflow_and_the_version_names_its_runs(tiny_run) -> None:
    """Training runs hold their parameters and a loss curve with one point per logged step; the
    evaluation run holds every score with its interval and the report; the registered version
    names both runs and carries the model card."""
    import mlflow

    root, done = tiny_run
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MLflow database tables" not in done.stderr  # the store's set-up is not news
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    # A smoke run's experiment is its model group's, apart from real adapters'; its runs are
    # named by task, preset and job.
    assert client.get_experiment_by_name("peftops-adapters") is None
    experiment = client.get_experiment_by_name("peftops-smoke")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    label = "dialogue-summary · tiny · "
    assert set(runs) == {f"{label}train-qlora", f"{label}train-full", f"{label}evaluate"}
    assert all(r.info.status == "FINISHED" for r in runs.values())
    evaluation = contracts.EVALUATION.read(root / "run")
    # The report links the evaluation's run page, as `mlflow ui` serves the store.
    scored = runs[f"{label}evaluate"]
    link = (
        f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs/{scored.info.run_id}"
    )
    assert evaluation["tracking"]["link"] == link
    assert f'<a href="{link}">' in (root / "run" / "report.html").read_text()

    training = runs[f"{label}train-qlora"]
    assert {"method", "learning_rate", "lora_r", "lora_alpha", "dataset_version"} <= set(
        training.data.params
    )
    assert training.data.params["method"] == "qlora"
    curve = evaluation["models"]["adapter"]["training"]["loss_curve"]
    history = client.get_metric_history(training.info.run_id, "train_loss")
    assert len(curve) >= 3  # the tiny preset logs every 2 steps
    assert [(m.step, m.value) for m in history] == [
        (p["step"], pytest.approx(p["loss"])) for p in curve
    ]
    validation = client.get_metric_history(training.info.run_id, "validation_loss")
    assert [m.step for m in validation] == [
        p["step"] for p in evaluation["models"]["adapter"]["training"]["validation_curve"]
    ]
    assert {"tokens_per_second", "peak_memory_bytes"} <= set(training.data.metrics)

    bounds = evaluation["comparisons"]["adapter_vs_full_finetune"]["rougeL"]
    assert scored.data.metrics["adapter_vs_full_finetune.rougeL.low"] == pytest.approx(
        bounds["low"]
    )
    assert scored.data.metrics["adapter.rougeL"] == pytest.approx(
        evaluation["models"]["adapter"]["rougeL"]
    )
    artifacts = {a.path for a in client.list_artifacts(scored.info.run_id)}
    assert {"report.html", "evaluation.json", "model_card.md"} <= artifacts

    (version,) = LocalRegistry(root / "registry.sqlite", "peftops-smoke").list()
    assert version.metadata["mlflow_run_id"] == scored.info.run_id
    assert version.metadata["mlflow_training_run_id"] == training.info.run_id
    assert version.model_card is not None
    assert (
        version.model_card["evaluation_details"][0]["metadata"]["test_set_sha256"]
        == (evaluation["test_set_sha256"])
    )


def test_training_metric_definitions_read_the_training_jobs_log(tiny_run) -> None:
    """The regexes the training jobs declare (what the SageMaker console charts) match the
    loss and validation lines a real training job prints."""
    import re

    root, _ = tiny_run
    definition = json.loads((root / "run" / "pipeline.json").read_text())
    (train,) = [s for s in definition["Steps"] if s["Name"] == "TrainAdapter"]
    declared = train["Arguments"]["AlgorithmSpecification"]["MetricDefinitions"]
    (jobs,) = (root / "run" / "jobs").iterdir()
    log = (jobs / "TrainAdapter" / "job.log").read_text()
    evaluation = contracts.EVALUATION.read(root / "run")
    training = evaluation["models"]["adapter"]["training"]
    found = {d["Name"]: [float(v) for v in re.findall(d["Regex"], log)] for d in declared}
    assert found["train:loss"] == pytest.approx(
        [p["loss"] for p in training["loss_curve"]], rel=1e-3
    )
    middle = [p["loss"] for p in training["validation_curve"][1:-1]]
    assert middle and found["validation:loss"] == pytest.approx(middle, abs=1e-4)


def test_models_cli_on_the_registered_version(
    tiny_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rich reads COLUMNS where the output is not a terminal: the narrow width it defaults to.
    monkeypatch.setenv("COLUMNS", "80")
    # A copy: the decisions below must not change what other tests read of the shared run.
    root = tmp_path
    shutil.copy(tiny_run[0] / "registry.sqlite", root / "registry.sqlite")
    registry = f"local:{root / 'registry.sqlite'}#peftops-smoke"
    listed = json.loads(
        peftops("models", "list", "--registry", registry, "--json", cwd=root).stdout
    )
    assert [v["version"] for v in listed] == [1]
    # Into a file or a pipe, the table keeps whole cells (Rich would cut them at 80 columns).
    table = peftops("models", "list", "--registry", registry, cwd=root).stdout
    assert "PendingManualApproval" in table and "…" not in table
    # The default group is empty here: the answer names it and where the versions are.
    file = root / "registry.sqlite"
    empty = peftops("models", "list", "--registry", f"local:{file}", cwd=root)
    assert empty.returncode == 0 and empty.stdout == ""
    pointer = f"peftops-smoke (1 version; --registry local:{file}#peftops-smoke)"
    assert empty.stderr.strip() == (
        f"peftops: model group peftops-adapters holds no versions; groups that hold versions: "
        f"{pointer}"
    )
    served = peftops("serve", "--registry", f"local:{file}", "--stage", "staging", cwd=root)
    assert served.returncode == 2 and served.stderr.strip() == (
        "peftops: error: no version of model group peftops-adapters is deployed to staging; "
        "promote one (`peftops models promote VERSION --to staging`); groups that hold "
        f"versions: {pointer}"
    )
    shown = peftops("models", "show", "1", "--registry", registry, cwd=root)
    assert "PendingManualApproval" in shown.stdout
    assert "gate:       it is a smoke test's adapter" in shown.stdout
    # Compared with the run's own evaluation: the adapter's figures, not another model's.
    compared = json.loads(
        peftops("models", "compare", "1", "1", "--registry", registry, "--json", cwd=root).stdout
    )
    adapter = contracts.EVALUATION.read(tiny_run[0] / "run")["models"]["adapter"]
    assert compared["same_test_set"] is True
    for key in ("rougeL", "trainable_params", "artifact_bytes"):
        assert compared["metrics"][key] == {"first": adapter[key], "second": adapter[key]}, key
    decide = ["models", "approve", "1", "--registry", registry, "-d", "smoke test", "--who", "ci"]
    refused = peftops(*decide, cwd=root)
    assert refused.returncode == 2 and refused.stderr.strip() == (
        "peftops: error: version 1 cannot be approved: it is a smoke test's adapter (a random "
        "model that checks the plumbing); pass --force to approve anyway"
    )
    approved = peftops(*decide, "--force", cwd=root)
    assert approved.returncode == 0 and "Approved (ci: smoke test [forced: it is a smoke" in (
        approved.stdout
    )


def test_a_builder_change_changes_what_runs_locally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_causal: Path
) -> None:
    """Patch the builder's Preprocess step; the executor runs the patched arguments."""
    original = definition_module._Builder.preprocess

    def preprocess_with_small_budget(self, inputs):
        step = original(self, inputs)
        step.step_args.func_kwargs["arguments"] += ["--max-input-tokens", "20"]
        return step

    monkeypatch.setattr(definition_module._Builder, "preprocess", preprocess_with_small_budget)
    body, assets = definition_json(PipelineConfig(), LOCAL_DEPLOYMENT)
    definition = json.loads(body)
    # ResolveInputs and Preprocess only: enough to see the change.
    definition["Steps"] = definition["Steps"][:2]
    mirror = S3Mirror(tmp_path / "s3")
    registry = LocalRegistry(tmp_path / "r.sqlite", "g")
    executor = LocalExecutor(
        definition,
        mirror=mirror,
        jobs_root=tmp_path / "jobs",
        registry=registry,
        parameters={"BaseModel": str(tiny_causal)},
        functions=local_functions(PipelineConfig(), mirror, registry),
        log=lambda _: None,
    )
    mirror.put_assets("peftops-local", assets)
    publish_dataset(
        REPO / "data/sample/dialogues.jsonl",
        mirror,
        "peftops-local",
        task=resolve_task_spec(DEFAULT_TASK),
    )
    result = executor.execute()
    assert result.status == "Succeeded", result.failure
    splits = executor.scope.properties["Preprocess"][
        "ProcessingOutputConfig.Outputs['splits'].S3Output.S3Uri"
    ]
    manifest = contracts.MANIFEST.read(mirror.path(splits))
    assert manifest["max_input_tokens"] == 20 and manifest["truncated_inputs"] > 500


def run_definition(tmp_path: Path, definition: dict) -> Any:
    """A definition through the local runner, with nothing else around it."""
    return LocalExecutor(
        definition,
        mirror=S3Mirror(tmp_path / "s3"),
        jobs_root=tmp_path / "jobs",
        registry=LocalRegistry(tmp_path / "r.sqlite", "g"),
        log=lambda _: None,
    ).execute()


def test_unsupported_constructs_are_errors(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path / "r.sqlite", "g")
    lambda_step = {
        "Parameters": [],
        "Steps": [
            {
                "Name": "Notify",
                "Type": "Lambda",
                "FunctionArn": "arn:aws:lambda:us-east-1:000000000000:function:notify",
                "Arguments": {},
            }
        ],
    }
    with pytest.raises(
        UnsupportedConstructError,
        match="step Notify: no local function for arn:aws:lambda:us-east-1:000000000000:function:notify",
    ):
        run_definition(tmp_path, lambda_step)
    transform = {"Parameters": [], "Steps": [{"Name": "Score", "Type": "Transform"}]}
    with pytest.raises(
        UnsupportedConstructError, match="step Score: type Transform is not supported"
    ):
        run_definition(tmp_path, transform)
    odd_function = {
        "Parameters": [],
        "Steps": [
            {"Name": "Stop", "Type": "Fail", "Arguments": {"ErrorMessage": {"Std:Concat": []}}}
        ],
    }
    with pytest.raises(UnsupportedConstructError, match="function Std:Concat is not supported"):
        run_definition(tmp_path, odd_function)
    with pytest.raises(UnsupportedConstructError, match="unknown pipeline parameters"):
        LocalExecutor(
            {"Parameters": [], "Steps": []},
            mirror=S3Mirror(tmp_path),
            jobs_root=tmp_path,
            registry=registry,
            parameters={"Nope": 1},
        )


def registry_fingerprint(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing-data", r"peftops: error: data .*missing\.jsonl does not exist; pass --data"),
        (
            "unknown-preset",
            r"peftops: error: unknown preset 'huge'; choose one of \['smollm2', 'tiny'\]",
        ),
        ("unwritable-out", r"peftops: error: output folder .* is not writable"),
        (
            "malformed-data",
            # Refused as the dataset is published into the mirror, before any step runs.
            r'peftops: error: .*bad\.jsonl line 2: field "summary" is missing',
        ),
        ("unknown-version", r"peftops: error: model group peftops-adapters has no version 42"),
        (
            "registry-is-a-folder",
            r"peftops: error: .*a-folder is a folder, not a registry file; check --registry",
        ),
        (
            "approved-by-parameter",
            r"peftops: error: unknown pipeline parameters \['ApprovalStatus'\]",
        ),
    ],
)
def test_bad_input_is_one_line_no_traceback_registry_unchanged(
    tiny_run, tmp_path: Path, case: str, message: str
) -> None:
    import re

    root, _ = tiny_run
    registry = root / "registry.sqlite"
    before = registry_fingerprint(registry)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    folder = tmp_path / "a-folder"
    folder.mkdir()
    bad = write_jsonl(
        tmp_path / "bad.jsonl", [{"dialogue": "a", "summary": "b"}, {"dialogue": "c"}]
    )
    common = ["--registry", str(registry), "--out", str(tmp_path / "run")]
    args = {
        "missing-data": [
            "run-local",
            "--preset",
            "tiny",
            "--data",
            str(tmp_path / "missing.jsonl"),
            *common,
        ],
        "unknown-preset": ["run-local", "--preset", "huge", *common],
        "unwritable-out": [
            "run-local",
            "--preset",
            "tiny",
            "--registry",
            str(registry),
            "--out",
            str(blocker / "run"),
        ],
        "malformed-data": ["run-local", "--preset", "tiny", "--data", str(bad), *common],
        "approved-by-parameter": [
            "run-local",
            "--preset",
            "tiny",
            "--param",
            "ApprovalStatus=Approved",
            *common,
        ],
        # Refused before any step runs, not after the whole pipeline at registration.
        "registry-is-a-folder": [
            "run-local",
            "--preset",
            "tiny",
            "--registry",
            str(folder),
            "--out",
            str(tmp_path / "run"),
        ],
        "unknown-version": [
            "models",
            "approve",
            "42",
            "-d",
            "x",
            "--registry",
            f"local:{registry}",
        ],
    }[case]
    done = peftops(*args, cwd=tmp_path)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("peftops: error:")]
    assert len(errors) == 1 and re.match(message, errors[0]), done.stderr[-2000:]
    assert registry_fingerprint(registry) == before
    assert not (tmp_path / "run" / "jobs").exists()  # no job ran


def run_one_step(tmp_path: Path, parameter: dict, step: dict) -> Any:
    return run_definition(tmp_path, {"Parameters": [parameter], "Steps": [step]})


def test_the_local_runner_refuses_what_the_service_refuses(tmp_path: Path) -> None:
    """A job request that botocore accepts but SageMaker refuses fails its step locally too."""
    result = run_one_step(
        tmp_path,
        {"Name": "Key", "Type": "String", "DefaultValue": "arn:aws:kms:k"},
        {
            "Name": "Train",
            "Type": "Training",
            "Arguments": {
                "ResourceConfig": {
                    "InstanceType": "ml.g5.2xlarge",
                    "InstanceCount": 1,
                    "VolumeSizeInGB": 100,
                    "VolumeKmsKeyId": {"Get": "Parameters.Key"},
                }
            },
        },
    )
    assert result.status == "Failed"
    assert result.failure.startswith("Train: VolumeKmsKeyId on ml.g5.2xlarge")
    assert [(s.name, s.status) for s in result.steps] == [("Train", "Failed")]
    assert not list((tmp_path / "jobs").rglob("Train"))  # refused before any job started


def test_the_local_runner_refuses_a_uri_inside_a_key(tmp_path: Path) -> None:
    """What the old Preprocess output did: the input URI joined into the output key."""
    output = {"Std:Join": {"On": "/", "Values": ["s3://b/out", {"Get": "Parameters.Data"}]}}
    result = run_one_step(
        tmp_path,
        {"Name": "Data", "Type": "String", "DefaultValue": "s3://b/data/in/"},
        {
            "Name": "Prepare",
            "Type": "Processing",
            "Arguments": {
                "ProcessingResources": {
                    "ClusterConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1}
                },
                "ProcessingOutputConfig": {
                    "Outputs": [{"OutputName": "splits", "S3Output": {"S3Uri": output}}]
                },
            },
        },
    )
    assert result.status == "Failed"
    assert result.failure == (
        "Prepare: ProcessingOutputConfig.Outputs[0].S3Output.S3Uri 's3://b/out/s3://b/data/in/' "
        "holds another URI inside its key"
    )
