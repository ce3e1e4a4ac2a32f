"""What the registry holds and the interface every backend implements: a model version, what a
pipeline registers, and the errors a registry request can end in."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from pipelines.functions.model_lifecycle import Decision
from pipelines.functions.registered_adapter import TASK

APPROVAL_STATUSES = ("PendingManualApproval", "Approved", "Rejected")
# One registry holds adapters for several tasks on one base model; a stage serves one version
# per task. A version registered before tasks existed is the pipeline's original task's.
DEFAULT_TASK = "dialogue-summary"

logger = logging.getLogger("peftops")


class RegistryError(Exception):
    """A registry request that cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class Lifecycle:
    """Where a version is: its stage, its status there, and why (SageMaker's ModelLifeCycle:
    Stage, StageStatus, StageDescription). Registered versions start in development."""

    stage: str = "development"
    status: str = "Registered"
    description: str = ""

    def __str__(self) -> str:
        return f"{self.stage}:{self.status}"


@dataclass(frozen=True)
class Change:
    """What a decision changes on a version: its approval status, its lifecycle, or both."""

    who: str
    action: str
    why: str
    status: str | None = None
    lifecycle: Lifecycle | None = None


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
    # The digest of the evaluation as the registry reads it now; approval compares it with
    # the one recorded at registration (`evaluation_sha256` in the metadata).
    evaluation_sha256: str | None = None
    # The evaluated model card (SageMaker model package model card content), where registered.
    model_card: dict[str, Any] | None = None
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    history: tuple[Decision, ...] = ()
    # Where this version's s3:// URIs are on this machine (a local run's bucket mirror), for a
    # local registry; empty for SageMaker's.
    artifact_root: str = ""

    @property
    def task(self) -> str:
        return self.metadata.get(TASK, DEFAULT_TASK)

    @property
    def task_spec(self) -> dict[str, Any] | None:
        """The task spec the version was trained and evaluated with (its evaluation's)."""
        spec = ((self.evaluation or {}).get("task") or {}).get("spec")
        return spec if isinstance(spec, dict) else None

    @property
    def task_spec_sha256(self) -> str | None:
        digest = ((self.evaluation or {}).get("task") or {}).get("sha256")
        return digest if isinstance(digest, str) else None

    @property
    def state(self) -> str:
        """Approval and lifecycle in one word, as the history records them."""
        return f"{self.status}/{self.lifecycle}"

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "task": self.task,
            "task_spec": self.task_spec,
            "task_spec_sha256": self.task_spec_sha256,
        }


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
    model_card: dict[str, Any] | None = None  # {"ModelCardContent": str, "ModelCardStatus": str}
    artifact_root: str = ""  # a local run's bucket mirror (ModelVersion.artifact_root)


class Registry(Protocol):
    group: str  # the model group this registry reads and writes
    # Whether a promotion's deployment runs in this process (a local registry: its versions are
    # smoke-tested and served here) or in the stage's deployer (SageMaker: an EventBridge rule).
    deploys_here: bool

    def register(self, entry: Registration) -> ModelVersion: ...

    def list(self, status: str | None = None) -> list[ModelVersion]: ...

    def get(self, version: int) -> ModelVersion: ...

    def groups(self) -> dict[str, int | None]:
        """Every model group of the store that holds versions, with how many where the store
        tells it cheaply (None: some)."""
        ...

    def location(self, group: str) -> str:
        """The --registry value that reads `group` of the same store."""
        ...

    def change(self, version: int, change: Change) -> ModelVersion:
        """Apply a decision's change and keep the decision in the version's history."""
        ...


def model_card_content(card: dict[str, Any] | None) -> dict[str, Any] | None:
    """The content of a registered model card (`ModelCard.ModelCardContent`, a JSON string)."""
    if not card or not card.get("ModelCardContent"):
        return None
    try:
        content = json.loads(card["ModelCardContent"])
    except (TypeError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def other_groups(registry: Registry) -> str:
    """For an answer that finds nothing in the group it read: the store's other groups that
    hold versions (a run's smoke preset registers into a group of its own), as --registry
    values; empty when there are none."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        held = registry.groups()
    except (RegistryError, BotoCoreError, ClientError) as err:
        # A hint, never the answer's error (a caller may lack ListModelPackageGroups).
        logger.debug("no hint of other groups: %s", err)
        return ""
    others = {g: n for g, n in held.items() if g != registry.group}
    if not others:
        return ""

    def counted(n: int | None) -> str:
        return "" if n is None else f"{n} version{'' if n == 1 else 's'}; "

    return "groups that hold versions: " + ", ".join(
        f"{g} ({counted(n)}--registry {registry.location(g)})" for g, n in others.items()
    )
