"""Build a pipeline definition with no AWS call and the same bytes every time.

The SDK uploads code while it builds a definition (the training scripts, its own
`sm_drivers`, the processing entry script) under keys that hold timestamps, so a naive
definition changes on every build: every `cdk deploy` would update the pipeline and step
caching would never hit. `OfflineSession` instead stages each upload into an in-memory asset
map under a content-hash key (`assets/<sha256>/...`) and returns the S3 URI it will have;
the CDK stack (or `peftops pipeline definition --assets DIR`) puts those files in the bucket.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import boto3
from sagemaker.core.workflow.pipeline_context import PipelineSession

from pipelines.definition.config import Deployment

ASSET_PREFIX = "assets"
SKIPPED_PARTS = {"__pycache__", ".pytest_cache", ".ipynb_checkpoints"}
SKIPPED_SUFFIXES = {".pyc", ".pyo"}

# Telemetry off and no config file lookups: the session is only used to build requests.
SDK_CONFIG = {
    "SchemaVersion": "1.0",
    "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}},
}


def source_files(root: Path) -> list[Path]:
    """Files of a code folder in a stable order, without caches."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and not (set(p.relative_to(root).parts) & SKIPPED_PARTS)
        and p.suffix not in SKIPPED_SUFFIXES
    )


def reproducible_tarball(root: Path) -> bytes:
    """sourcedir.tar.gz of `root` whose bytes depend only on file names and contents."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in source_files(root):
            data = path.read_bytes()
            info = tarfile.TarInfo(path.relative_to(root).as_posix())
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return packed.getvalue()


def tree_digest(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


class OfflineSession(PipelineSession):
    """A PipelineSession that never calls AWS: uploads become content-addressed assets."""

    def __init__(self, deployment: Deployment) -> None:
        super().__init__(
            boto_session=boto3.Session(region_name=deployment.region), sagemaker_config=SDK_CONFIG
        )
        self.deployment = deployment
        self.assets: dict[str, bytes] = {}  # S3 key -> content

    def default_bucket(self) -> str:
        return self.deployment.bucket

    def stage(self, files: dict[str, bytes]) -> str:
        """Stage files under assets/<digest>/ and return that S3 prefix (with a slash)."""
        prefix = f"{ASSET_PREFIX}/{tree_digest(files)}"
        for name, data in files.items():
            self.assets[f"{prefix}/{name}"] = data
        return f"s3://{self.deployment.bucket}/{prefix}/"

    def stage_code(self, root: Path) -> str:
        """The reproducible sourcedir.tar.gz of a code folder; returns its S3 URI."""
        return self.stage({"sourcedir.tar.gz": reproducible_tarball(root)}) + "sourcedir.tar.gz"

    # --- the SDK's upload hooks -------------------------------------------------------------

    def upload_data(self, path, bucket=None, key_prefix="data", callback=None, extra_args=None):
        local = Path(path)
        if local.is_dir():
            files = {p.relative_to(local).as_posix(): p.read_bytes() for p in source_files(local)}
            return self.stage(files)
        return self.stage({local.name: local.read_bytes()}) + local.name

    def upload_string_as_file_body(self, body, bucket, key, kms_key=None):
        # The SDK writes the key it asked for into the definition, not the returned URI, so
        # the asset goes exactly there; callers make those keys stable (content hashes).
        self.assets[key] = body.encode() if isinstance(body, str) else body
        return f"s3://{bucket}/{key}"


def write_assets(assets: dict[str, bytes], target: Path) -> None:
    """Write staged assets as they must appear in the bucket: key = path under `target`."""
    for key, data in sorted(assets.items()):
        path = target / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
