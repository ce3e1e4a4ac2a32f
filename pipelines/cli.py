"""`peftops`: the command line of the project.

peftops pipeline definition --out pipeline.json [--assets-dir assets/] [--config stage.json]
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from pipelines.config import Deployment, PipelineConfig, config_from_dict

app = typer.Typer(
    help="PEFT fine-tuning pipelines on Amazon SageMaker.",
    no_args_is_help=True,
    add_completion=False,
)
pipeline_app = typer.Typer(help="Build and run the SageMaker pipeline.", no_args_is_help=True)
models_app = typer.Typer(
    help="List, compare, approve and reject registered adapters.", no_args_is_help=True
)
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(models_app, name="models")

DEFAULT_REGISTRY = "local:runs/registry.sqlite"


def fail(message: str, code: int = 2) -> typer.Exit:
    """One line on stderr and a non-zero exit: no traceback for a user's mistake."""
    typer.echo(f"peftops: error: {message}", err=True)
    return typer.Exit(code)


# Documentation placeholders (AWS's example account): enough to inspect a definition offline.
# `cdk deploy` passes the real role, bucket and key.
EXAMPLE_ACCOUNT = "111122223333"


def load_config(path: Path | None) -> PipelineConfig:
    """PipelineConfig from a JSON object of its fields (the CDK stage context has the same shape)."""
    if path is None:
        return PipelineConfig()
    try:
        values: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise typer.BadParameter(f"{path}: {err}") from err
    try:
        return config_from_dict(values, source=str(path))
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err


def quiet_sdk() -> None:
    """The SDK configures its loggers at DEBUG/INFO; silence everything below ERROR."""
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore", message="Running within a PipelineSession")


@pipeline_app.command("definition")
def definition(
    out: Annotated[Path, typer.Option(help="Where to write the pipeline definition JSON.")],
    assets_dir: Annotated[
        Path | None,
        typer.Option(
            help="Also write the code assets the definition refers to (upload to the bucket as-is)."
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="JSON file of PipelineConfig settings.")
    ] = None,
    region: Annotated[str, typer.Option(envvar="PEFTOPS_REGION")] = "us-east-1",
    role_arn: Annotated[
        str, typer.Option(envvar="PEFTOPS_ROLE_ARN")
    ] = f"arn:aws:iam::{EXAMPLE_ACCOUNT}:role/peftops-sagemaker-execution",
    bucket: Annotated[
        str, typer.Option(envvar="PEFTOPS_BUCKET")
    ] = f"peftops-artifacts-{EXAMPLE_ACCOUNT}",
    kms_key_arn: Annotated[str, typer.Option(envvar="PEFTOPS_KMS_KEY_ARN")] = (
        f"arn:aws:kms:us-east-1:{EXAMPLE_ACCOUNT}:key/00000000-0000-4000-8000-000000000000"
    ),
) -> None:
    """Write the pipeline definition, built offline: no AWS call, the same bytes every time."""
    from pipelines.definition import definition_json

    quiet_sdk()
    try:
        deployment = Deployment(
            region=region, role_arn=role_arn, bucket=bucket, kms_key_arn=kms_key_arn
        )
        # The SDK prints and logs while it builds requests; none of it concerns the user.
        with contextlib.redirect_stdout(io.StringIO()):
            body, assets = definition_json(load_config(config), deployment)
    except ValueError as err:
        typer.echo(f"peftops: error: {err}", err=True)
        raise typer.Exit(2) from err
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(body, encoding="utf-8")
    if assets_dir is not None:
        for key, data in sorted(assets.items()):
            target = assets_dir / key
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    typer.echo(f"wrote {out} ({len(body.encode())} bytes, {len(assets)} assets)", err=True)


# --- run-local -------------------------------------------------------------------------------


def parse_assignments(values: list[str]) -> dict[str, str]:
    parsed = {}
    for value in values:
        name, sep, setting = value.partition("=")
        if not sep or not name:
            raise fail(f"--param {value!r}: use Name=Value, e.g. --param LoraRank=8")
        parsed[name] = setting
    return parsed


def _size(value: Any) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)


def print_summary(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    # Wide enough for the tables when the output is a file or a pipe, not a terminal.
    console = Console(width=None if sys.stdout.isatty() else 140)
    steps = Table(title="Steps", title_justify="left")
    for column in ("step", "type", "status", "time", "detail"):
        steps.add_column(column)
    for record in result.steps:
        steps.add_row(
            record.name, record.type, record.status, f"{record.seconds:.1f}s", record.detail[:80]
        )
    console.print(steps)
    if result.evaluation:
        models = result.evaluation["models"]
        table = Table(title="Base vs adapter vs full fine-tune", title_justify="left")
        for column in (
            "model",
            "ROUGE-1",
            "ROUGE-2",
            "ROUGE-L",
            "trainable params",
            "artifact",
            "train time",
            "peak memory",
        ):
            table.add_column(column, justify="left" if column == "model" else "right")
        for name in ("base", "adapter", "full_finetune"):
            m = models[name]
            runtime = m.get("train_runtime_s")
            table.add_row(
                name,
                *(f"{m[k]:.4f}" for k in ("rouge1", "rouge2", "rougeL")),
                f"{m['trainable_params']:,}"
                + (f" ({m['trainable_percent']:.2f}%)" if m.get("trainable_percent") else ""),
                _size(m.get("artifact_bytes")),
                "-" if runtime is None else f"{runtime:.0f}s",
                _size(m.get("peak_memory_bytes")),
            )
        console.print(table)
    if result.registered is not None:
        console.print(
            f"Quality gate: passed. Registered {result.registered.group} version {result.registered.version} ({result.registered.status})."
        )
    if result.evaluation_path:
        console.print(f"Report: {result.evaluation_path.parent / 'report.html'}")


@app.command("run-local")
def run_local_command(
    preset: Annotated[
        str, typer.Option(help="smollm2 (real model, minutes) or tiny (random model, seconds).")
    ] = "smollm2",
    data: Annotated[
        Path | None,
        typer.Option(
            help="Dataset file or folder (.jsonl/.csv/.parquet); default: the bundled sample."
        ),
    ] = None,
    input_field: Annotated[
        str, typer.Option(help="Field with the text to summarize.")
    ] = "dialogue",
    target_field: Annotated[
        str, typer.Option(help="Field with the reference summary.")
    ] = "summary",
    method: Annotated[
        str | None, typer.Option(help="qlora, lora or prompt_tuning (the PeftMethod parameter).")
    ] = None,
    out: Annotated[Path, typer.Option(help="The run's folder.")] = Path("runs/local"),
    registry: Annotated[
        Path, typer.Option(help="Local registry file the adapter is registered into.")
    ] = Path("runs/registry.sqlite"),
    param: Annotated[
        list[str] | None, typer.Option(help="Pipeline parameter override Name=Value (repeatable).")
    ] = None,
) -> None:
    """Run the SageMaker pipeline definition on this machine, end to end."""
    from pipelines.local_run import SAMPLE_DATA, LocalRunError, run_local
    from pipelines.local_runner import StepFailedError, UnsupportedConstructError
    from pipelines.registry import RegistryError

    quiet_sdk()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            result = run_local(
                preset_name=preset,
                data=data or SAMPLE_DATA,
                out=out,
                registry_path=registry,
                input_field=input_field,
                target_field=target_field,
                method=method,
                parameters=parse_assignments(param or []),
                log=lambda line: typer.echo(line, err=True),
            )
    except (
        LocalRunError,
        UnsupportedConstructError,
        StepFailedError,
        RegistryError,
        ValueError,
    ) as err:
        raise fail(str(err)) from err
    print_summary(result)
    if result.status != "Succeeded":
        raise fail(result.failure, code=1)


# --- models ----------------------------------------------------------------------------------

RegistryOption = Annotated[str, typer.Option("--registry", help="local:PATH or sagemaker:GROUP.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _registry(spec: str) -> Any:
    from pipelines.registry import RegistryError, open_registry

    try:
        return open_registry(spec)
    except RegistryError as err:
        raise fail(str(err)) from err


def _guard(action: Callable[[], Any]) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    from pipelines.registry import RegistryError

    try:
        return action()
    except RegistryError as err:
        raise fail(str(err)) from err
    except (ClientError, BotoCoreError) as err:
        raise fail(f"AWS: {err}") from err


def _rouge(version: Any, key: str) -> str:
    evaluation = version.evaluation or {}
    value = evaluation.get("models", {}).get("adapter", {}).get(key)
    return "-" if value is None else f"{value:.4f}"


@models_app.command("list")
def models_list(
    registry: RegistryOption = DEFAULT_REGISTRY,
    status: Annotated[str | None, typer.Option()] = None,
    as_json: JsonOption = False,
) -> None:
    """Registered versions, oldest first."""
    versions = _guard(lambda: _registry(registry).list(status))
    if as_json:
        typer.echo(json.dumps([v.to_json() for v in versions], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in ("version", "status", "created", "method", "ROUGE-L", "gate"):
        table.add_column(column)
    from pipelines.registry import gate_verdict

    for v in versions:
        table.add_row(
            str(v.version),
            v.status,
            v.created,
            v.metadata.get("peft_method", "-"),
            _rouge(v, "rougeL"),
            gate_verdict(v)[1],
        )
    Console().print(table)


@models_app.command("show")
def models_show(
    version: int, registry: RegistryOption = DEFAULT_REGISTRY, as_json: JsonOption = False
) -> None:
    """One version: status, artifact, lineage and metrics."""
    found = _guard(lambda: _registry(registry).get(version))
    if as_json:
        typer.echo(json.dumps(found.to_json(), indent=2))
        return
    from pipelines.registry import gate_verdict

    typer.echo(f"{found.group} version {found.version}: {found.status}")
    typer.echo(f"  artifact:   {found.model_data_url}")
    typer.echo(f"  evaluation: {found.evaluation_uri}")
    typer.echo(f"  gate:       {gate_verdict(found)[1]}")
    if found.approval_description:
        typer.echo(f"  decision:   {found.approval_description}")
    for key, value in sorted(found.metadata.items()):
        typer.echo(f"  {key}: {value}")
    for name, entry in (found.evaluation or {}).get("models", {}).items():
        typer.echo(
            f"  {name}: "
            + " ".join(f"{k}={entry[k]:.4f}" for k in ("rouge1", "rouge2", "rougeL", "rougeLsum"))
        )


@models_app.command("compare")
def models_compare(
    first: int,
    second: int,
    registry: RegistryOption = DEFAULT_REGISTRY,
    as_json: JsonOption = False,
) -> None:
    """Two versions' adapter metrics side by side."""
    store = _registry(registry)
    a, b = _guard(lambda: (store.get(first), store.get(second)))
    keys = (
        "rouge1",
        "rouge2",
        "rougeL",
        "rougeLsum",
        "trainable_params",
        "artifact_bytes",
        "train_runtime_s",
    )

    def metric(v: Any, key: str) -> Any:
        return ((v.evaluation or {}).get("models", {}).get("adapter", {})).get(key)

    rows = {key: {"first": metric(a, key), "second": metric(b, key)} for key in keys}
    for key in ("peft_method", "lora_r", "lora_alpha", "dataset_uri"):
        rows[key] = {"first": a.metadata.get(key), "second": b.metadata.get(key)}
    if as_json:
        typer.echo(json.dumps({"first": first, "second": second, "metrics": rows}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in ("", f"version {first}", f"version {second}", "difference"):
        table.add_column(column)
    for key, pair in rows.items():
        x, y = pair["first"], pair["second"]
        numeric = isinstance(x, int | float) and isinstance(y, int | float)
        table.add_row(key, str(x), str(y), f"{y - x:+.4g}" if numeric else "")
    Console().print(table)


def _decide(
    version: int,
    status: str,
    registry: str,
    reason: str,
    who: str | None,
    force: bool,
    as_json: bool,
) -> None:
    import getpass

    from pipelines.registry import decide

    store = _registry(registry)
    decided = _guard(
        lambda: decide(
            store, version, status, who=who or getpass.getuser(), why=reason, force=force
        )
    )
    if as_json:
        typer.echo(json.dumps(decided.to_json(), indent=2))
    else:
        typer.echo(
            f"{decided.group} version {decided.version}: {decided.status} ({decided.approval_description})"
        )


ReasonOption = Annotated[
    str, typer.Option("--description", "-d", help="Why: recorded with the decision.")
]


WhoOption = Annotated[str | None, typer.Option(help="Who decides (default: the current user).")]


@models_app.command("approve")
def models_approve(
    version: int,
    description: ReasonOption,
    registry: RegistryOption = DEFAULT_REGISTRY,
    who: WhoOption = None,
    force: Annotated[bool, typer.Option(help="Approve even without a passing evaluation.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Approve a version; refused when its evaluation is missing or its gate failed."""
    _decide(version, "Approved", registry, description, who, force, as_json)


@models_app.command("reject")
def models_reject(
    version: int,
    description: ReasonOption,
    registry: RegistryOption = DEFAULT_REGISTRY,
    who: WhoOption = None,
    as_json: JsonOption = False,
) -> None:
    """Reject a version."""
    _decide(version, "Rejected", registry, description, who, False, as_json)


# --- pipeline start/status (AWS) --------------------------------------------------------------


def request_token(token: str | None) -> str:
    """The API wants 32-128 characters; any string a scheduler has (a date, a build id) maps
    to one, always the same, so a retried start does not start a second execution."""
    import hashlib
    import uuid

    return hashlib.sha256(token.encode()).hexdigest() if token else uuid.uuid4().hex


@pipeline_app.command("start")
def pipeline_start(
    name: Annotated[str, typer.Option(help="Pipeline name.")] = "peftops-adapter",
    param: Annotated[
        list[str] | None, typer.Option(help="Parameter override Name=Value (repeatable).")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(help="Idempotency token: retrying with the same token starts one execution."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Start an execution of the deployed pipeline."""
    import boto3

    parameters = [{"Name": k, "Value": v} for k, v in parse_assignments(param or []).items()]
    client = boto3.client("sagemaker")
    response = _guard(
        lambda: client.start_pipeline_execution(
            PipelineName=name,
            PipelineParameters=parameters,
            ClientRequestToken=request_token(token),
        )
    )
    arn = response["PipelineExecutionArn"]
    typer.echo(json.dumps({"PipelineExecutionArn": arn}) if as_json else arn)


@pipeline_app.command("status")
def pipeline_status(execution_arn: str, as_json: JsonOption = False) -> None:
    """An execution's status and its steps' statuses."""
    import boto3

    client = boto3.client("sagemaker")
    execution = _guard(
        lambda: client.describe_pipeline_execution(PipelineExecutionArn=execution_arn)
    )
    steps = _guard(
        lambda: client.list_pipeline_execution_steps(
            PipelineExecutionArn=execution_arn, SortOrder="Ascending"
        )
    )
    rows = [
        {"step": s["StepName"], "status": s["StepStatus"], "failure": s.get("FailureReason", "")}
        for s in steps.get("PipelineExecutionSteps", [])
    ]
    if as_json:
        typer.echo(
            json.dumps(
                {"status": execution["PipelineExecutionStatus"], "steps": rows},
                indent=2,
                default=str,
            )
        )
        return
    typer.echo(f"{execution_arn}: {execution['PipelineExecutionStatus']}")
    for row in rows:
        typer.echo(f"  {row['step']}: {row['status']} {row['failure']}".rstrip())


def main() -> None:
    app(prog_name="peftops")


if __name__ == "__main__":
    sys.exit(main())
