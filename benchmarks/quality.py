"""Quality beyond the bundled sample: the `smollm2` preset, as a user runs it, on the bundled
dialogues and on a second dataset of another kind and size (`benchmarks.articles`: 300 news
articles with one-sentence highlights, under other field names and their own task spec).

    .venv/bin/python -m benchmarks.quality                 # make bench-quality: both datasets
    .venv/bin/python -m benchmarks.quality --dataset articles --param MinSteps=0

Each dataset is one `peftops run-local` in a fresh folder. The table (and JSON) gives per
dataset: the train split, the optimizer steps each training took (and the epochs they make),
the tokens they saw, the task's metric for base, adapter and full fine-tune, the adapter's
difference to each with its 95% interval, and the gate's verdict. A recipe tuned for one file
shows here: on the other it trains too little, and the adapter's gain over base loses its
lower bound.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks import articles
from training_scripts import contracts

REPO = Path(__file__).resolve().parents[1]
TRAININGS = ("TrainAdapter", "TrainBaseline")
INTERVAL = ("difference", "low", "high")


def dataset_arguments(name: str, work: Path) -> list[str]:
    """run-local's data and task arguments for a dataset of this benchmark."""
    if name == "dialogues":
        return ["--data", str(REPO / "data/sample/dialogues.jsonl"), "--task", "dialogue-summary"]
    data, spec = articles.write(work / "articles-data")
    return ["--data", str(data), "--task-spec", str(spec)]


DATASETS = ("dialogues", "articles")


def run_dataset(name: str, work: Path, parameters: list[str]) -> Path:
    """One run-local of the smollm2 preset on a dataset, in a fresh folder; its folder."""
    out = work / name
    command = [
        sys.executable, "-m", "pipelines.cli", "run-local", "--preset", "smollm2",
        *dataset_arguments(name, work), "--out", str(out),
        "--registry", str(work / "registry.sqlite"), "--tracking", "none", "--fresh",
        *(arg for p in parameters for arg in ("--param", p)),
    ]  # fmt: skip
    print(f"$ {' '.join(command)}", flush=True)
    done = subprocess.run(command, check=False, cwd=REPO)
    # A failed gate ends the run with 1 and an evaluation: that is a result, not an error.
    if done.returncode not in (0, 1) or not (out / contracts.EVALUATION.file_name).is_file():
        raise SystemExit(f"run-local on {name} failed (exit {done.returncode}); see {out}")
    return out


def training_metrics(run: Path, step: str) -> dict[str, Any]:
    """The newest execution's training metrics of a step."""
    executions = sorted((run / "jobs").iterdir())
    model = executions[-1] / step / "container/opt/ml/model"
    return contracts.TRAINING_METRICS.check(
        json.loads(contracts.TRAINING_METRICS.path(model).read_text()), str(model)
    )


def summary(name: str, run: Path) -> dict[str, Any]:
    evaluation = json.loads((run / contracts.EVALUATION.file_name).read_text())
    metric = evaluation["gate"]["metric"]
    thresholds = contracts.GateThresholds(**evaluation["gate_thresholds"])
    passed, reason = contracts.gate_verdict(evaluation, thresholds)
    trainings = {step: training_metrics(run, step) for step in TRAININGS}
    return {
        "dataset": name,
        "train_examples": trainings["TrainAdapter"]["train_examples"],
        "test_examples": evaluation["test_examples"],
        "trainings": {
            step: {
                key: metrics.get(key)
                for key in ("global_step", "epochs_trained", "min_steps", "real_tokens")
            }
            for step, metrics in trainings.items()
        },
        "metric": metric,
        "scores": {model: evaluation["models"][model][metric] for model in contracts.MODEL_NAMES},
        "comparisons": {
            name: {k: evaluation["comparisons"][name][metric][k] for k in INTERVAL}
            for name in ("adapter_vs_base", "adapter_vs_full_finetune")
        },
        "gate_thresholds": evaluation["gate_thresholds"],
        "gate": {"passed": passed, "reason": reason},
    }


def interval(c: dict[str, float]) -> str:
    return f"{c['difference']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| dataset | train / test | steps adapter, full (epochs) | tokens adapter | metric | "
        "base | adapter | full | adapter - base, 95% | adapter - full, 95% | gate |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        adapter, full = (row["trainings"][s] for s in TRAININGS)
        scores = row["scores"]
        lines.append(
            f"| {row['dataset']} | {row['train_examples']} / {row['test_examples']} "
            f"| {adapter['global_step']}, {full['global_step']} ({adapter['epochs_trained']:.2f}) "
            f"| {adapter['real_tokens']:,} | {row['metric']} | {scores['base']:.4f} "
            f"| {scores['adapter']:.4f} | {scores['full_finetune']:.4f} "
            f"| {interval(row['comparisons']['adapter_vs_base'])} "
            f"| {interval(row['comparisons']['adapter_vs_full_finetune'])} "
            f"| {'passed' if row['gate']['passed'] else 'failed: ' + row['gate']['reason']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", action="append", choices=DATASETS, help="default: both")
    parser.add_argument(
        "--param", action="append", default=[], help="a run-local --param for every run"
    )
    parser.add_argument("--work", type=Path, default=REPO / "runs/bench/quality")
    parser.add_argument("--output", type=Path, default=REPO / "runs/bench/quality.json")
    args = parser.parse_args(argv)
    rows = [
        summary(name, run_dataset(name, args.work, args.param)) for name in args.dataset or DATASETS
    ]
    print(table(rows))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"parameters": args.param, "runs": rows}, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
