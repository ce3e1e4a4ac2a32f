"""ResolveInputs, the pipeline's first step: which dataset version of the run's task it trains
on, and which stored baseline its evaluation reads (in reuse mode: that it exists and was
scored on that dataset version, or the run would pay for a training before its evaluation
refused the baseline).

A scheduled run asks for `latest` and gets the newest published version; an operator may pin
one. The version's URI then keys Preprocess's step cache (its inputs are part of the key), so
the same data hits the cache and new data trains anew. Failing here, in seconds, with the
command that fixes it beats failing in a job's input download.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

try:  # a package in the project, top-level modules in the Lambda runtime
    from . import layout
except ImportError:
    import layout  # type: ignore[no-redef]

ListKeys = Callable[[str, str], list[str]]  # (bucket, prefix) -> keys
Read = Callable[[str], bytes | None]  # s3 uri -> the object, None when there is none


class InputsError(Exception):
    """A run whose inputs are not there; the message names the command that provides them."""


def resolve_inputs(event: dict[str, Any], list_keys: ListKeys, read: Read) -> dict[str, str]:
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
    task_baseline = baseline == layout.TASK_BASELINE
    if task_baseline:
        baseline = f"s3://{bucket}/{layout.baseline_key(task)}"
    baselines = f"s3://{bucket}/{layout.BASELINES}"
    if event["BaselineMode"] == "reuse" and not baseline.startswith(baselines):
        raise InputsError(
            f"BaselineEvaluationUri {baseline} is not under {baselines}, where "
            "`peftops baseline publish` stores baselines and this pipeline may read them"
        )
    if event["BaselineMode"] == "reuse":
        stored = read(baseline)
        check_stored_baseline(stored, baseline, task, version, bucket)
        if task_baseline and stored is not None:
            baseline = content_addressed(stored, task, bucket, read)
    return {
        "DatasetVersion": version,
        "DatasetUri": layout.dataset_uri(bucket, task, version),
        "BaselineEvaluationUri": baseline,
    }


def check_stored_baseline(
    stored: bytes | None, uri: str, task: str, version: str, bucket: str
) -> None:
    """That reuse mode has a baseline to read, scored on the dataset version this run trains
    on (the version fixes the test set; a baseline that names none is left to Evaluate's
    test-set check)."""
    if stored is None:
        raise InputsError(
            f"BaselineMode=reuse needs a stored baseline at {uri} "
            "(there is none this function can read); seed it "
            f"from a BaselineMode=train run of task {task}: peftops baseline publish "
            f"--evaluation <that run's evaluation.json> --bucket {bucket}"
        )
    try:
        scored_on = json.loads(stored).get("dataset_version")
    except (ValueError, AttributeError):
        raise InputsError(
            f"the stored baseline {uri} is not an evaluation.json; publish one again: "
            f"peftops baseline publish --evaluation <a BaselineMode=train run's evaluation.json> "
            f"--bucket {bucket}"
        ) from None
    if scored_on and scored_on != version:
        raise InputsError(
            f"the stored baseline {uri} was scored on dataset version {scored_on}, not on "
            f"{version}, which this run trains on: run BaselineMode=train with "
            f"DatasetVersion={version} once and publish its evaluation (peftops baseline "
            f"publish --evaluation <its evaluation.json> --bucket {bucket}), or pass "
            f"DatasetVersion={scored_on}"
        )


def content_addressed(stored: bytes, task: str, bucket: str, read: Read) -> str:
    """The URI of the task's current baseline by its content (its copy beside it), so that a
    newly published baseline is a new input of the evaluation step, never a cached one."""
    uri = f"s3://{bucket}/{layout.baseline_copy_key(task, hashlib.sha256(stored).hexdigest())}"
    if read(uri) != stored:
        raise InputsError(
            f"the stored baseline of task {task} has no copy at {uri}, where a run reads it; "
            f"publish it again: peftops baseline publish --evaluation <its evaluation.json> "
            f"--bucket {bucket}"
        )
    return uri


def handler(event: dict[str, Any], context: Any) -> dict[str, str]:
    """The Lambda entry point: the same function over S3."""
    import boto3

    s3 = boto3.client("s3")

    def list_keys(bucket: str, prefix: str) -> list[str]:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def read(uri: str) -> bytes | None:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        try:
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.exceptions.ClientError as err:
            # Without s3:ListBucket on the key (this function may list only the published
            # markers), S3 answers a missing object with 403 (AccessDenied), not 404.
            if err.response["Error"]["Code"] in ("403", "404", "AccessDenied", "NoSuchKey"):
                return None
            raise

    return resolve_inputs(event, list_keys, read)
