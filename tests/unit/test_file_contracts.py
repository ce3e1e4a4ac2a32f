"""The JSON files between the scripts and the pipeline (contracts.py): what a write leaves on
disk, and the one line a bad file is refused with, naming the file and the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.evaluations import evaluation
from training_scripts import contracts

METRICS = {
    "method": "lora",
    "trainable_params": 3,
    "total_params": 30,
    "train_runtime_s": 1.5,
    "global_step": 2,
    "note": "é",
}


def test_a_written_file_is_the_stamped_document_sorted_and_indented(tmp_path: Path) -> None:
    written = contracts.TRAINING_METRICS.write(tmp_path / "new" / "folder", METRICS)
    assert written == {"schema_version": 1, **METRICS}
    target = tmp_path / "new" / "folder" / "training_metrics.json"
    assert target.read_text(encoding="utf-8") == (
        json.dumps(written, indent=2, sort_keys=True) + "\n"
    )
    assert [p.name for p in target.parent.iterdir()] == ["training_metrics.json"]
    assert contracts.TRAINING_METRICS.read(target.parent) == written


def test_a_file_is_replaced_whole_from_a_hidden_file_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beside it: a rename within one file system is atomic. Hidden: no reader that lists the
    folder's JSON files picks up a half-written one."""
    replaced: list[tuple[Path, Path]] = []
    real_replace = Path.replace

    def recording(self: Path, target: Path) -> Path:
        replaced.append((self, Path(target)))
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", recording)
    contracts.write_json_atomic(tmp_path / "evaluation.json", {"a": 1})
    [(temporary, target)] = replaced
    assert target == tmp_path / "evaluation.json"
    assert temporary.parent == tmp_path
    assert temporary.name.startswith(".evaluation.json.")


def test_a_failed_write_keeps_the_old_file_leaves_no_temporary_and_raises_its_own_error(
    tmp_path: Path,
) -> None:
    target = tmp_path / "evaluation.json"
    contracts.write_json_atomic(target, {"old": True})
    circular: dict[str, Any] = {}
    circular["self"] = circular
    with pytest.raises(ValueError, match="Circular reference"):
        contracts.write_json_atomic(target, circular)
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["evaluation.json"]


def test_a_document_missing_what_the_pipeline_reads_is_not_written(tmp_path: Path) -> None:
    incomplete = {k: v for k, v in METRICS.items() if k != "global_step"}
    with pytest.raises(contracts.ContractError) as caught:
        contracts.TRAINING_METRICS.write(tmp_path, incomplete)
    assert str(caught.value) == (
        f"{tmp_path / 'training_metrics.json'}: training_metrics.json has no value at "
        "'global_step', which the pipeline reads"
    )
    assert list(tmp_path.iterdir()) == []


BAD_FILES = [
    ("missing", None, "cannot read training_metrics.json (No such file or directory); run train.py first"),
    ("not-json", b"{", "training_metrics.json is not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))"),
    ("not-utf8", b"\xff\xfe{", "training_metrics.json is not valid JSON ("),
    ("deep", b"[" * 100_000 + b"]" * 100_000, "training_metrics.json is nested too deeply to read"),
    ("huge-integer", b"1" * 5000, "training_metrics.json holds an unreadable value (Exceeds the limit (4300 digits) for integer string conversion"),
    ("not-an-object", b"[1, 2]", "expected a JSON object as training_metrics.json"),
    ("other-version", json.dumps({**METRICS, "schema_version": 2}).encode(), "training_metrics.json schema version 2, expected 1; produce it again with this version's train.py"),
    ("incomplete", json.dumps({"method": "lora"}).encode(), "training_metrics.json has no value at 'trainable_params', which the pipeline reads"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "content", "words"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_a_bad_file_is_one_line_naming_it_and_what_is_wrong(
    case: str, content: bytes | None, words: str, tmp_path: Path
) -> None:
    path = tmp_path / "training_metrics.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(contracts.ContractError) as caught:
        contracts.TRAINING_METRICS.read(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {words}")
    assert "\n" not in message


def test_a_files_figures_are_found_by_model_and_metric() -> None:
    document = evaluation(adapter=0.4, full_finetune=0.5, base=0.2)
    assert contracts.metric_path("adapter") == "models.adapter.rougeL"
    assert contracts.value_at(document, contracts.metric_path("base")) == pytest.approx(0.2)
    assert contracts.value_at(document, contracts.metric_path("full_finetune", "rouge1")) == (
        pytest.approx(0.5)
    )


def test_a_failed_gate_condition_names_the_gates_metric() -> None:
    document = evaluation(adapter=0.4, full_finetune=0.5, base=0.2)
    document["gate"]["metric"] = "label_accuracy"
    outcomes = contracts.gate_outcomes(document, contracts.GateThresholds(0.02, 0.01))
    assert {outcome.metric for outcome in outcomes} == {"label_accuracy"}
    failed = next(outcome for outcome in outcomes if not outcome.holds)
    assert "label_accuracy" in failed.failure
