"""The pipeline's Lambda functions (`pipelines/functions`): ResolveInputs lists a task's published
dataset versions and checks its stored baseline; CheckRegistered reads the model package group and
the digest of the evaluation the gate read. Each has
its own role with only that, and a log group that expires."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.findings import account_resource, acknowledge, bucket_objects
from pipelines.definition.config import (
    CHECK_REGISTERED,
    EVALUATIONS,
    FUNCTION_HANDLERS,
    RESOLVE_INPUTS,
    PipelineConfig,
    function_name,
)
from pipelines.functions import layout

FUNCTIONS_DIR = Path(layout.__file__).resolve().parent


class PipelineFunctions(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: PipelineConfig,
        bucket: s3.IBucket,
        key: kms.IKey,
        log_retention: logs.RetentionDays = logs.RetentionDays.THREE_MONTHS,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        sagemaker = f"arn:{stack.partition}:sagemaker:{stack.region}:{stack.account}"
        group = config.model_package_group
        permissions = {
            RESOLVE_INPUTS: [
                iam.PolicyStatement(
                    sid="ListPublishedDatasets",
                    actions=["s3:ListBucket"],
                    resources=[bucket.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": [layout.ALL_DATASET_MARKERS]}},
                ),
                iam.PolicyStatement(
                    sid="ReadStoredBaseline",  # which dataset version it was scored on
                    actions=["s3:GetObject"],
                    resources=[bucket.arn_for_objects(f"{layout.BASELINES}*")],
                ),
                iam.PolicyStatement(
                    sid="DecryptStoredBaseline", actions=["kms:Decrypt"], resources=[key.key_arn]
                ),
            ],
            CHECK_REGISTERED: [
                # ListModelPackages authorizes on model packages, not on the group it is asked
                # about, so no resource names "this group's list"; it returns summaries only,
                # and describing a version is scoped to this group below.
                iam.PolicyStatement(
                    sid="ListVersions", actions=["sagemaker:ListModelPackages"], resources=["*"]
                ),
                iam.PolicyStatement(
                    sid="DescribeVersions",
                    actions=["sagemaker:BatchDescribeModelPackage"],
                    resources=[f"{sagemaker}:model-package/{group}/*"],
                ),
                iam.PolicyStatement(
                    sid="ReadEvaluations",  # to record the digest of what the gate read
                    actions=["s3:GetObject"],
                    resources=[bucket.arn_for_objects(f"pipelines/{config.name}/{EVALUATIONS}/*")],
                ),
                iam.PolicyStatement(
                    sid="DecryptEvaluations", actions=["kms:Decrypt"], resources=[key.key_arn]
                ),
            ],
        }
        self.functions: dict[str, lambda_.Function] = {}
        self.roles: dict[str, iam.Role] = {}
        for name, statements in permissions.items():
            self.functions[name] = project_function(
                self,
                name,
                function_name=function_name(config, name),
                description=f"peftops pipeline step function ({name})",
                handler=FUNCTION_HANDLERS[name],
                statements=statements,
                timeout=Duration.seconds(60),
                log_retention=log_retention,
            )
            self.roles[name] = self.functions[name].role
        self._acknowledge_findings(bucket, config)

    def _acknowledge_findings(self, bucket: s3.IBucket, config: PipelineConfig) -> None:
        stack = Stack.of(self)
        group = config.model_package_group
        for name, role in self.roles.items():
            log_group = self.node.find_child(f"{name}-logs").node.default_child
            acknowledge(
                role,
                f"IAM5[Resource::<{stack.get_logical_id(log_group)}.Arn>]",
                "the function's own log group; Lambda makes a log stream per instance",
            )
        acknowledge(
            self.roles[RESOLVE_INPUTS],
            f"IAM5[{bucket_objects(self, bucket, f'{layout.BASELINES}*')}]",
            "stored baselines of this project's bucket: a run may name another than the default",
        )
        for finding, reason in (
            (
                f"IAM5[{account_resource(self, 'sagemaker', f'model-package/{group}/*')}]",
                "reads versions of this project's model package group, numbered at registration",
            ),
            (
                f"IAM5[{bucket_objects(self, bucket, f'pipelines/{config.name}/{EVALUATIONS}/*')}]",
                "evaluations of this project's pipeline, whose keys name the run that wrote them",
            ),
            (
                "IAM5[Resource::*]",
                "sagemaker:ListModelPackages cannot be scoped to one group's list (it authorizes on packages); it returns summaries, and describing a version is limited to this project's group",
            ),
        ):
            acknowledge(self.roles[CHECK_REGISTERED], finding, reason)


def project_function(
    scope: Construct,
    name: str,
    *,
    function_name: str,
    description: str,
    handler: str,
    statements: list[iam.PolicyStatement],
    timeout: Duration,
    log_retention: logs.RetentionDays,
    environment: dict[str, str] | None = None,
    retry_attempts: int | None = None,  # of asynchronous invocations; None: Lambda's default
) -> lambda_.Function:
    """A function of `pipelines/functions` with its own role (exactly `statements`, and writing
    its own logs) and a log group that expires."""
    log_group = logs.LogGroup(
        scope,
        f"{name}-logs",
        log_group_name=f"/aws/lambda/{function_name}",
        retention=log_retention,
        removal_policy=RemovalPolicy.DESTROY,
    )
    # Inline: the permissions exist with the role, before the function can run.
    role = iam.Role(
        scope,
        f"{name}-role",
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=f"peftops pipeline function {function_name}",
        inline_policies={
            "access": iam.PolicyDocument(
                statements=[
                    *statements,
                    iam.PolicyStatement(
                        sid="WriteOwnLogs",
                        actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                        # The group's ARN ends in :* and so names its streams.
                        resources=[log_group.log_group_arn],
                    ),
                ]
            )
        },
    )
    function = lambda_.Function(
        scope,
        name,
        function_name=function_name,
        description=description,
        runtime=lambda_.Runtime.PYTHON_3_14,
        architecture=lambda_.Architecture.ARM_64,
        handler=handler,
        code=lambda_.Code.from_asset(
            str(FUNCTIONS_DIR), exclude=["__pycache__", "*.pyc", "__init__.py"]
        ),
        role=role,
        timeout=timeout,
        memory_size=256,
        log_group=log_group,
        environment=environment,
        retry_attempts=retry_attempts,
    )
    # CDK writes a DependsOn that the role's GetAtt already implies; cfn-lint warns.
    function.node.default_child.add_metadata("cfn-lint", {"config": {"ignore_checks": ["W3005"]}})
    return function
