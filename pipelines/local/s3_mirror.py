"""A folder that stands in for S3 on a local run: `s3://bucket/key` is `<root>/bucket/key`."""

from __future__ import annotations

import shutil
from pathlib import Path

from pipelines.definition.staging import write_assets
from pipelines.local.errors import MissingInputError, UnsupportedConstructError


def split_s3_uri(uri: object) -> tuple[str, str]:
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise UnsupportedConstructError(f"expected an s3:// URI, got {uri!r}")
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


class S3Mirror:
    """Objects under `root`, one folder per bucket; prefixes are folders."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, uri: str) -> Path:
        bucket, key = split_s3_uri(uri)
        return self.root / bucket / key

    def put_assets(self, bucket: str, assets: dict[str, bytes]) -> None:
        write_assets(assets, self.root / bucket)

    def download(self, uri: str, target: Path) -> None:
        """An S3Prefix input: the object itself, or every object under the prefix."""
        source = self.path(uri)
        target.mkdir(parents=True, exist_ok=True)
        if source.is_file():
            shutil.copy2(source, target / source.name)
        elif source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            raise MissingInputError(f"input {uri} does not exist (local mirror {source})")

    # The object-store calls the publishing commands and the pipeline's functions make.

    def list_keys(self, bucket: str, prefix: str) -> list[str]:
        root = self.root / bucket
        if not root.is_dir():
            return []
        keys = (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        return sorted(k for k in keys if k.startswith(prefix))

    def get(self, bucket: str, key: str) -> bytes:
        return (self.root / bucket / key).read_bytes()

    def put(self, bucket: str, key: str, body: bytes) -> None:
        target = self.root / bucket / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)

    def read(self, uri: str) -> bytes | None:
        """The object at `uri`, None when there is none (as S3 answers 404)."""
        path = self.path(uri)
        return path.read_bytes() if path.is_file() else None

    def move_in(self, source: Path, uri: str) -> None:
        """A folder's files moved under `uri` (replacing what is there), not copied: for what a
        job leaves behind that SageMaker would delete with its container (checkpoints)."""
        target = self.path(uri)
        for path in sorted(source.rglob("*")):
            if path.is_file():
                destination = target / path.relative_to(source)
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(path, destination)
        shutil.rmtree(source, ignore_errors=True)

    def upload(self, source: Path, uri: str) -> None:
        target = self.path(uri)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        elif source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
