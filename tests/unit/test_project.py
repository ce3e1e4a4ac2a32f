"""Project wiring that a fresh clone and a SageMaker container rely on."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO


def pins(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)==([^\s;#]+).*", line)
        if match:
            found[match.group(1).lower().replace("_", "-")] = match.group(2)
    return found


def test_container_requirements_pin_the_versions_the_tests_use() -> None:
    project = pins(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    container = pins((REPO / "training_scripts/requirements.in").read_text().splitlines())
    assert "torch" not in container  # the image's CUDA build must stay
    assert container, "no pinned requirement found"
    for name, version in container.items():
        assert project.get(name) == version, (
            f"{name}: container {version}, project {project.get(name)}"
        )


def test_jobs_install_a_complete_hash_pinned_lock() -> None:
    """requirements.lock (make lock) pins every requirement at requirements.in's version, each
    entry with the hashes pip checks, and never replaces the image's torch or CUDA."""
    from pipelines.definition.job_requirements import IMAGE_PROVIDED, LOCK, entries

    blocks = entries(LOCK.read_text())
    locked = {b.split("==", 1)[0].strip().lower(): b.split("==", 1)[1].split()[0] for b in blocks}
    wanted = pins((REPO / "training_scripts/requirements.in").read_text().splitlines())
    assert {name: locked.get(name) for name in wanted} == wanted
    assert all("--hash=sha256:" in block for block in blocks)
    assert not [name for name in locked if IMAGE_PROVIDED.fullmatch(name)]


def test_the_lock_leaves_out_what_the_image_brings() -> None:
    from pipelines.definition.job_requirements import lock_text

    resolved = (
        "numpy==2.5.5 \\\n    --hash=sha256:aa\n    # via pandas\n"
        "nvidia-cublas-cu12==12.8.4.1 \\\n    --hash=sha256:bb\n"
        "torch==2.9.0 \\\n    --hash=sha256:cc\n"
        "triton==3.5.0 \\\n    --hash=sha256:dd\n"
        "torchmetrics==1.0 \\\n    --hash=sha256:ee\n"
    )
    kept = [line.split("==")[0] for line in lock_text(resolved).splitlines() if "==" in line]
    assert kept == ["numpy", "torchmetrics"]


def test_every_dependency_is_pinned_exactly() -> None:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    specs = data["project"]["dependencies"] + data["project"]["optional-dependencies"]["dev"]
    assert all("==" in spec for spec in specs), specs
    assert "torch==2.13.0" in specs


@pytest.mark.parametrize("make_status", [0, 3])
def test_ci_runs_make_test_from_the_repository_root_and_fails_with_it(
    tmp_path: Path, make_status: int
) -> None:
    """.ci/run, started from anywhere, runs `make test` in the clone and exits with its status
    (a `make` on PATH records how it was called)."""
    calls = tmp_path / "calls"
    fake = tmp_path / "bin" / "make"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$PWD $*" >> {calls}\nexit {make_status}\n')
    fake.chmod(0o755)
    done = subprocess.run(
        [str(REPO / ".ci/run")],
        cwd=tmp_path,
        env={**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == make_status, done.stderr
    assert calls.read_text().splitlines() == [f"{REPO} test"]


def test_the_license_file_is_the_one_pyproject_declares() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]
    text = (REPO / "LICENSE").read_text()
    assert declared == "Apache-2.0"
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert text.rstrip().endswith("END OF TERMS AND CONDITIONS")


@pytest.mark.parametrize(
    ("version", "said"),
    [("v20.20.2", True), ("v21.7.3", True), ("v22.0.0", False), ("v24.11.1", False), ("", True)],
)
def test_make_test_says_when_node_is_older_than_the_cdk_supports(version: str, said: bool) -> None:
    """One line on stderr, never a failure: the suite needs no CDK CLI feature of a newer
    Node; `cdk deploy` does. The README asks for the same minimum."""
    done = subprocess.run(
        ["make", "--no-print-directory", "node-check", f"NODE_VERSION={version}"],
        cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout == ""
    assert done.stderr.count("\n") == (1 if said else 0), done.stderr
    minimum = re.search(r"^NODE_MIN := (\d+)$", (REPO / "Makefile").read_text(), re.M)[1]
    assert f"Node.js {minimum} or later" in done.stderr or not said
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    assert f"Node.js {minimum} or later (for the CDK CLI" in readme
