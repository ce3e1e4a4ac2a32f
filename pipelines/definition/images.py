"""The jobs' container images, per region, from the SageMaker SDK's bundled image config (no AWS
call): the builder puts them in the definition, the stack lets the role pull exactly them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sagemaker.core import image_uris

from pipelines.definition.config import PipelineConfig
from training_scripts.tasks import MAX_CONTEXT_TOKENS

# The serving image: LMI (vLLM backend), which serves LoRA adapters as inference components
# on one base-model component. Pinned: the registered versions and the endpoints name the same.
LMI_VERSION = "0.38.0"

IMAGE_URI = re.compile(
    r"(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?/(?P<repository>[^:@]+)"
)


@dataclass(frozen=True)
class JobImages:
    """The container images of the jobs: GPU steps get the Hugging Face PyTorch training
    image, CPU steps (preprocess on an ml.m5) the same PyTorch version's CPU image, rather than
    pulling the multi-GB CUDA image onto a CPU instance."""

    gpu: str
    cpu: str

    def for_instance(self, instance_type: str) -> str:
        # SageMaker's GPU families: g*, p*; inf/trn are Neuron, which these images do not serve.
        family = instance_type.removeprefix("ml.").split(".")[0]
        return self.gpu if family[0] in "gp" else self.cpu

    @property
    def all(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.gpu, self.cpu)))


def job_images(config: PipelineConfig, region: str) -> JobImages:
    """The jobs' images: the configured `image_uri` for every job, or AWS's images."""
    if config.image_uri:
        return JobImages(gpu=config.image_uri, cpu=config.image_uri)
    return deep_learning_images(config, region)


def deep_learning_images(config: PipelineConfig, region: str) -> JobImages:
    """AWS's images for `region` from the SDK's bundled image config (no AWS call); the
    registry account differs between regions. Also the base of a built job image."""
    gpu = image_uris.retrieve(
        framework="huggingface",
        region=region,
        version=config.transformers_version,
        base_framework_version=f"pytorch{config.pytorch_version}",
        py_version=config.python_version,
        instance_type="ml.g5.2xlarge",  # any GPU type: picks the GPU image
        image_scope="training",
    )
    cpu = image_uris.retrieve(
        framework="pytorch",
        region=region,
        version=config.pytorch_version,
        py_version=config.python_version,
        instance_type="ml.m5.xlarge",  # any CPU type: picks the CPU image
        image_scope="training",
    )
    return JobImages(gpu=gpu, cpu=cpu)


def serving_image(region: str) -> str:
    """The LMI image: what a registered version's inference spec names, and what a stage's
    endpoint runs its base-model component (and so every adapter component) on."""
    return image_uris.retrieve(
        framework="djl-lmi", region=region, version=LMI_VERSION, image_scope="inference"
    )


def lora_serving_environment(base_model: str) -> dict[str, str]:
    """The serving container's settings that every adapter of one base model shares: the base
    model (a hub id or an s3:// prefix LMI downloads) with LoRA serving on, and the context
    training and evaluation read at most (vLLM's max_model_len: a longer request is refused,
    as the local endpoint refuses it)."""
    return {
        "HF_MODEL_ID": base_model,
        "OPTION_ENABLE_LORA": "true",
        "OPTION_MAX_MODEL_LEN": str(MAX_CONTEXT_TOKENS),
    }


def ecr_repository_arn(image_uri: str, partition: str = "aws") -> str:
    """The ECR repository an image URI pulls from (its registry account differs by region)."""
    match = IMAGE_URI.match(image_uri)
    if match is None:
        raise ValueError(f"image {image_uri!r} is not an ECR image URI")
    return (
        f"arn:{partition}:ecr:{match['region']}:{match['account']}:repository/{match['repository']}"
    )
