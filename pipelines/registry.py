"""The model registry, one interface with two backends: SageMaker's Model Registry (boto3)
and a local SQLite file, which the local pipeline run registers into exactly what the cloud
would register (artifact, evaluation metrics, lineage metadata, approval status).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

APPROVAL_STATUSES = ("PendingManualApproval", "Approved", "Rejected")


class RegistryError(Exception):
    """A registry request that cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class ModelVersion:
    group: str
    version: int
    status: str
    model_data_url: str
    created: str
    metadata: dict[str, str] = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None
    evaluation_uri: str | None = None
    description: str = ""
    approval_description: str = ""
    arn: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def gate_verdict(version: ModelVersion) -> tuple[bool, str]:
    """Whether the version's evaluation passes the gate thresholds recorded at registration."""
    evaluation = version.evaluation
    if not evaluation or "gate" not in evaluation:
        return False, "its evaluation is missing"
    try:
        tolerance = float(version.metadata["rouge_l_tolerance"])
        min_gain = float(version.metadata["min_rouge_l_gain"])
    except (KeyError, ValueError):
        return False, "its gate thresholds were not recorded"
    shortfall = evaluation["gate"]["rougeL_shortfall_vs_full_finetune"]
    gain = evaluation["gate"]["rougeL_gain_vs_base"]
    if shortfall > tolerance:
        return False, f"its rougeL trails the full fine-tune by {shortfall:.4f} (> {tolerance})"
    if gain < min_gain:
        return False, f"its rougeL gain over the base model is {gain:.4f} (< {min_gain})"
    return True, "gate passed"


@dataclass(frozen=True)
class Registration:
    """What a pipeline registers: the same fields for every backend."""

    group: str
    model_data_url: str
    status: str
    metadata: dict[str, str]
    evaluation_uri: str | None
    evaluation: dict[str, Any] | None
    description: str
    inference_specification: dict[str, Any] | None = None


class Registry(Protocol):
    def register(self, entry: Registration) -> ModelVersion: ...

    def list(self, status: str | None = None) -> list[ModelVersion]: ...

    def get(self, version: int) -> ModelVersion: ...

    def set_status(self, version: int, status: str, description: str) -> ModelVersion: ...


def decide(
    registry: Registry, version: int, status: str, *, who: str, why: str, force: bool
) -> ModelVersion:
    """Approve or reject a version; approval needs a passing gate unless forced."""
    if status not in ("Approved", "Rejected"):
        raise RegistryError(f"status must be Approved or Rejected, not {status}")
    current = registry.get(version)
    if status == "Approved":
        passed, reason = gate_verdict(current)
        if not passed and not force:
            raise RegistryError(
                f"version {version} cannot be approved: {reason}; pass --force to approve anyway"
            )
        if not passed:
            why = f"{why} [forced: {reason}]"
    return registry.set_status(version, status, f"{who}: {why}")


# --- local backend -------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS model_versions (
    model_group TEXT NOT NULL,
    version INTEGER NOT NULL,
    status TEXT NOT NULL,
    model_data_url TEXT NOT NULL,
    created TEXT NOT NULL,
    metadata TEXT NOT NULL,
    evaluation TEXT,
    evaluation_uri TEXT,
    description TEXT NOT NULL,
    approval_description TEXT NOT NULL DEFAULT '',
    inference_specification TEXT,
    PRIMARY KEY (model_group, version)
)
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class LocalRegistry:
    """A SQLite file holding one model group's versions, as SageMaker's registry would."""

    def __init__(self, path: Path, group: str, *, clock: Callable[[], str] = _now) -> None:
        self.path = path
        self.group = group
        self.clock = clock

    def _connect(self, *, create: bool = False) -> sqlite3.Connection:
        if not create and not self.path.is_file():
            raise RegistryError(
                f"{self.path}: no local registry here; run `peftops run-local` first or check --registry"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path)
        connection.execute(SCHEMA)
        return connection

    def register(self, entry: Registration) -> ModelVersion:
        if entry.status not in APPROVAL_STATUSES:
            raise RegistryError(
                f"approval status {entry.status!r} is not one of {APPROVAL_STATUSES}"
            )
        with self._connect(create=True) as db:
            (latest,) = db.execute(
                "SELECT COALESCE(MAX(version), 0) FROM model_versions WHERE model_group = ?",
                (entry.group,),
            ).fetchone()
            db.execute(
                "INSERT INTO model_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?)",
                (entry.group, latest + 1, entry.status, entry.model_data_url, self.clock(),
                 json.dumps(entry.metadata, sort_keys=True),
                 json.dumps(entry.evaluation) if entry.evaluation is not None else None,
                 entry.evaluation_uri, entry.description,
                 json.dumps(entry.inference_specification) if entry.inference_specification else None),
            )  # fmt: skip
        return self.get(latest + 1, group=entry.group)

    def _row(self, row: tuple) -> ModelVersion:
        (
            group,
            version,
            status,
            url,
            created,
            metadata,
            evaluation,
            evaluation_uri,
            description,
            approval,
            _,
        ) = row
        return ModelVersion(
            group=group,
            version=version,
            status=status,
            model_data_url=url,
            created=created,
            metadata=json.loads(metadata),
            evaluation=json.loads(evaluation) if evaluation else None,
            evaluation_uri=evaluation_uri,
            description=description,
            approval_description=approval,
            arn=f"local:{self.path}#{group}/{version}",
        )

    def list(self, status: str | None = None) -> list[ModelVersion]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT * FROM model_versions WHERE model_group = ? AND (? IS NULL OR status = ?) ORDER BY version",
                (self.group, status, status),
            ).fetchall()
        return [self._row(r) for r in rows]

    def get(self, version: int, *, group: str | None = None) -> ModelVersion:
        with self._connect() as db:
            row = db.execute(
                "SELECT * FROM model_versions WHERE model_group = ? AND version = ?",
                (group or self.group, version),
            ).fetchone()
        if row is None:
            raise RegistryError(
                f"model group {group or self.group} has no version {version}; see `peftops models list`"
            )
        return self._row(row)

    def set_status(self, version: int, status: str, description: str) -> ModelVersion:
        self.get(version)
        with self._connect() as db:
            db.execute(
                "UPDATE model_versions SET status = ?, approval_description = ? WHERE model_group = ? AND version = ?",
                (status, description, self.group, version),
            )
        return self.get(version)


# --- SageMaker backend ---------------------------------------------------------------------


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
            return json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except self.s3.exceptions.NoSuchKey:
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
            model_data_url=containers[0].get("ModelDataUrl", ""),
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


def open_registry(spec: str, *, default_group: str = "peftops-adapters") -> Registry:
    """`local:PATH[#GROUP]` or `sagemaker:GROUP`."""
    kind, _, rest = spec.partition(":")
    if kind == "local" and rest:
        path, _, group = rest.partition("#")
        return LocalRegistry(Path(path).expanduser(), group or default_group)
    if kind == "sagemaker" and rest:
        return SageMakerRegistry(rest)
    raise RegistryError(f"--registry {spec!r}: use local:PATH or sagemaker:GROUP")
