"""CheckRegistered, just before registration: is this adapter artifact already a version in
the model package group?

A weekly run on unchanged data and parameters hits the step cache from Preprocess to the
gate and arrives with the adapter an earlier run trained and registered; registering it
again would add a duplicate version for reviewers to approve. The pipeline registers only
when this says `Registered` is "false"; otherwise the run ends with the existing version's
ARN in this step's outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

# (group) -> (model package ARN, its adapter's location), newest first
ListVersions = Callable[[str], Iterable[tuple[str, str]]]
# The additional model data source that carries the adapter when the base model is the
# container's own model data (network isolation: the base model comes from S3, not the hub).
ADAPTER_CHANNEL = "adapter"


def adapter_location(container: dict[str, Any]) -> str:
    """Where a registered inference container's adapter is: its model data, or its `adapter`
    additional model data source."""
    for source in container.get("AdditionalModelDataSources", []):
        if source.get("ChannelName") == ADAPTER_CHANNEL:
            return source["S3DataSource"]["S3Uri"]
    return container.get("ModelDataUrl", "")


def find_registered(event: dict[str, Any], list_versions: ListVersions) -> dict[str, str]:
    wanted = event["ModelDataUrl"]
    for arn, model_data_url in list_versions(event["ModelPackageGroupName"]):
        if model_data_url == wanted:
            return {
                "Registered": "true",
                "ModelPackageArn": arn,
                "Message": f"adapter {wanted} is already registered as {arn}; nothing registered",
            }
    return {"Registered": "false", "ModelPackageArn": "", "Message": "a new adapter"}


def handler(event: dict[str, Any], context: Any) -> dict[str, str]:
    """The Lambda entry point: the same function over the Model Registry."""
    import boto3

    sagemaker = boto3.client("sagemaker")

    def list_versions(group: str) -> Iterable[tuple[str, str]]:
        pages = sagemaker.get_paginator("list_model_packages").paginate(
            ModelPackageGroupName=group, SortBy="CreationTime", SortOrder="Descending"
        )
        for page in pages:
            for summary in page["ModelPackageSummaryList"]:
                arn = summary["ModelPackageArn"]
                described = sagemaker.describe_model_package(ModelPackageName=arn)
                containers = described.get("InferenceSpecification", {}).get("Containers", [])
                yield arn, adapter_location(containers[0]) if containers else ""

    return find_registered(event, list_versions)
