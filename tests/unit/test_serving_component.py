"""Which inference component answers a task on a stage's endpoint: each version has its own
(the deployer never updates one in place), so a client finds the one of the task's version
deployed in the endpoint's stage, through the endpoint's tags and the model registry
(botocore's Stubber: every request is checked against the service model, and expected in
full)."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from pipelines.serving.client import InvokeError, serving_component

ENDPOINT = "peftops-adapter-staging"
ENDPOINT_ARN = f"arn:aws:sagemaker:us-east-1:111122223333:endpoint/{ENDPOINT}"
TAGS = [
    {"Key": "peftops:model-package-group", "Value": "peftops-adapters"},
    {"Key": "peftops:lifecycle-stage", "Value": "staging"},
]
DEPLOYED_IN_STAGING = {
    "Resource": "ModelPackage",
    "SearchExpression": {
        "Filters": [
            {"Name": "ModelPackageGroupName", "Operator": "Equals", "Value": "peftops-adapters"},
            {"Name": "ModelLifeCycle.Stage", "Operator": "Equals", "Value": "staging"},
            {"Name": "ModelLifeCycle.StageStatus", "Operator": "Equals", "Value": "Deployed"},
        ]
    },
}


def version(number: int, task: str) -> dict[str, Any]:
    return {
        "ModelPackage": {
            "ModelPackageGroupName": "peftops-adapters",
            "ModelPackageVersion": number,
            "CustomerMetadataProperties": {"task": task},
        }
    }


def describes_the_endpoint(stub: Stubber, tags: list[dict[str, str]]) -> None:
    stub.add_response(
        "describe_endpoint",
        {
            "EndpointName": ENDPOINT, "EndpointArn": ENDPOINT_ARN,
            "EndpointStatus": "InService", "CreationTime": "2026-12-01T00:00:00Z",
            "LastModifiedTime": "2026-12-01T00:00:00Z",
        },
        {"EndpointName": ENDPOINT},
    )  # fmt: skip
    stub.add_response("list_tags", {"Tags": tags}, {"ResourceArn": ENDPOINT_ARN})


@pytest.fixture
def sagemaker():
    client = boto3.client("sagemaker", region_name="us-east-1")
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


def test_a_task_resolves_to_its_deployed_versions_component(sagemaker) -> None:
    """Versions 3 and 5 both deployed while a deployment hands over: the newest answers;
    another task's version 7, however new, is not this task's."""
    client, stub = sagemaker
    describes_the_endpoint(stub, TAGS)
    found = [version(3, "dialogue-summary"), version(7, "meeting-notes"),
             version(5, "dialogue-summary")]  # fmt: skip
    stub.add_response("search", {"Results": found}, DEPLOYED_IN_STAGING)
    assert serving_component(client, ENDPOINT, "dialogue-summary") == (
        f"{ENDPOINT}-dialogue-summary-5"
    )


def test_a_task_with_no_version_deployed_in_the_stage_is_said_in_one_line(sagemaker) -> None:
    client, stub = sagemaker
    describes_the_endpoint(stub, TAGS)
    stub.add_response("search", {"Results": [version(7, "meeting-notes")]}, DEPLOYED_IN_STAGING)
    with pytest.raises(InvokeError) as refused:
        serving_component(client, ENDPOINT, "dialogue-summary")
    assert str(refused.value) == (
        "task dialogue-summary has no version deployed in staging (peftops-adapters), so "
        f"endpoint {ENDPOINT} does not serve it"
    )


def test_an_endpoint_without_the_stacks_tags_is_not_taken_for_a_stages(sagemaker) -> None:
    client, stub = sagemaker
    describes_the_endpoint(stub, TAGS[:1])
    with pytest.raises(InvokeError, match="is it a peftops stage's endpoint"):
        serving_component(client, ENDPOINT, "dialogue-summary")


def test_the_base_model_is_the_stacks_base_component_without_a_call(sagemaker) -> None:
    client, _ = sagemaker
    assert serving_component(client, ENDPOINT, "base") == f"{ENDPOINT}-base"
