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
    """0 to 3: five ticks would be steps of 0.6, so steps of 1 (six would take steps of 0.5)."""
    assert Axis(0.0, 3.0, 0.0, 30.0).ticks() == [(0.0, 0.0), (1.0, 10.0), (2.0, 20.0), (3.0, 30.0)]


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


def scores(scale: float) -> dict:
    """Distinct scores for every model and ROUGE variant, the largest 0.75 x `scale`, each
    with its interval from 0.8 to 1.1 times the score."""
    models: dict = {}
    intervals: dict = {}
    for i, model in enumerate(contracts.MODEL_NAMES):
        for j, key in enumerate(contracts.ROUGE_KEYS):
            value = scale * (1 + i + 3 * j) / 16
            models.setdefault(model, {})[key] = value
            intervals.setdefault(model, {})[key] = {"low": value * 0.8, "high": value * 1.1}
    return {"models": models, "intervals": {"models": intervals}}


BASELINE, TOP = 264.0, 28.0  # the plot's pixel rows for 0 and for the axis' top value
LEFT, RIGHT = 48.0, 672.0


@pytest.mark.parametrize(
    ("scale", "top_value"),
    [
        (0.5, 0.75 * 0.5 * 1.1 * 1.1),  # the highest interval end, plus a tenth
        (1.3, 1.0),  # never above 1
        (0.01, 0.1),  # never below 0.1: tiny scores stay tiny bars
    ],
)
def test_score_bars_stand_on_the_baseline_with_heights_proportional_to_their_scores(
    scale: float, top_value: float
) -> None:
    evaluation = scores(scale)
    chart = report.score_chart(evaluation)
    assert {k: chart[k] for k in ("width", "height", "left", "right", "bottom")} == {
        "width": 680, "height": 300, "left": 48, "right": 672, "bottom": 264,
    }  # fmt: skip
    per_pixel = (BASELINE - TOP) / top_value
    expected_order = [
        (model, key) for key in contracts.ROUGE_KEYS for model in contracts.MODEL_NAMES
    ]
    assert len(chart["bars"]) == len(expected_order)
    for bar, (model, key) in zip(chart["bars"], expected_order, strict=True):
        value = evaluation["models"][model][key]
        interval = evaluation["intervals"]["models"][model][key]
        assert bar["title"] == (
            f"{report.LABELS[model]} {key}: {value:.4f} "
            f"[{interval['low']:.4f}, {interval['high']:.4f}]"
        )
        assert bar["color"] == report.COLORS[model]
        assert bar["height"] == pytest.approx(value * per_pixel, abs=0.1)
        assert bar["y"] + bar["height"] == pytest.approx(BASELINE, abs=0.1)
        assert bar["low"] == pytest.approx(BASELINE - interval["low"] * per_pixel, abs=0.05)
        assert bar["high"] == pytest.approx(BASELINE - interval["high"] * per_pixel, abs=0.05)
        assert bar["center"] == pytest.approx(bar["x"] + bar["width"] / 2, abs=0.1)
    ticks = chart["ticks"]
    assert ticks[0] == (0.0, BASELINE)
    assert all(TOP <= pixel <= BASELINE and value <= top_value for value, pixel in ticks)


def test_score_bars_are_grouped_by_rouge_variant_side_by_side_inside_the_plot() -> None:
    """Four groups across the plot's 616 pixels (left margin 48, 16 to spare): each group's
    three bars a quarter of the group apart, half a quarter in from its edge, 4 pixels between
    bars; each group labelled at its centre."""
    chart = report.score_chart(scores(0.5))
    group = (680 - 48 - 16) / len(contracts.ROUGE_KEYS)
    slot = group / (len(contracts.MODEL_NAMES) + 1)
    bars = iter(chart["bars"])
    for g in range(len(contracts.ROUGE_KEYS)):
        for b in range(len(contracts.MODEL_NAMES)):
            bar = next(bars)
            x = LEFT + g * group + slot / 2 + b * slot
            assert (bar["x"], bar["width"]) == (round(x, 1), round(slot - 4, 1))  # to a tenth
            assert bar["center"] == round(x + (slot - 4) / 2, 1)
            assert bar["x"] >= LEFT and bar["x"] + bar["width"] <= RIGHT
    assert chart["groups"] == [
        {"label": key, "x": round(LEFT + g * group + group / 2, 1)}
        for g, key in enumerate(contracts.ROUGE_KEYS)
    ]


def comparisons_of(metric: str) -> dict:
    """Three comparisons, each with distinct figures in the gate's metric (and others in
    ROUGE-L, which the chart must not read when the gate judges another metric)."""
    figures = {
        "adapter_vs_full_finetune": (-0.02, -0.06, 0.02),
        "adapter_vs_base": (0.2, 0.1, 0.3),
        "extra_vs_base": (0.1, 0.0, 0.15),
    }
    return {
        "gate": {"metric": metric},
        "comparisons": {
            name: {
                metric: {"difference": d, "low": lo, "high": hi},
                "rougeL": {"difference": 0.5, "low": 0.4, "high": 0.6},
            }
            for name, (d, lo, hi) in figures.items()
        },
    }


def test_each_comparison_is_a_row_with_its_interval_and_its_gate_line_on_one_axis() -> None:
    """The axis spans every interval end, zero and both gate lines (the tolerance's, -0.1, is
    left of every interval: -0.1 to 0.3), padded a tenth of that each side: -0.14 to 0.34
    over pixels 170 to 490."""
    thresholds = contracts.GateThresholds(metric_tolerance=0.1, min_metric_gain=0.05)
    chart = report.comparison_chart(comparisons_of("accuracy"), thresholds)

    def px(value: float) -> float:
        return round(170 + (value + 0.14) / 0.48 * 320, 1)

    assert chart["rows"] == [
        {"label": "Adapter - full fine-tune", "y": 24, "low": px(-0.06), "high": px(0.02),
         "mean": px(-0.02), "threshold": px(-0.1), "text": "-0.0200 [-0.0600, +0.0200]"},
        {"label": "Adapter - base model", "y": 68, "low": px(0.1), "high": px(0.3),
         "mean": px(0.2), "threshold": px(0.05), "text": "+0.2000 [+0.1000, +0.3000]"},
        {"label": "extra_vs_base", "y": 112, "low": px(0.0), "high": px(0.15),
         "mean": px(0.1), "threshold": None, "text": "+0.1000 [+0.0000, +0.1500]"},
    ]  # fmt: skip
    assert {k: v for k, v in chart.items() if k != "rows"} == {
        "width": 680,
        "text_x": 502,  # the figures, right of the axis
        "height": 24 + 3 * 44 + 20,
        "zero": px(0.0),
        "ticks": [(0.0, px(0.0)), (0.2, px(0.2))],
        "axis_y": 24 + 3 * 44 - 8,
    }


def curves(adapter: dict | None, full_finetune: dict | None) -> dict:
    models: dict = {"base": {}}
    for model, training in (("adapter", adapter), ("full_finetune", full_finetune)):
        models[model] = {} if training is None else {"training": training}
    return {"models": models}


def test_loss_curves_are_lines_and_validation_is_dashed_with_points_on_one_axis() -> None:
    """Steps 0 to 20 over pixels 52 to 668; losses 0.8 to 2.2 padded to 0.66 to 2.34, over
    pixels 264 (low) to 16 (high)."""
    adapter = {
        "loss_curve": [{"step": 1, "loss": 2.0}, {"step": 10, "loss": 1.0}],
        "validation_curve": [{"step": 0, "loss": 2.2}, {"step": 20, "loss": 0.8}],
    }
    full_finetune = {"loss_curve": [{"step": 5, "loss": 1.5}], "validation_curve": []}
    chart = report.loss_chart(curves(adapter, full_finetune))
    assert chart is not None

    def x(step: float) -> float:
        return round(52 + step / 20 * 616, 1)

    def y(loss: float) -> float:
        return round(264 - (loss - 0.66) / 1.68 * 248, 1)

    blue, orange = report.COLORS["adapter"], report.COLORS["full_finetune"]
    assert [(s["label"], s["color"], s["dash"]) for s in chart["series"]] == [
        ("Adapter, training", blue, ""),
        ("Adapter, validation", blue, "5,4"),
        ("Full fine-tune, training", orange, ""),
    ]
    assert [s["path"] for s in chart["series"]] == [
        f"{x(1)},{y(2.0)} {x(10)},{y(1.0)}",
        f"{x(0)},{y(2.2)} {x(20)},{y(0.8)}",
        f"{x(5)},{y(1.5)}",
    ]
    assert [s["dots"] for s in chart["series"]] == [[], [(x(0), y(2.2)), (x(20), y(0.8))], []]
    assert {k: chart[k] for k in ("width", "height", "left", "bottom", "right")} == {
        "width": 680, "height": 300, "left": 52, "bottom": 264, "right": 668,
    }  # fmt: skip
    assert chart["x_ticks"] == [(float(s), x(s)) for s in (0, 5, 10, 15, 20)]
    assert chart["y_ticks"][0][0] == 1.0 and chart["y_ticks"][-1][0] == 2.0


@pytest.mark.parametrize(
    ("adapter", "full_finetune", "labels"),
    [
        (None, None, None),  # a reused baseline and no curves: no chart
        ({"loss_curve": [], "validation_curve": []}, None, None),
        (None, {"loss_curve": [{"step": 2, "loss": 1.0}]}, ["Full fine-tune, training"]),
        ({"validation_curve": [{"step": 0, "loss": 1.0}]}, None, ["Adapter, validation"]),
    ],
)
def test_only_the_curves_a_run_has_are_drawn(
    adapter: dict | None, full_finetune: dict | None, labels: list[str] | None
) -> None:
    chart = report.loss_chart(curves(adapter, full_finetune))
    assert (chart and [s["label"] for s in chart["series"]]) == labels


def test_a_curve_at_step_0_alone_spans_one_step() -> None:
    chart = report.loss_chart(curves({"validation_curve": [{"step": 0, "loss": 1.0}]}, None))
    assert chart is not None and chart["x_ticks"][-1] == (1.0, 668.0)
