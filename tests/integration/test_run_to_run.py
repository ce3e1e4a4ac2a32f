"""From one run to the next, on the tiny preset, as a scheduled pipeline lives: the local run
folder keeps its bucket mirror and step cache the way a bucket and SageMaker's cache persist.

The runs continue from the session's first tiny run (a copy of its folder): (a) the same data
again is all cache hits and registers nothing new; reuse mode (d) fails without a stored
baseline, naming the command that seeds it, and passes after it; (b) a new dataset version
trains from step 0 and registers a version whose lineage names it, and reuse mode refuses the
old baseline for its new data at its first step; (c, e) two runs at once with other LoRA ranks train anew,
each in its own checkpoint prefix.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipelines.local.presets import LOCAL_DEPLOYMENT, SMOKE_GROUP
from pipelines.local.run import LocalRun, run_local
from pipelines.registry import LocalRegistry
from tests.conftest import REPO
from training_scripts import contracts

SAMPLE = REPO / "data/sample/dialogues.jsonl"
CACHED_JOBS = ("Preprocess", "TrainAdapter", "TrainBaseline", "Evaluate")


@pytest.fixture(scope="module")
def deployment(tiny_run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the first run's folder and registry: the state a second run starts from."""
    root, done = tiny_run
    assert done.returncode == 0, done.stderr[-2000:]
    copy = tmp_path_factory.mktemp("run-to-run") / "deployment"
    shutil.copytree(root, copy)
    return copy


def again(root: Path, **kwargs: Any) -> LocalRun:
    return run_local(
        preset_name="tiny",
        data=kwargs.pop("data", SAMPLE),
        out=root / "run",
        registry_path=root / "registry.sqlite",
        log=lambda _: None,
        **kwargs,
    )


def registry(root: Path) -> LocalRegistry:
    return LocalRegistry(root / "registry.sqlite", SMOKE_GROUP)  # the tiny preset's group


def steps(run: LocalRun) -> dict[str, Any]:
    return {record.name: record for record in run.result.steps}


@pytest.fixture(scope="module")
def second_run(deployment: Path) -> LocalRun:
    return again(deployment)


def test_a_the_same_data_again_is_cache_hits_and_no_duplicate(deployment, second_run) -> None:
    run = second_run
    assert run.result.status == "Succeeded", run.result.failure
    assert run.dataset is not None and not run.dataset.new
    for name in CACHED_JOBS:
        assert steps(run)[name].detail.startswith("cache hit: the job of local-"), name
    assert run.result.registered is None
    assert "is already registered as local:" in steps(run)["CheckRegistered"].detail
    assert [v.version for v in registry(deployment).list()] == [1]
    # The run's report says which version holds this adapter, not that one will be registered.
    report = (deployment / "run" / "report.html").read_text()
    assert "is already registered as local:" in report and "pending" not in report


@pytest.fixture(scope="module")
def reuse_runs(deployment: Path, second_run) -> tuple[LocalRun, LocalRun]:
    without = again(deployment, parameters={"BaselineMode": "reuse"})
    published = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "baseline", "publish",
         "--evaluation", str(deployment / "run" / "evaluation.json"),
         "--local-run", str(deployment / "run")],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert published.returncode == 0, published.stderr
    return without, again(deployment, parameters={"BaselineMode": "reuse"})


def test_d_reuse_mode_needs_a_published_baseline(reuse_runs) -> None:
    without, with_baseline = reuse_runs
    assert without.result.status == "Failed"
    assert [(s.name, s.status) for s in without.result.steps] == [("ResolveInputs", "Failed")]
    (line,) = without.result.failure.splitlines()
    assert "BaselineMode=reuse needs a stored baseline at s3://peftops-local/baselines/" in line
    assert "peftops baseline publish --evaluation" in line

    assert with_baseline.result.status == "Succeeded", with_baseline.result.failure
    assert "EvaluateStoredBaseline" in steps(with_baseline)
    assert with_baseline.evaluation is not None
    source = with_baseline.evaluation["baseline_source"]
    assert source["kind"] == "reused" and source["test_set_matches"] is True
    # The adapter is the cached one, already registered: no duplicate from reuse mode either.
    assert with_baseline.result.registered is None


@pytest.fixture(scope="module")
def republished(deployment: Path, reuse_runs) -> LocalRun:
    """Another baseline published for the same data (its figures edited by hand), then a
    reuse run: it must evaluate against the new one, not answer from the step cache."""
    from pipelines.functions import layout
    from pipelines.local.run import MIRROR_DIR
    from pipelines.local.s3_mirror import S3Mirror

    current = S3Mirror(deployment / "run" / MIRROR_DIR).get(
        LOCAL_DEPLOYMENT.bucket, layout.baseline_key("dialogue-summary")
    )
    evaluation = json.loads(current)
    evaluation["models"]["full_finetune"]["rougeL"] = 0.987654
    edited = deployment / "edited-baseline.json"
    edited.write_text(json.dumps(evaluation), encoding="utf-8")
    published = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "baseline", "publish",
         "--evaluation", str(edited), "--local-run", str(deployment / "run")],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert published.returncode == 0, published.stderr
    return again(deployment, parameters={"BaselineMode": "reuse"})


def test_d_a_newly_published_baseline_is_evaluated_anew(republished) -> None:
    run = republished
    assert run.result.status == "Succeeded", run.result.failure
    assert not steps(run)["EvaluateStoredBaseline"].detail.startswith("cache hit")
    assert run.evaluation is not None
    assert run.evaluation["models"]["full_finetune"]["rougeL"] == 0.987654


@pytest.fixture(scope="module")
def week2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lines = SAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)
    path = tmp_path_factory.mktemp("week2") / "dialogues.jsonl"
    path.write_text("".join(lines[:400]), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def new_data(deployment: Path, reuse_runs, republished, week2: Path) -> LocalRun:
    return again(deployment, data=week2)


def test_b_a_new_dataset_version_trains_anew_and_registers_with_its_lineage(
    deployment, new_data
) -> None:
    run = new_data
    assert run.result.status == "Succeeded", run.result.failure
    assert run.dataset is not None and run.dataset.new
    for name in CACHED_JOBS:
        assert not steps(run)[name].detail.startswith("cache hit"), name
    job = next((deployment / "run" / "jobs" / run.result.execution_id).glob("TrainAdapter"))
    assert "resuming from" not in (job / "job.log").read_text()
    metrics = contracts.TRAINING_METRICS.read(job / "container/opt/ml/model")
    assert metrics["resumed_from_step"] is None
    registered = run.result.registered
    assert registered is not None and registered.version == 2
    assert registered.metadata["dataset_version"] == run.dataset.version
    assert registered.metadata["dataset_uri"] == (
        f"s3://{LOCAL_DEPLOYMENT.bucket}/datasets/dialogue-summary/versions/{run.dataset.version}/"
    )
    assert "://" not in registered.metadata["manifest_uri"].removeprefix("s3://")


def test_d_reuse_mode_refuses_a_baseline_scored_on_another_test_set(
    deployment, new_data, week2
) -> None:
    """At ResolveInputs, in seconds: no training is paid for only to have Evaluate refuse the
    baseline (in the cloud, every scheduled run on new data until someone republished)."""
    run = again(deployment, data=week2, parameters={"BaselineMode": "reuse"})
    assert run.result.status == "Failed"
    assert [(s.name, s.status) for s in run.result.steps] == [("ResolveInputs", "Failed")]
    (line,) = run.result.failure.splitlines()
    assert f"not on {new_data.dataset.version}, which this run trains on" in line
    assert "peftops baseline publish" in line
    assert [v.version for v in registry(deployment).list()] == [1, 2]


@pytest.fixture(scope="module")
def concurrent(deployment: Path, new_data, week2: Path) -> list[subprocess.CompletedProcess]:
    """Two executions at once on one bucket and the newest data, with LoRA ranks no run has
    used yet: Preprocess and TrainBaseline hit the cache, each adapter trains."""
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipelines.cli",
                "run-local",
                "--preset",
                "tiny",
                "--data",
                str(week2),
                "--out",
                str(deployment / "run"),
                "--registry",
                str(deployment / "registry.sqlite"),
                "--param",
                f"LoraRank={rank}",
                "--tracking",
                str(deployment / "mlflow.db"),  # both runs log into one store
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (4, 8)
    ]
    return [
        subprocess.CompletedProcess(p.args, p.wait(timeout=600), *p.communicate())
        for p in processes
    ]


def test_c_e_runs_at_once_with_other_ranks_train_anew_in_their_own_checkpoints(
    deployment, concurrent
) -> None:
    for done in concurrent:
        assert done.returncode == 0, done.stderr[-3000:]
    versions = registry(deployment).list()
    assert sorted(v.metadata["lora_r"] for v in versions[2:]) == ["4", "8"]
    assert [v.version for v in versions] == [1, 2, 3, 4]
    prefixes = {
        path.parent
        for path in (deployment / "run" / "s3").rglob(
            "checkpoints/TrainAdapter/*/*/run_config.json"
        )
    }
    configs = {json.loads((p / "run_config.json").read_text())["fingerprint"] for p in prefixes}
    # One prefix per training run: the two concurrent ones, and the two earlier datasets'.
    assert len(prefixes) == len(configs) == 4
    for done in concurrent:
        assert "resuming from" not in done.stderr


def test_a_failed_step_names_its_kept_log(
    deployment, second_run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job's whole output stays in its execution's job folder; the one-line error points
    there. (Preprocess is a cache hit here; train.py refuses the learning rate, which the run's
    own range check would refuse first: taken out here, the job's refusal is what is seen.)"""
    import re

    from pipelines.definition import parameter_ranges

    monkeypatch.delitem(parameter_ranges.PARAMETER_RANGES, "LearningRate")
    before = registry(deployment).list()
    run = again(deployment, parameters={"LearningRate": "-1"})
    assert run.result.status == "Failed"
    (error,) = run.result.failure.splitlines()
    assert error.startswith("step TrainAdapter failed: ")
    assert "--learning-rate must be >= 0" in error
    named = re.search(r"\(full log: (.+)\)$", error)
    assert named is not None, error
    log = Path(named[1])
    assert log == deployment / "run" / "jobs" / run.result.execution_id / "TrainAdapter" / "job.log"
    lines = log.read_text().splitlines()
    assert lines[0].startswith("$ ") and "train.py " in lines[0]
    assert any("--learning-rate must be >= 0" in line for line in lines)
    assert registry(deployment).list() == before


def test_f_a_gate_the_adapter_fails_ends_the_run_nonzero_and_registers_nothing(
    tiny_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same run with a deployment whose gate asks the adapter to gain 0.5 ROUGE-L over the
    base model (the cached jobs run again only where the thresholds reach them: Evaluate)."""
    import dataclasses

    from typer.testing import CliRunner

    from pipelines.cli import app
    from pipelines.local.presets import PRESETS

    root, done = tiny_run
    assert done.returncode == 0, done.stderr[-2000:]
    shutil.copytree(root, tmp_path / "deployment")
    root = tmp_path / "deployment"
    tiny = PRESETS["tiny"]
    strict = dataclasses.replace(tiny.config, metric_tolerance=0.02, min_metric_gain=0.5)
    monkeypatch.setitem(PRESETS, "tiny", dataclasses.replace(tiny, config=strict))

    result = CliRunner().invoke(
        app,
        ["run-local", "--preset", "tiny", "--out", str(root / "run"),
         "--registry", str(root / "registry.sqlite"), "--tracking", "none"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output[-3000:]
    error = result.output.strip().splitlines()[-1]
    assert error.startswith(
        "peftops: error: GateFailed: Quality gate failed on the task's metric, rougeL: "
    ), error
    # The figures the gate read are the evaluation's, against the thresholds of this deployment.
    evaluation = contracts.EVALUATION.read(root / "run")
    gain = evaluation["gate"]["gain_vs_base_lower95"]
    assert gain == evaluation["comparisons"]["adapter_vs_base"]["rougeL"]["low"] < 0.5
    assert f"{gain}" in error and "(required 0.5)" in error
    verdict = contracts.gate_verdict(evaluation, contracts.GateThresholds(0.02, 0.5))
    assert verdict[0] is False
    assert [v.version for v in registry(root).list()] == [1]  # the first run's, nothing new
    # The summary and the report say so, and what to do next; neither promises a registration.
    assert "Nothing registered: the adapter did not pass the quality gate" in result.output
    assert "--param Epochs=N" in result.output
    report = (root / "run" / "report.html").read_text()
    assert "the gate failed, so the pipeline registers nothing" in report
    assert "registers the adapter after this report" not in report
