"""The SageMaker Model Registry as a registry backend: a model package group's versions, with
their evaluation read from the S3 URI registered as model metrics."""

from __future__ import annotations

import logging
from typing import Any

from pipelines.functions.registered_adapter import adapter_location
from pipelines.registry.versions import ModelVersion, Registration, RegistryError
from training_scripts import contracts

logger = logging.getLogger("peftops")


class SageMakerRegistry:
    """The SageMaker Model Registry: a model package group's versions."""

    def __init__(self, group: str, *, sagemaker_client: Any = None, s3_client: Any = None) -> None:
        import boto3

        self.group = group
        self.sagemaker = sagemaker_client or boto3.client("sagemaker")
        self.s3 = s3_client or boto3.client("s3")

    def _arn(self, version: int) -> str:
        for package in self._packages():
            if package["ModelPackageVersion"] == version:
                return package["ModelPackageArn"]
        raise RegistryError(
            f"model package group {self.group} has no version {version}; see `peftops models list`"
        )

    def _packages(self, status: str | None = None) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "ModelPackageGroupName": self.group,
            "SortBy": "CreationTime",
            "SortOrder": "Ascending",
        }
        if status:
            kwargs["ModelApprovalStatus"] = status
        packages = []
        for page in self.sagemaker.get_paginator("list_model_packages").paginate(**kwargs):
            packages.extend(page["ModelPackageSummaryList"])
        return packages

    def _evaluation(self, uri: str | None) -> dict[str, Any] | None:
        if not uri or not uri.startswith("s3://"):
            return None
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        try:
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None
        try:
            return contracts.EVALUATION.parse(body, uri)
        except contracts.ContractError as err:
            # One unreadable evaluation must not hide the group's other versions; its gate
            # then reads as missing, and approval is refused.
            logger.warning("%s", err)
            return None

    def _describe(self, arn: str) -> ModelVersion:
        package = self.sagemaker.describe_model_package(ModelPackageName=arn)
        uri = (
            package.get("ModelMetrics", {})
            .get("ModelQuality", {})
            .get("Statistics", {})
            .get("S3Uri")
        )
        containers = package.get("InferenceSpecification", {}).get("Containers", [{}])
        return ModelVersion(
            group=package["ModelPackageGroupName"],
            version=package["ModelPackageVersion"],
            status=package["ModelApprovalStatus"],
            model_data_url=adapter_location(containers[0]),
            created=str(package["CreationTime"]),
            metadata=package.get("CustomerMetadataProperties", {}),
            evaluation=self._evaluation(uri),
            evaluation_uri=uri,
            description=package.get("ModelPackageDescription", ""),
            approval_description=package.get("ApprovalDescription", ""),
            arn=arn,
        )

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
        if entry.evaluation_uri:
            request["ModelMetrics"] = {
                "ModelQuality": {
                    "Statistics": {"ContentType": "application/json", "S3Uri": entry.evaluation_uri}
                }
            }
        arn = self.sagemaker.create_model_package(**request)["ModelPackageArn"]
        return self._describe(arn)

    def list(self, status: str | None = None) -> list[ModelVersion]:
        return [self._describe(p["ModelPackageArn"]) for p in self._packages(status)]

    def get(self, version: int) -> ModelVersion:
        return self._describe(self._arn(version))

    def set_status(self, version: int, status: str, description: str) -> ModelVersion:
        arn = self._arn(version)
        self.sagemaker.update_model_package(
            ModelPackageArn=arn, ModelApprovalStatus=status, ApprovalDescription=description
        )
        return self._describe(arn)
