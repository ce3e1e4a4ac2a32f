"""A stage's serving settings and endpoint name (pipelines/definition/stages.py), and the
region it deploys to: each refusal names the setting and the fix, word for word, at its exact
boundary."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from pipelines.definition.config import PipelineConfig
from pipelines.definition.stages import (
    VLLM_LORA_RANKS,
    ScheduleSettings,
    ServingSettings,
    StageSettings,
    deployment_region,
    endpoint_name,
)
from pipelines.functions.registered_adapter import MAX_ENDPOINT_NAME


@pytest.mark.parametrize(
    ("settings", "refusal"),
    [
        (
            {"lifecycle_stage": "dev"},
            "serving.lifecycle_stage must be one of ('staging', 'production'), not 'dev'",
        ),
        ({"instance_type": "g5.2xlarge"}, "serving.instance_type 'g5.2xlarge' is not an ml.* type"),
        ({"instance_count": 0}, "serving counts and max_loras must be at least 1"),
        ({"accelerators": 0}, "serving counts and max_loras must be at least 1"),
        ({"max_loras": 0}, "serving counts and max_loras must be at least 1"),
        (
            {"max_lora_rank": 4},
            f"serving.max_lora_rank 4: vLLM takes one of {VLLM_LORA_RANKS}",
        ),
    ],
)
def test_serving_settings_the_endpoint_cannot_take_are_refused_naming_the_setting(
    settings: dict[str, Any], refusal: str
) -> None:
    with pytest.raises(ValueError) as refused:
        ServingSettings(**settings)
    assert str(refusal) == str(refused.value)


@pytest.mark.parametrize("rank", VLLM_LORA_RANKS)
def test_every_rank_vllm_takes_is_a_serving_rank(rank: int) -> None:
    assert ServingSettings(max_lora_rank=rank, lifecycle_stage="production").max_lora_rank == rank


def named(length: int, stage: str = "staging") -> tuple[PipelineConfig, ServingSettings]:
    """A pipeline whose endpoint name, `<pipeline>-<stage>`, is `length` characters."""
    pipeline = dataclasses.replace(PipelineConfig(), name="p" * (length - len(stage) - 1))
    return pipeline, ServingSettings(lifecycle_stage=stage)


@pytest.mark.parametrize("stage", ["staging", "production"])
def test_an_endpoint_name_is_the_pipeline_and_stage_at_most_the_length_components_fit(
    stage: str,
) -> None:
    pipeline, serving = named(MAX_ENDPOINT_NAME, stage)
    assert endpoint_name(pipeline, serving) == f"{pipeline.name}-{stage}"
    pipeline, serving = named(MAX_ENDPOINT_NAME + 1, stage)
    with pytest.raises(ValueError) as refused:
        endpoint_name(pipeline, serving)
    assert str(refused.value) == (
        f"serving: the endpoint '{pipeline.name}-{stage}' is {MAX_ENDPOINT_NAME + 1} characters; "
        f"its adapter components' names need it at most {MAX_ENDPOINT_NAME}: shorten "
        f"pipeline.name to at most {MAX_ENDPOINT_NAME - len(stage) - 1} characters"
    )


def test_an_endpoint_name_with_capitals_is_refused_saying_why() -> None:
    pipeline = dataclasses.replace(PipelineConfig(), name="Peftops")
    with pytest.raises(ValueError) as refused:
        endpoint_name(pipeline, ServingSettings())
    assert str(refused.value) == (
        "serving: the endpoint 'Peftops-staging' has capitals, which SageMaker writes in lower "
        "case in its ARNs while IAM matches them as written: use a lower-case pipeline.name"
    )


STAGE = StageSettings("dev", "eu-west-1", PipelineConfig(), ScheduleSettings())


@pytest.mark.parametrize(
    ("cli_region", "note"),
    [
        (None, ""),
        ("", ""),
        ("eu-west-1", ""),
        (
            "us-east-1",
            "peftops: stage dev deploys to eu-west-1 (cdk.json), not to the profile's "
            "us-east-1; change stages.dev.region to move it",
        ),
    ],
)
def test_a_stage_deploys_to_its_own_region_and_says_when_the_profiles_differs(
    cli_region: str | None, note: str
) -> None:
    assert deployment_region(STAGE, cli_region) == ("eu-west-1", note)
