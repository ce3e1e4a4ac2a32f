"""A registered version's stages and how its decisions are kept on SageMaker: one definition
for the registry (pipelines/registry) and the stage deployer (a Lambda function).

Stages: development (as registered) -> staging -> production, and archived. On SageMaker they
are the model package's `ModelLifeCycle` (Stage, StageStatus, StageDescription); every decision
is kept in the version's customer metadata, one entry each (`decision-001`, ...), which
UpdateModelPackage adds to without rewriting any, and whoever may describe the version reads.
A version holds at most 50 entries of at most 256 characters; the lineage takes about 20."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class Stage(enum.StrEnum):
    DEVELOPMENT = "development"  # as registered
    STAGING = "staging"
    PRODUCTION = "production"
    ARCHIVED = "archived"


# The stages a version is promoted to, in order: production only after staging.
PROMOTION_STAGES = (Stage.STAGING, Stage.PRODUCTION)


class StageStatus(enum.StrEnum):
    REGISTERED = "Registered"  # in development, as the pipeline registered it
    PENDING = "PendingDeployment"  # promoted; the stage's deployer has not finished
    DEPLOYED = "Deployed"  # serving in the stage; its smoke test passed
    FAILED = "DeploymentFailed"  # its smoke test failed; the stage's previous version serves on
    RETIRED = "Retired"  # a newer version of its task took the stage over
    ARCHIVED = "Archived"


# A version in one of these holds its stage for its task. A stage has at most one deployed
# version per task (a deployment retires the previous one) and at most one pending.
HOLDS_STAGE = (StageStatus.PENDING, StageStatus.DEPLOYED)

# The S3 object tag on an adapter artifact once it is deployed to a stage: what the accounts
# named in a stage's promotion_account_ids may read (the bucket policy's condition).
PROMOTED_TAG = "peftops-promoted"

DECISION_KEY = "decision-"
METADATA_LIMIT = 50
ENTRY_LIMIT = 256
# A metadata value may hold letters, digits, spaces and `_.:/=+-@` only (the API's pattern
# `[\p{L}\p{Z}\p{N}_.:\/=+\-@]*`, checked by the service, not by botocore). Fields are joined
# by `=`, which no field keeps; anything else outside the set becomes `_`.
_SEPARATOR = "="
_OUTSIDE_VALUE_PATTERN = re.compile(r"[^\w .:/+\-@]")


def metadata_text(text: str) -> str:
    """`text` as a metadata value may hold it."""
    return _OUTSIDE_VALUE_PATTERN.sub("_", text)


def one_line(text: str, limit: int = 1024) -> str:
    """A description the API takes (pattern `.{0,1024}`: no line breaks)."""
    return " ".join(text.split())[:limit]


@dataclass(frozen=True)
class Decision:
    """One decision on a version, kept: nothing a later decision does overwrites it."""

    at: str  # ISO 8601, UTC
    who: str
    action: str  # approve, reject, force-approve, promote, deploy, fail, retire, archive
    before: str  # the version's state before: `Approved/staging:Deployed`
    after: str
    why: str


def encode_decision(decision: Decision) -> str:
    """One decision as one metadata value; the reason is cut to fit 256 characters (the whole
    of it stays in the version's approval or stage description)."""
    fields = [decision.at, decision.who, decision.action, decision.before, decision.after]
    return _SEPARATOR.join(metadata_text(f) for f in [*fields, decision.why])[:ENTRY_LIMIT]


def decode_history(metadata: dict[str, str]) -> tuple[Decision, ...]:
    """The decisions in a version's metadata, oldest first; an entry written by hand with
    fewer fields reads with the missing ones empty."""
    entries = sorted(k for k in metadata if k.startswith(DECISION_KEY))
    fields = [metadata[k].split(_SEPARATOR, 5) for k in entries]
    return tuple(Decision(*f, *[""] * (6 - len(f))) for f in fields)


def history_entries(history: tuple[Decision, ...]) -> dict[str, str]:
    return {f"{DECISION_KEY}{i:03d}": encode_decision(d) for i, d in enumerate(history, 1)}


def lineage_of(metadata: dict[str, str]) -> dict[str, str]:
    """A version's metadata without its decisions."""
    return {k: v for k, v in metadata.items() if not k.startswith(DECISION_KEY)}


def state(approval: str, stage: str, status: str) -> str:
    """A version's whole state in one word, as its history records it."""
    return f"{approval}/{stage}:{status}"


def recorded(metadata: dict[str, str], decision: Decision) -> dict[str, str]:
    """The version's whole metadata with `decision` appended, for UpdateModelPackage: the
    service adds entries, some stand-ins (moto) replace the set; both end the same this way."""
    history = decode_history(metadata)
    if len(metadata) >= METADATA_LIMIT:
        raise ValueError(
            f"the version holds {METADATA_LIMIT} metadata entries, SageMaker's limit: no room to "
            "record a decision; register the adapter again"
        )
    return {**lineage_of(metadata), **history_entries((*history, decision))}
