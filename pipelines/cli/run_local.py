"""`peftops run-local`: run the SageMaker pipeline definition on this machine and print the
steps, the three models' scores side by side and what was registered."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from pipelines.cli import options
from pipelines.cli.options import (
    CommandError,
    ParamOption,
    TaskOption,
    TaskSpecOption,
    chosen_task,
    parse_assignments,
)
from training_scripts import contracts
from training_scripts.measurements import format_bytes

MODEL_COLUMNS = (
    "model",
    "ROUGE-1",
    "ROUGE-2",
    "ROUGE-L",
    "trainable params",
    "artifact",
    "train time",
    "peak memory",
)


def print_summary(run: Any) -> None:
    from rich.table import Table

    result = run.result
    console = options.console()
    steps = Table(title="Steps", title_justify="left")
    for column in ("step", "type", "status", "time", "detail"):
        steps.add_column(column)
    for record in result.steps:
        steps.add_row(
            record.name, record.type, record.status, f"{record.seconds:.1f}s", record.detail[:80]
        )
    console.print(steps)
    if run.evaluation:
        table = Table(title="Base vs adapter vs full fine-tune", title_justify="left")
        # The gate's metric first where it is not ROUGE-L (shown anyway).
        metric = contracts.value_at(run.evaluation, contracts.GATE_METRIC)
        extra = [] if metric == "rougeL" else [metric]
        for column in (MODEL_COLUMNS[0], *extra, *MODEL_COLUMNS[1:]):
            table.add_column(column, justify="left" if column == "model" else "right")
        for name in contracts.MODEL_NAMES:
            m = contracts.value_at(run.evaluation, contracts.model_path(name))
            runtime = m.get("train_runtime_s")
            table.add_row(
                name,
                *(f"{m[k]:.4f}" for k in extra),
                *(f"{m[k]:.4f}" for k in contracts.ROUGE_KEYS[:3]),
                f"{m['trainable_params']:,}"
                + (f" ({m['trainable_percent']:.2f}%)" if m.get("trainable_percent") else ""),
                format_bytes(m.get("artifact_bytes")),
                "-" if runtime is None else f"{runtime:.0f}s",
                format_bytes(m.get("peak_memory_bytes")),
            )
        console.print(table)
    if result.registered is not None:
        version = result.registered
        console.print(f"Registered {version.group} version {version.version} ({version.status}).")
    elif result.status == "Succeeded":
        why = [r.detail for r in result.steps if r.name.startswith("CheckRegistered")]
        console.print(f"{why[-1][:1].upper()}{why[-1][1:]}." if why else "Nothing registered.")
    if gate_failed(result):
        console.print(GATE_FAILED_NEXT)
    if run.evaluation_path:
        console.print(f"Report: {run.evaluation_path.parent / 'report.html'}")


GATE_FAILED_NEXT = (
    "Nothing registered: the adapter did not pass the quality gate. The report shows which "
    "condition failed and every example's outputs. To try again: train more (--param "
    "Epochs=N or MinSteps=N), change the recipe (--param LearningRate=X, LoraRank=R), or bring more data "
    "(--data); the gate's thresholds are the deployment's, not a run's."
)


def gate_failed(result: Any) -> bool:
    return any(r.name.startswith("GateFailed") and r.status == "Failed" for r in result.steps)


PresetOption = Annotated[
    str, typer.Option(help="smollm2 (real model, minutes) or tiny (random model, seconds).")
]
DataOption = Annotated[
    Path | None,
    typer.Option(
        help="Dataset file or folder (.jsonl/.csv/.parquet); default: the bundled sample."
    ),
]
MethodOption = Annotated[
    str | None, typer.Option(help="qlora, lora or prompt_tuning (the PeftMethod parameter).")
]
OutOption = Annotated[Path, typer.Option(help="The run's folder.")]
LocalRegistryOption = Annotated[
    str,
    typer.Option(
        help="Local registry the adapter is registered into: local:PATH\\[#GROUP] or "
        "PATH\\[#GROUP], as every command takes it (group: the preset's)."
    ),
]
PrecisionOption = Annotated[
    str | None,
    typer.Option(
        help="auto, bf16 or fp32: the training and evaluation arithmetic (default: the "
        "preset's; auto is bf16 on CPUs with bf16 units, fp32 elsewhere)."
    ),
]
TrackingOption = Annotated[
    str,
    typer.Option(
        help="MLflow store the jobs log their runs to (a SQLite file; browse it with "
        "`mlflow ui --backend-store-uri sqlite:///PATH`), or none.",
    ),
]
FreshOption = Annotated[
    bool,
    typer.Option(
        "--fresh",
        help="Start from an empty bucket mirror and step cache; by default they persist "
        "across runs in --out, as a bucket and SageMaker's step cache do.",
    ),
]


def run_local_command(
    preset: PresetOption = "smollm2",
    data: DataOption = None,
    method: MethodOption = None,
    task: TaskOption = None,
    task_spec: TaskSpecOption = None,
    out: OutOption = Path("runs/local"),
    registry: LocalRegistryOption = "local:runs/registry.sqlite",
    precision: PrecisionOption = None,
    param: ParamOption = None,
    tracking: TrackingOption = "runs/mlflow.db",
    fresh: FreshOption = False,
) -> None:
    """Run the SageMaker pipeline definition on this machine, end to end."""
    from pipelines.local.run import SAMPLE_DATA, run_local
    from pipelines.registry import local_registry_location

    local = local_registry_location(registry)
    if local is None:
        raise CommandError(
            "run-local registers into a local registry: --registry local:PATH or PATH"
        )
    registry_path, group = local
    spec = chosen_task(task, task_spec)
    try:
        # Progress goes to stderr; stdout holds only the summary.
        with contextlib.redirect_stdout(sys.stderr):
            run = run_local(
                preset_name=preset,
                data=data or SAMPLE_DATA,
                out=out,
                registry_path=registry_path,
                registry_group=group,
                task=spec,
                method=method,
                precision=precision,
                parameters=parse_assignments(param or []),
                fresh=fresh,
                tracking_store=None if tracking == "none" else Path(tracking),
                log=lambda line: typer.echo(line, err=True),
            )
    except ValueError as err:  # a setting the run refuses (its message names it)
        raise CommandError(str(err)) from err
    print_summary(run)
    if run.result.status != "Succeeded":
        raise CommandError(run.result.failure, code=1)
