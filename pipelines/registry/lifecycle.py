"""Stages of a registered version and the rules for moving it: development -> staging ->
production -> archived, one live version per task and stage, every decision kept.

SageMaker's Model Registry holds a version's stage as its `ModelLifeCycle` (Stage,
StageStatus, StageDescription) beside its approval status; the local registry mirrors both.
The rules are pure functions of the versions, so every backend and the deployer apply the
same ones."""

from __future__ import annotations

from collections.abc import Iterable

from pipelines.functions.model_lifecycle import (
    HOLDS_STAGE,
    PROMOTION_STAGES,
    Stage,
    StageStatus,
)
from pipelines.registry.versions import Lifecycle, ModelVersion, RegistryError

__all__ = [
    "HOLDS_STAGE",
    "PROMOTION_STAGES",
    "Stage",
    "StageStatus",
    "archived",
    "deployment_outcome",
    "pending_in",
    "promotion",
]


def pending_in(versions: Iterable[ModelVersion], task: str, stage: str) -> ModelVersion | None:
    """The version of `task` being deployed to `stage`, if any."""
    for v in versions:
        if v.task == task and (v.lifecycle.stage, v.lifecycle.status) == (
            stage,
            StageStatus.PENDING,
        ):
            return v
    return None


def promotion(version: ModelVersion, to: str, versions: Iterable[ModelVersion]) -> Lifecycle:
    """The lifecycle `version` gets when promoted to `to`, or the one-line reason it cannot."""
    name = f"version {version.version}"
    if to not in PROMOTION_STAGES:
        choices = ", ".join(PROMOTION_STAGES)
        raise RegistryError(f"--to {to!r}: promote to one of {choices}")
    if version.lifecycle.stage == Stage.ARCHIVED:
        raise RegistryError(f"{name} is archived; archived versions cannot be promoted")
    if version.status != "Approved":
        raise RegistryError(
            f"{name} is {version.status}; only an approved version can be promoted"
            + (" (`peftops models approve` first)" if version.status != "Rejected" else "")
        )
    current = version.lifecycle
    if current.stage == to and current.status in HOLDS_STAGE:
        raise RegistryError(f"{name} is already in {to} ({current.status})")
    if to == Stage.PRODUCTION and (current.stage, current.status) != (
        Stage.STAGING,
        StageStatus.DEPLOYED,
    ):
        raise RegistryError(
            f"{name} has not passed a staging smoke test (it is {current}); "
            "promote it to staging first"
        )
    if to == Stage.STAGING and current.stage == Stage.PRODUCTION:
        raise RegistryError(f"{name} is in production; it does not go back to staging")
    other = pending_in(versions, version.task, to)
    if other is not None and other.version != version.version:
        raise RegistryError(
            f"version {other.version} of task {version.task} is being deployed to {to}; "
            "a stage holds one version per task: wait for its outcome"
        )
    return Lifecycle(to, StageStatus.PENDING, f"promoted to {to}")


def deployment_outcome(
    version: ModelVersion, passed: bool, detail: str, versions: Iterable[ModelVersion]
) -> tuple[Lifecycle, ModelVersion | None]:
    """The lifecycle a pending version gets from its stage's smoke test, and the version it
    retires: on success the task's previous version in that stage; on failure none (the
    previous one keeps serving)."""
    stage = version.lifecycle.stage
    if version.lifecycle.status != StageStatus.PENDING:
        raise RegistryError(
            f"version {version.version} is {version.lifecycle}, not pending a deployment"
        )
    if not passed:
        return Lifecycle(stage, StageStatus.FAILED, detail), None
    previous = [
        v for v in versions if v.task == version.task and v.version != version.version
        and v.lifecycle.stage == stage and v.lifecycle.status == StageStatus.DEPLOYED
    ]  # fmt: skip
    return Lifecycle(stage, StageStatus.DEPLOYED, detail), (previous[0] if previous else None)


def archived(version: ModelVersion) -> Lifecycle:
    """Archiving takes a version out of every stage for good; the one serving is refused."""
    if version.lifecycle.status in HOLDS_STAGE:
        raise RegistryError(
            f"version {version.version} holds {version.lifecycle.stage} for task {version.task}; "
            "promote another version there first"
        )
    if version.lifecycle.stage == Stage.ARCHIVED:
        raise RegistryError(f"version {version.version} is already archived")
    return Lifecycle(Stage.ARCHIVED, StageStatus.ARCHIVED, "archived")
