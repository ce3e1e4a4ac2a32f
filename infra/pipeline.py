"""The SageMaker Pipeline, whose definition is the pipelines builder's, byte for byte.

The builder runs at synth time with placeholder deployment values that are then replaced by
the real bucket, role and key (CloudFormation `Fn::Sub`), so the definition stays
deterministic. The code assets it refers to (content-hashed keys) are copied into the bucket.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from aws_cdk import Fn, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from pipelines.definition import definition_json
from pipelines.definition.config import Deployment, PipelineConfig
from pipelines.definition.staging import write_assets

PLACEHOLDER_BUCKET = "peftops-placeholder-bucket"
PLACEHOLDER_ACCOUNT = "000000000000"


def placeholder_deployment(region: str) -> Deployment:
    return Deployment(
        region=region,
        role_arn=f"arn:aws:iam::{PLACEHOLDER_ACCOUNT}:role/peftops-placeholder-role",
        bucket=PLACEHOLDER_BUCKET,
        kms_key_arn=f"arn:aws:kms:{region}:{PLACEHOLDER_ACCOUNT}:key/peftops-placeholder-key",
    )


def templated_definition(config: PipelineConfig, region: str) -> tuple[str, dict[str, bytes]]:
    """The definition with ${Bucket}, ${RoleArn} and ${KeyArn} where the deployment's values go,
    and the stack's partition, region and account in the pipeline's function ARNs."""
    deployment = placeholder_deployment(region)
    body, assets = definition_json(config, deployment)
    body = body.replace("${", "${!")  # a literal ${ must survive Fn::Sub
    body = body.replace(
        deployment.function_arn(""),
        "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:",
    )
    for placeholder, variable in (
        (deployment.role_arn, "RoleArn"),
        (deployment.kms_key_arn, "KeyArn"),
        (deployment.bucket, "Bucket"),
    ):
        body = body.replace(placeholder, "${" + variable + "}")
    return body, assets


class Pipeline(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: PipelineConfig,
        bucket: s3.IBucket,
        key: kms.IKey,
        role: iam.IRole,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        body, assets = templated_definition(config, stack.region)
        self.definition_template = body
        staging = Path(tempfile.mkdtemp(prefix="peftops-assets-"))
        write_assets(assets, staging)
        # Content-addressed keys: prune=False keeps earlier versions' code for running executions.
        self.assets = s3deploy.BucketDeployment(
            self,
            "CodeAssets",
            sources=[s3deploy.Source.asset(str(staging))],
            destination_bucket=bucket,
            prune=False,
            retain_on_delete=True,
        )
        self.pipeline = sagemaker.CfnPipeline(
            self,
            "Pipeline",
            pipeline_name=config.name,
            pipeline_description="peftops: preprocess, QLoRA adapter, baseline, evaluation, quality gate, registration",
            role_arn=role.role_arn,
            pipeline_definition={
                "PipelineDefinitionBody": Fn.sub(
                    body,
                    {"Bucket": bucket.bucket_name, "RoleArn": role.role_arn, "KeyArn": key.key_arn},
                )
            },
        )
        self.pipeline.node.add_dependency(self.assets)
        self.pipeline_arn = (
            f"arn:{stack.partition}:sagemaker:{stack.region}:{stack.account}:pipeline/{config.name}"
        )
