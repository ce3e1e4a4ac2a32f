"""predictions.jsonl, what a reviewer reads beside the scores: each test example's own input and
reference, and every model's summary of that example, in the test split's order."""

from __future__ import annotations

import json
from pathlib import Path

from training_scripts import contracts
from training_scripts.evaluate import write_predictions


def test_each_line_holds_its_examples_input_reference_and_summaries(tmp_path: Path) -> None:
    rows = [
        {"id": f"ex-{i}", contracts.INPUT_KEY: f"dialogue {i}", contracts.TARGET_KEY: f"ref {i}"}
        for i in range(3)
    ]
    predictions = {name: [f"{name} says {i}" for i in range(3)] for name in contracts.MODEL_NAMES}
    path = tmp_path / "predictions.jsonl"
    write_predictions(path, rows, predictions)
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert lines == [
        {
            "id": f"ex-{i}",
            "input": f"dialogue {i}",
            "reference": f"ref {i}",
            **{name: f"{name} says {i}" for name in contracts.MODEL_NAMES},
        }
        for i in range(3)
    ]
