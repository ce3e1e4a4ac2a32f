"""The model registry: one interface (`versions`), two backends (SageMaker's Model Registry and
a local SQLite file), and the approval decisions made on either."""

from __future__ import annotations

from pathlib import Path

from pipelines.registry.decisions import decide, gate_verdict
from pipelines.registry.local_backend import LocalRegistry
from pipelines.registry.sagemaker_backend import SageMakerRegistry
from pipelines.registry.versions import (
    APPROVAL_STATUSES,
    ModelVersion,
    Registration,
    Registry,
    RegistryError,
)

__all__ = [
    "APPROVAL_STATUSES",
    "LocalRegistry",
    "ModelVersion",
    "Registration",
    "Registry",
    "RegistryError",
    "SageMakerRegistry",
    "decide",
    "gate_verdict",
    "open_registry",
]


def open_registry(spec: str, *, default_group: str = "peftops-adapters") -> Registry:
    """`local:PATH[#GROUP]` or `sagemaker:GROUP`."""
    kind, _, rest = spec.partition(":")
    if kind == "local" and rest:
        path, _, group = rest.partition("#")
        return LocalRegistry(Path(path).expanduser(), group or default_group)
    if kind == "sagemaker" and rest:
        return SageMakerRegistry(rest)
    raise RegistryError(f"--registry {spec!r}: use local:PATH or sagemaker:GROUP")
