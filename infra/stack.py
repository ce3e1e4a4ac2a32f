"""The peftops stack: storage, roles, registry, pipeline, schedule and notifications. Each
construct acknowledges its own cdk-nag findings (infra/findings.py), beside its grants."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
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
from infra.tracking import TrackingServer
from pipelines.definition.config import (
    CHECKPOINTS,
    EVALUATIONS,
    FUNCTION_HANDLERS,
    JOB_WRITES,
    MODELS,
    TRACKED_JOBS,
    JobKind,
    function_name,
)
from pipelines.definition.images import deep_learning_images, ecr_repository_arn, job_images
from pipelines.definition.stages import StageSettings
from pipelines.functions.model_lifecycle import PROMOTED_TAG


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
                self.tracking.grant_logging(
                    self.job_roles[kind].policy, self.storage.bucket, self.storage.key
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
            tasks=config.run_tasks,
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
        CfnOutput(self, "BucketName", value=self.storage.bucket.bucket_name)
        # What `cdk destroy` keeps besides the bucket (the README says how to delete them).
        CfnOutput(self, "AccessLogBucketName", value=self.storage.access_logs.bucket_name)
        CfnOutput(self, "KeyArn", value=self.storage.key.key_arn)
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
