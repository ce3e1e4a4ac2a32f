"""`peftops data publish` and `peftops baseline publish`: what a first run needs in the stack's
bucket, a dataset version and (for BaselineMode=reuse) a baseline evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pipelines.cli.aws import RegionOption, cloud_region
from pipelines.cli.options import (
    CommandError,
    JsonOption,
    TaskOption,
    TaskSpecOption,
    chosen_task,
)

data_app = typer.Typer(help="Datasets the pipeline trains on.", no_args_is_help=True)
baseline_app = typer.Typer(help="The stored baseline reuse mode reads.", no_args_is_help=True)

BucketOption = Annotated[
    str | None,
    typer.Option(help="The stack's bucket: the BucketName output of `cdk deploy`."),
]
LocalRunOption = Annotated[
    Path | None,
    typer.Option(help="Publish into a local run folder's bucket (run-local --out) instead of S3."),
]


def open_store(bucket: str | None, region: str | None, local_run: Path | None) -> tuple[Any, str]:
    """The object store and bucket to publish into: S3, or a local run's mirror of its bucket."""
    if local_run is not None:
        from pipelines.local.presets import LOCAL_DEPLOYMENT
        from pipelines.local.run import MIRROR_DIR
        from pipelines.local.s3_mirror import S3Mirror

        return S3Mirror(local_run / MIRROR_DIR), bucket or LOCAL_DEPLOYMENT.bucket
    if not bucket:
        raise CommandError("pass --bucket (the stack's BucketName output) or --local-run FOLDER")
    import boto3

    from pipelines.publishing import S3Store

    return S3Store(boto3.client("s3", region_name=cloud_region(region))), bucket


@data_app.command("publish")
def publish_data(
    data: Annotated[Path, typer.Option(help="A .jsonl/.csv/.parquet file or a folder of them.")],
    bucket: BucketOption = None,
    task: TaskOption = None,
    task_spec: TaskSpecOption = None,
    region: RegionOption = None,
    local_run: LocalRunOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check a dataset with preprocess's rules and publish it as a new immutable version; the
    next run (DatasetVersion=latest, what the schedule passes) trains on it."""
    import json

    from pipelines.publishing import publish_dataset

    spec = chosen_task(task, task_spec)
    store, bucket = open_store(bucket, region, local_run)
    published = publish_dataset(data, store, bucket, task=spec)
    if as_json:
        typer.echo(json.dumps({"version": published.version, "uri": published.uri,
                               "records": published.records, "new": published.new}))  # fmt: skip
    elif published.new:
        typer.echo(f"published {published.records} records as {published.version}: {published.uri}")
    else:
        typer.echo(
            f"unchanged: the newest version {published.version} holds these files; nothing published"
        )


@baseline_app.command("publish")
def publish_baseline_command(
    evaluation: Annotated[
        str,
        typer.Option(
            help="evaluation.json of a BaselineMode=train run: a local path or an s3:// URI."
        ),
    ],
    bucket: BucketOption = None,
    region: RegionOption = None,
    local_run: LocalRunOption = None,
) -> None:
    """Store a train-mode run's evaluation as the baseline BaselineMode=reuse runs compare with."""
    from pipelines.publishing import publish_baseline

    store, bucket = open_store(bucket, region, local_run)
    if evaluation.startswith("s3://"):
        source_bucket, _, key = evaluation.removeprefix("s3://").partition("/")
        body = store.get(source_bucket, key)
    else:
        try:
            body = Path(evaluation).read_bytes()
        except OSError as err:
            raise CommandError(f"{evaluation}: cannot read it ({err.strerror})") from err
    uri = publish_baseline(body, evaluation, store, bucket)
    typer.echo(f"stored the baseline at {uri}")
