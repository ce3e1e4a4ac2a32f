"""report.html: what a reviewer decides from, rendered from evaluation.json and the outputs.

The gate's verdict with its thresholds, the run's settings, the three models' scores with
their 95% intervals, the comparisons the gate reads drawn against its thresholds, training
and validation loss curves of the adapter and the baseline, per-example scores with the best
and worst examples, and generation speed. The page is templates/report.html.j2 (Jinja2, with
autoescaping: model outputs are untrusted text); this module computes what it draws.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__:
    from . import contracts, measurements
else:  # a sibling module inside the SageMaker job
    import contracts
    import measurements

TEMPLATES = Path(__file__).resolve().parent / "templates"
LABELS = {"base": "Base model", "adapter": "Adapter", "full_finetune": "Full fine-tune"}
COLORS = {"base": "#8a94a0", "adapter": "#2563eb", "full_finetune": "#ea7317"}
COMPARISON_LABELS = {
    "adapter_vs_full_finetune": "Adapter - full fine-tune",
    "adapter_vs_base": "Adapter - base model",
}
EXAMPLES_SHOWN = 3  # best and worst examples written out in full


@dataclass(frozen=True)
class Axis:
    """A linear map from data values to pixels."""

    low: float
    high: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        span = self.high - self.low or 1.0
        return round(self.start + (value - self.low) / span * (self.end - self.start), 1)

    def ticks(self, count: int = 5) -> list[tuple[float, float]]:
        """About `count` ticks at round values (steps of 1, 2 or 5 times a power of ten)."""
        span = (self.high - self.low) or 1.0
        raw = span / count
        power = 10 ** math.floor(math.log10(raw))
        step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
        first = math.ceil(self.low / step) * step
        values = [first + i * step for i in range(int((self.high - first) / step + 1e-9) + 1)]
        return [(round(v, 10), self(v)) for v in values]


def padded_range(values: Sequence[float], *, include: Sequence[float] = ()) -> tuple[float, float]:
    points = [*values, *include]
    low, high = min(points), max(points)
    margin = (high - low) * 0.1 or 0.05
    return low - margin, high + margin


def score_chart(evaluation: dict[str, Any]) -> dict[str, Any]:
    """Grouped bars of each ROUGE variant per model, with 95% interval whiskers."""
    width, height, left, bottom, top = 680, 300, 48, 36, 28
    intervals = evaluation["intervals"]["models"]
    peak = max(intervals[m][k]["high"] for m in contracts.MODEL_NAMES for k in contracts.ROUGE_KEYS)
    y = Axis(0.0, min(1.0, max(0.1, peak * 1.1)), height - bottom, top)
    group = (width - left - 16) / len(contracts.ROUGE_KEYS)
    bar = group / (len(contracts.MODEL_NAMES) + 1)
    bars = []
    for g, key in enumerate(contracts.ROUGE_KEYS):
        for b, model in enumerate(contracts.MODEL_NAMES):
            x = left + g * group + bar / 2 + b * bar
            value = evaluation["models"][model][key]
            bars.append(
                {
                    "x": round(x, 1),
                    "width": round(bar - 4, 1),
                    "y": y(value),
                    "height": round(y(0) - y(value), 1),
                    "low": y(intervals[model][key]["low"]),
                    "high": y(intervals[model][key]["high"]),
                    "center": round(x + (bar - 4) / 2, 1),
                    "color": COLORS[model],
                    "title": f"{LABELS[model]} {key}: {value:.4f} "
                    f"[{intervals[model][key]['low']:.4f}, {intervals[model][key]['high']:.4f}]",
                }
            )
    groups = [
        {"label": key, "x": round(left + g * group + group / 2, 1)}
        for g, key in enumerate(contracts.ROUGE_KEYS)
    ]
    return {
        "width": width,
        "height": height,
        "left": left,
        "right": width - 8,
        "bottom": height - bottom,
        "ticks": y.ticks(),
        "bars": bars,
        "groups": groups,
    }


def comparison_chart(
    evaluation: dict[str, Any], thresholds: contracts.GateThresholds
) -> dict[str, Any]:
    """Each comparison's difference in the gate's metric with its 95% interval, against the
    gate's lines:
    the adapter - full fine-tune interval must stay right of -tolerance, the adapter - base
    interval right of the required gain."""
    width, row, left, right = 680, 44, 170, 190  # the figures are written right of the axis
    comparisons = evaluation["comparisons"]
    lines = {
        "adapter_vs_full_finetune": -thresholds.metric_tolerance,
        "adapter_vs_base": thresholds.min_metric_gain,
    }
    metric = gate_metric(evaluation)
    values = [comparisons[n][metric][f] for n in comparisons for f in ("low", "high")]
    x = Axis(*padded_range(values, include=[0.0, *lines.values()]), left, width - right)
    rows = []
    for i, (name, per_metric) in enumerate(comparisons.items()):
        figures = per_metric[metric]
        rows.append(
            {
                "label": COMPARISON_LABELS.get(name, name),
                "y": 24 + i * row,
                "low": x(figures["low"]),
                "high": x(figures["high"]),
                "mean": x(figures["difference"]),
                "threshold": x(lines[name]) if name in lines else None,
                "text": f"{figures['difference']:+.4f} [{figures['low']:+.4f}, {figures['high']:+.4f}]",
            }
        )
    return {
        "width": width,
        "text_x": width - right + 12,
        "height": 24 + len(rows) * row + 20,
        "zero": x(0.0),
        "rows": rows,
        "ticks": x.ticks(4),
        "axis_y": 24 + len(rows) * row - 8,
    }


def loss_chart(evaluation: dict[str, Any]) -> dict[str, Any] | None:
    """Training loss per logged step (lines) and validation loss (dashed, with points) of the
    adapter and the baseline, on one axis: each model's steps."""
    series = []
    for model in ("adapter", "full_finetune"):
        training = evaluation["models"][model].get("training", {})
        for kind, dash in (("loss_curve", ""), ("validation_curve", "5,4")):
            points = training.get(kind) or []
            if points:
                series.append(
                    {
                        "label": f"{LABELS[model]}, {'training' if kind == 'loss_curve' else 'validation'}",
                        "color": COLORS[model],
                        "dash": dash,
                        "points": points,
                    }
                )
    if not series:
        return None
    width, height, left, bottom, top = 680, 300, 52, 36, 16
    steps = [p["step"] for s in series for p in s["points"]]
    losses = [p["loss"] for s in series for p in s["points"]]
    x = Axis(0.0, max(1.0, *steps), left, width - 12)
    y = Axis(*padded_range(losses), height - bottom, top)
    for s in series:
        s["path"] = " ".join(f"{x(p['step'])},{y(p['loss'])}" for p in s["points"])
        s["dots"] = [(x(p["step"]), y(p["loss"])) for p in s["points"]] if s["dash"] else []
    return {
        "width": width,
        "height": height,
        "left": left,
        "bottom": height - bottom,
        "right": width - 12,
        "x_ticks": x.ticks(),
        "y_ticks": y.ticks(),
        "series": series,
    }


def per_example_rows(
    evaluation: dict[str, Any], rows: list[dict[str, Any]], predictions: dict[str, list[str]]
) -> list[dict[str, Any]]:
    """Every test example's score in the gate's metric per model, ordered from the adapter's
    worst to its best."""
    metric = gate_metric(evaluation)
    scores = {m: evaluation["models"][m]["per_example"][metric] for m in contracts.MODEL_NAMES}
    table = []
    for i, row in enumerate(rows):
        table.append(
            {
                "id": row.get("id", i),
                "scores": {m: scores[m][i] for m in contracts.MODEL_NAMES},
                "versus_full_finetune": scores["adapter"][i] - scores["full_finetune"][i],
                "input": shown_input(row[contracts.INPUT_KEY]),
                "reference": row[contracts.TARGET_KEY],
                "outputs": {
                    m: predictions[m][i] for m in contracts.MODEL_NAMES if m in predictions
                },
            }
        )
    return sorted(table, key=lambda r: r["scores"]["adapter"])


def shown_input(task_input: Any) -> str:
    """A task input as a reader sees it: its text, or its fields or turns as JSON."""
    if isinstance(task_input, str):
        return task_input
    return json.dumps(task_input, ensure_ascii=False, indent=1)


def gate_metric(evaluation: dict[str, Any]) -> str:
    """The task's metric, which the gate judges."""
    return contracts.value_at(evaluation, contracts.GATE_METRIC)


def registration(passed: bool, registered: str | None) -> str:
    """What became of the adapter this report describes, as far as the report can know."""
    if registered:
        return registered
    if not passed:
        return "no: the gate failed, so the pipeline registers nothing from this run"
    return "pending: the pipeline registers the adapter after this report"


def settings(
    evaluation: dict[str, Any], registered: str | None, *, passed: bool
) -> list[tuple[str, Any]]:
    """The run's settings a reviewer needs to interpret the scores."""
    adapter = evaluation["models"]["adapter"]
    training = adapter.get("training", {})
    lineage = training.get("adapter", {})
    baseline = evaluation["models"]["full_finetune"].get("training", {})
    task = evaluation.get("task", {})
    return [
        ("Task", f"{task.get('name')} (spec sha256 {task.get('sha256')})"),
        ("Gate metric", gate_metric(evaluation)),
        ("Method", adapter.get("method") or training.get("method")),
        ("Base model", evaluation["base_model"]),
        ("Adapter scored on", _scored_on(adapter.get("base_quantized_4bit"))),
        (
            "LoRA rank / alpha",
            f"{lineage['r']} / {lineage['lora_alpha']}" if "r" in lineage else None,
        ),
        ("Target modules", ", ".join(lineage.get("target_modules", [])) or None),
        (
            "Learning rate (adapter / full fine-tune)",
            f"{training.get('learning_rate')} / {baseline.get('learning_rate')}",
        ),
        (
            "Optimizer steps (adapter / full fine-tune)",
            f"{training.get('global_step')} / {baseline.get('global_step')}",
        ),
        ("Examples per step", _examples_per_step(training)),
        ("Dataset version", evaluation.get("dataset_version")),
        ("Training data sha256", training.get("train_data_sha256")),
        ("Test examples", evaluation["test_examples"]),
        ("Test set sha256", evaluation[contracts.TEST_SET_SHA256]),
        ("Full fine-tune", _baseline_source(evaluation)),
        ("Registered as", registration(passed, registered)),
        *tracking_settings(evaluation.get("tracking", {})),
    ]


def tracking_settings(tracked: dict[str, Any]) -> list[tuple[str, Any]]:
    """The MLflow run behind the report: its experiment and id, and where a local store's
    run opens once `mlflow ui` serves the store."""
    rows: list[tuple[str, Any]] = [
        ("Tracking run (MLflow)", tracked.get("evaluation_run_id")),
    ]
    if tracked.get("experiment"):
        rows.append(("MLflow experiment", tracked["experiment"]))
    if tracked.get("link"):
        rows.append(("MLflow run page (with `mlflow ui` running)", tracked["link"]))
    return rows


def _scored_on(quantized: bool | None) -> str | None:
    if quantized is None:
        return None
    return "the 4-bit base it trained on" if quantized else "the unquantized base, as served"


def _examples_per_step(training: dict[str, Any]) -> int | None:
    try:
        return (
            training["per_device_batch_size"]
            * training["gradient_accumulation_steps"]
            * training.get("world_size", 1)
        )
    except KeyError:
        return None


def _baseline_source(evaluation: dict[str, Any]) -> str:
    source = evaluation["baseline_source"]
    if source["kind"] == "trained":
        return "trained in this run"
    return f"reused from {source['evaluation']} (same test set: {source['test_set_matches']})"


def render(
    evaluation: dict[str, Any],
    rows: list[dict[str, Any]],
    predictions: dict[str, list[str]],
    thresholds: contracts.GateThresholds,
    *,
    registered: str | None = None,
) -> str:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["bytes"] = measurements.format_bytes
    passed, reason = contracts.gate_verdict(evaluation, thresholds)
    examples = per_example_rows(evaluation, rows, predictions)
    adapter_training = evaluation["models"]["adapter"].get("training", {})
    return environment.get_template("report.html.j2").render(
        evaluation=evaluation,
        models=contracts.MODEL_NAMES,
        metric=gate_metric(evaluation),
        keys=list(dict.fromkeys([gate_metric(evaluation), *contracts.ROUGE_KEYS])),
        confusion={
            m: evaluation["models"][m]["confusion"]
            for m in contracts.MODEL_NAMES
            if "confusion" in evaluation["models"][m]
        },
        labels=LABELS,
        colors=COLORS,
        comparison_labels=COMPARISON_LABELS,
        passed=passed,
        reason=reason,
        outcomes=contracts.gate_outcomes(evaluation, thresholds),
        thresholds=thresholds,
        settings=settings(evaluation, registered, passed=passed),
        scores=score_chart(evaluation),
        differences=comparison_chart(evaluation, thresholds),
        losses=loss_chart(evaluation),
        examples=examples,
        worst=examples[:EXAMPLES_SHOWN],
        best=examples[::-1][:EXAMPLES_SHOWN],
        qlora_on_cpu=adapter_training.get("method") == "qlora"
        and adapter_training.get("device") == "cpu",
    )


def render_folder(folder: Path, *, registered: str | None = None) -> str:
    """The report of an evaluation folder (evaluation.json and predictions.jsonl), e.g. again
    once the version it describes is registered."""
    evaluation = contracts.EVALUATION.read(folder)
    records = [
        json.loads(line)
        for line in (folder / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    rows = [
        {"id": r.get("id"), contracts.INPUT_KEY: r["input"], contracts.TARGET_KEY: r["reference"]}
        for r in records
    ]
    predictions = {m: [r[m] for r in records] for m in contracts.MODEL_NAMES if m in records[0]}
    thresholds = contracts.GateThresholds(**evaluation["gate_thresholds"])
    return render(evaluation, rows, predictions, thresholds, registered=registered)
