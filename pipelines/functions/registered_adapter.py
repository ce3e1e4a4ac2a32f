"""CheckRegistered, just before registration: is this adapter artifact already a version in
the model package group?

A weekly run on unchanged data and parameters hits the step cache from Preprocess to the
gate and arrives with the adapter an earlier run trained and registered; registering it
again would add a duplicate version for reviewers to approve. The pipeline registers only
when this says `Registered` is "false"; otherwise the run ends with the existing version's
ARN in this step's outputs.

It also returns the digest of the evaluation the gate just read, which registration records:
jobs can write the evaluation's prefix, the registry cannot be written by jobs, so approval
(`peftops models approve`) trusts the evaluation it re-reads only while the two agree.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from typing import Any

# (group) -> (model package ARN, its adapter's location), newest first
ListVersions = Callable[[str], Iterable[tuple[str, str]]]
# (s3 URI) -> the object's bytes
ReadObject = Callable[[str], bytes]
# The metadata key under which registration records `evaluation_digest`.
EVALUATION_DIGEST = "evaluation_sha256"
# The metadata key that marks a smoke test's version (PipelineConfig.smoke_test).
SMOKE_TEST = "smoke_test"
# The metadata key naming a version's task (PipelineConfig.task).
TASK = "task"
# The inference component that selects the base model itself; never a task's name.
BASE_COMPONENT = "base"


# SageMaker's bound on an inference component's name, and the version digits a task's
# component names leave room for.
COMPONENT_NAME_LIMIT = 63
VERSION_DIGITS = 6
# The longest endpoint name a task's component names fit beside (with the task hashed).
MAX_ENDPOINT_NAME = COMPONENT_NAME_LIMIT - len("-t12345678-") - VERSION_DIGITS
# The tag the stage deployer puts on a version's component once its smoke test passed: of a
# task's components, those that carry it serve (the newest, while a deployment hands over).
SERVING_TAG = "peftops:serving"
# The PEFT methods the serving engines take: LoRA adapters (vLLM, peft's adapter_names); a
# prompt-tuning adapter has no LoRA weights to load.
SERVABLE_METHODS = ("lora", "qlora")


def base_component_name(endpoint: str) -> str:
    """The stage endpoint's base-model component (the stack creates it; `base` invokes it)."""
    return f"{endpoint}-{BASE_COMPONENT}"


def task_component_prefix(endpoint: str, task: str) -> str:
    """What the names of a task's adapter components on an endpoint start with:
    `<endpoint>-<task>-`, or, where a version number after that could pass SageMaker's 63
    characters, `<endpoint>-t<8 hex digits of the task's SHA-256>-`."""
    named = f"{endpoint}-{task}-"
    if len(named) + VERSION_DIGITS <= COMPONENT_NAME_LIMIT:
        return named
    hashed = f"{endpoint}-t{hashlib.sha256(task.encode()).hexdigest()[:8]}-"
    if len(hashed) + VERSION_DIGITS > COMPONENT_NAME_LIMIT:
        raise ValueError(
            f"endpoint {endpoint!r} leaves no room for a task's component name within "
            f"{COMPONENT_NAME_LIMIT} characters; use an endpoint name of at most "
            f"{MAX_ENDPOINT_NAME} characters"
        )
    return hashed


def adapter_component_name(endpoint: str, task: str, version: int) -> str:
    """The adapter component of one version of a task on a stage's endpoint. One per version:
    the deployer creates a version's component beside the one serving, smoke-tests it, and
    only then deletes the old one, so no adapter is ever swapped inside a serving component."""
    return f"{task_component_prefix(endpoint, task)}{version}"


def legacy_component_name(endpoint: str, task: str) -> str:
    """A task's one component on an endpoint deployed before each version had its own: it
    serves until the task's next deployment replaces it."""
    return f"{endpoint}-{task}"


def is_task_component(name: str, endpoint: str, task: str) -> bool:
    """Is `name` one of the task's adapter components on the endpoint (a version's, or the
    task's one from before components per version)?"""
    prefix = task_component_prefix(endpoint, task)
    return name == legacy_component_name(endpoint, task) or (
        component_version(name, prefix) is not None
    )


def component_version(name: str, prefix: str) -> int | None:
    """The version an adapter component's name carries, if it is one of `prefix`'s (another
    task whose name starts with this one's has more than digits after the prefix)."""
    rest = name.removeprefix(prefix)
    return int(rest) if name.startswith(prefix) and rest.isdigit() else None


# BatchDescribeModelPackage takes at most 100 ARNs, ListModelPackages returns at most 100.
PAGE = 100
# The additional model data source that carried the adapter in versions registered for the
# TGI image with network isolation (the base model was the container's model data). Versions
# are registered with the adapter as model data now; those older ones stay readable.
ADAPTER_CHANNEL = "adapter"


def adapter_location(container: dict[str, Any]) -> str:
    """Where a registered inference container's adapter is: its model data, or (an older
    version) its `adapter` additional model data source."""
    for source in container.get("AdditionalModelDataSources", []):
        if source.get("ChannelName") == ADAPTER_CHANNEL:
            return source["S3DataSource"]["S3Uri"]
    return container.get("ModelDataUrl", "")


def evaluation_digest(body: bytes) -> str:
    """SHA-256 of an evaluation document's content (canonical JSON: key order and spacing do
    not count), so a registry that keeps its own copy and one that re-reads S3 agree."""
    canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def find_registered(
    event: dict[str, Any], list_versions: ListVersions, read_object: ReadObject
) -> dict[str, str]:
    wanted = event["ModelDataUrl"]
    digest = evaluation_digest(read_object(event["EvaluationUri"]))
    for arn, model_data_url in list_versions(event["ModelPackageGroupName"]):
        if model_data_url == wanted:
            return {
                "Registered": "true",
                "ModelPackageArn": arn,
                "Message": f"adapter {wanted} is already registered as {arn}; nothing registered",
                "EvaluationSha256": digest,
            }
    return {
        "Registered": "false",
        "ModelPackageArn": "",
        "Message": "a new adapter",
        "EvaluationSha256": digest,
    }


def batch_adapter_locations(sagemaker: Any, arns: list[str]) -> dict[str, str]:
    """Each version's adapter location, one BatchDescribeModelPackage call per 100 versions.
    A version it cannot describe is an error: skipping it could register a duplicate."""
    described = sagemaker.batch_describe_model_package(ModelPackageArnList=arns)
    if errors := described.get("BatchDescribeModelPackageErrorMap"):
        raise RuntimeError(f"cannot describe model packages: {errors}")
    locations = {}
    for arn, summary in described["ModelPackageSummaries"].items():
        containers = summary.get("InferenceSpecification", {}).get("Containers", [])
        locations[arn] = adapter_location(containers[0]) if containers else ""
    return locations


def handler(event: dict[str, Any], context: Any) -> dict[str, str]:
    """The Lambda entry point: the same function over the Model Registry and S3."""
    import boto3

    sagemaker = boto3.client("sagemaker")
    s3 = boto3.client("s3")

    def list_versions(group: str) -> Iterable[tuple[str, str]]:
        pages = sagemaker.get_paginator("list_model_packages").paginate(
            ModelPackageGroupName=group,
            SortBy="CreationTime",
            SortOrder="Descending",
            PaginationConfig={"PageSize": PAGE},
        )
        for page in pages:
            arns = [summary["ModelPackageArn"] for summary in page["ModelPackageSummaryList"]]
            if arns:
                locations = batch_adapter_locations(sagemaker, arns)
                yield from ((arn, locations.get(arn, "")) for arn in arns)

    def read_object(uri: str) -> bytes:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    return find_registered(event, list_versions, read_object)
