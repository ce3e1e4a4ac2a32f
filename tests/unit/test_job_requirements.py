"""`make lock` (pipelines/definition/job_requirements.py) resolves the jobs' requirements with
uv, for the job image's Python and platform and with the image's torch, and writes the lock
without what the image brings. Resolved here offline, from wheels built for the test: a
requirement that only the job image's Python and platform can install, and two torch
versions, the newer of which the image's pin must turn down."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from pipelines.definition import job_requirements
from pipelines.definition.config import PipelineConfig

IMAGE_TORCH = PipelineConfig().pytorch_version
# Installable only by CPython 3.12 on Linux x86_64 (PipelineConfig's py312 job image).
JOB_TAG = "cp312-cp312-manylinux_2_28_x86_64"


def wheel(folder: Path, name: str, version: str, tag: str, requires: tuple[str, ...] = ()) -> Path:
    """The smallest wheel uv reads: its metadata, nothing to install."""
    info = f"{name}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires
    )
    path = folder / f"{name}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{info}/METADATA", metadata)
        archive.writestr(
            f"{info}/WHEEL",
            f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: {tag}\n",
        )
        archive.writestr(f"{info}/RECORD", "")
    return path


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """uv reads only the wheels built here; requirements.in and the lock are the test's."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    built = {
        "app": wheel(wheels, "app", "1.0", JOB_TAG, requires=("torch", "nvidia-nccl-cu12")),
        "torch": wheel(wheels, "torch", IMAGE_TORCH, "py3-none-any"),
        "newer-torch": wheel(wheels, "torch", "99.0", "py3-none-any"),
        "nccl": wheel(wheels, "nvidia_nccl_cu12", "2.27.5", "py3-none-any"),
    }
    for name, value in {
        "UV_OFFLINE": "true",
        "UV_NO_INDEX": "true",
        "UV_FIND_LINKS": str(wheels),
        "UV_CACHE_DIR": str(tmp_path / "uv-cache"),
    }.items():
        monkeypatch.setenv(name, value)
    requirements = tmp_path / "requirements.in"
    requirements.write_text("app==1.0\n")
    monkeypatch.setattr(job_requirements, "REQUIREMENTS", requirements)
    monkeypatch.setattr(job_requirements, "LOCK", tmp_path / "requirements.lock")
    return built


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_make_lock_writes_the_jobs_requirements_hash_pinned_without_the_images_own(
    offline: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert job_requirements.main() == 0
    assert job_requirements.LOCK.read_text() == (
        job_requirements.HEADER
        + f"app==1.0 \\\n    --hash=sha256:{sha256(offline['app'])}\n"
        + f"    # via -r {job_requirements.REQUIREMENTS}\n"
    )
    assert capsys.readouterr().err == f"wrote {job_requirements.LOCK}\n"


def test_the_resolution_holds_torch_at_the_images_version(offline: dict[str, Path]) -> None:
    resolved = job_requirements.resolve(PipelineConfig())
    assert f"torch=={IMAGE_TORCH} \\\n    --hash=sha256:{sha256(offline['torch'])}\n" in resolved
    assert "99.0" not in resolved


@pytest.mark.parametrize("python_version", ["py311", "py313"])
def test_the_resolution_is_for_the_job_images_python(
    offline: dict[str, Path], python_version: str
) -> None:
    """`app` has a wheel for CPython 3.12 alone: another image's Python cannot install it."""
    with pytest.raises(SystemExit, match="uv could not resolve"):
        job_requirements.resolve(PipelineConfig(python_version=python_version))


def test_a_requirement_uv_cannot_resolve_stops_make_lock_naming_the_file(
    offline: dict[str, Path],
) -> None:
    job_requirements.REQUIREMENTS.write_text("absent-package==1.0\n")
    with pytest.raises(SystemExit) as stopped:
        job_requirements.main()
    message = str(stopped.value)
    assert message.startswith(
        f"job_requirements: uv could not resolve {job_requirements.REQUIREMENTS}: "
    )
    assert "absent-package" in message
    assert not job_requirements.LOCK.exists()


@pytest.mark.parametrize(
    ("python_version", "expected"), [("py312", "3.12"), ("py39", "3.9"), ("py310", "3.10")]
)
def test_a_python_version_is_read_as_uv_takes_it(python_version: str, expected: str) -> None:
    config = PipelineConfig(python_version=python_version)
    assert job_requirements.python_version(config) == expected
