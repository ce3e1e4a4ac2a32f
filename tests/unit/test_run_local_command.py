"""`peftops run-local`'s wiring (pipelines/cli/run_local.py): each option reaches the run as
the setting it names, progress goes to stderr and the summary to stdout, and each way a run
ends has its exit code. The run itself is recorded here, not made: tests/integration runs it
whole (test_local_run.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.local import run as local_run
from pipelines.local.executor import RunResult
from pipelines.local.run import LocalRun
from training_scripts import tasks

DEFAULTS = {
    "preset_name": "smollm2",
    "data": local_run.SAMPLE_DATA,
    "out": Path("runs/local"),
    "registry_path": Path("runs/registry.sqlite"),
    "registry_group": "",
    "task": tasks.resolve_task_spec(tasks.DEFAULT_TASK),
    "method": None,
    "precision": None,
    "parameters": {},
    "fresh": False,
    "tracking_store": Path("runs/mlflow.db"),
}


def invoke(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], outcome: Any = None
) -> tuple[Any, dict[str, Any]]:
    """run-local with these arguments; the settings the run was given."""
    given: dict[str, Any] = {}

    def recorded_run(**settings: Any) -> LocalRun:
        given.update(settings)
        print("a job's own output")  # a job script's print, which stdout must not carry
        settings["log"]("step Preprocess: Succeeded")
        if isinstance(outcome, Exception):
            raise outcome
        return LocalRun(outcome or RunResult("Succeeded"))

    monkeypatch.setattr(local_run, "run_local", recorded_run)
    done = CliRunner().invoke(app, ["run-local", *argv])
    given.pop("log", None)
    return done, given


def test_without_options_a_run_takes_the_documented_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    done, given = invoke(monkeypatch, [])
    assert done.exit_code == 0, done.output
    assert given == DEFAULTS


@pytest.mark.parametrize(
    ("argv", "settings"),
    [
        (["--preset", "tiny"], {"preset_name": "tiny"}),
        (["--data", "d.jsonl"], {"data": Path("d.jsonl")}),
        (["--method", "lora"], {"method": "lora"}),
        (["--out", "elsewhere"], {"out": Path("elsewhere")}),
        (["--registry", "local:r.sqlite#smoke"],
         {"registry_path": Path("r.sqlite"), "registry_group": "smoke"}),
        (["--registry", "r.sqlite"], {"registry_path": Path("r.sqlite")}),
        (["--precision", "fp32"], {"precision": "fp32"}),
        (["--param", "Epochs=2", "--param", "LoraRank=8"],
         {"parameters": {"Epochs": "2", "LoraRank": "8"}}),
        (["--tracking", "none"], {"tracking_store": None}),
        (["--tracking", "t/mlflow.db"], {"tracking_store": Path("t/mlflow.db")}),
        (["--fresh"], {"fresh": True}),
        (["--task", "support-routing"], {"task": tasks.resolve_task_spec("support-routing")}),
        (["--task-spec", str(tasks.SPECS_DIR / "support-routing.json")],
         {"task": tasks.resolve_task_spec("support-routing")}),
    ],
)  # fmt: skip
def test_each_option_reaches_the_run_as_its_setting(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], settings: dict[str, Any]
) -> None:
    done, given = invoke(monkeypatch, argv)
    assert done.exit_code == 0, done.output
    assert given == DEFAULTS | settings


def test_progress_goes_to_stderr_and_the_summary_to_stdout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    done, _ = invoke(monkeypatch, [])
    assert "a job's own output" in done.stderr and "step Preprocess: Succeeded" in done.stderr
    assert "a job's own output" not in done.stdout and "Preprocess" not in done.stdout
    assert done.stdout.splitlines()[0].strip() == "Steps"


@pytest.mark.parametrize(
    ("argv", "outcome", "code", "message"),
    [
        (["--registry", "sagemaker:adapters"], None, 2,
         "run-local registers into a local registry: --registry local:PATH or PATH"),
        (["--task", "support-routing", "--task-spec", "x.json"], None, 2,
         "pass --task (a shipped task) or --task-spec (your own), not both"),
        ([], ValueError("preset 'huge' is not one of: smollm2, tiny"), 2,
         "preset 'huge' is not one of: smollm2, tiny"),
        ([], RunResult("Failed", failure="TrainAdapter: out of memory"), 1,
         "TrainAdapter: out of memory"),
    ],
)  # fmt: skip
def test_each_way_a_run_ends_early_has_its_exit_code_and_words(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], outcome: Any, code: int, message: str
) -> None:
    done, _ = invoke(monkeypatch, argv, outcome)
    assert done.exit_code == code
    assert done.stderr.splitlines()[-1] == f"peftops: error: {message}"
