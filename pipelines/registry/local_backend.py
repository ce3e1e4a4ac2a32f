"""The local registry: a SQLite file holding model groups' versions, as SageMaker's Model
Registry would (artifact, evaluation, lineage metadata, approval status)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from pipelines.registry.versions import APPROVAL_STATUSES, ModelVersion, Registration, RegistryError

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
        connection = sqlite3.connect(self.path, timeout=30)  # waits for a concurrent writer
        connection.execute(SCHEMA)
        return connection

    def register(self, entry: Registration) -> ModelVersion:
        if entry.status not in APPROVAL_STATUSES:
            raise RegistryError(
                f"approval status {entry.status!r} is not one of {APPROVAL_STATUSES}"
            )
        with self._connect(create=True) as db:
            # Take the write lock before reading the newest version: two runs registering at
            # once get consecutive versions instead of one failing on a duplicate number.
            db.execute("BEGIN IMMEDIATE")
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
