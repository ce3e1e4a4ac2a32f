"""CheckRegistered's parts: the evaluation digest that approval re-checks, each version's adapter
location as the registry describes it, and the outputs the pipeline definition reads."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from hypothesis import example, given
from hypothesis import strategies as st

from pipelines.definition import definition_json
from pipelines.definition.config import PipelineConfig
from pipelines.functions import layout
from pipelines.functions.registered_adapter import (
    MAX_ENDPOINT_NAME,
    adapter_component_name,
    batch_adapter_locations,
    component_version,
    evaluation_digest,
    find_registered,
    is_task_component,
    task_component_prefix,
)
from pipelines.functions.resolve_inputs import resolve_inputs
from pipelines.local.presets import LOCAL_DEPLOYMENT
from training_scripts.tasks import TASK_NAME

ARN = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/peftops-adapters/%d"
URL = "s3://bucket/models/job-%d/model.tar.gz"


def test_the_digest_of_an_evaluation_is_pinned() -> None:
    """Versions registered by an earlier release are approved against this digest: its
    canonical form (sorted keys, no spaces) must never change."""
    body = b'{"b": [1, 2.5, "x"], "a": {"z": null, "y": true}}'
    canonical = b'{"a":{"y":true,"z":null},"b":[1,2.5,"x"]}'
    assert (
        evaluation_digest(body)
        == hashlib.sha256(canonical).hexdigest()
        == ("e36f9aaa907c2cb2dbd1d400d8513ff9727255ca0e049dc6224919173315ee62")
    )


@given(
    st.dictionaries(
        st.text(max_size=5),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=5),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
            max_leaves=8,
        ),
        max_size=6,
    ),
    st.sampled_from([None, 1, 4]),
)  # fmt: skip
def test_the_digest_ignores_key_order_and_spacing(document: dict[str, Any], indent) -> None:
    reordered = dict(reversed(list(document.items())))
    assert evaluation_digest(json.dumps(document).encode()) == evaluation_digest(
        json.dumps(reordered, indent=indent).encode()
    )


def summary(version: int, **fields: Any) -> dict[str, Any]:
    return {
        "ModelPackageArn": ARN % version,
        "ModelPackageGroupName": "peftops-adapters",
        "CreationTime": "2026-12-01T00:00:00Z",
        "ModelPackageStatus": "Completed",
        **fields,
    }


def container(**fields: Any) -> dict[str, Any]:
    return {"InferenceSpecification": {"Containers": [{"Image": "image", **fields}]}}


@pytest.fixture
def sagemaker():
    return boto3.client(
        "sagemaker", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )


def test_each_versions_adapter_is_where_its_container_says(sagemaker) -> None:
    """Its model data, or an older version's `adapter` channel. (Every summary has a container:
    the API requires InferenceSpecification with at least one.)"""
    described = {
        ARN % 1: summary(1, **container(ModelDataUrl=URL % 1)),
        ARN % 2: summary(2, **container(
            ModelDataUrl="s3://bucket/base/", AdditionalModelDataSources=[
                {"ChannelName": "adapter", "S3DataSource": {
                    "S3Uri": URL % 2, "S3DataType": "S3Prefix", "CompressionType": "None"}},
            ])),
    }  # fmt: skip
    stub = Stubber(sagemaker)
    stub.add_response(
        "batch_describe_model_package",
        {"ModelPackageSummaries": described},
        {"ModelPackageArnList": list(described)},
    )
    with stub:
        locations = batch_adapter_locations(sagemaker, list(described))
    assert locations == {ARN % 1: URL % 1, ARN % 2: URL % 2}


def test_a_version_the_registry_cannot_describe_stops_the_check(sagemaker) -> None:
    """Skipping it could register a duplicate of it."""
    stub = Stubber(sagemaker)
    stub.add_response(
        "batch_describe_model_package",
        {
            "ModelPackageSummaries": {},
            "BatchDescribeModelPackageErrorMap": {
                ARN % 1: {"ErrorCode": "AccessDenied", "ErrorResponse": "no"}
            },
        },
        {"ModelPackageArnList": [ARN % 1]},
    )
    with stub, pytest.raises(RuntimeError, match=r"cannot describe model packages: .*AccessDenied"):
        batch_adapter_locations(sagemaker, [ARN % 1])


def declared_outputs(step: str) -> set[str]:
    definition = json.loads(definition_json(PipelineConfig(), LOCAL_DEPLOYMENT)[0])

    def find(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
        for candidate in steps:
            if candidate["Name"] == step:
                return candidate
            arguments = candidate.get("Arguments", {})
            found = find(arguments.get("IfSteps", []) + arguments.get("ElseSteps", []))
            if found:
                return found
        return None

    found = find(definition["Steps"])
    assert found is not None, step
    return {output["OutputName"] for output in found["OutputParameters"]}


@pytest.mark.parametrize("registered", [True, False])
def test_check_registered_returns_exactly_the_outputs_the_definition_reads(
    registered: bool,
) -> None:
    versions = [(ARN % 1, URL % 1)] if registered else []
    result = find_registered(
        {"ModelDataUrl": URL % 1, "EvaluationUri": "s3://b/e.json", "ModelPackageGroupName": "g"},
        lambda group: versions,
        lambda uri: b"{}",
    )
    assert set(result) == declared_outputs("CheckRegistered")
    assert result["Registered"] == str(registered).lower()
    assert result["Message"] == (
        f"adapter {URL % 1} is already registered as {ARN % 1}; nothing registered"
        if registered
        else "a new adapter"
    )


def test_resolve_inputs_returns_exactly_the_outputs_the_definition_reads() -> None:
    version = "20260101T000000000000Z-0123456789ab"
    result = resolve_inputs(
        {
            "Bucket": "b",
            "Task": "dialogue-summary",
            "StageTasks": "dialogue-summary",
            "DatasetVersion": "latest",
            "BaselineMode": "train",
            "BaselineEvaluationUri": layout.TASK_BASELINE,
        },
        lambda bucket, prefix: [layout.marker_key("dialogue-summary", version)],
        lambda uri: b"{}",
    )
    assert set(result) == declared_outputs("ResolveInputs")


# SageMaker's pattern for an inference component's name (its API reference).
COMPONENT_NAME = re.compile(r"[a-zA-Z0-9]([\-a-zA-Z0-9]*[a-zA-Z0-9])?")
ENDPOINTS = st.from_regex(r"[a-z0-9](-?[a-z0-9]){0,45}", fullmatch=True).filter(
    lambda e: len(e) <= MAX_ENDPOINT_NAME
)


@given(ENDPOINTS, st.from_regex(TASK_NAME, fullmatch=True), st.integers(1, 999_999))
@example("e" * 40, "t" * 20, 999_999)  # `<endpoint>-<task>-` fits 63, a version after it not
@example("e" * 46, "t" * 32, 1)
def test_every_versions_component_name_is_one_sagemaker_accepts_and_reads_back(
    endpoint: str, task: str, version: int
) -> None:
    name = adapter_component_name(endpoint, task, version)
    assert len(name) <= 63 and COMPONENT_NAME.fullmatch(name), name
    assert name.startswith(f"{endpoint}-")  # the deployer's role covers `<endpoint>-*`
    assert component_version(name, task_component_prefix(endpoint, task)) == version


@given(
    ENDPOINTS,
    st.from_regex(TASK_NAME, fullmatch=True),
    st.from_regex(TASK_NAME, fullmatch=True),
    st.integers(1, 999_999),
)
def test_no_tasks_component_reads_as_another_tasks_version(
    endpoint: str, task: str, other: str, version: int
) -> None:
    """The deployer deletes a task's other components by their prefix: another task's must
    never match, even one whose name starts with this one's."""
    if task != other:
        name = adapter_component_name(endpoint, other, version)
        assert component_version(name, task_component_prefix(endpoint, task)) is None
        assert not is_task_component(name, endpoint, task)
        assert not is_task_component(f"{endpoint}-{other}", endpoint, task)  # its legacy one
    assert is_task_component(adapter_component_name(endpoint, task, version), endpoint, task)


def test_only_a_name_after_the_prefix_reads_as_a_version() -> None:
    assert component_version("peftops-staging-summary-12", "peftops-staging-summary-") == 12
    assert component_version("12", "peftops-staging-summary-") is None
    assert component_version("other-summary-12", "peftops-staging-summary-") is None


def test_an_endpoint_too_long_for_component_names_is_refused_with_the_bound() -> None:
    with pytest.raises(ValueError, match="at most 46 characters"):
        adapter_component_name("e" * 47, "dialogue-summary", 1)
    assert adapter_component_name("peftops-staging", "dialogue-summary", 12) == (
        "peftops-staging-dialogue-summary-12"
    )


@pytest.mark.parametrize(
    ("task", "prefix"),
    [
        # `<endpoint>-<task>-` and six version digits are exactly 63 characters: kept readable.
        ("t" * 35, f"{'e' * 20}-{'t' * 35}-"),
        # One character more: the task is written as its digest.
        ("t" * 36, f"{'e' * 20}-t{hashlib.sha256(('t' * 36).encode()).hexdigest()[:8]}-"),
    ],
)
def test_a_task_keeps_its_name_in_its_components_up_to_exactly_the_limit(
    task: str, prefix: str
) -> None:
    assert task_component_prefix("e" * 20, task) == prefix
