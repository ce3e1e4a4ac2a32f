"""Experiment tracking (training_scripts/tracking.py) against a real MLflow SQLite store: a job's
run, its name, tags and parameters; the metrics MLflow can take; the evaluation's flat metric
names and artifacts; and every call a no-op when tracking is off or on a process other than the
main one."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.evaluations import evaluation
from training_scripts import contracts, tracking


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A SQLite store; artifacts go where an experiment without a location keeps them, under
    the working folder (./mlruns), here the test's own."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv(contracts.TRACKING_URI_VARIABLE, uri)
    monkeypatch.setenv(contracts.EXPERIMENT_NAME_VARIABLE, "peftops-adapters")
    monkeypatch.delenv(contracts.RUN_LABEL_VARIABLE, raising=False)
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("TRAINING_JOB_NAME", raising=False)
    monkeypatch.delenv("PROCESSING_JOB_NAME", raising=False)
    return uri


def read_run(uri: str, run_id: str) -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri).get_run(run_id)


def test_a_jobs_run_is_named_tagged_and_holds_its_parameters(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(contracts.RUN_LABEL_VARIABLE, "dialogue-summary · tiny")
    monkeypatch.setenv("TRAINING_JOB_NAME", "train-job-1")
    params = {"rank": 16, "unset": None, "long": "x" * 7000}
    with tracking.run("TrainAdapter", params=params, tags={"peftops.method": "qlora"}) as tracked:
        assert tracked is not None
    assert (tracked.experiment_name, tracked.tracking_uri) == ("peftops-adapters", store)
    logged = read_run(store, tracked.run_id)
    assert logged.info.run_name == "dialogue-summary · tiny · TrainAdapter"
    assert logged.info.status == "FINISHED"
    assert logged.info.experiment_id == tracked.experiment_id
    assert {k: v for k, v in logged.data.tags.items() if k.startswith("peftops.")} == {
        "peftops.step": "TrainAdapter",
        "peftops.job": "train-job-1",
        "peftops.method": "qlora",
    }
    assert logged.data.params == {"rank": "16", "long": "x" * 6000}


def test_a_run_without_a_label_or_job_is_named_by_its_step_in_the_default_experiment(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(contracts.EXPERIMENT_NAME_VARIABLE)
    monkeypatch.setenv("PROCESSING_JOB_NAME", "evaluate-job-1")
    with tracking.run("Evaluate", params={}) as tracked:
        assert tracked is not None
    logged = read_run(store, tracked.run_id)
    assert (logged.info.run_name, tracked.experiment_name) == ("Evaluate", "peftops")
    assert logged.data.tags["peftops.job"] == "evaluate-job-1"


def test_a_run_whose_work_fails_ends_failed(store: str) -> None:
    with pytest.raises(RuntimeError), tracking.run("Train", params={}) as tracked:
        raise RuntimeError("out of memory")
    assert read_run(store, tracked.run_id).info.status == "FAILED"


@pytest.mark.parametrize(("store", "rank"), [(False, None), (True, "1")])
def test_without_a_tracking_uri_or_off_the_main_process_nothing_is_tracked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, store: bool, rank: str | None
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}" if store else ""
    monkeypatch.setenv(contracts.TRACKING_URI_VARIABLE, uri)
    if rank is None:
        monkeypatch.delenv("RANK", raising=False)
    else:
        monkeypatch.setenv("RANK", rank)
    with tracking.run("Train", params={"a": 1}) as tracked:
        assert tracked is None
    tracking.log_evaluation(None, {}, Path("/nowhere"))  # a no-op too
    tracking.MetricLogger(None)({"loss": 1.0}, step=1)
    assert list(tmp_path.iterdir()) == []  # no store made


def test_only_finite_numbers_are_logged_as_metrics(store: str) -> None:
    with tracking.run("Train", params={}) as tracked:
        tracked.log_metrics(
            {"loss": 1.5, "step": 3, "flag": True, "nan": math.nan, "inf": math.inf, "text": "x"},
            step=7,
        )
        tracked.log_metrics({"nan": math.nan})  # nothing to log: no call
    tracked.log_metrics({"late": 2.0})  # the run has ended: still to that run
    logged = read_run(store, tracked.run_id)
    assert logged.data.metrics == {"loss": 1.5, "step": 3.0, "late": 2.0}
    import mlflow

    history = mlflow.MlflowClient(tracking_uri=store).get_metric_history(tracked.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(7, 1.5)]


def test_an_artifact_is_logged_to_its_run_when_its_file_exists(store: str, tmp_path: Path) -> None:
    (tmp_path / "report.html").write_text("<html></html>")
    (tmp_path / "late.json").write_text("{}")
    with tracking.run("Evaluate", params={}) as tracked:
        tracked.log_artifact(tmp_path / "report.html")
        tracked.log_artifact(tmp_path / "missing.html")
    tracked.log_artifact(tmp_path / "late.json")  # the run has ended: still to that run
    import mlflow

    listed = mlflow.MlflowClient(tracking_uri=store).list_artifacts(tracked.run_id)
    assert [a.path for a in listed] == ["late.json", "report.html"]


def test_training_metrics_are_logged_at_their_step(store: str) -> None:
    import mlflow

    with tracking.run("Train", params={}) as tracked:
        log = tracking.MetricLogger(tracked)
        log({"loss": 2.0}, step=5)
        log({"loss": 1.5}, step=10)
    history = mlflow.MlflowClient(tracking_uri=store).get_metric_history(tracked.run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(5, 2.0), (10, 1.5)]


def test_a_metric_that_cannot_be_logged_warns_once_and_training_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Down(tracking.Tracked):
        def log_metrics(self, metrics: Any, step: int | None = None) -> None:
            raise ConnectionError("tracking server unreachable")

    log = tracking.MetricLogger(Down("run", "0"))
    with caplog.at_level(logging.WARNING, logger="peftops"):
        log({"loss": 1.0}, step=5)
        log({"loss": 0.9}, step=6)
    assert caplog.messages == [
        "tracking: could not log metrics at step 5 (tracking server unreachable)"
    ]


@pytest.mark.parametrize(
    ("tracked", "link"),
    [
        (tracking.Tracked("r1", "4", "e", "sqlite:///runs/mlflow.db"),
         "http://127.0.0.1:5000/#/experiments/4/runs/r1"),
        (tracking.Tracked("r1", "4", "e", "arn:aws:sagemaker:eu-west-1:1:mlflow-tracking-server/x"),
         None),
        (None, None),
    ],
)  # fmt: skip
def test_a_local_store_links_to_the_runs_page_in_mlflow_ui(
    tracked: tracking.Tracked | None, link: str | None
) -> None:
    assert tracking.local_ui_link(tracked) == link


def document() -> dict[str, Any]:
    reviewed = evaluation(adapter=[0.5, 0.7], full_finetune=[0.6, 0.6], base=[0.1, 0.2])
    reviewed["models"]["adapter"]["generated_tokens_per_second"] = 12.5
    return reviewed


def test_the_evaluation_logs_every_score_comparison_and_gate_figure_under_a_flat_name() -> None:
    reviewed = document()
    metrics = tracking.evaluation_metrics(reviewed)
    rouge = ("rouge1", "rouge2", "rougeL", "rougeLsum")
    expected = {
        f"{model}.{key}": reviewed["models"][model][key]
        for model in ("base", "adapter", "full_finetune")
        for key in rouge
    }
    expected["adapter.generated_tokens_per_second"] = 12.5
    for name, per_metric in reviewed["comparisons"].items():
        for key, figures in per_metric.items():
            for field in ("difference", "low", "high", "min_detectable_difference"):
                expected[f"{name}.{key}.{field}"] = figures[field]
    expected |= {f"gate.{k}": v for k, v in reviewed["gate"].items() if isinstance(v, int | float)}
    expected |= {"gate_thresholds.metric_tolerance": 0.05, "gate_thresholds.min_metric_gain": 0.0}
    expected["test_examples"] = 2
    assert metrics == expected
    assert any(key.startswith("gate.") for key in metrics)  # the gate has figures to log


def test_a_task_scored_by_another_metric_logs_it_beside_rouge() -> None:
    reviewed = document()
    reviewed["gate"]["metric"] = "exact_match"
    for model, score in {"base": 0.1, "adapter": 0.6, "full_finetune": 0.7}.items():
        reviewed["models"][model]["exact_match"] = score
    metrics = tracking.evaluation_metrics(reviewed)
    assert [metrics[f"{m}.exact_match"] for m in ("base", "adapter", "full_finetune")] == [
        0.1,
        0.6,
        0.7,
    ]
    assert all(f"{m}.rougeL" in metrics for m in ("base", "adapter", "full_finetune"))


def test_the_evaluations_parameters_name_its_inputs_and_baseline() -> None:
    args = SimpleNamespace(base_model="smollm2", dataset_version="v1", max_examples=50,
                           max_new_tokens=48, baseline_evaluation="")  # fmt: skip
    assert tracking.evaluation_params(args) == {
        "base_model": "smollm2",
        "dataset_version": "v1",
        "max_examples": 50,
        "max_new_tokens": 48,
        "baseline": "trained",
    }
    reused = SimpleNamespace(**{**vars(args), "baseline_evaluation": "/opt/ml/baseline.json"})
    assert tracking.evaluation_params(reused)["baseline"] == "reused"


def test_the_evaluation_run_holds_its_metrics_and_each_output_file(
    store: str, tmp_path: Path
) -> None:
    reviewed = document()
    for name in ("evaluation.json", "report.html", "model_card.md"):
        (tmp_path / name).write_text(name)
    with tracking.run("Evaluate", params={}) as tracked:
        tracking.log_evaluation(tracked, reviewed, tmp_path)
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=store)
    logged = client.get_run(tracked.run_id).data.metrics
    assert logged == pytest.approx(tracking.evaluation_metrics(reviewed))
    listed = sorted(a.path for a in client.list_artifacts(tracked.run_id))
    assert listed == ["evaluation.json", "model_card.md", "report.html"]
