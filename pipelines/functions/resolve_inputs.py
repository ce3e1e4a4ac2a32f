"""ResolveInputs, the pipeline's first step: which dataset version of the run's task it trains
on, and which stored baseline its evaluation reads (in reuse mode: that it exists).

A scheduled run asks for `latest` and gets the newest published version; an operator may pin
one. The version's URI then keys Preprocess's step cache (its inputs are part of the key), so
the same data hits the cache and new data trains anew. Failing here, in seconds, with the
command that fixes it beats failing in a job's input download.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:  # a package in the project, top-level modules in the Lambda runtime
    from . import layout
except ImportError:
    import layout  # type: ignore[no-redef]

ListKeys = Callable[[str, str], list[str]]  # (bucket, prefix) -> keys
Exists = Callable[[str], bool]  # s3 uri -> whether the object exists


class InputsError(Exception):
    """A run whose inputs are not there; the message names the command that provides them."""


def resolve_inputs(event: dict[str, Any], list_keys: ListKeys, exists: Exists) -> dict[str, str]:
    """The run's dataset version and URI, and the baseline its evaluation reads in reuse mode
    (the task's stored one unless the run names another)."""
    bucket, task, requested = event["Bucket"], event["Task"], event["DatasetVersion"]
    # The stage's tasks: the only ones whose data, baseline and gate it deployed (a task's name
    # is also a key segment of its data).
    declared = event["StageTasks"].split(",")
    if task not in declared:
        raise InputsError(
            f"Task {task!r} is not one of this stage's tasks ({', '.join(declared)}); add it to "
            "the stage's tasks in cdk.json and deploy, or pass one of these"
        )
    markers = layout.dataset_markers(task)
    versions = layout.versions_in(task, list_keys(bucket, markers))
    if requested == layout.LATEST:
        if not versions:
            raise InputsError(
                f"no dataset of task {task} is published in s3://{bucket}/{markers}; publish one: "
                f"peftops data publish --task {task} --data FILE --bucket {bucket}"
            )
        version = versions[-1]
    elif requested in versions:
        version = requested
    else:
        raise InputsError(
            f"dataset version {requested!r} is not published in s3://{bucket}/{markers} "
            f"(newest: {versions[-1] if versions else 'none'}); "
            f"pass DatasetVersion={layout.LATEST} or a published version"
        )
    baseline = event["BaselineEvaluationUri"]
    if baseline == layout.TASK_BASELINE:
        baseline = f"s3://{bucket}/{layout.baseline_key(task)}"
    baselines = f"s3://{bucket}/{layout.BASELINES}"
    if event["BaselineMode"] == "reuse" and not baseline.startswith(baselines):
        raise InputsError(
            f"BaselineEvaluationUri {baseline} is not under {baselines}, where "
            "`peftops baseline publish` stores baselines and this pipeline may read them"
        )
    if event["BaselineMode"] == "reuse" and not exists(baseline):
        raise InputsError(
            f"BaselineMode=reuse needs a stored baseline at {baseline} "
            "(there is none this function can read); seed it "
            f"from a BaselineMode=train run of task {task}: peftops baseline publish "
            f"--evaluation <that run's evaluation.json> --bucket {bucket}"
        )
    return {
        "DatasetVersion": version,
        "DatasetUri": layout.dataset_uri(bucket, task, version),
        "BaselineEvaluationUri": baseline,
    }


def handler(event: dict[str, Any], context: Any) -> dict[str, str]:
    """The Lambda entry point: the same function over S3."""
    import boto3

    s3 = boto3.client("s3")

    def list_keys(bucket: str, prefix: str) -> list[str]:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def exists(uri: str) -> bool:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        try:
            s3.head_object(Bucket=bucket, Key=key)
        except s3.exceptions.ClientError as err:
            # Without s3:ListBucket on the key (this function may list only the published
            # markers), S3 answers a missing object with 403, not 404.
            if err.response["Error"]["Code"] in (
                "403",
                "404",
                "Forbidden",
                "NoSuchKey",
                "NotFound",
            ):
                return False
            raise
        return True

    return resolve_inputs(event, list_keys, exists)
