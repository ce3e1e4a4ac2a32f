"""An encrypted SNS topic told about failed pipeline executions and approval changes."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from infra.findings import acknowledge


class Notifications(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        key: kms.IKey,
        pipeline_arn: str,
        model_package_group: str,
        emails: tuple[str, ...],
    ) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(
            self, "Topic", display_name="peftops", master_key=key, enforce_ssl=True
        )
        # EventBridge publishes through a role of this account's rules only (aws:SourceAccount
        # on the trust): neither the topic policy nor the key policy grants the service
        # principal itself, which any account's rule could use (confused deputy).
        self.publisher = iam.Role(
            self,
            "PublishRole",
            assumed_by=iam.ServicePrincipal(
                "events.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": Stack.of(self).account}},
            ),
            description="peftops notifications: EventBridge rules publish to the topic",
        )
        self.topic.grant_publish(self.publisher)  # and the topic key's Decrypt/GenerateDataKey*
        acknowledge(
            self.publisher,
            "IAM5[Action::kms:GenerateDataKey*]",
            "the notification topic's key only, as SNS needs to encrypt what EventBridge publishes",
        )
        target = targets.SnsTopic(self.topic, role=self.publisher)
        for email in emails:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))
        self.pipeline_failed = events.Rule(
            self,
            "PipelineFailed",
            description="A peftops pipeline execution failed or stopped",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=["SageMaker Model Building Pipeline Execution Status Change"],
                detail={
                    "pipelineArn": [pipeline_arn],
                    "currentPipelineExecutionStatus": ["Failed", "Stopped"],
                },
            ),
            targets=[target],
        )
        self.approval_changed = events.Rule(
            self,
            "ApprovalChanged",
            description="A peftops adapter version was registered, approved or rejected",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=["SageMaker Model Package State Change"],
                detail={"ModelPackageGroupName": [model_package_group]},
            ),
            targets=[target],
        )
