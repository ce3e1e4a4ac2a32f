"""What the registry holds and the interface every backend implements: a model version, what a
pipeline registers, and the errors a registry request can end in."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
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
    # The digest of the evaluation as the registry reads it now; approval compares it with
    # the one recorded at registration (`evaluation_sha256` in the metadata).
    evaluation_sha256: str | None = None
    # The evaluated model card (SageMaker model package model card content), where registered.
    model_card: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


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


class Registry(Protocol):
    def register(self, entry: Registration) -> ModelVersion: ...

    def list(self, status: str | None = None) -> list[ModelVersion]: ...

    def get(self, version: int) -> ModelVersion: ...

    def set_status(self, version: int, status: str, description: str) -> ModelVersion: ...


def model_card_content(card: dict[str, Any] | None) -> dict[str, Any] | None:
    """The content of a registered model card (`ModelCard.ModelCardContent`, a JSON string)."""
    if not card or not card.get("ModelCardContent"):
        return None
    try:
        content = json.loads(card["ModelCardContent"])
    except (TypeError, ValueError):
        return None
    return content if isinstance(content, dict) else None
