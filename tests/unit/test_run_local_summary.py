"""What `peftops run-local` prints when a run ends (pipelines/cli/run_local.py), from a run's
result: the steps, the three models side by side (each figure from its own model), and what was
registered, or why not and what to do next. One table over the ways a run ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.cli import run_local
from pipelines.local.executor import RunResult, StepRecord
from pipelines.local.run import LocalRun
from pipelines.registry.versions import ModelVersion
from tests.evaluations import evaluation

REGISTERED = ModelVersion(
    group="peftops-adapters",
    version=3,
    status="PendingManualApproval",
    model_data_url="s3://bucket/adapter/model.tar.gz",
    created="2026-12-07T10:00:00Z",
)
STEPS = [
    StepRecord("Preprocess", "Processing", "Succeeded", 1.25, "12 train, 4 test"),
    StepRecord("TrainAdapter", "Training", "Succeeded", 30.0, "x" * 100),
]


def cells(output: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is `first`."""
    for line in output.splitlines():
        row = [cell.strip() for cell in line.strip("│┃ ").split("│" if "│" in line else "┃")]
        if row and row[0] == first:
            return row
    raise AssertionError(f"no row {first!r} in:\n{output}")


def alignments(output: str, first: str) -> list[str]:
    """Where each cell of the row whose first cell is `first` sits in its column."""
    line = next(
        line for line in output.splitlines() if "│" in line and line.split("│")[1].strip() == first
    )

    def alignment(cell: str) -> str:
        text = cell[1:-1]  # without the one space of padding on each side
        if text == text.strip():
            return "full"
        return {(True, False): "right", (False, True): "left"}.get(
            (text.startswith(" "), text.endswith(" ")), "center"
        )

    return [alignment(cell) for cell in line.split("│")[1:-1]]


def summary(run: LocalRun, capsys: pytest.CaptureFixture[str]) -> str:
    run_local.print_summary(run)
    return capsys.readouterr().out


def test_a_registered_run_shows_its_steps_the_three_models_and_the_version(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    document = evaluation(adapter=0.5, full_finetune=0.625, base=0.125)
    figures = {
        "base": {"artifact_bytes": None, "peak_memory_bytes": None},
        "adapter": {"artifact_bytes": 1536, "peak_memory_bytes": 3 * 2**20, "train_runtime_s": 42.4,
                    "trainable_params": 1234567, "trainable_percent": 0.5},
        "full_finetune": {"artifact_bytes": 5 * 2**30, "peak_memory_bytes": 2**30,
                          "train_runtime_s": 99.6, "trainable_params": 135000000},
    }  # fmt: skip
    for model, extra in figures.items():
        document["models"][model].update(extra)
    document["models"]["base"]["trainable_percent"] = 0
    out = summary(
        LocalRun(
            RunResult("Succeeded", steps=STEPS, registered=REGISTERED),
            evaluation=document,
            evaluation_path=tmp_path / "evaluation" / "evaluation.json",
        ),
        capsys,
    )
    assert cells(out, "step") == ["step", "type", "status", "time", "detail"]
    assert cells(out, "Preprocess") == [
        "Preprocess", "Processing", "Succeeded", "1.2s", "12 train, 4 test",
    ]  # fmt: skip
    assert cells(out, "TrainAdapter")[3:] == ["30.0s", "x" * 80]  # a detail's first 80
    assert cells(out, "model") == [
        "model", "ROUGE-1", "ROUGE-2", "ROUGE-L", "trainable params", "artifact", "train time",
        "peak memory",
    ]  # fmt: skip
    assert cells(out, "base") == ["base", "0.1250", "0.1250", "0.1250", "10", "n/a", "-", "n/a"]
    assert cells(out, "adapter") == [
        "adapter", "0.5000", "0.5000", "0.5000", "1,234,567 (0.50%)", "1.5 KB", "42s", "3.0 MB",
    ]  # fmt: skip
    assert cells(out, "full_finetune") == [
        "full_finetune", "0.6250", "0.6250", "0.6250", "135,000,000 (1.00%)", "5.0 GB", "100s", "1.0 GB",
    ]  # fmt: skip
    assert "Registered peftops-adapters version 3 (PendingManualApproval)." in out
    # Tables titled on the left; names on the left of their column, figures on the right.
    lines = [line.rstrip() for line in out.splitlines()]
    assert lines[0] == "Steps"
    assert "Base vs adapter vs full fine-tune" in lines
    assert alignments(out, "adapter") == ["left", *["right"] * 7]
    assert f"Report: {tmp_path / 'evaluation' / 'report.html'}" in out
    assert "Nothing registered" not in out


def test_a_task_scored_by_another_metric_shows_that_metric_first(
    capsys: pytest.CaptureFixture[str],
) -> None:
    document = evaluation(adapter=0.5, full_finetune=0.625, base=0.125)
    document["gate"]["metric"] = "label_accuracy"
    for index, model in enumerate(("base", "adapter", "full_finetune")):
        document["models"][model]["label_accuracy"] = 0.25 * index
    out = summary(LocalRun(RunResult("Succeeded", steps=STEPS), evaluation=document), capsys)
    assert cells(out, "model")[:3] == ["model", "label_accuracy", "ROUGE-1"]
    assert [cells(out, m)[1] for m in ("base", "adapter", "full_finetune")] == [
        "0.0000", "0.2500", "0.5000",
    ]  # fmt: skip
    assert "Report:" not in out  # no evaluation file to point at


@pytest.mark.parametrize(
    ("status", "steps", "said", "unsaid"),
    [
        # Succeeded without registering: the last check's words, as a sentence.
        ("Succeeded",
         [StepRecord("CheckRegisteredA", "Lambda", "Succeeded", 0, "no: an old reason"),
          StepRecord("CheckRegisteredB", "Lambda", "Succeeded", 0, "no: another old reason"),
          StepRecord("CheckRegisteredC", "Lambda", "Succeeded", 0,
                     "the adapter equals version 2, already registered")],
         ["The adapter equals version 2, already registered."], ["Nothing registered", "No: an old reason."]),
        ("Succeeded", STEPS, ["Nothing registered."], [run_local.GATE_FAILED_NEXT]),
        # The gate failed: what to do next, and no other verdict.
        ("Failed", [*STEPS, StepRecord("GateFailedAdapter", "Fail", "Failed", 0, "too low")],
         [run_local.GATE_FAILED_NEXT], ["Nothing registered.", "Registered "]),
        # Another step failed: neither the gate's advice nor a registration verdict.
        ("Failed", [StepRecord("TrainAdapter", "Training", "Failed", 3, "out of memory")],
         ["out of memory"], ["Nothing registered", "quality gate"]),
    ],
)  # fmt: skip
def test_what_a_run_that_registered_nothing_says(
    status: str,
    steps: list[StepRecord],
    said: list[str],
    unsaid: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = summary(LocalRun(RunResult(status, steps=steps)), capsys)
    verdicts = {"Nothing registered.", "The adapter equals version 2, already registered."}
    # A verdict is a line of its own, and only the one said.
    assert {line for line in out.splitlines() if line in verdicts} == verdicts & set(said)
    flat = " ".join(out.split())
    for words in said:
        assert " ".join(words.split()) in flat
    for words in unsaid:
        assert words not in flat
    assert "Base vs adapter" not in out  # no evaluation: no model table


@pytest.mark.parametrize(
    ("name", "status", "failed"),
    [
        ("GateFailedAdapter", "Failed", True),
        ("GateFailed", "Failed", True),
        ("GateFailedAdapter", "Succeeded", False),
        ("GateFailedAdapter", "Executing", False),
        ("TrainAdapter", "Failed", False),
        ("CheckGateFailed", "Failed", False),  # the name must start so
    ],
)
def test_the_gate_failed_only_when_its_fail_step_failed(
    name: str, status: str, failed: bool
) -> None:
    steps = [*STEPS, StepRecord(name, "Fail", status)]
    assert run_local.gate_failed(RunResult("Failed", steps=steps)) is failed
