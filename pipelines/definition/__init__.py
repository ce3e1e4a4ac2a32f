"""The cloud definition: the typed configuration, the offline asset staging, the service's
request rules, and the builder of the SageMaker Pipeline's JSON definition.

`definition_json` is the entry point: the SDK needs a region to import (it creates boto3
clients then) and would probe the EC2 metadata service for credentials (which hangs offline),
so those settings are made only while a definition is built, never for the whole process.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipelines.definition.config import Deployment, PipelineConfig


@contextlib.contextmanager
def offline_sdk(region: str) -> Iterator[None]:
    """The environment the SDK builds requests in without calling AWS, restored afterwards."""
    settings = {
        "AWS_DEFAULT_REGION": region,
        "AWS_EC2_METADATA_DISABLED": "true",
        "SAGEMAKER_VALIDATE_ROLE": "false",
    }
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def config_validated_once() -> Iterator[None]:
    """The SDK validates its defaults config against its JSON schema on every config lookup
    (about 70 per definition, each checking the schema itself too): 90% of a build's time for
    the same constant config. Validate each distinct config once while a definition is built."""
    from sagemaker.core.config.config_manager import SageMakerConfig

    original = SageMakerConfig.validate_sagemaker_config
    validated: set[str] = set()

    def validate(sagemaker_config: dict | None = None) -> None:
        key = json.dumps(sagemaker_config, sort_keys=True, default=str)
        if key not in validated:
            original(sagemaker_config)
            validated.add(key)

    SageMakerConfig.validate_sagemaker_config = staticmethod(validate)  # type: ignore[method-assign]
    try:
        yield
    finally:
        SageMakerConfig.validate_sagemaker_config = staticmethod(original)  # type: ignore[method-assign]


def definition_json(config: PipelineConfig, deployment: Deployment) -> tuple[str, dict[str, bytes]]:
    """The definition's JSON and the assets (S3 key -> bytes) it refers to, built offline."""
    with offline_sdk(deployment.region), config_validated_once():
        from pipelines.definition import builder

        return builder.definition_json(config, deployment)
