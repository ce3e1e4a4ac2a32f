"""Project wiring that a fresh clone and a SageMaker container rely on."""

from __future__ import annotations

import re
import tomllib

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
    container = pins((REPO / "training_scripts/requirements.txt").read_text().splitlines())
    assert "torch" not in container  # the image's CUDA build must stay
    assert container, "no pinned requirement found"
    for name, version in container.items():
        assert project.get(name) == version, (
            f"{name}: container {version}, project {project.get(name)}"
        )


def test_every_dependency_is_pinned_exactly() -> None:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    specs = data["project"]["dependencies"] + data["project"]["optional-dependencies"]["dev"]
    assert all("==" in spec for spec in specs), specs
    assert "torch==2.13.0" in specs


def test_ci_runs_make_test() -> None:
    assert "make test" in (REPO / ".ci/run").read_text()
