"""Which inference component answers a task on a stage's endpoint: each version has its own
(the deployer never updates one in place), tagged `peftops:serving` once its smoke test
passed, and the task's others are deleted after that. A client reads it from the endpoint,
whatever stage the registry gives the version by now (botocore's Stubber: every request is
checked against the service model, and expected in full)."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber

from pipelines.serving.client import InvokeError, serving_component

ENDPOINT = "peftops-adapter-staging"
ACCOUNT = "arn:aws:sagemaker:us-east-1:111122223333"


def listed(name: str, created: str) -> dict[str, str]:
    return {
        "InferenceComponentName": name,
        "InferenceComponentArn": f"{ACCOUNT}:inference-component/{name}",
        "EndpointArn": f"{ACCOUNT}:endpoint/{ENDPOINT}", "EndpointName": ENDPOINT,
        "VariantName": "AllTraffic", "InferenceComponentStatus": "InService",
        "CreationTime": created, "LastModifiedTime": created,
    }  # fmt: skip


def lists(stub: Stubber, *components: dict[str, str]) -> None:
    stub.add_response(
        "list_inference_components",
        {"InferenceComponents": list(components)},
        {"EndpointNameEquals": ENDPOINT, "StatusEquals": "InService"},
    )


def tags(stub: Stubber, name: str, serving: bool) -> None:
    stub.add_response(
        "list_tags",
        {"Tags": [{"Key": "peftops:serving", "Value": "true"}] if serving else []},
        {"ResourceArn": f"{ACCOUNT}:inference-component/{name}"},
    )


@pytest.fixture
def sagemaker():
    client = boto3.client("sagemaker", region_name="us-east-1")
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


def test_the_tasks_one_component_answers_without_reading_tags(sagemaker) -> None:
    """Other tasks' components (one whose name starts with this task's among them) and the
    base model's are not this task's."""
    client, stub = sagemaker
    lists(
        stub,
        listed(f"{ENDPOINT}-base", "2026-12-01T00:00:00Z"),
        listed(f"{ENDPOINT}-dialogue-summary-long-9", "2026-12-03T00:00:00Z"),
        listed(f"{ENDPOINT}-meeting-notes-7", "2026-12-04T00:00:00Z"),
        listed(f"{ENDPOINT}-dialogue-summary-3", "2026-12-02T00:00:00Z"),
    )
    assert serving_component(client, ENDPOINT, "dialogue-summary") == (
        f"{ENDPOINT}-dialogue-summary-3"
    )


def test_while_a_version_is_smoke_tested_the_serving_one_answers(sagemaker) -> None:
    client, stub = sagemaker
    serving, trying = f"{ENDPOINT}-dialogue-summary-3", f"{ENDPOINT}-dialogue-summary-4"
    lists(stub, listed(serving, "2026-12-02T00:00:00Z"), listed(trying, "2026-12-05T00:00:00Z"))
    tags(stub, serving, True)
    tags(stub, trying, False)
    assert serving_component(client, ENDPOINT, "dialogue-summary") == serving


def test_once_both_are_tagged_the_newest_answers_even_an_older_version(sagemaker) -> None:
    """A rollback: version 3 promoted again after version 5 passed its smoke test, before
    version 5's component is deleted. The component created last is the one deployed last."""
    client, stub = sagemaker
    five, three = f"{ENDPOINT}-dialogue-summary-5", f"{ENDPOINT}-dialogue-summary-3"
    lists(stub, listed(five, "2026-12-02T00:00:00Z"), listed(three, "2026-12-06T00:00:00Z"))
    tags(stub, five, True)
    tags(stub, three, True)
    assert serving_component(client, ENDPOINT, "dialogue-summary") == three


def test_a_component_from_before_versions_serves_until_a_tagged_one_replaces_it(
    sagemaker,
) -> None:
    client, stub = sagemaker
    legacy, trying = f"{ENDPOINT}-dialogue-summary", f"{ENDPOINT}-dialogue-summary-4"
    lists(stub, listed(legacy, "2026-11-01T00:00:00Z"), listed(trying, "2026-12-05T00:00:00Z"))
    tags(stub, legacy, False)
    tags(stub, trying, False)
    assert serving_component(client, ENDPOINT, "dialogue-summary") == legacy


def test_a_tagged_version_takes_over_from_the_component_from_before_versions(sagemaker) -> None:
    client, stub = sagemaker
    legacy, deployed = f"{ENDPOINT}-dialogue-summary", f"{ENDPOINT}-dialogue-summary-4"
    lists(stub, listed(legacy, "2026-11-01T00:00:00Z"), listed(deployed, "2026-12-05T00:00:00Z"))
    tags(stub, legacy, False)
    tags(stub, deployed, True)
    assert serving_component(client, ENDPOINT, "dialogue-summary") == deployed


def test_a_task_the_endpoint_does_not_serve_is_said_in_one_line(sagemaker) -> None:
    client, stub = sagemaker
    lists(stub, listed(f"{ENDPOINT}-meeting-notes-7", "2026-12-04T00:00:00Z"))
    with pytest.raises(InvokeError) as refused:
        serving_component(client, ENDPOINT, "dialogue-summary")
    assert str(refused.value) == (
        f"endpoint {ENDPOINT} serves no component for task dialogue-summary: has a version of "
        "it been deployed to the endpoint's stage?"
    )


def test_the_base_model_is_the_stacks_base_component_without_a_call(sagemaker) -> None:
    client, _ = sagemaker
    assert serving_component(client, ENDPOINT, "base") == f"{ENDPOINT}-base"
