"""What seeds a run: publish a dataset as a new immutable version, and a train-mode run's
evaluation as the baseline reuse mode reads. The layout is `pipelines.functions.layout`; the
store is the stack's bucket (`S3Store`) or a local run's mirror (`S3Mirror`), same code.

A dataset is checked with preprocess's own rules before anything is uploaded, so a version
that is published is one the pipeline can read. Publishing the same files as the newest
version again publishes nothing: a scheduled run then hits the step cache instead of
training on a copy.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pipelines.functions import layout
from training_scripts import contracts, preprocess, readers, tasks


class ObjectStore(Protocol):
    def list_keys(self, bucket: str, prefix: str) -> list[str]: ...

    def get(self, bucket: str, key: str) -> bytes: ...

    def put(self, bucket: str, key: str, body: bytes) -> None: ...


class PublishError(Exception):
    """Input that cannot be published; the message names the file and the fix."""


@dataclass(frozen=True)
class DatasetFile:
    path: str  # relative to the published version's prefix
    sha256: str
    bytes: int


@dataclass(frozen=True)
class PublishedDataset:
    version: str
    uri: str
    records: int
    files: tuple[DatasetFile, ...]
    new: bool  # False: the newest version already held these files


def check_dataset(source: Path, task: tasks.TaskSpec) -> tuple[list[Path], int]:
    """The dataset's files and record count, read by the task as the pipeline's preprocess reads
    them (the first bad record stops it, named by file and line; too few examples to split stop
    it)."""
    defaults = preprocess.PreprocessArguments()
    try:
        files = readers.discover_files(source)
        inputs, items = readers.read_files(files)
        examples, _, _ = preprocess.build_examples(
            items,
            task=task,
            skip_invalid=False,
            truncate=lambda text: text,
            skip_option=None,  # the pipeline's Preprocess skips nothing either
        )
        records = sum(entry.records for entry in inputs)
        if not records:
            raise readers.DataError(f"{source}: holds no records")
        splits = preprocess.split_examples(
            examples,
            seed=defaults.seed,
            validation_fraction=defaults.validation_fraction,
            test_fraction=defaults.test_fraction,
        )
        if not splits["test"]:
            raise readers.DataError(
                f"{source}: {len(examples)} distinct examples leave no test split for the "
                "pipeline's evaluation; publish at least 3 distinct inputs"
            )
    except readers.DataError as err:
        raise PublishError(str(err)) from None
    return files, records


def content_hash(files: list[DatasetFile]) -> str:
    listing = "".join(f"{f.path}\0{f.sha256}\n" for f in sorted(files, key=lambda f: f.path))
    return hashlib.sha256(listing.encode()).hexdigest()


def newest_marker(store: ObjectStore, bucket: str, task: str) -> dict[str, Any] | None:
    versions = layout.versions_in(task, store.list_keys(bucket, layout.dataset_markers(task)))
    if not versions:
        return None
    return json.loads(store.get(bucket, layout.marker_key(task, versions[-1])))


def publish_dataset(
    source: Path,
    store: ObjectStore,
    bucket: str,
    *,
    task: tasks.TaskSpec,
    now: datetime | None = None,
) -> PublishedDataset:
    """Publish the data with its task spec (`task.json` at the version's top, where preprocess
    reads it): a new spec for the same data is a new version, and a run's identity."""
    paths, records = check_dataset(source, task)
    root = source if source.is_dir() else source.parent
    bodies = {path.relative_to(root).as_posix(): path.read_bytes() for path in paths}
    bodies[tasks.TASK_SPEC_FILE] = (json.dumps(task.document(), indent=2) + "\n").encode()
    files = [
        DatasetFile(name, hashlib.sha256(body).hexdigest(), len(body))
        for name, body in bodies.items()
    ]
    digest = content_hash(files)
    newest = newest_marker(store, bucket, task.name)
    if newest is not None and newest["sha256"] == digest:
        return PublishedDataset(
            newest["version"], newest["uri"], newest["records"], tuple(files), new=False
        )
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    version = f"{moment:%Y%m%dT%H%M%S%f}Z-{digest[:12]}"
    if newest is not None and version <= newest["version"]:
        raise PublishError(
            f"the newest published version {newest['version']} is later than this machine's "
            "clock; fix the clock, versions are ordered by publication time"
        )
    prefix = layout.dataset_prefix(task.name, version)
    for name, body in bodies.items():
        store.put(bucket, prefix + name, body)
    uri = layout.dataset_uri(bucket, task.name, version)
    marker = {
        "version": version,
        "uri": uri,
        "sha256": digest,
        "records": records,
        "task": {"name": task.name, "sha256": task.sha256},
        "files": [vars(f) for f in files],
        "published_at": moment.isoformat(),
    }
    # The marker last: a version is visible to runs only once all its files are there.
    store.put(bucket, layout.marker_key(task.name, version), json.dumps(marker, indent=2).encode())
    return PublishedDataset(version, uri, records, tuple(files), new=True)


def publish_baseline(evaluation: bytes, source: str, store: ObjectStore, bucket: str) -> str:
    """Store a train-mode run's evaluation.json as its task's baseline, which reuse mode reads;
    returns its URI. Only figures of a trained full fine-tune can seed reuse."""
    document = contracts.EVALUATION.parse(evaluation, source)
    kind = document.get("baseline_source", {}).get("kind")
    if kind != "trained":
        raise PublishError(
            f"{source}: its full fine-tune figures are {kind or 'of unknown origin'}, not trained "
            "in that run; publish the evaluation.json of a BaselineMode=train run"
        )
    task = contracts.value_at(document, contracts.TASK_SPEC_NAME)
    # The copy first: a run that reads the new current baseline always finds its copy.
    store.put(
        bucket, layout.baseline_copy_key(task, hashlib.sha256(evaluation).hexdigest()), evaluation
    )
    key = layout.baseline_key(task)
    store.put(bucket, key, evaluation)
    return f"s3://{bucket}/{key}"


class S3Store:
    """The stack's bucket. Objects are encrypted by the bucket's default KMS key."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def list_keys(self, bucket: str, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def get(self, bucket: str, key: str) -> bytes:
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def put(self, bucket: str, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=bucket, Key=key, Body=body, ServerSideEncryption="aws:kms")
