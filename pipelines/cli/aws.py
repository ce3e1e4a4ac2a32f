"""The AWS region a cloud command works in: the one it is told (`--region`, or a stage's
`region` in cdk.json), else the AWS configuration's, said on stderr every time, and a one-line
error when there is none. A stage deploys to its cdk.json region whatever the profile says
(`app.py`), so a command that silently took the profile's region would look in the wrong one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from pipelines.cli.options import CommandError

CDK_JSON = Path("cdk.json")

RegionOption = Annotated[
    str | None,
    typer.Option(
        help="The AWS region of the stack (its stage's `region` in cdk.json); default: "
        "AWS_REGION or your profile's."
    ),
]


def stage_settings(stage: str, cdk_json: Path = CDK_JSON) -> Any:
    """A stage of cdk.json, or a one-line error naming the file and the stages it has."""
    from pipelines.definition.stages import stage_settings as settings_of

    try:
        stages = json.loads(cdk_json.read_text(encoding="utf-8"))["context"]["stages"]
        return settings_of(stages, stage)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CommandError(f"--stage {stage}: {cdk_json}: {err}") from None


def cloud_region(region: str | None, *, stage: str | None = None, arn: str | None = None) -> str:
    """The region to call AWS in, in this order: --region, the region an ARN names, the
    stage's in cdk.json, the AWS configuration's (AWS_REGION, the profile). The last is the
    one a user may not have meant: the command says so on stderr."""
    if region:
        return region
    if arn and len(parts := arn.split(":")) > 3 and parts[3]:
        return parts[3]
    if stage:
        return stage_settings(stage).region
    import boto3

    configured = boto3.session.Session().region_name
    if not configured:
        raise CommandError(
            "no AWS region: pass --region (your stage's `region` in cdk.json) or set AWS_REGION"
        )
    typer.echo(
        f"peftops: AWS region {configured}, your AWS configuration's (--region to choose)",
        err=True,
    )
    return configured
