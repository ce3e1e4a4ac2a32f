"""The container images, per region: each pinned to a tag that AWS's published Deep Learning
Containers image list names, in the registry account the SageMaker SDK's bundled image config
gives for the region (no AWS call). The builder puts them in the definition, the stack lets the
roles pull exactly them; a stage may name its own (`pipeline.image_uri` for the jobs,
`pipeline.serving_image_uri` for the endpoint and the registered versions)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sagemaker.core import image_uris

from pipelines.definition.config import PipelineConfig
from training_scripts.tasks import MAX_CONTEXT_TOKENS

# AWS's Deep Learning Containers image list (what docs.aws.amazon.com's "available images"
# page is built from), read at this commit: each pin names its data file there.
DLC_IMAGE_LIST = (
    "https://github.com/aws/deep-learning-containers/tree/"
    "e0ecedea6a1c56d6b5914f9cfb2fec5c548e67e0/docs/src/data"
)


@dataclass(frozen=True)
class ImagePin:
    """A tag of one of AWS's images, exactly as the image list names it."""

    repository: str
    tag: str
    listed_in: str  # the image list's data file that names the tag
    end_of_patch: str = ""  # the list's `eop` date, where it gives one


# GPU jobs: Hugging Face's PyTorch training image.
TRAINING_GPU = ImagePin(
    "huggingface-pytorch-training",
    "2.9.0-transformers5.3.0-gpu-py312-cu130-ubuntu22.04",
    "huggingface-pytorch-training/2.9-gpu-sagemaker.yml",
)
# CPU jobs (preprocess on an ml.m5): the same PyTorch's CPU image, the tag in its full form.
TRAINING_CPU = ImagePin(
    "pytorch-training",
    "2.9.0-cpu-py312-ubuntu22.04-sagemaker",
    "pytorch-training/2.9-cpu-sagemaker.yml",
    end_of_patch="2026-10-15",
)
# Serving: LMI (vLLM 0.26.0), which serves LoRA adapters as inference components on one
# base-model component. The SDK's newest (0.38.0-lmi29.0.0-cu130) is in no published list.
SERVING = ImagePin(
    "djl-inference", "0.36.0-lmi28.0.0-cu130", "djl-inference/0.36-lmi28.0.0-gpu.yml"
)
PINS = (TRAINING_GPU, TRAINING_CPU, SERVING)
LMI_VERSION = SERVING.tag.split("-")[0]

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


def pinned(pin: ImagePin, sdk_uri: str) -> str:
    """`pin` in the registry of `sdk_uri` (an image the SDK names for the region): AWS's
    registry account differs between regions, and the SDK's config knows which."""
    registry, _, reference = sdk_uri.partition("/")
    if reference.partition(":")[0] != pin.repository:
        raise ValueError(f"{sdk_uri!r} is not an image of {pin.repository}")
    return f"{registry}/{pin.repository}:{pin.tag}"


def deep_learning_images(config: PipelineConfig, region: str) -> JobImages:
    """AWS's pinned training images for `region`; also the base of a built job image. The
    versions the config says the jobs run (and locks their requirements to) must be the pins'."""
    versions = f"{config.pytorch_version}-transformers{config.transformers_version}-gpu-"
    if not TRAINING_GPU.tag.startswith(versions) or config.python_version not in TRAINING_GPU.tag:
        raise ValueError(
            f"no pinned image for pytorch {config.pytorch_version}, transformers "
            f"{config.transformers_version}, {config.python_version}: set pipeline.image_uri to "
            f"an image of AWS's list ({DLC_IMAGE_LIST}) or keep the pinned versions"
        )
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
    return JobImages(gpu=pinned(TRAINING_GPU, gpu), cpu=pinned(TRAINING_CPU, cpu))


def serving_image(config: PipelineConfig, region: str) -> str:
    """The LMI image: what a registered version's inference spec names, and what a stage's
    endpoint runs its base-model component (and so every adapter component) on."""
    if config.serving_image_uri:
        if not IMAGE_URI.match(config.serving_image_uri):
            raise ValueError(
                f"serving_image_uri {config.serving_image_uri!r} is not an ECR image URI "
                "(ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY:TAG)"
            )
        return config.serving_image_uri
    sdk_uri = image_uris.retrieve(
        framework="djl-lmi", region=region, version=LMI_VERSION, image_scope="inference"
    )
    return pinned(SERVING, sdk_uri)


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
