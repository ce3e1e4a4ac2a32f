"""`peftops pipeline`: write the SageMaker pipeline definition offline, start an execution of
the deployed pipeline, and follow its steps."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer

from pipelines.cli.aws import RegionOption, cloud_region, stage_settings
from pipelines.cli.options import CommandError, JsonOption, ParamOption, parse_assignments
from pipelines.definition.config import Deployment, PipelineConfig, config_from_dict

pipeline_app = typer.Typer(help="Build and run the SageMaker pipeline.", no_args_is_help=True)

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
    preprocess_role_arn: Annotated[
        str | None, typer.Option(help="Role of Preprocess jobs (default: --role-arn).")
    ] = None,
    training_role_arn: Annotated[
        str | None, typer.Option(help="Role of training jobs (default: --role-arn).")
    ] = None,
    evaluation_role_arn: Annotated[
        str | None, typer.Option(help="Role of evaluation jobs (default: --role-arn).")
    ] = None,
) -> None:
    """Write the pipeline definition, built offline: no AWS call, the same bytes every time."""
    from pipelines.definition import definition_json
    from pipelines.definition.config import JobKind
    from pipelines.definition.staging import write_assets

    job_roles = {
        JobKind.PREPROCESS: preprocess_role_arn,
        JobKind.TRAINING: training_role_arn,
        JobKind.EVALUATION: evaluation_role_arn,
    }
    try:
        deployment = Deployment(
            region=region,
            role_arn=role_arn,
            bucket=bucket,
            kms_key_arn=kms_key_arn,
            job_role_arns=tuple((kind, arn) for kind, arn in job_roles.items() if arn),
        )
        body, assets = definition_json(load_config(config), deployment)
    except ValueError as err:
        raise CommandError(str(err)) from err
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(body, encoding="utf-8")
    if assets_dir is not None:
        write_assets(assets, assets_dir)
    typer.echo(f"wrote {out} ({len(body.encode())} bytes, {len(assets)} assets)", err=True)


@pipeline_app.command("cost")
def cost(
    stage: Annotated[
        str, typer.Option(help="A stage of cdk.json (its pipeline settings).")
    ] = "dev",
    cdk_json: Annotated[Path, typer.Option(help="The CDK app's settings.")] = Path("cdk.json"),
) -> None:
    """The most one execution of a stage can cost, and the quotas to request: from its
    definition's instance types, counts, spot setting and runtime limits; and its endpoint's
    cost per hour where serving is on."""
    from pipelines.definition import definition_json
    from pipelines.definition.cost import (
        HOURS_PER_MONTH,
        ON_DEMAND_USD_PER_HOUR,
        SPOT_FRACTION,
        endpoint_usd_per_hour,
        job_bounds,
        quotas,
        run_bound_usd,
    )
    from pipelines.definition.stages import stage_settings

    try:
        stages = json.loads(cdk_json.read_text())["context"]["stages"]
        settings = stage_settings(stages, stage)
        body, _ = definition_json(
            settings.pipeline, example_deployment(settings.region or "us-east-1")
        )
    except (OSError, KeyError, ValueError) as err:
        raise CommandError(f"{cdk_json}: {err}") from err
    jobs = job_bounds(json.loads(body))
    unpriced = sorted({j.instance_type for j in jobs} - set(ON_DEMAND_USD_PER_HOUR))
    if unpriced:
        raise CommandError(
            f"no price assumption for {unpriced}; add it to pipelines/definition/cost.py"
        )
    typer.echo(f"stage {stage}: every job at its runtime limit (on-demand us-east-1 prices,")
    typer.echo(f"spot at {SPOT_FRACTION:.0%} of on-demand)")
    for job in jobs:
        typer.echo(
            f"  {job.step:<24} {job.instances} x {job.instance_type:<15} "
            f"{'spot' if job.spot else 'on-demand':<9} <= {job.max_hours:>4.1f} h  <= ${job.usd:,.2f}"
        )
    for mode in ("train", "reuse"):
        typer.echo(f"  one run, BaselineMode={mode}: at most ${run_bound_usd(jobs, mode):,.2f}")
    typer.echo("service quotas one run needs (instances at once):")
    for name, count in sorted(quotas(jobs).items()):
        typer.echo(f"  {name}: {count}")
    tasks = settings.pipeline.run_tasks
    if len(tasks) > 1:
        # Each task's schedule starts its run at the same time: their jobs overlap.
        mode = settings.schedule.parameters.get("BaselineMode", settings.pipeline.baseline_mode)
        typer.echo(
            f"the schedule starts {len(tasks)} runs at once, one per task ({', '.join(tasks)}): "
            f"at most ${len(tasks) * run_bound_usd(jobs, mode):,.2f} a round "
            f"(BaselineMode={mode}), and up to {len(tasks)} times each quota above"
        )
    serving = settings.serving
    if serving is None:
        typer.echo("endpoint: none (serving is off for this stage)")
        return
    try:
        hourly = endpoint_usd_per_hour(serving.instance_type, serving.instance_count)
    except ValueError as err:
        raise CommandError(str(err)) from err
    typer.echo(
        f"endpoint ({serving.lifecycle_stage}): {serving.instance_count} x {serving.instance_type} "
        f"${hourly:,.3f}/h, about ${hourly * HOURS_PER_MONTH:,.0f} a month while it exists"
    )


def example_deployment(region: str) -> Deployment:
    return Deployment(
        region=region,
        role_arn=f"arn:aws:iam::{EXAMPLE_ACCOUNT}:role/peftops-sagemaker-execution",
        bucket=f"peftops-artifacts-{EXAMPLE_ACCOUNT}",
        kms_key_arn=f"arn:aws:kms:{region}:{EXAMPLE_ACCOUNT}:key/00000000-0000-4000-8000-000000000000",
    )


def request_token(token: str | None) -> str:
    """The API wants 32-128 characters; any string a scheduler has (a date, a build id) maps
    to one, always the same, so a retried start does not start a second execution."""
    return hashlib.sha256(token.encode()).hexdigest() if token else uuid.uuid4().hex


@pipeline_app.command("start")
def pipeline_start(
    stage: Annotated[
        str | None,
        typer.Option(help="A stage of cdk.json: its pipeline, in its region."),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="Pipeline name; default: --stage's, else peftops-adapter."),
    ] = None,
    region: RegionOption = None,
    param: ParamOption = None,
    token: Annotated[
        str | None,
        typer.Option(help="Idempotency token: retrying with the same token starts one execution."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Start an execution of the deployed pipeline."""
    import boto3

    from pipelines.definition.parameter_ranges import parameter_range_error

    assigned = parse_assignments(param or [])
    for key, value in assigned.items():
        if refused := parameter_range_error(key, value):
            raise CommandError(f"--param {key}={value}: {refused.removeprefix('parameter ')}")
    parameters = [{"Name": k, "Value": v} for k, v in assigned.items()]
    if not name:
        name = stage_settings(stage).pipeline.name if stage else PipelineConfig().name
    client = boto3.client("sagemaker", region_name=cloud_region(region, stage=stage))
    response = client.start_pipeline_execution(
        PipelineName=name,
        PipelineParameters=parameters,
        ClientRequestToken=request_token(token),
    )
    arn = response["PipelineExecutionArn"]
    typer.echo(json.dumps({"PipelineExecutionArn": arn}) if as_json else arn)


def function_message(step: dict[str, Any]) -> str:
    outputs = step.get("Metadata", {}).get("Lambda", {}).get("OutputParameters", [])
    return next((o["Value"] for o in outputs if o["Name"] == "Message"), "")


@pipeline_app.command("status")
def pipeline_status(
    execution_arn: str, region: RegionOption = None, as_json: JsonOption = False
) -> None:
    """An execution's status and its steps' statuses (in the region its ARN names)."""
    import boto3

    client = boto3.client("sagemaker", region_name=cloud_region(region, arn=execution_arn))
    execution = client.describe_pipeline_execution(PipelineExecutionArn=execution_arn)
    pages = list(
        client.get_paginator("list_pipeline_execution_steps").paginate(
            PipelineExecutionArn=execution_arn, SortOrder="Ascending"
        )
    )
    rows = [
        {
            "step": s["StepName"],
            "status": s["StepStatus"],
            # A failure's reason, or what a function step reported (CheckRegistered says
            # when the adapter was already a version and nothing was registered).
            "failure": s.get("FailureReason", "") or function_message(s),
        }
        for page in pages
        for s in page.get("PipelineExecutionSteps", [])
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
