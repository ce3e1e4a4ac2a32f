"""The jobs' container image, built by `cdk deploy` from training_scripts/Dockerfile: the stage
region's training image with requirements.lock installed under pip's hash checking, so jobs
(network-isolated ones included) install nothing at start.

The build context is training_scripts/ with only the Dockerfile and the lock in it, so the
image, and the asset hash CDK names it by, change only when one of those two does. Building
needs Docker on the deploying machine, logged in to the base image's registry."""

from __future__ import annotations

from aws_cdk import aws_ecr_assets as ecr_assets
from constructs import Construct

from pipelines.definition.job_requirements import LOCK, SCRIPTS


class JobImage(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, base_image: str) -> None:
        super().__init__(scope, construct_id)
        self.asset = ecr_assets.DockerImageAsset(
            self,
            "Asset",
            directory=str(SCRIPTS),
            file="Dockerfile",
            build_args={"BASE_IMAGE": base_image},
            platform=ecr_assets.Platform.LINUX_AMD64,
            exclude=["**", "!Dockerfile", f"!{LOCK.name}"],
        )
