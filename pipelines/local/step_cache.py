"""SageMaker's step cache, kept beside the local S3 mirror: a step whose cache key matches a
successful earlier run of the same pipeline step within `ExpireAfter` is not run again, and
later steps read the earlier run's properties.

The key is what AWS documents ("Default cache key attributes by pipeline step type",
SageMaker Developer Guide, pipelines-default-keys), over the step's resolved request:
Processing keys on AppSpecification, Environment and ProcessingInputs; Training on
AlgorithmSpecification, CheckpointConfig, DebugHookConfig, DebugRuleConfigurations,
Environment, HyperParameters and InputDataConfig. Outputs, resources and the job's name are
not part of it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from training_scripts.contracts import write_json_atomic

KEY_ATTRIBUTES = {
    "Processing": ("AppSpecification", "Environment", "ProcessingInputs"),
    "Training": (
        "AlgorithmSpecification",
        "CheckpointConfig",
        "DebugHookConfig",
        "DebugRuleConfigurations",
        "Environment",
        "HyperParameters",
        "InputDataConfig",
    ),
}

_DURATION = re.compile(
    r"P(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?)?",
    re.IGNORECASE,
)


def expiry(value: str) -> timedelta:
    """An ISO 8601 duration as CacheConfig.ExpireAfter writes it (P30D, PT1H, P1W)."""
    match = _DURATION.fullmatch(value)
    if not match or not any(match.groupdict().values()):
        raise ValueError(f"CacheConfig.ExpireAfter {value!r} is not an ISO 8601 duration")
    n = {k: int(v or 0) for k, v in match.groupdict().items()}
    return timedelta(
        days=365 * n["years"] + 30 * n["months"] + 7 * n["weeks"] + n["days"],
        hours=n["hours"],
        minutes=n["minutes"],
    )


def cache_key(step_type: str, request: dict[str, Any]) -> str:
    attributes = {name: request.get(name) for name in KEY_ATTRIBUTES[step_type]}
    return hashlib.sha256(json.dumps(attributes, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class CacheHit:
    execution_id: str  # the execution whose job is reused
    properties: dict[str, Any]


class StepCache:
    """Successful steps of one pipeline, one file per (step, key) under `root`."""

    def __init__(self, root: Path, pipeline: str) -> None:
        self.root = root / pipeline

    def _entry(self, step: str, key: str) -> Path:
        return self.root / step / f"{key}.json"

    def lookup(
        self, step: str, key: str, expire_after: str, now: datetime | None = None
    ) -> CacheHit | None:
        entry = self._entry(step, key)
        if not entry.is_file():
            return None
        record = json.loads(entry.read_text(encoding="utf-8"))
        finished = datetime.fromisoformat(record["finished"])
        if (now or datetime.now(UTC)) - finished > expiry(expire_after):
            return None
        return CacheHit(record["execution_id"], record["properties"])

    def store(self, step: str, key: str, execution_id: str, properties: dict[str, Any]) -> None:
        write_json_atomic(
            self._entry(step, key),
            {
                "execution_id": execution_id,
                "finished": datetime.now(UTC).isoformat(),
                "properties": properties,
            },
        )
