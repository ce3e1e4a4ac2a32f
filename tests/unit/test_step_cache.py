"""The local runner's step cache keys a step the way SageMaker documents ("Default cache key
attributes by pipeline step type") and forgets it after ExpireAfter."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipelines.local.step_cache import StepCache, cache_key, expiry

PROCESSING = {
    "AppSpecification": {"ContainerArguments": ["--input", "/opt/ml/processing/input/data"]},
    "Environment": {"A": "1"},
    "ProcessingInputs": [{"InputName": "data", "S3Input": {"S3Uri": "s3://b/datasets/v1/"}}],
    "ProcessingOutputConfig": {"Outputs": [{"S3Output": {"S3Uri": "s3://b/run-1/"}}]},
    "ProcessingResources": {"ClusterConfig": {"InstanceType": "ml.m5.xlarge"}},
}
TRAINING = {
    "AlgorithmSpecification": {"TrainingImage": "image"},
    "CheckpointConfig": {"S3Uri": "s3://b/checkpoints/job-1/qlora-16"},
    "HyperParameters": {"lora-r": "16"},
    "InputDataConfig": [{"ChannelName": "train"}],
    "OutputDataConfig": {"S3OutputPath": "s3://b/models/"},
    "ResourceConfig": {"InstanceType": "ml.g5.2xlarge"},
}


def changed(request: dict, path: tuple[str, ...], value: object) -> dict:
    copy = {**request}
    node = copy
    for part in path[:-1]:
        node[part] = {**node[part]}
        node = node[part]
    node[path[-1]] = value
    return copy


@pytest.mark.parametrize(
    ("kind", "request_", "path", "in_key"),
    [
        ("Processing", PROCESSING, ("ProcessingInputs",), True),
        ("Processing", PROCESSING, ("Environment", "A"), True),
        # Outputs are not part of the key: a run may write under its own execution's prefix.
        ("Processing", PROCESSING, ("ProcessingOutputConfig",), False),
        ("Processing", PROCESSING, ("ProcessingResources",), False),
        ("Training", TRAINING, ("CheckpointConfig", "S3Uri"), True),
        ("Training", TRAINING, ("HyperParameters", "lora-r"), True),
        ("Training", TRAINING, ("OutputDataConfig",), False),
        ("Training", TRAINING, ("ResourceConfig",), False),
    ],
)
def test_cache_key_attributes(kind: str, request_: dict, path: tuple, in_key: bool) -> None:
    other = changed(request_, path, "something else")
    assert (cache_key(kind, request_) != cache_key(kind, other)) is in_key


# The documented lists (docs.aws.amazon.com/sagemaker/latest/dg/pipelines-default-keys.html).
DOCUMENTED_KEYS = {
    ("Processing", "CreateProcessingJob"): {"AppSpecification", "Environment", "ProcessingInputs"},
    ("Training", "CreateTrainingJob"): {
        "AlgorithmSpecification", "CheckpointConfig", "DebugHookConfig",
        "DebugRuleConfigurations", "Environment", "HyperParameters", "InputDataConfig",
    },
}  # fmt: skip


@pytest.mark.parametrize(("kind", "operation"), sorted(DOCUMENTED_KEYS))
def test_every_request_attribute_keys_the_cache_exactly_as_documented(
    kind: str, operation: str
) -> None:
    """Each top-level member of the job request, changed alone, changes the key if and only
    if the service's documented list names it."""
    import botocore.session

    shape = botocore.session.get_session().get_service_model("sagemaker")
    members = shape.operation_model(operation).input_shape.members
    request = {name: "original" for name in members}
    keying = {
        name
        for name in members
        if cache_key(kind, request) != cache_key(kind, {**request, name: "changed"})
    }
    assert keying == DOCUMENTED_KEYS[kind, operation]


def test_entries_expire(tmp_path: Path) -> None:
    cache = StepCache(tmp_path, "pipeline")
    cache.store("Preprocess", "k", "local-1", {"ProcessingJobName": "p-1"})
    hit = cache.lookup("Preprocess", "k", "P30D")
    assert hit is not None and hit.execution_id == "local-1"
    assert cache.lookup("Preprocess", "other", "P30D") is None
    later = datetime.now(UTC) + timedelta(days=31)
    assert cache.lookup("Preprocess", "k", "P30D", now=later) is None
    assert StepCache(tmp_path, "another-pipeline").lookup("Preprocess", "k", "P30D") is None


def test_an_entry_is_reused_until_exactly_its_expiry_with_the_properties_it_stored(
    tmp_path: Path,
) -> None:
    cache = StepCache(tmp_path, "pipeline")
    properties = {"ProcessingJobName": "p-1", "Outputs": {"splits": "s3://b/é/"}}
    cache.store("Preprocess", "k", "local-1", properties)
    entry = tmp_path / "pipeline" / "Preprocess" / "k.json"
    stored = datetime.fromisoformat(json.loads(entry.read_text(encoding="utf-8"))["finished"])
    at_expiry = cache.lookup("Preprocess", "k", "PT1H", now=stored + timedelta(hours=1))
    assert at_expiry is not None and at_expiry.properties == properties
    past = stored + timedelta(hours=1, microseconds=1)
    assert cache.lookup("Preprocess", "k", "PT1H", now=past) is None


@pytest.mark.parametrize(
    ("text", "duration"),
    [
        ("P30D", timedelta(days=30)),
        ("PT1H", timedelta(hours=1)),
        ("P1W", timedelta(days=7)),
        ("PT45M", timedelta(minutes=45)),
        ("P1Y", timedelta(days=365)),
        ("P2M", timedelta(days=60)),
        ("p1y2m3w4dt5h6m", timedelta(days=365 + 60 + 21 + 4, hours=5, minutes=6)),
    ],
)
def test_expiry_durations(text: str, duration: timedelta) -> None:
    assert expiry(text) == duration


def test_a_malformed_expiry_is_refused() -> None:
    with pytest.raises(ValueError, match="not an ISO 8601 duration"):
        expiry("30 days")


def test_a_requests_key_does_not_depend_on_the_order_of_its_members() -> None:
    environment = {"A": "1", "B": "2"}
    request = {"AppSpecification": {"ImageUri": "i", "ContainerArguments": ["--x"]},
               "Environment": environment, "ProcessingInputs": []}  # fmt: skip
    reordered = {"ProcessingInputs": [], "Environment": dict(reversed(environment.items())),
                 "AppSpecification": {"ContainerArguments": ["--x"], "ImageUri": "i"}}  # fmt: skip
    assert cache_key("Processing", request) == cache_key("Processing", reordered)
