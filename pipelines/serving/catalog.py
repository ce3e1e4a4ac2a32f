"""What a stage serves: the version of each task that holds the stage, with its adapter's files
and the base model they share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.functions.registered_adapter import SERVABLE_METHODS
from pipelines.registry import ModelVersion, Registry, other_groups
from pipelines.registry.lifecycle import StageStatus
from pipelines.serving.adapters import ServingError
from training_scripts import contracts


@dataclass(frozen=True)
class Served:
    base_model: str
    versions: dict[str, ModelVersion]  # task -> version


def artifact_path(version: ModelVersion) -> Path:
    """The adapter's model.tar.gz on this machine: a local registry's versions name s3:// URIs
    of their run's bucket mirror."""
    url = version.model_data_url
    if not version.artifact_root or not url.startswith("s3://"):
        raise ServingError(
            f"version {version.version}'s adapter {url} is not on this machine; serve a local "
            "registry (local:PATH) or copy the adapter here"
        )
    return Path(version.artifact_root) / url.removeprefix("s3://")


def registered_task(version: ModelVersion) -> dict[str, Any]:
    """The task a version was evaluated on (evaluation.json's `task`: name, spec digest, spec
    and the smoke request built from a test example)."""
    try:
        contracts.value_at(version.evaluation or {}, contracts.TASK_SMOKE_REQUEST)
    except contracts.ContractError:
        raise ServingError(
            f"version {version.version}'s evaluation names no task spec: it was registered "
            "before adapters carried their task; register a new run"
        ) from None
    return (version.evaluation or {})["task"]


def servable(version: ModelVersion) -> ModelVersion:
    method = version.metadata.get("peft_method", "")
    if method not in SERVABLE_METHODS:
        raise ServingError(
            f"version {version.version} is a {method or 'unknown'} adapter; only "
            f"{' and '.join(SERVABLE_METHODS)} adapters serve on a shared base model"
        )
    return version


def shared_base(versions: list[ModelVersion]) -> str:
    bases = {v.metadata.get("base_model", "") for v in versions}
    if len(bases) != 1 or not next(iter(bases)):
        described = ", ".join(f"{v.version}: {v.metadata.get('base_model', '?')}" for v in versions)
        raise ServingError(
            f"the versions do not share one base model ({described}); serve each base model "
            "from its own process"
        )
    return bases.pop()


def in_stage(registry: Registry, stage: str) -> Served:
    """The deployed version of each task in `stage`."""
    versions = [
        servable(v)
        for v in registry.list()
        if v.lifecycle.stage == stage and v.lifecycle.status == StageStatus.DEPLOYED
    ]
    if not versions:
        held = other_groups(registry)
        raise ServingError(
            f"no version of model group {registry.group} is deployed to {stage}; promote one "
            f"(`peftops models promote VERSION --to {stage}`)" + (f"; {held}" if held else "")
        )
    return Served(shared_base(versions), {v.task: v for v in versions})
