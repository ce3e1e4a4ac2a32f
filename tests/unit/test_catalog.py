"""What a stage serves (pipelines/serving/catalog.py): the deployed version of each task, on
the base model they share, each refusal in its own words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines.registry import LocalRegistry, ModelVersion, Registration, decide, promote
from pipelines.registry.decisions import record_deployment
from pipelines.registry.lifecycle import Lifecycle
from pipelines.serving.adapters import ServingError
from pipelines.serving.catalog import (
    artifact_path,
    in_stage,
    registered_task,
    servable,
    shared_base,
)

TASK = {"name": "dialogue-summary", "sha256": "ab" * 32, "smoke_request": {"messages": []}}


def version(number: int = 1, **fields: Any) -> ModelVersion:
    defaults: dict[str, Any] = {
        "group": "g", "version": number, "status": "Approved",
        "model_data_url": "s3://bucket/runs/1/model.tar.gz", "created": "t",
        "metadata": {"task": "dialogue-summary", "base_model": "smollm2", "peft_method": "qlora"},
        "evaluation": {"task": TASK}, "artifact_root": "/runs/demo/s3",
    }  # fmt: skip
    return ModelVersion(**(defaults | fields))


def refusal(call: Any) -> str:
    with pytest.raises(ServingError) as refused:
        call()
    return str(refused.value)


def test_an_adapter_is_found_in_its_runs_bucket_mirror() -> None:
    assert artifact_path(version()) == Path("/runs/demo/s3/bucket/runs/1/model.tar.gz")


@pytest.mark.parametrize(
    "elsewhere",
    [
        {"artifact_root": ""},  # a SageMaker registry's version
        {"model_data_url": "/runs/1/model.tar.gz"},
        {"model_data_url": "https://bucket/model.tar.gz"},
    ],
)
def test_an_adapter_not_on_this_machine_is_refused_with_the_way_out(
    elsewhere: dict[str, str],
) -> None:
    v = version(**elsewhere)
    assert refusal(lambda: artifact_path(v)) == (
        f"version 1's adapter {v.model_data_url} is not on this machine; serve a local "
        "registry (local:PATH) or copy the adapter here"
    )


def test_a_version_serves_the_task_its_evaluation_names() -> None:
    assert registered_task(version()) == TASK


@pytest.mark.parametrize("evaluation", [None, {}, {"task": {"name": "dialogue-summary"}}])
def test_a_version_evaluated_before_adapters_carried_their_task_is_refused(
    evaluation: dict[str, Any] | None,
) -> None:
    old = version(evaluation=evaluation)
    assert refusal(lambda: registered_task(old)) == (
        "version 1's evaluation names no task spec: it was registered before adapters carried "
        "their task; register a new run"
    )


@pytest.mark.parametrize("method", ["qlora", "lora"])
def test_lora_adapters_serve_on_a_shared_base(method: str) -> None:
    v = version(metadata={"peft_method": method})
    assert servable(v) is v


@pytest.mark.parametrize(("method", "named"), [("prompt_tuning", "prompt_tuning"), ("", "unknown")])
def test_other_adapters_are_refused_by_name(method: str, named: str) -> None:
    v = version(metadata={"peft_method": method} if method else {})
    assert refusal(lambda: servable(v)) == (
        f"version 1 is a {named} adapter; only lora and qlora adapters serve on a shared base model"
    )


def test_versions_on_one_base_share_it() -> None:
    assert shared_base([version(1), version(2)]) == "smollm2"


@pytest.mark.parametrize(
    ("bases", "described"),
    [
        (["smollm2", "llama"], "1: smollm2, 2: llama"),
        (["", ""], "1: , 2: "),  # recorded empty: no base to share
        ([None], "1: ?"),  # not recorded
    ],
)
def test_versions_without_one_base_are_refused_listing_each(
    bases: list[str | None], described: str
) -> None:
    versions = [
        version(n, metadata={} if base is None else {"base_model": base})
        for n, base in enumerate(bases, 1)
    ]
    assert refusal(lambda: shared_base(versions)) == (
        f"the versions do not share one base model ({described}); serve each base model from "
        "its own process"
    )


def deployed(
    registry: LocalRegistry, task: str, stage: str = "staging", method: str = "lora"
) -> int:
    number = registry.register(
        Registration(
            group=registry.group,
            model_data_url=f"s3://bucket/{task}/model.tar.gz",
            status="PendingManualApproval",
            metadata={"task": task, "base_model": "smollm2", "peft_method": method},
            evaluation_uri=None,
            evaluation={"task": TASK | {"name": task}},
            description="adapter",
        )
    ).version
    decide(registry, number, "Approved", who="ana", why="ok", force=True)
    for through in ("staging", "production")[: 2 if stage == "production" else 1]:
        promote(registry, number, through, who="ana", why="try")
        record_deployment(registry, number, passed=True, detail="smoke ok", who="deployer")
    return number


def test_a_stage_serves_the_deployed_version_of_each_of_its_tasks(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path / "registry.sqlite", "g")
    deployed(registry, "dialogue-summary")
    retired = deployed(registry, "meeting-notes")
    notes = deployed(registry, "meeting-notes")  # retires the first
    deployed(registry, "news", stage="production")  # staging, then on to production
    pending = deployed(registry, "tickets")
    registry.change(
        pending,
        replace_lifecycle(registry.get(pending), Lifecycle("staging", "PendingDeployment", "")),
    )
    served = in_stage(registry, "staging")
    assert served.base_model == "smollm2"
    assert {task: v.version for task, v in served.versions.items()} == {
        "dialogue-summary": 1,
        "meeting-notes": notes,
    }
    assert retired not in {v.version for v in served.versions.values()}


def replace_lifecycle(current: ModelVersion, lifecycle: Lifecycle) -> Any:
    from pipelines.registry.versions import Change

    return Change(who="ana", action="promote", why="again", lifecycle=lifecycle)


def test_a_stage_with_nothing_deployed_says_how_to_promote_and_where_versions_are(
    tmp_path: Path,
) -> None:
    path = tmp_path / "registry.sqlite"
    deployed(LocalRegistry(path, "smoke"), "dialogue-summary")
    empty = LocalRegistry(path, "g")
    empty.check_writable()
    assert refusal(lambda: in_stage(empty, "staging")) == (
        "no version of model group g is deployed to staging; promote one (`peftops models "
        f"promote VERSION --to staging`); groups that hold versions: smoke (1 version; "
        f"--registry local:{path}#smoke)"
    )
    alone = LocalRegistry(tmp_path / "alone.sqlite", "g")
    alone.check_writable()
    assert refusal(lambda: in_stage(alone, "production")) == (
        "no version of model group g is deployed to production; promote one (`peftops models "
        "promote VERSION --to production`)"
    )


def test_a_deployed_version_that_cannot_serve_stops_the_stage_rather_than_being_left_out(
    tmp_path: Path,
) -> None:
    registry = LocalRegistry(tmp_path / "registry.sqlite", "g")
    deployed(registry, "dialogue-summary")
    prompt = deployed(registry, "meeting-notes", method="prompt_tuning")
    assert refusal(lambda: in_stage(registry, "staging")) == (
        f"version {prompt} is a prompt_tuning adapter; only lora and qlora adapters serve on a "
        "shared base model"
    )
