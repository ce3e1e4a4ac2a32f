"""The peftops stack: storage, roles, registry, pipeline, schedule and notifications."""

from __future__ import annotations

from typing import Any

from aws_cdk import Acknowledgment, CfnOutput, Stack, Token, Validations
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.functions import PipelineFunctions
from infra.job_image import JobImage
from infra.notifications import Notifications
from infra.pipeline import Pipeline
from infra.registry import ModelRegistry
from infra.roles import PipelineRole, SchedulerRole, job_roles
from infra.schedule import Schedule
from infra.serving import Serving
from infra.storage import Storage
from infra.tracking import ARTIFACT_PREFIX, TrackingServer, tracking_statements
from pipelines.definition.config import (
    CHECK_REGISTERED,
    CHECKPOINTS,
    EVALUATIONS,
    FUNCTION_HANDLERS,
    JOB_WRITES,
    MODELS,
    RESOLVE_INPUTS,
    TRACKED_JOBS,
    JobKind,
    function_name,
)
from pipelines.definition.images import deep_learning_images, ecr_repository_arn, job_images
from pipelines.definition.stages import StageSettings
from pipelines.functions.model_lifecycle import PROMOTED_TAG


def acknowledge(scope: Construct, rule: str, reason: str) -> None:
    """A cdk-nag finding accepted for this resource only, with the reason it is right here."""
    Validations.of(scope).acknowledge(
        Acknowledgment(id=f"AwsSolutions::AwsSolutions-{rule}", reason=reason)
    )


class PeftopsStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, settings: StageSettings, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        config = settings.pipeline
        self.settings = settings
        self.storage = Storage(
            self,
            "Storage",
            checkpoint_prefix=f"pipelines/{config.name}/{CHECKPOINTS}/",
            checkpoint_expiry_days=settings.checkpoint_expiry_days,
            noncurrent_version_expiry_days=settings.noncurrent_version_expiry_days,
            access_log_expiry_days=settings.access_log_expiry_days,
        )
        self.job_image = None
        if settings.build_job_image:
            # Built from training_scripts/Dockerfile at deploy time on the stage's training
            # image, pushed to the CDK assets repository; the definition names it.
            base = deep_learning_images(config, self.region).gpu
            self.job_image = JobImage(self, "JobImage", base_image=base)
        images = job_images(config, self.region)
        outputs = f"pipelines/{config.name}"
        instance_types = {
            JobKind.PREPROCESS: config.processing_instance_type,
            JobKind.TRAINING: config.train_instance_type,
            JobKind.EVALUATION: config.evaluation_instance_type,
        }
        self.job_roles = job_roles(
            self,
            bucket=self.storage.bucket,
            key=self.storage.key,
            writes={
                kind: [f"{outputs}/{folder}/" for folder in folders]
                for kind, folders in JOB_WRITES.items()
            },
            deletes={JobKind.TRAINING: [f"{outputs}/{CHECKPOINTS}/"]},
            repositories={
                kind: [
                    self.job_image.asset.repository.repository_arn
                    if self.job_image
                    else ecr_repository_arn(images.for_instance(t), self.partition)
                ]
                for kind, t in instance_types.items()
            },
            vpc=config.vpc,
            hub_token_secret_arn=config.hf_token_secret_arn,
        )
        self.tracking = None
        if settings.mlflow_tracking_server:
            self.tracking = TrackingServer(
                self,
                "Tracking",
                name=config.name,
                size=settings.mlflow_tracking_server,
                bucket=self.storage.bucket,
                key=self.storage.key,
            )
            for kind in TRACKED_JOBS:
                self.job_roles[kind].policy.add_statements(
                    *tracking_statements(self.tracking.arn, self.storage.bucket, self.storage.key)
                )
        self.pipeline_role = PipelineRole(
            self,
            "PipelineRole",
            bucket=self.storage.bucket,
            key=self.storage.key,
            pipeline_name=config.name,
            model_package_group=config.model_package_group,
            job_roles=[job.role for job in self.job_roles.values()],
            read_prefixes=[f"{outputs}/{EVALUATIONS}/", f"{outputs}/{MODELS}/"],
            function_names=[function_name(config, name) for name in FUNCTION_HANDLERS],
        )
        self.registry = ModelRegistry(
            self,
            "Registry",
            group_name=config.model_package_group,
            promotion_account_ids=settings.promotion_account_ids,
        )
        if settings.promotion_account_ids:
            self._grant_promoted_adapters(settings.promotion_account_ids, f"{outputs}/{MODELS}/")
        self.functions = PipelineFunctions(
            self, "Functions", config=config, bucket=self.storage.bucket, key=self.storage.key
        )
        self.pipeline = Pipeline(
            self,
            "Pipeline",
            config=config,
            bucket=self.storage.bucket,
            key=self.storage.key,
            role=self.pipeline_role.role,
            job_roles={kind: job.role for kind, job in self.job_roles.items()},
            job_image_uri=self.job_image.asset.image_uri if self.job_image else None,
            job_image_tag=self.job_image.asset.asset_hash if self.job_image else None,
            tracking_server_arn=self.tracking.arn if self.tracking else None,
        )
        self.pipeline.pipeline.node.add_dependency(self.registry.group)
        # Its first scheduled run must find every role's permissions in place.
        self.pipeline.pipeline.node.add_dependency(
            self.pipeline_role.policy, *(job.policy for job in self.job_roles.values())
        )
        for function in self.functions.functions.values():
            self.pipeline.pipeline.node.add_dependency(function)
        self.schedule = Schedule(
            self,
            "Schedule",
            settings=settings.schedule,
            pipeline_arn=self.pipeline.pipeline_arn,
            key=self.storage.key,
            role_factory=lambda queue_arn: (
                SchedulerRole(
                    self,
                    "SchedulerRole",
                    pipeline_arn=self.pipeline.pipeline_arn,
                    dead_letter_queue_arn=queue_arn,
                    key=self.storage.key,
                ).role
            ),
        )
        self.notifications = Notifications(
            self,
            "Notifications",
            key=self.storage.key,
            pipeline_arn=self.pipeline.pipeline_arn,
            model_package_group=config.model_package_group,
            emails=settings.notification_emails,
        )
        self.serving = None
        if settings.serving:
            self.serving = Serving(
                self,
                "Serving",
                config=config,
                settings=settings.serving,
                bucket=self.storage.bucket,
                key=self.storage.key,
                group_name=config.model_package_group,
            )
            CfnOutput(self, "EndpointName", value=self.serving.endpoint_name)
        self._acknowledge_findings(config.name, config.model_package_group)
        CfnOutput(self, "BucketName", value=self.storage.bucket.bucket_name)
        CfnOutput(self, "PipelineName", value=config.name)
        CfnOutput(self, "ModelPackageGroup", value=config.model_package_group)
        CfnOutput(self, "TopicArn", value=self.notifications.topic.topic_arn)
        if self.tracking:
            CfnOutput(self, "TrackingServerArn", value=self.tracking.arn)

    def _grant_promoted_adapters(self, accounts: tuple[str, ...], models_prefix: str) -> None:
        """The accounts a stage promotes to may read the adapters deployed to a stage (tagged
        by the deployer) and nothing else of the bucket, and decrypt them through S3 only."""
        principals = [iam.AccountPrincipal(account) for account in accounts]
        self.storage.bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="PromotionAccountsReadPromotedAdapters",
                principals=principals,
                actions=["s3:GetObject"],
                resources=[self.storage.bucket.arn_for_objects(f"{models_prefix}*")],
                conditions={"StringEquals": {f"s3:ExistingObjectTag/{PROMOTED_TAG}": "true"}},
            )
        )
        self.storage.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="PromotionAccountsDecryptPromotedAdapters",
                principals=principals,
                actions=["kms:Decrypt"],
                resources=["*"],  # in a key policy, "*" is this key
                conditions={"StringEquals": {"kms:ViaService": f"s3.{self.region}.amazonaws.com"}},
            )
        )

    def _acknowledge_serving(
        self, bucket_objects: str, region_account: str, pipeline_name: str, group: str
    ) -> None:
        serving = self.serving
        assert serving is not None
        endpoint_policy = serving.role.node.find_child("DefaultPolicy")
        for finding, reason in (
            (
                "IAM5[Resource::*]",
                "ecr:GetAuthorizationToken and cloudwatch:PutMetricData support no resource-level permissions; PutMetricData is limited to SageMaker namespaces by condition",
            ),
            (
                f"IAM5[Resource::arn:<AWS::Partition>:logs:{region_account}:log-group:/aws/sagemaker/*]",
                "SageMaker endpoint log groups, named by the service",
            ),
            (
                f"IAM5[{bucket_objects.removesuffix('/*')}/pipelines/{pipeline_name}/{MODELS}/*]",
                "reads the adapters the pipeline trained, whose keys name the run; it writes nothing",
            ),
            *(
                (
                    f"IAM5[{bucket_objects.removesuffix('/*')}/{model}*]",
                    "reads the base model's files kept in the bucket; it writes nothing",
                )
                for model in [self.settings.pipeline.base_model]
                if model.endswith("/") and not model.startswith("s3://")
            ),
        ):
            acknowledge(endpoint_policy, finding, reason)
        deployer = serving.deployer.role
        assert deployer is not None
        for finding, reason in (
            (
                "IAM5[Resource::*]",
                "sagemaker:Search supports no resource-level permissions; it finds the version a deployment retires",
            ),
            (
                f"IAM5[Resource::arn:<AWS::Partition>:sagemaker:{region_account}:model-package/{group}/*]",
                "versions of this project's model package group, numbered at registration",
            ),
            (
                f"IAM5[Resource::arn:<AWS::Partition>:sagemaker:{region_account}:inference-component/{serving.endpoint_name}-*]",
                "this endpoint's adapter components, one per task, named when a task is first promoted",
            ),
            (
                f"IAM5[{bucket_objects.removesuffix('/*')}/pipelines/{pipeline_name}/{MODELS}/*]",
                "tags the adapter it deployed, whose key names its training run; it reads or writes no object",
            ),
        ):
            acknowledge(deployer, finding, reason)

    def _acknowledge_findings(self, pipeline_name: str, group: str) -> None:
        """Each accepted cdk-nag finding, on the one resource it concerns, with its reason."""
        bucket_objects = (
            f"Resource::<{self.get_logical_id(self.storage.bucket.node.default_child)}.Arn>/*"
        )
        # cdk-nag writes the account as a token unless the environment names it.
        account = "<AWS::AccountId>" if Token.is_unresolved(self.account) else self.account
        region_account = f"{self.region}:{account}"
        pipeline_policy = self.pipeline_role.policy
        for finding, reason in (
            *(
                (
                    f"IAM5[{bucket_objects.removesuffix('/*')}/pipelines/{pipeline_name}/{folder}/*]",
                    "reads the evaluations its conditions read and the adapters it registers; it writes no object",
                )
                for folder in (EVALUATIONS, MODELS)
            ),
            (
                f"IAM5[Resource::arn:<AWS::Partition>:sagemaker:{region_account}:model-package/{group}/*]",
                "versions of this project's model package group, numbered at registration",
            ),
            (
                f"IAM5[Resource::arn:<AWS::Partition>:sagemaker:{region_account}:pipeline/{pipeline_name}/*]",
                "executions of this project's pipeline",
            ),
            (
                f"IAM5[Resource::arn:<AWS::Partition>:sagemaker:{region_account}:processing-job/*]",
                "Pipelines names processing jobs at run time; the role can only create, describe and stop them",
            ),
            (
                f"IAM5[Resource::arn:<AWS::Partition>:sagemaker:{region_account}:training-job/*]",
                "Pipelines names training jobs at run time; the role can only create, describe and stop them",
            ),
        ):
            acknowledge(pipeline_policy, finding, reason)
        for job in self.job_roles.values():
            findings = [
                (
                    "IAM5[Action::kms:GenerateDataKey*]",
                    "GenerateDataKey and GenerateDataKeyWithoutPlaintext on the project key only, for encrypted volumes and outputs",
                ),
                (
                    "IAM5[Resource::*]",
                    "ecr:GetAuthorizationToken and cloudwatch:PutMetricData support no resource-level permissions; PutMetricData is limited to SageMaker namespaces by condition",
                ),
                (
                    f"IAM5[{bucket_objects}]",
                    "reads objects of the project bucket only; writes are limited to this kind of job's prefixes",
                ),
                (
                    f"IAM5[Resource::arn:<AWS::Partition>:logs:{region_account}:log-group:/aws/sagemaker/*]",
                    "SageMaker job log groups, named per job type by the service",
                ),
                *(
                    (
                        f"IAM5[{bucket_objects.removesuffix('/*')}/pipelines/{pipeline_name}/{folder}/*]",
                        "this kind of job's outputs, whose keys name the run that writes them",
                    )
                    for folder in JOB_WRITES[job.kind]
                ),
            ]
            if job.vpc_statements:
                findings.append(
                    (
                        f"IAM5[Resource::arn:<AWS::Partition>:ec2:{region_account}:network-interface/*]",
                        "VPC jobs: SageMaker creates and deletes their network interfaces at run time, only in the configured subnets (condition)",
                    )
                )
            for finding, reason in findings:
                acknowledge(job.policy, finding, reason)
        if self.serving:
            self._acknowledge_serving(bucket_objects, region_account, pipeline_name, group)
        if self.tracking:
            artifacts = f"IAM5[{bucket_objects.removesuffix('/*')}/{ARTIFACT_PREFIX}*]"
            for kind in TRACKED_JOBS:
                acknowledge(
                    self.job_roles[kind].policy,
                    artifacts,
                    "MLflow artifacts of this project's tracking server, which the MLflow client uploads under run ids",
                )
            acknowledge(
                self.tracking,
                artifacts,
                "the tracking server's artifact store, this prefix of the project bucket only",
            )
            acknowledge(
                self.tracking,
                "IAM5[Action::kms:GenerateDataKey*]",
                "GenerateDataKey and GenerateDataKeyWithoutPlaintext on the project key only, for the artifact store",
            )
        for name, role in self.functions.roles.items():
            log_group = self.functions.node.find_child(f"{name}-logs").node.default_child
            acknowledge(
                role,
                f"IAM5[Resource::<{self.get_logical_id(log_group)}.Arn>]",
                "the function's own log group; Lambda makes a log stream per instance",
            )
        acknowledge(
            self.functions.roles[RESOLVE_INPUTS],
            f"IAM5[{bucket_objects.removesuffix('/*')}/baselines/*]",
            "stored baselines of this project's bucket: a run may name another than the default",
        )
        acknowledge(
            self.functions.roles[CHECK_REGISTERED],
            f"IAM5[Resource::arn:<AWS::Partition>:sagemaker:{region_account}:model-package/{group}/*]",
            "reads versions of this project's model package group, numbered at registration",
        )
        acknowledge(
            self.functions.roles[CHECK_REGISTERED],
            f"IAM5[{bucket_objects.removesuffix('/*')}/pipelines/{pipeline_name}/{EVALUATIONS}/*]",
            "evaluations of this project's pipeline, whose keys name the run that wrote them",
        )
        acknowledge(
            self.functions.roles[CHECK_REGISTERED],
            "IAM5[Resource::*]",
            "sagemaker:ListModelPackages cannot be scoped to one group's list (it authorizes on packages); it returns summaries, and describing a version is limited to this project's group",
        )
        acknowledge(
            self.notifications.publisher,
            "IAM5[Action::kms:GenerateDataKey*]",
            "the notification topic's key only, as SNS needs to encrypt what EventBridge publishes",
        )
        acknowledge(
            self.schedule.dead_letters,
            "SQS3",
            "this queue is itself the schedule's dead-letter queue",
        )
        # CDK's BucketDeployment provider copies the code assets into the bucket at deploy time.
        provider = next(
            c for c in self.node.children if c.node.id.startswith("Custom::CDKBucketDeployment")
        )
        handler_policy = provider.node.find_child("ServiceRole").node.find_child("DefaultPolicy")
        # CDK writes a DependsOn that the role's GetAtt already implies; cfn-lint warns (W3005).
        provider.node.default_child.add_metadata(
            "cfn-lint", {"config": {"ignore_checks": ["W3005"]}}
        )
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
        for finding in (
            "IAM5[Action::s3:GetObject*]",
            "IAM5[Action::s3:GetBucket*]",
            "IAM5[Action::s3:List*]",
            "IAM5[Action::s3:DeleteObject*]",
            "IAM5[Action::s3:Abort*]",
            "IAM5[Action::kms:GenerateDataKey*]",
            "IAM5[Action::kms:ReEncrypt*]",
            f"IAM5[{bucket_objects}]",
            f"IAM5[Resource::arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-{account}-{self.region}/*]",
        ):
            acknowledge(
                handler_policy,
                finding,
                "grants CDK's BucketDeployment generates to copy the code assets from the CDK asset bucket into the project bucket",
            )
