"""A local registry's deployer (pipelines/serving/local_deployer.py): a version promoted to a
stage is loaded beside the stage's other deployed tasks on their one base model and must answer
its smoke request; the outcome, pass or fail, is recorded on the version in the deployer's
words. On a tiny random Llama with a random-weight LoRA adapter packed as SageMaker packs it."""

from __future__ import annotations

import dataclasses
import re
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest

from pipelines.registry import LocalRegistry, Registration, decide, promote
from pipelines.registry.decisions import record_deployment
from pipelines.registry.lifecycle import StageStatus
from pipelines.serving.local_deployer import DEPLOYER, deploy
from tests.unit.test_adapter_model import save_adapter
from training_scripts import tasks

SPEC = tasks.resolve_task_spec(tasks.DEFAULT_TASK)
SMOKE = tasks.chat_request(SPEC, "#Person1#: Where is the station?\n#Person2#: North.", 4)
PASSED = r"smoke test passed: \d+ tokens in \d+\.\d s"


@pytest.fixture(scope="module")
def mirror(tiny_causal: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run's bucket mirror holding an adapter's model.tar.gz at bucket/adapter/."""
    root = tmp_path_factory.mktemp("s3")
    adapter = save_adapter(tiny_causal, root / "saved", seed=0)
    (root / "bucket" / "adapter").mkdir(parents=True)
    with tarfile.open(root / "bucket" / "adapter" / "model.tar.gz", "w:gz") as tar:
        for path in adapter.iterdir():
            tar.add(path, arcname=path.name)
    return root


def register(
    registry: LocalRegistry, mirror: Path, base: str, task: str = SPEC.name, **changes: Any
) -> int:
    """A version of `task` promoted to staging: pending deployment there."""
    registration = Registration(
        group=registry.group,
        model_data_url="s3://bucket/adapter/model.tar.gz",
        status="PendingManualApproval",
        metadata={"task": task, "base_model": base, "peft_method": "qlora"},
        evaluation_uri=None,
        evaluation={"task": {"name": task, "sha256": "ab" * 32, "smoke_request": SMOKE}},
        description="adapter",
        artifact_root=str(mirror),
    )
    number = registry.register(dataclasses.replace(registration, **changes)).version
    decide(registry, number, "Approved", who="ana", why="ok", force=True)
    promote(registry, number, "staging", who="ana", why="try")
    return number


@pytest.fixture
def registry(tmp_path: Path) -> LocalRegistry:
    return LocalRegistry(tmp_path / "registry.sqlite", "g")


def test_a_version_that_answers_its_smoke_request_is_recorded_deployed(
    registry: LocalRegistry,
    mirror: Path,
    tiny_causal: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    number = register(registry, mirror, str(tiny_causal))
    deployed = deploy(registry, number)
    assert list(scratch.iterdir()) == []  # the unpacked adapter went with its scratch folder
    assert (deployed.lifecycle.stage, deployed.lifecycle.status) == (
        "staging",
        StageStatus.DEPLOYED,
    )
    assert re.fullmatch(PASSED, deployed.lifecycle.description), deployed.lifecycle
    last = deployed.history[-1]
    assert (last.who, last.action, last.why) == (DEPLOYER, "deploy", deployed.lifecycle.description)


def test_a_version_is_loaded_beside_the_stages_other_deployed_tasks_on_their_base(
    registry: LocalRegistry, mirror: Path, tiny_causal: Path
) -> None:
    """Another task deployed in the stage on another base: the two cannot share one model, so
    the new version fails and says why, while the stage's other version stays deployed."""
    other = register(registry, mirror, "another-base", task="meeting-notes")
    record_deployment(registry, other, passed=True, detail="smoke ok", who=DEPLOYER)
    number = register(registry, mirror, str(tiny_causal))
    failed = deploy(registry, number)
    assert failed.lifecycle.status == StageStatus.FAILED
    assert failed.lifecycle.description == (
        f"smoke test failed: the versions do not share one base model ({number}: {tiny_causal}, "
        f"{other}: another-base); serve each base model from its own process"
    )
    assert registry.get(other).lifecycle.status == StageStatus.DEPLOYED


def test_versions_of_the_same_task_or_not_deployed_are_not_loaded_beside_it(
    registry: LocalRegistry, mirror: Path, tiny_causal: Path
) -> None:
    """The task's own deployed version (which the new one replaces), a failed version of
    another task and another task's version deployed in production are on another base: none
    is loaded, so the new version deploys."""
    same = register(registry, mirror, "another-base")
    record_deployment(registry, same, passed=True, detail="smoke ok", who=DEPLOYER)
    failed = register(registry, mirror, "another-base", task="meeting-notes")
    record_deployment(registry, failed, passed=False, detail="smoke test failed: x", who=DEPLOYER)
    production = register(registry, mirror, "another-base", task="news")
    record_deployment(registry, production, passed=True, detail="smoke ok", who=DEPLOYER)
    promote(registry, production, "production", who="ana", why="ship")
    record_deployment(registry, production, passed=True, detail="smoke ok", who=DEPLOYER)
    number = register(registry, mirror, str(tiny_causal))
    assert deploy(registry, number).lifecycle.status == StageStatus.DEPLOYED


@pytest.mark.parametrize(
    ("changes", "detail"),
    [
        (
            {"model_data_url": "s3://bucket/missing/model.tar.gz"},
            "smoke test failed: adapter artifact {mirror}/bucket/missing/model.tar.gz does not "
            "exist",
        ),
        (
            {"metadata": {"task": SPEC.name, "base_model": "b", "peft_method": "prompt_tuning"}},
            "smoke test failed: version {number} is a prompt_tuning adapter; only lora and qlora "
            "adapters serve on a shared base model",
        ),
        (
            {
                "metadata": {
                    "task": SPEC.name,
                    "base_model": "/no/such/model",
                    "peft_method": "lora",
                }
            },
            "smoke test failed: ModelNotFoundError: /no/such/model: no such model folder",
        ),
    ],
)
def test_a_version_that_cannot_serve_is_recorded_failed_with_the_reason(
    registry: LocalRegistry, mirror: Path, changes: dict[str, Any], detail: str
) -> None:
    """Whatever fails, the outcome is recorded: the version is never left pending."""
    number = register(registry, mirror, "unused", **changes)
    failed = deploy(registry, number)
    assert failed.lifecycle.status == StageStatus.FAILED
    assert failed.lifecycle.description.startswith(detail.format(mirror=mirror, number=number))
    assert (failed.history[-1].who, failed.history[-1].action) == (DEPLOYER, "fail")
