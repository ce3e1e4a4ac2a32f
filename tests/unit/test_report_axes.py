"""The report's charts: data values mapped to pixels, round tick values, the padded ranges the
curves are drawn in, and a report rendered again from a one-example folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training_scripts import contracts, report
from training_scripts.report import Axis, padded_range


@pytest.mark.parametrize(
    ("axis", "value", "pixel"),
    [
        (Axis(0.0, 1.0, 264.0, 28.0), 0.0, 264.0),  # a y axis: up is fewer pixels
        (Axis(0.0, 1.0, 264.0, 28.0), 1.0, 28.0),
        (Axis(0.0, 1.0, 264.0, 28.0), 0.5, 146.0),
        (Axis(0.0, 1.0, 264.0, 28.0), 0.123, 235.0),  # 234.972, to a tenth of a pixel
        (Axis(-1.0, 3.0, 10.0, 50.0), 0.0, 20.0),
        (Axis(2.0, 2.0, 0.0, 100.0), 3.0, 100.0),  # no span: one unit across
    ],
)
def test_an_axis_maps_values_linearly_onto_its_pixels(
    axis: Axis, value: float, pixel: float
) -> None:
    assert axis(value) == pixel


@pytest.mark.parametrize(
    ("axis", "count", "ticks"),
    [
        (Axis(0.0, 1.0, 0.0, 100.0), 5,
         [(0.0, 0.0), (0.2, 20.0), (0.4, 40.0), (0.6, 60.0), (0.8, 80.0), (1.0, 100.0)]),
        # From the first round value inside the range, steps of 2 x a power of ten.
        (Axis(0.37, 0.93, 0.0, 56.0), 5, [(0.4, 3.0), (0.6, 23.0), (0.8, 43.0)]),
        (Axis(0.0, 1000.0, 0.0, 10.0), 4, [(0.0, 0.0), (500.0, 5.0), (1000.0, 10.0)]),  # 5 x
        (Axis(0.0, 4.5, 0.0, 45.0), 5, [(0.0, 0.0), (1.0, 10.0), (2.0, 20.0), (3.0, 30.0), (4.0, 40.0)]),
        (Axis(0.0, 9.0, 0.0, 90.0), 3, [(0.0, 0.0), (5.0, 50.0)]),
        (Axis(-0.3, 0.3, 0.0, 60.0), 3, [(-0.2, 10.0), (0.0, 30.0), (0.2, 50.0)]),
        (Axis(5.0, 5.0, 0.0, 10.0), 5, [(5.0, 0.0)]),  # one value: one tick
        # 0.3 / 0.1 is 2.9999999999999996 in floating point: the last tick still counts.
        (Axis(0.0, 0.3, 0.0, 30.0), 3, [(0.0, 0.0), (0.1, 10.0), (0.2, 20.0), (0.3, 30.0)]),
    ],
)  # fmt: skip
def test_ticks_fall_on_round_values_inside_the_range(
    axis: Axis, count: int, ticks: list[tuple[float, float]]
) -> None:
    assert axis.ticks(count) == ticks


def test_ticks_default_to_about_five() -> None:
    assert len(Axis(0.0, 1.0, 0.0, 100.0).ticks()) == 6


@pytest.mark.parametrize(
    ("values", "include", "padded"),
    [
        ([0.2, 0.6], (), (0.16, 0.64)),  # a tenth of the span each side
        ([0.6, 0.2, 0.4], (), (0.16, 0.64)),
        ([0.5, 0.5], (), (0.45, 0.55)),  # one value: 0.05 each side
        ([0.2, 0.6], (1.0,), (0.12, 1.08)),  # a value the chart must show, inside
        ([0.3], (0.0,), (-0.03, 0.33)),
    ],
)
def test_a_curves_range_is_padded_a_tenth_each_side(
    values: list[float], include: tuple[float, ...], padded: tuple[float, float]
) -> None:
    assert padded_range(values, include=include) == pytest.approx(padded)


def test_a_one_example_folder_renders_its_report(tmp_path: Path) -> None:
    from tests.unit.test_scoring import reviewed_evaluation

    document, rows, predictions = reviewed_evaluation()
    contracts.EVALUATION.write(tmp_path, document)
    row = rows[0]
    record = {"id": row["id"], "input": row["input"], "reference": row["target"]}
    record |= {model: predictions[model][0] for model in contracts.MODEL_NAMES}
    (tmp_path / "predictions.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")
    page = report.render_folder(tmp_path)
    assert page == report.render(
        contracts.EVALUATION.read(tmp_path),
        rows[:1],
        {model: [predictions[model][0]] for model in contracts.MODEL_NAMES},
        contracts.GateThresholds(**document["gate_thresholds"]),
    )
