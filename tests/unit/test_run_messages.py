"""What a run tells its user: progress lines with the time left, and what became of the
adapter, in the console and in the report."""

from __future__ import annotations

import pytest

from pipelines.local.executor import RunResult, StepRecord
from pipelines.local.run import registration_outcome
from pipelines.registry import ModelVersion
from training_scripts.measurements import progress
from training_scripts.report import registration


@pytest.mark.parametrize(
    ("done", "total", "elapsed", "since", "line"),
    [
        (4, 16, 20.0, 0, "4/16 (25%), 20s elapsed, about 60s left"),
        (16, 16, 80.0, 0, "16/16 (100%), 80s elapsed, about 0s left"),
        # A resumed run's pace counts only the steps it ran itself (10 -> 12 in 10 s).
        (12, 20, 10.0, 10, "12/20 (60%), 10s elapsed, about 40s left"),
        (10, 20, 0.0, 10, "10/20 (50%), 0s elapsed, time left not known yet"),
        (0, 0, 0.0, 0, "0/0 (100%), 0s elapsed, time left not known yet"),
    ],
)
def test_progress_extrapolates_the_pace_so_far(
    done: int, total: int, elapsed: float, since: int, line: str
) -> None:
    assert progress(done, total, elapsed, since=since) == line


@pytest.mark.parametrize(
    ("passed", "registered", "says"),
    [
        (True, None, "pending: the pipeline registers the adapter after this report"),
        (False, None, "no: the gate failed, so the pipeline registers nothing from this run"),
        (True, "peftops-adapters version 3", "peftops-adapters version 3"),
    ],
)
def test_the_report_says_what_became_of_the_adapter(
    passed: bool, registered: str | None, says: str
) -> None:
    assert registration(passed, registered) == says


def record(name: str, status: str = "Succeeded", detail: str = "") -> StepRecord:
    return StepRecord(name, "Condition", status, detail=detail)


def test_a_run_tells_its_report_the_registration_outcome() -> None:
    version = ModelVersion(
        group="g", version=2, status="PendingManualApproval", model_data_url="", created=""
    )
    assert registration_outcome(RunResult("Succeeded", registered=version)) == "g version 2"
    rerun = RunResult(
        "Succeeded",
        steps=[record("CheckRegistered", detail="adapter s3://a is already registered as x")],
    )
    assert registration_outcome(rerun) == "adapter s3://a is already registered as x"
    prompt_tuning = RunResult(
        "Failed", steps=[record("NotServable", "Failed", "PeftMethod prompt_tuning adapters ...")]
    )
    assert registration_outcome(prompt_tuning) == "no: PeftMethod prompt_tuning adapters ..."
    # A failed gate: the evaluation's own report already says so.
    assert registration_outcome(RunResult("Failed", steps=[record("GateFailed", "Failed")])) is None
    new = RunResult("Succeeded", steps=[record("CheckRegistered", detail="a new adapter")])
    assert registration_outcome(new) is None
