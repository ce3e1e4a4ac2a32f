"""The local registry: a SQLite file holding model groups' versions, as SageMaker's Model
Registry would (artifact, evaluation, lineage metadata, approval status)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import astuple
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.functions.registered_adapter import evaluation_digest
from pipelines.registry.versions import (
    APPROVAL_STATUSES,
    Change,
    Decision,
    Lifecycle,
    ModelVersion,
    Registration,
    RegistryError,
    model_card_content,
)

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
    model_card TEXT,
    stage TEXT NOT NULL DEFAULT 'development',
    stage_status TEXT NOT NULL DEFAULT 'Registered',
    stage_description TEXT NOT NULL DEFAULT '',
    artifact_root TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (model_group, version)
)
"""
# Every decision on a version, appended, never updated: the version's history.
DECISIONS = """
CREATE TABLE IF NOT EXISTS decisions (
    model_group TEXT NOT NULL,
    version INTEGER NOT NULL,
    at TEXT NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    before TEXT NOT NULL,
    after TEXT NOT NULL,
    why TEXT NOT NULL
)
"""
# Columns added since the first release, added to an older file when it is next written.
ADDED_COLUMNS = {
    "model_card": "TEXT",
    "stage": "TEXT NOT NULL DEFAULT 'development'",
    "stage_status": "TEXT NOT NULL DEFAULT 'Registered'",
    "stage_description": "TEXT NOT NULL DEFAULT ''",
    "artifact_root": "TEXT NOT NULL DEFAULT ''",
}
COLUMNS = (
    "model_group, version, status, model_data_url, created, metadata, evaluation, "
    "evaluation_uri, description, approval_description, model_card, stage, stage_status, "
    "stage_description, artifact_root"
)


def upgrade(connection: sqlite3.Connection) -> None:
    """Add the columns a registry file written by an earlier release lacks."""
    present = {row[1] for row in connection.execute("PRAGMA table_info(model_versions)")}
    for column, kind in ADDED_COLUMNS.items():
        if column not in present:
            connection.execute(f"ALTER TABLE model_versions ADD COLUMN {column} {kind}")


# What a column added since the first release reads as in a file written before it.
_DEFAULTS = {"model_card": "NULL", "stage": "'development'", "stage_status": "'Registered'",
             "stage_description": "''", "artifact_root": "''"}  # fmt: skip


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


_FIX = "not a peftops registry file, or a damaged one; point --registry at another file"
_FIXES = {
    "attempt to write a readonly database": "the file is read-only; make it writable",
    "database is locked": "another process holds it; retry when it is done",
}


class _NoTableError(Exception):
    """The file holds no registry table yet (an empty file): no versions."""


class LocalRegistry:
    """A SQLite file holding one model group's versions, as SageMaker's registry would."""

    deploys_here = True  # promoted versions are smoke-tested by `peftops models promote` itself

    def __init__(self, path: Path, group: str, *, clock: Callable[[], str] = _now) -> None:
        self.path = path
        self.group = group
        self.clock = clock

    @contextlib.contextmanager
    def _connect(self, *, create: bool = False) -> Iterator[sqlite3.Connection]:
        """A transaction on the file: committed when the block ends, rolled back on an error.
        Reads open it read-only and never write a schema; SQLite's errors become one line."""
        if self.path.is_dir():
            raise RegistryError(f"{self.path} is a folder, not a registry file; check --registry")
        if not create and not self.path.is_file():
            raise RegistryError(
                f"{self.path}: no local registry here; run `peftops run-local` first or check --registry"
            )
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                connection = sqlite3.connect(self.path, timeout=30)  # waits for a writer
                connection.execute(SCHEMA)
                connection.execute(DECISIONS)
                upgrade(connection)
            else:
                # The path as a URI, percent-encoded (`?`, `#` and `%` in a file name are
                # not URI syntax here): reads open the very file writes do.
                read_only = f"{self.path.resolve().as_uri()}?mode=ro"
                connection = sqlite3.connect(read_only, uri=True, timeout=30)
            with contextlib.closing(connection), connection:
                yield connection
        except sqlite3.OperationalError as err:
            if "no such table" in str(err):  # an empty file: a registry with no versions yet
                raise _NoTableError from None
            raise RegistryError(f"{self.path}: {err} ({_FIXES.get(str(err), _FIX)})") from None
        except sqlite3.DatabaseError as err:
            raise RegistryError(f"{self.path}: {err} ({_FIX})") from None
        except OSError as err:
            raise RegistryError(f"{self.path}: {err.strerror}; check --registry") from None

    def _versions(self, where: str, arguments: tuple[Any, ...]) -> list[ModelVersion]:
        """The versions a WHERE clause selects, oldest first, each with its history."""
        try:
            with self._connect() as db:
                rows = self._read(db, f"{where} ORDER BY version", arguments)
                has_history = db.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'decisions'"
                ).fetchone()
                decisions: dict[tuple[str, int], list[Decision]] = {}
                for group, version, *fields in (
                    db.execute(
                        "SELECT model_group, version, at, who, action, before, after, why "
                        "FROM decisions WHERE model_group = ? ORDER BY rowid",
                        (rows[0][0],),
                    )
                    if rows and has_history
                    else ()
                ):
                    decisions.setdefault((group, version), []).append(Decision(*fields))
        except _NoTableError:
            return []
        return [self._row(r, tuple(decisions.get((r[0], r[1]), ()))) for r in rows]

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
                "INSERT INTO model_versions (model_group, version, status, model_data_url, "
                "created, metadata, evaluation, evaluation_uri, description, "
                "inference_specification, model_card, artifact_root) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (entry.group, latest + 1, entry.status, entry.model_data_url, self.clock(),
                 json.dumps(entry.metadata),
                 json.dumps(entry.evaluation) if entry.evaluation is not None else None,
                 entry.evaluation_uri, entry.description,
                 json.dumps(entry.inference_specification) if entry.inference_specification else None,
                 json.dumps(entry.model_card) if entry.model_card else None,
                 entry.artifact_root),
            )  # fmt: skip
        return self.get(latest + 1, group=entry.group)

    def _row(self, row: tuple, history: tuple[Decision, ...] = ()) -> ModelVersion:
        (
            group, version, status, url, created, metadata, evaluation, evaluation_uri,
            description, approval, card, stage, stage_status, stage_description, artifact_root,
        ) = row  # fmt: skip
        return ModelVersion(
            group=group,
            version=version,
            status=status,
            model_data_url=url,
            created=created,
            metadata=json.loads(metadata),
            evaluation=json.loads(evaluation) if evaluation else None,
            evaluation_sha256=evaluation_digest(evaluation.encode()) if evaluation else None,
            evaluation_uri=evaluation_uri,
            description=description,
            approval_description=approval,
            arn=f"local:{self.path}#{group}/{version}",
            model_card=model_card_content(json.loads(card) if card else None),
            lifecycle=Lifecycle(stage, stage_status, stage_description),
            history=history,
            artifact_root=artifact_root,
        )

    def _read(self, db: sqlite3.Connection, where: str, arguments: tuple) -> list[tuple]:
        """Rows in the columns `_row` reads, whichever columns an older file lacks."""
        present = {row[1] for row in db.execute("PRAGMA table_info(model_versions)")}
        columns = ", ".join(
            c if c in present or c not in ADDED_COLUMNS else f"{_DEFAULTS[c]} AS {c}"
            for c in COLUMNS.split(", ")
        )
        return db.execute(
            f"SELECT {columns} FROM model_versions WHERE {where}", arguments
        ).fetchall()

    def list(self, status: str | None = None) -> list[ModelVersion]:
        return self._versions(
            "model_group = ? AND (? IS NULL OR status = ?)", (self.group, status, status)
        )

    def groups(self) -> dict[str, int | None]:
        """Every model group of the file that holds versions, with how many."""
        if not self.path.is_file():
            return {}
        try:
            with self._connect() as db:
                rows = db.execute(
                    "SELECT model_group, COUNT(*) FROM model_versions GROUP BY model_group "
                    "ORDER BY model_group"
                ).fetchall()
        except _NoTableError:
            return {}
        return {group: count for group, count in rows}

    def location(self, group: str) -> str:
        return f"local:{self.path}#{group}"

    def check_writable(self) -> None:
        """Fail now, before a run spends an hour, if registering at its end would fail."""
        with self._connect(create=True) as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("SELECT * FROM model_versions LIMIT 0")
            db.rollback()

    def get(self, version: int, *, group: str | None = None) -> ModelVersion:
        try:
            found = self._versions(
                "model_group = ? AND version = ?", (group or self.group, version)
            )
        except OverflowError:  # past SQLite's 64-bit INTEGER: no such version
            found = []
        if not found:
            raise RegistryError(
                f"model group {group or self.group} has no version {version}; see `peftops models list`"
            )
        return found[0]

    def change(self, version: int, change: Change) -> ModelVersion:
        """The change and its decision in one transaction: the history never misses one."""
        before = self.get(version)
        after_status = change.status or before.status
        after_lifecycle = change.lifecycle or before.lifecycle
        with self._connect(create=True) as db:
            db.execute("BEGIN IMMEDIATE")
            if change.status:
                db.execute(
                    "UPDATE model_versions SET status = ?, approval_description = ? "
                    "WHERE model_group = ? AND version = ?",
                    (change.status, f"{change.who}: {change.why}", self.group, version),
                )
            if change.lifecycle:
                db.execute(
                    "UPDATE model_versions SET stage = ?, stage_status = ?, stage_description = ? "
                    "WHERE model_group = ? AND version = ?",
                    (*astuple(change.lifecycle), self.group, version),
                )
            db.execute(
                "INSERT INTO decisions (model_group, version, at, who, action, before, after, why) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (self.group, version, self.clock(), change.who, change.action, before.state,
                 f"{after_status}/{after_lifecycle}", change.why),
            )  # fmt: skip
        return self.get(version)
