"""The SageMaker Pipeline, whose definition is the pipelines builder's, byte for byte.

The builder runs at synth time with placeholder deployment values that are then replaced by
the real bucket, job roles and key (CloudFormation `Fn::Sub`), so the definition stays
deterministic. The code assets it refers to (content-hashed keys) are copied into the bucket.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Mapping
from pathlib import Path

from aws_cdk import Fn, Stack, Token
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from infra.findings import acknowledge, bucket_objects, partition
from pipelines.definition import definition_json
from pipelines.definition.config import Deployment, JobKind, PipelineConfig
from pipelines.definition.stages import BUILT_JOB_IMAGE, BUILT_TRACKING_SERVER
from pipelines.definition.staging import write_assets

PLACEHOLDER_BUCKET = "peftops-placeholder-bucket"
PLACEHOLDER_ACCOUNT = "000000000000"


def placeholder_role(name: str) -> str:
    return f"arn:aws:iam::{PLACEHOLDER_ACCOUNT}:role/peftops-placeholder-{name}"


def placeholder_deployment(region: str) -> Deployment:
    return Deployment(
        region=region,
        role_arn=placeholder_role("pipeline"),
        bucket=PLACEHOLDER_BUCKET,
        kms_key_arn=f"arn:aws:kms:{region}:{PLACEHOLDER_ACCOUNT}:key/peftops-placeholder-key",
        job_role_arns=tuple((kind, placeholder_role(f"{kind}-jobs")) for kind in JobKind),
    )


def role_variable(kind: JobKind) -> str:
    """The Fn::Sub variable of a kind of job's role ARN."""
    return f"{kind.value.capitalize()}RoleArn"


def built_job_image(tag: str) -> str:
    """The synth-time name of the job image cdk deploy builds, tagged with its asset hash:
    what the definition hashes into each training run's checkpoint prefix changes with the
    image's content (Dockerfile, lock, base image), as the deployed image's tag does."""
    return f"{BUILT_JOB_IMAGE.rpartition(':')[0]}:{tag}"


def templated_definition(
    config: PipelineConfig, region: str, job_image_tag: str | None = None
) -> tuple[str, dict[str, bytes]]:
    """The definition with ${Bucket}, ${KeyArn}, each job kind's ${<Kind>RoleArn} and, for a
    built job image (`job_image_tag`: its asset hash), ${JobImage} where the deployment's
    values go, and the stack's partition, region and account in the pipeline's function ARNs."""
    built_image = BUILT_JOB_IMAGE
    if job_image_tag and config.image_uri == BUILT_JOB_IMAGE:
        built_image = built_job_image(job_image_tag)
        config = dataclasses.replace(config, image_uri=built_image)
    deployment = placeholder_deployment(region)
    body, assets = definition_json(config, deployment)
    body = body.replace("${", "${!")  # a literal ${ must survive Fn::Sub
    body = body.replace(
        deployment.function_arn(""),
        "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:",
    )
    for placeholder, variable in (
        (built_image, "JobImage"),
        (BUILT_TRACKING_SERVER, "TrackingServerArn"),
        *((deployment.job_role(kind), role_variable(kind)) for kind in JobKind),
        (deployment.kms_key_arn, "KeyArn"),
        (deployment.bucket, "Bucket"),
    ):
        body = body.replace(placeholder, "${" + variable + "}")
    if deployment.role_arn in body:
        raise AssertionError("the pipeline's own role is not part of its definition")
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
        job_roles: Mapping[JobKind, iam.IRole],
        job_image_uri: str | None = None,
        job_image_tag: str | None = None,
        tracking_server_arn: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        body, assets = templated_definition(config, stack.region, job_image_tag)
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
        acknowledge_asset_copy(stack, bucket)
        self.pipeline = sagemaker.CfnPipeline(
            self,
            "Pipeline",
            pipeline_name=config.name,
            pipeline_description="peftops: preprocess, QLoRA adapter, baseline, evaluation, quality gate, registration",
            role_arn=role.role_arn,
            pipeline_definition={
                "PipelineDefinitionBody": Fn.sub(
                    body,
                    {
                        "Bucket": bucket.bucket_name,
                        "KeyArn": key.key_arn,
                        **{role_variable(k): r.role_arn for k, r in job_roles.items()},
                        **({"JobImage": job_image_uri} if job_image_uri else {}),
                        **(
                            {"TrackingServerArn": tracking_server_arn}
                            if tracking_server_arn
                            else {}
                        ),
                    },
                )
            },
        )
        self.pipeline.node.add_dependency(self.assets)
        self.pipeline_arn = (
            f"arn:{stack.partition}:sagemaker:{stack.region}:{stack.account}:pipeline/{config.name}"
        )


def acknowledge_asset_copy(stack: Stack, bucket: s3.IBucket) -> None:
    """CDK's BucketDeployment provider (one per stack) copies the code assets into the bucket at
    deploy time, with grants and a runtime CDK chooses."""
    provider = next(
        c for c in stack.node.children if c.node.id.startswith("Custom::CDKBucketDeployment")
    )
    handler_policy = provider.node.find_child("ServiceRole").node.find_child("DefaultPolicy")
    # CDK writes a DependsOn that the role's GetAtt already implies; cfn-lint warns (W3005).
    provider.node.default_child.add_metadata("cfn-lint", {"config": {"ignore_checks": ["W3005"]}})
    acknowledge(
        provider,
        "L1",
        "CDK's BucketDeployment provider pins its own runtime; it runs only during deployments",
    )
    acknowledge(
        provider.node.find_child("ServiceRole"),
        "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
        "CDK's BucketDeployment provider writes its own logs with the basic execution policy",
    )
    account = "<AWS::AccountId>" if Token.is_unresolved(stack.account) else stack.account
    for finding in (
        "IAM5[Action::s3:GetObject*]",
        "IAM5[Action::s3:GetBucket*]",
        "IAM5[Action::s3:List*]",
        "IAM5[Action::s3:DeleteObject*]",
        "IAM5[Action::s3:Abort*]",
        "IAM5[Action::kms:GenerateDataKey*]",
        "IAM5[Action::kms:ReEncrypt*]",
        f"IAM5[{bucket_objects(stack, bucket)}]",
        f"IAM5[Resource::arn:{partition(stack)}:s3:::cdk-hnb659fds-assets-{account}-{stack.region}/*]",
    ):
        acknowledge(
            handler_policy,
            finding,
            "grants CDK's BucketDeployment generates to copy the code assets from the CDK asset bucket into the project bucket",
        )
