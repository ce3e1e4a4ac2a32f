"""A local registry's deployer: what the stack's deployer does on SageMaker, on this machine.
A version promoted to a stage is loaded beside that stage's other tasks (one base model), and
must answer a smoke request before it serves; the outcome is recorded on the version."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pipelines.registry import ModelVersion, Registry, record_deployment
from pipelines.registry.lifecycle import StageStatus
from pipelines.serving.adapters import AdapterModel, ServingError, smoke_test, unpack_adapter
from pipelines.serving.catalog import artifact_path, registered_task, servable, shared_base

DEPLOYER = "peftops-local-deployer"


def smoke_tested(version: ModelVersion, others: list[ModelVersion]) -> tuple[bool, str]:
    """Load the version with the stage's other tasks, as the server would, and ask it."""
    try:
        servable(version)
        base = shared_base([version, *others])
        with tempfile.TemporaryDirectory(prefix="peftops-deploy-") as scratch:
            adapter = unpack_adapter(artifact_path(version), Path(scratch))
            model = AdapterModel(base, {version.task: adapter})
            return smoke_test(model, version.task, registered_task(version)["smoke_request"])
    except ServingError as err:
        return False, f"smoke test failed: {err}"
    except Exception as err:  # whatever fails, the outcome is recorded: never left pending
        return False, f"smoke test failed: {type(err).__name__}: {err}"


def deploy(registry: Registry, version: int) -> ModelVersion:
    """Deploy a version pending in its stage: smoke-test it, record deployed or failed."""
    pending = registry.get(version)
    stage = pending.lifecycle.stage
    others = [
        v
        for v in registry.list()
        if v.task != pending.task
        and v.lifecycle.stage == stage
        and v.lifecycle.status == StageStatus.DEPLOYED
    ]
    passed, detail = smoke_tested(pending, others)
    return record_deployment(registry, version, passed=passed, detail=detail, who=DEPLOYER)
