"""The SageMaker Model Registry as a registry backend: a model package group's versions, with
their evaluation read from the S3 URI registered as model metrics."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from pipelines.functions.model_lifecycle import (
    Decision,
    decode_history,
    history_entries,
    lineage_of,
    one_line,
    recorded,
)
from pipelines.functions.registered_adapter import adapter_location, evaluation_digest
from pipelines.registry.versions import (
    Change,
    Lifecycle,
    ModelVersion,
    Registration,
    RegistryError,
    model_card_content,
)
from training_scripts import contracts

logger = logging.getLogger("peftops")
SEARCH_PAGE = 100  # Search's largest page
EVALUATION_READERS = 8  # S3 GETs at once when listing
GROUP_HINT_LIMIT = 20  # groups an empty answer looks through for versions


class SageMakerRegistry:
    """The SageMaker Model Registry: a model package group's versions."""

    deploys_here = False  # the stage's deployer (a Lambda on the registry's events) deploys

    def __init__(
        self,
        group: str,
        *,
        region: str | None = None,
        sagemaker_client: Any = None,
        s3_client: Any = None,
    ) -> None:
        import boto3

        self.group = group
        self.sagemaker = sagemaker_client or boto3.client("sagemaker", region_name=region)
        self.s3 = s3_client or boto3.client("s3", region_name=region)

    def _arn(self, version: int) -> str:
        for package in self._packages():
            if package["ModelPackageVersion"] == version:
                return package["ModelPackageArn"]
        raise RegistryError(
            f"model package group {self.group} has no version {version}; see `peftops models list`"
        )

    def _packages(self) -> list[dict[str, Any]]:
        pages = self.sagemaker.get_paginator("list_model_packages").paginate(
            ModelPackageGroupName=self.group, SortBy="CreationTime", SortOrder="Ascending"
        )
        return [summary for page in pages for summary in page["ModelPackageSummaryList"]]

    def groups(self) -> dict[str, int | None]:
        """The account's model package groups that hold versions, for the hint an empty answer
        gives: the first GROUP_HINT_LIMIT groups, each asked for one version only, so how
        many is not known (None). Not for a hot path."""
        summaries = self.sagemaker.list_model_package_groups(
            MaxResults=GROUP_HINT_LIMIT, SortBy="Name", SortOrder="Ascending"
        )["ModelPackageGroupSummaryList"]
        held: dict[str, int | None] = {}
        for summary in summaries:
            name = summary["ModelPackageGroupName"]
            page = self.sagemaker.list_model_packages(ModelPackageGroupName=name, MaxResults=1)
            if page["ModelPackageSummaryList"]:
                held[name] = None
        return held

    def location(self, group: str) -> str:
        return f"sagemaker:{group}"

    def _evaluation(self, uri: str | None) -> tuple[dict[str, Any] | None, str | None]:
        """The evaluation at `uri` and the digest of what was read; (None, None) if absent."""
        if not uri or not uri.startswith("s3://"):
            return None, None
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        try:
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None, None
        try:
            return contracts.EVALUATION.parse(body, uri), evaluation_digest(body)
        except contracts.ContractError as err:
            # One unreadable evaluation must not hide the group's other versions; its gate
            # then reads as missing, and approval is refused.
            logger.warning("%s", err)
            return None, None

    def _version(self, package: dict[str, Any]) -> ModelVersion:
        """A ModelPackage as DescribeModelPackage and Search return it."""
        uri = (
            package.get("ModelMetrics", {})
            .get("ModelQuality", {})
            .get("Statistics", {})
            .get("S3Uri")
        )
        evaluation, digest = self._evaluation(uri)
        containers = package.get("InferenceSpecification", {}).get("Containers", [{}])
        cycle = package.get("ModelLifeCycle", {})
        metadata = package.get("CustomerMetadataProperties", {})
        return ModelVersion(
            group=package["ModelPackageGroupName"],
            version=package["ModelPackageVersion"],
            status=package["ModelApprovalStatus"],
            model_data_url=adapter_location(containers[0]),
            created=str(package["CreationTime"]),
            metadata=lineage_of(metadata),
            evaluation=evaluation,
            evaluation_uri=uri,
            description=package.get("ModelPackageDescription", ""),
            approval_description=package.get("ApprovalDescription", ""),
            arn=package["ModelPackageArn"],
            evaluation_sha256=digest,
            model_card=model_card_content(package.get("ModelCard")),
            lifecycle=Lifecycle(
                stage=cycle.get("Stage", "development"),
                status=cycle.get("StageStatus", "Registered"),
                description=cycle.get("StageDescription", ""),
            ),
            history=decode_history(metadata),
        )

    def _describe(self, arn: str) -> ModelVersion:
        return self._version(self.sagemaker.describe_model_package(ModelPackageName=arn))

    def register(self, entry: Registration) -> ModelVersion:
        request: dict[str, Any] = {
            "ModelPackageGroupName": entry.group,
            "ModelPackageDescription": entry.description,
            "ModelApprovalStatus": entry.status,
            "CustomerMetadataProperties": entry.metadata,
            "InferenceSpecification": entry.inference_specification
            or {
                "Containers": [{"Image": "unused", "ModelDataUrl": entry.model_data_url}],
                "SupportedContentTypes": ["application/json"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
        }
        if entry.model_card:
            request["ModelCard"] = entry.model_card
        if entry.evaluation_uri:
            request["ModelMetrics"] = {
                "ModelQuality": {
                    "Statistics": {"ContentType": "application/json", "S3Uri": entry.evaluation_uri}
                }
            }
        arn = self.sagemaker.create_model_package(**request)["ModelPackageArn"]
        return self._describe(arn)

    def list(self, status: str | None = None) -> list[ModelVersion]:
        """Every version with its lineage and evaluation: Search returns whole model packages,
        100 a call, where listing then describing costs a DescribeModelPackage per version
        (and its throttling); the evaluations are read from S3 side by side."""
        filters = [{"Name": "ModelPackageGroupName", "Operator": "Equals", "Value": self.group}]
        if status:
            filters.append({"Name": "ModelApprovalStatus", "Operator": "Equals", "Value": status})
        pages = self.sagemaker.get_paginator("search").paginate(
            Resource="ModelPackage",
            SearchExpression={"Filters": filters},
            SortBy="CreationTime",
            SortOrder="Ascending",
            PaginationConfig={"PageSize": SEARCH_PAGE},
        )
        packages = [r["ModelPackage"] for page in pages for r in page["Results"]]
        with ThreadPoolExecutor(max_workers=EVALUATION_READERS) as pool:
            versions = list(pool.map(self._version, packages))
        return sorted(versions, key=lambda v: v.version)

    def get(self, version: int) -> ModelVersion:
        return self._describe(self._arn(version))

    def change(self, version: int, change: Change) -> ModelVersion:
        """One UpdateModelPackage: the new approval status and/or ModelLifeCycle, and the
        decision as a new metadata entry."""
        arn = self._arn(version)
        before = self._describe(arn)
        status = change.status or before.status
        lifecycle = change.lifecycle or before.lifecycle
        decision = Decision(
            at=datetime.now(UTC).isoformat(timespec="seconds"),
            who=change.who,
            action=change.action,
            before=before.state,
            after=f"{status}/{lifecycle}",
            why=change.why,
        )
        try:  # the whole set with the decision appended (model_lifecycle.recorded)
            metadata = recorded({**before.metadata, **history_entries(before.history)}, decision)
        except ValueError as err:
            raise RegistryError(f"version {version}: {err}") from None
        request: dict[str, Any] = {
            "ModelPackageArn": arn,
            "CustomerMetadataProperties": metadata,
        }
        if change.status:
            request["ModelApprovalStatus"] = change.status
            request["ApprovalDescription"] = one_line(f"{change.who}: {change.why}")
        if change.lifecycle:
            request["ModelLifeCycle"] = {
                "Stage": change.lifecycle.stage,
                "StageStatus": change.lifecycle.status,
                "StageDescription": one_line(change.lifecycle.description),
            }
        self.sagemaker.update_model_package(**request)
        return self._describe(arn)
