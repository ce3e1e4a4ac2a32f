"""The model registry: one interface (`versions`), two backends (SageMaker's Model Registry and
a local SQLite file), and the approval decisions made on either."""

from __future__ import annotations

from pathlib import Path

from pipelines.registry.decisions import (
    approval_verdict,
    archive,
    decide,
    promote,
    record_deployment,
)
from pipelines.registry.local_backend import LocalRegistry
from pipelines.registry.sagemaker_backend import SageMakerRegistry
from pipelines.registry.versions import (
    APPROVAL_STATUSES,
    Change,
    Decision,
    Lifecycle,
    ModelVersion,
    Registration,
    Registry,
    RegistryError,
    other_groups,
)

__all__ = [
    "APPROVAL_STATUSES",
    "Change",
    "Decision",
    "Lifecycle",
    "LocalRegistry",
    "ModelVersion",
    "Registration",
    "Registry",
    "RegistryError",
    "SageMakerRegistry",
    "approval_verdict",
    "archive",
    "decide",
    "local_registry_location",
    "open_registry",
    "other_groups",
    "promote",
    "record_deployment",
]


def local_registry_location(spec: str) -> tuple[Path, str] | None:
    """A local registry's file and group (empty: the caller's default) from `local:PATH[#GROUP]`
    or a bare `PATH[#GROUP]`; None for `sagemaker:GROUP`. One parser for every command."""
    kind, colon, rest = spec.partition(":")
    if kind == "sagemaker" and colon:
        return None
    if kind == "local" and colon:
        location = rest
    elif "://" in spec or not spec:
        raise RegistryError(f"--registry {spec!r}: use local:PATH, PATH or sagemaker:GROUP")
    else:
        location = spec  # a bare path is a local registry
    path, _, group = location.partition("#")
    if not path:
        raise RegistryError(f"--registry {spec!r}: local:PATH needs a file path")
    return Path(path).expanduser(), group


def open_registry(
    spec: str, *, default_group: str = "peftops-adapters", region: str | None = None
) -> Registry:
    """`local:PATH[#GROUP]`, `PATH[#GROUP]` or `sagemaker:GROUP` (in `region`; None: the AWS
    configuration's)."""
    local = local_registry_location(spec)
    if local is not None:
        path, group = local
        return LocalRegistry(path, group or default_group)
    group = spec.removeprefix("sagemaker:")
    if not group:
        raise RegistryError(f"--registry {spec!r}: sagemaker:GROUP needs the group's name")
    return SageMakerRegistry(group, region=region)
