"""`peftops`: the command line of the project.

peftops pipeline definition --out pipeline.json [--assets-dir assets/] [--config stage.json]
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

from pipelines.config import BaselineMode, Deployment, PipelineConfig, Vpc

app = typer.Typer(
    help="PEFT fine-tuning pipelines on Amazon SageMaker.",
    no_args_is_help=True,
    add_completion=False,
)
pipeline_app = typer.Typer(help="Build and run the SageMaker pipeline.", no_args_is_help=True)
app.add_typer(pipeline_app, name="pipeline")

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
    known = {f.name for f in dataclasses.fields(PipelineConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise typer.BadParameter(f"{path}: unknown settings {unknown}; known: {sorted(known)}")
    if values.get("vpc"):
        values["vpc"] = Vpc(
            tuple(values["vpc"]["subnet_ids"]), tuple(values["vpc"]["security_group_ids"])
        )
    if "baseline_mode" in values:
        values["baseline_mode"] = BaselineMode(values["baseline_mode"])
    return PipelineConfig(**values)


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


def main() -> None:
    app(prog_name="peftops")


if __name__ == "__main__":
    sys.exit(main())
