"""Every image the project names is a tag AWS's Deep Learning Containers image list names
(pipelines/definition/images.py cites each one's data file there), in the registry account the
SDK's bundled config gives for the region; a stage may name its own."""

from __future__ import annotations

import json

import pytest
from sagemaker.core.image_uris import config_for_framework

from pipelines.definition import definition_json
from pipelines.definition.config import PipelineConfig
from pipelines.definition.images import (
    PINS,
    SERVING,
    TRAINING_CPU,
    TRAINING_GPU,
    deep_learning_images,
    serving_image,
)
from pipelines.local.presets import LOCAL_DEPLOYMENT

# The tags the image list names, as read there (see DLC_IMAGE_LIST): a changed pin must be
# read there again and written here.
LISTED = {
    "huggingface-pytorch-training/2.9-gpu-sagemaker.yml": (
        "2.9.0-transformers5.3.0-gpu-py312-cu130-ubuntu22.04",
    ),
    "pytorch-training/2.9-cpu-sagemaker.yml": (
        "2.9.0-cpu-py312-ubuntu22.04-sagemaker",
        "2.9-cpu-py312-ubuntu22.04-sagemaker-v1",
        "2.9.0-cpu-py312",
        "2.9-cpu-py312",
    ),
    "djl-inference/0.36-lmi28.0.0-gpu.yml": ("0.36.0-lmi28.0.0-cu130",),
}


def regions() -> list[str]:
    """The regions the SDK's config has every pinned repository in."""
    lmi = config_for_framework("djl-lmi")["versions"]["0.36.0"]["registries"]
    training = config_for_framework("huggingface")["training"]["versions"]["5.3.0"]
    cpu = config_for_framework("pytorch")["training"]["versions"]["2.9.0"]["registries"]
    return sorted(set(lmi) & set(training["pytorch2.9.0"]["registries"]) & set(cpu))


@pytest.mark.parametrize("pin", PINS, ids=lambda p: p.repository)
def test_each_pin_is_the_full_tag_its_list_file_names(pin) -> None:
    assert pin.tag == LISTED[pin.listed_in][0]  # the first: the list's canonical form
    assert pin.listed_in.startswith(f"{pin.repository}/")


@pytest.mark.parametrize("region", regions())
def test_every_region_gets_exactly_the_pinned_tags_from_its_own_registry(region: str) -> None:
    images = deep_learning_images(PipelineConfig(), region)
    serving = serving_image(PipelineConfig(), region)
    for uri, pin in ((images.gpu, TRAINING_GPU), (images.cpu, TRAINING_CPU), (serving, SERVING)):
        host, _, reference = uri.partition("/")
        assert reference == f"{pin.repository}:{pin.tag}", uri
        assert f".dkr.ecr.{region}." in host, uri


def test_the_definition_names_only_pinned_images_and_a_stages_own_serving_image() -> None:
    pinned = {f"{p.repository}:{p.tag}" for p in PINS}
    own = "123456789012.dkr.ecr.us-east-1.amazonaws.com/our-lmi:2026-12"

    def images(config: PipelineConfig) -> set[str]:
        text, _ = definition_json(config, LOCAL_DEPLOYMENT)
        return {v.partition("/")[2] for v in _strings(json.loads(text)) if ".dkr.ecr." in v}

    assert images(PipelineConfig()) == pinned
    assert images(PipelineConfig(serving_image_uri=own)) == (pinned - {
        f"{SERVING.repository}:{SERVING.tag}"
    }) | {"our-lmi:2026-12"}  # fmt: skip


def _strings(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (PipelineConfig(pytorch_version="2.8.0"), "no pinned image for pytorch 2.8.0"),
        (PipelineConfig(serving_image_uri="lmi:latest"), "is not an ECR image URI"),
    ],
)
def test_an_image_no_pin_or_uri_names_is_refused(config: PipelineConfig, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        deep_learning_images(config, "us-east-1")
        serving_image(config, "us-east-1")


@pytest.mark.parametrize(
    ("image_uri", "partition", "arn"),
    [
        (
            "763104351884.dkr.ecr.eu-west-1.amazonaws.com/huggingface-pytorch-training:2.9.0-gpu",
            "aws",
            "arn:aws:ecr:eu-west-1:763104351884:repository/huggingface-pytorch-training",
        ),
        (
            "727897471807.dkr.ecr.cn-north-1.amazonaws.com.cn/djl-inference@sha256:abc",
            "aws-cn",
            "arn:aws-cn:ecr:cn-north-1:727897471807:repository/djl-inference",
        ),
        (
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/jobs/peftops",
            "aws",
            "arn:aws:ecr:us-east-1:123456789012:repository/team/jobs/peftops",
        ),
    ],
)
def test_an_image_uri_names_the_ecr_repository_a_role_may_pull_from(
    image_uri: str, partition: str, arn: str
) -> None:
    """Its registry's account and region (they differ by region), in the stack's partition
    (by default the commercial one)."""
    from pipelines.definition.images import ecr_repository_arn

    assert ecr_repository_arn(image_uri, partition) == arn
    if partition == "aws":
        assert ecr_repository_arn(image_uri) == arn


@pytest.mark.parametrize("image_uri", ["public.ecr.aws/x/y:1", "docker.io/library/python:3.12"])
def test_an_image_outside_ecr_has_no_repository_a_role_could_name(image_uri: str) -> None:
    from pipelines.definition.images import ecr_repository_arn

    with pytest.raises(ValueError) as refused:
        ecr_repository_arn(image_uri)
    assert str(refused.value) == f"image {image_uri!r} is not an ECR image URI"
