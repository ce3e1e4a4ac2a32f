"""A stage's endpoint, when its settings switch serving on: the endpoint and its base-model
inference component (LMI with LoRA enabled), and the deployer that adds one adapter inference
component per version promoted to the stage, beside the task's serving one, and deletes the old
one once the new one passed its smoke test (a Lambda function the model package group's state
changes reach through a FIFO queue)."""

from __future__ import annotations

import jsii
from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.findings import account_resource, acknowledge, bucket_objects
from infra.functions import project_function
from infra.queues import dead_letter_queue
from pipelines.definition.config import EVALUATIONS, MODELS, PipelineConfig
from pipelines.definition.images import (
    ecr_repository_arn,
    lora_serving_environment,
    serving_image,
)
from pipelines.definition.service_rules import has_local_storage
from pipelines.definition.stages import ServingSettings, endpoint_name
from pipelines.functions.registered_adapter import base_component_name

VARIANT = "AllTraffic"
DEPLOYER_HANDLER = "deployer.handler"


def base_model_source(config: PipelineConfig, bucket_name: str) -> str:
    """HF_MODEL_ID for LMI: a hub id, or the S3 prefix holding the model's files."""
    model = config.base_model
    if model.startswith("s3://") or not model.endswith("/"):
        return model
    return f"s3://{bucket_name}/{model}"


@jsii.implements(events.IRuleTarget)
class QueueTarget:
    """A FIFO queue as a rule's target, without the service-wide send permission that
    `aws_events_targets.SqsQueue` grants an encrypted queue: the caller grants it, narrowed."""

    def __init__(self, queue: sqs.IQueue, *, message_group_id: str) -> None:
        self.queue = queue
        self.message_group_id = message_group_id

    def bind(self, _rule: events.IRule, _id: str | None = None) -> events.RuleTargetConfig:
        return events.RuleTargetConfig(
            arn=self.queue.queue_arn,
            sqs_parameters=events.CfnRule.SqsParametersProperty(
                message_group_id=self.message_group_id
            ),
            target_resource=self.queue,
        )


class Serving(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: PipelineConfig,
        settings: ServingSettings,
        bucket: s3.IBucket,
        key: kms.IKey,
        group_name: str,
        log_retention: logs.RetentionDays = logs.RetentionDays.THREE_MONTHS,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        sagemaker_arn = f"arn:{stack.partition}:sagemaker:{stack.region}:{stack.account}"
        self.endpoint_name = endpoint_name(config, settings)
        image = serving_image(config, stack.region)
        adapters = bucket.arn_for_objects(f"pipelines/{config.name}/{MODELS}/*")

        # What the endpoint's containers run as: pull the image, read the adapters (and a base
        # model kept in the bucket), write their logs and metrics.
        self.role = iam.Role(
            self,
            "EndpointRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description=f"peftops endpoint {self.endpoint_name}",
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="PullServingImage",
                actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                resources=[ecr_repository_arn(image, stack.partition)],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="EcrToken", actions=["ecr:GetAuthorizationToken"], resources=["*"]
            )
        )
        readable = [adapters]
        if config.base_model.endswith("/") and not config.base_model.startswith("s3://"):
            readable.append(bucket.arn_for_objects(f"{config.base_model}*"))
            # LMI downloads an S3 model prefix with a listing sync.
            self.role.add_to_policy(
                iam.PolicyStatement(
                    sid="ListBaseModel",
                    actions=["s3:ListBucket"],
                    resources=[bucket.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": [f"{config.base_model}*"]}},
                )
            )
        self.role.add_to_policy(
            iam.PolicyStatement(sid="ReadModels", actions=["s3:GetObject"], resources=readable)
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="DecryptModels", actions=["kms:Decrypt"], resources=[key.key_arn]
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteLogs",
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[
                    f"arn:{stack.partition}:logs:{stack.region}:{stack.account}:log-group:/aws/sagemaker/*"
                ],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="PutMetrics",
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*"]}},
            )
        )

        endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "EndpointConfig",
            execution_role_arn=self.role.role_arn,
            # The API refuses a KmsKeyId on instances with local NVMe storage (every ml.g5),
            # whose store the hardware encrypts.
            kms_key_id=None if has_local_storage(settings.instance_type) else key.key_arn,
            production_variants=[
                sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                    variant_name=VARIANT,
                    instance_type=settings.instance_type,
                    initial_instance_count=settings.instance_count,
                    routing_config=sagemaker.CfnEndpointConfig.RoutingConfigProperty(
                        routing_strategy="LEAST_OUTSTANDING_REQUESTS"
                    ),
                )
            ],
        )
        self.endpoint = sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_name=self.endpoint_name,
            endpoint_config_name=endpoint_config.attr_endpoint_config_name,
        )
        # The endpoint's instances pull the image and read the model as they start: its role's
        # permissions must be in place first (the config names only the role).
        self.endpoint.node.add_dependency(self.role.node.find_child("DefaultPolicy"))
        self.base_component_name = base_component_name(self.endpoint_name)
        self.base_component = sagemaker.CfnInferenceComponent(
            self,
            "BaseComponent",
            inference_component_name=self.base_component_name,
            endpoint_name=self.endpoint.attr_endpoint_name,
            variant_name=VARIANT,
            specification=sagemaker.CfnInferenceComponent.InferenceComponentSpecificationProperty(
                container=sagemaker.CfnInferenceComponent.InferenceComponentContainerSpecificationProperty(
                    image=image,
                    environment={
                        **lora_serving_environment(base_model_source(config, bucket.bucket_name)),
                        "OPTION_MAX_LORAS": str(settings.max_loras),
                        "OPTION_MAX_LORA_RANK": str(settings.max_lora_rank),
                        "OPTION_MAX_CPU_LORAS": str(4 * settings.max_loras),
                        # The code's default is every GPU the container sees, its docs say
                        # 1: the component's own count, said.
                        "OPTION_TENSOR_PARALLEL_DEGREE": str(settings.accelerators),
                    },
                ),
                compute_resource_requirements=sagemaker.CfnInferenceComponent.InferenceComponentComputeResourceRequirementsProperty(
                    number_of_accelerator_devices_required=settings.accelerators,
                    min_memory_required_in_mb=settings.memory_mb,
                ),
            ),
            runtime_config=sagemaker.CfnInferenceComponent.InferenceComponentRuntimeConfigProperty(
                copy_count=1
            ),
        )

        # The deployer: exactly the calls it makes, on this group and this endpoint.
        components = f"{sagemaker_arn}:inference-component/{self.endpoint_name}-*"
        endpoint_arn = f"{sagemaker_arn}:endpoint/{self.endpoint_name}"
        self.deployer = project_function(
            self,
            "Deployer",
            function_name=f"{config.name}-deploy-{settings.lifecycle_stage}",
            description=f"peftops: deploys versions promoted to {settings.lifecycle_stage}",
            handler=DEPLOYER_HANDLER,
            statements=[
                iam.PolicyStatement(
                    sid="ReadAndRecordVersions",
                    actions=["sagemaker:DescribeModelPackage", "sagemaker:UpdateModelPackage"],
                    resources=[f"{sagemaker_arn}:model-package/{group_name}/*"],
                ),
                iam.PolicyStatement(
                    # Neither authorizes on a resource: Search finds the versions to retire,
                    # the listing the components a version's deployment creates or deletes.
                    sid="FindVersionsAndComponents",
                    actions=["sagemaker:Search", "sagemaker:ListInferenceComponents"],
                    resources=["*"],
                ),
                iam.PolicyStatement(
                    # A component per version, created, tagged once it serves, deleted; never
                    # updated in place.
                    sid="ManageAdapterComponents",
                    actions=[
                        "sagemaker:CreateInferenceComponent",
                        "sagemaker:DescribeInferenceComponent",
                        "sagemaker:DeleteInferenceComponent",
                        "sagemaker:AddTags",
                        "sagemaker:ListTags",
                    ],
                    resources=[components, endpoint_arn],
                ),
                iam.PolicyStatement(
                    # The deployed adapter's tag, which promotion accounts may read by.
                    sid="MarkPromotedAdapters",
                    actions=["s3:PutObjectTagging"],
                    resources=[adapters],
                ),
                iam.PolicyStatement(
                    # The version's smoke request, in the evaluation it was registered with.
                    sid="ReadSmokeRequests",
                    actions=["s3:GetObject"],
                    resources=[bucket.arn_for_objects(f"pipelines/{config.name}/{EVALUATIONS}/*")],
                ),
                iam.PolicyStatement(
                    sid="DecryptSmokeRequests", actions=["kms:Decrypt"], resources=[key.key_arn]
                ),
                iam.PolicyStatement(
                    sid="SmokeTest",
                    actions=["sagemaker:InvokeEndpoint"],
                    resources=[endpoint_arn, components],
                ),
            ],
            timeout=Duration.minutes(15),  # waits for the component to come into service
            # Not run again on an error (Lambda retries an event twice by default): it records
            # its own failures, and a rerun would deploy again.
            retry_attempts=0,
            log_retention=log_retention,
            environment={
                "LIFECYCLE_STAGE": settings.lifecycle_stage,
                "MODEL_PACKAGE_GROUP": group_name,
                "ENDPOINT_NAME": self.endpoint_name,
                "VARIANT_NAME": VARIANT,
                "BASE_COMPONENT": self.base_component_name,
                "MAX_LORA_RANK": str(settings.max_lora_rank),
            },
        )
        # One deployment at a time per stage, so that two promotions never race on one
        # component: the stage's events queue in a FIFO queue, in one message group, which
        # Lambda reads one message at a time. (Reserved concurrency would do it too, but Lambda
        # refuses a reservation in accounts whose concurrency quota is still the new-account
        # 10.) A deployment that crashes is not run again (it records its own failures, and a
        # rerun would deploy again): its event goes to the dead-letter queue.
        self.failed_deployments = dead_letter_queue(
            self, "FailedDeployments", key, holds="the deployments'", fifo=True
        )
        self.deployments = sqs.Queue(
            self,
            "Deployments",
            fifo=True,
            content_based_deduplication=True,
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            enforce_ssl=True,
            # At least six times the function's timeout, as Lambda's SQS event source asks.
            visibility_timeout=Duration.minutes(90),
            dead_letter_queue=sqs.DeadLetterQueue(
                max_receive_count=1, queue=self.failed_deployments
            ),
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.deployer.add_event_source(sources.SqsEventSource(self.deployments, batch_size=1))
        # EventBridge sends to the queue as the service itself (SQS targets take no role), so
        # the queue and its key admit it for this rule only (no other account's rule: confused
        # deputy). The rule is named, so its ARN is known without a reference to it, which the
        # queue's and key's policies would make circular.
        rule_name = f"{config.name}-promoted-to-{settings.lifecycle_stage}"
        rule_arn = f"arn:{stack.partition}:events:{stack.region}:{stack.account}:rule/{rule_name}"
        events_of_this_rule = iam.ServicePrincipal(
            "events.amazonaws.com", conditions={"ArnEquals": {"aws:SourceArn": rule_arn}}
        )
        self.deployments.add_to_resource_policy(
            iam.PolicyStatement(
                sid="PromotionEventsOfThisStage",
                principals=[events_of_this_rule],
                actions=["sqs:SendMessage"],
                resources=[self.deployments.queue_arn],
            )
        )
        key.grant(events_of_this_rule, "kms:GenerateDataKey", "kms:Decrypt")
        self.rule = events.Rule(
            self,
            "PromotedToStage",
            rule_name=rule_name,
            description=f"versions of {group_name} promoted to {settings.lifecycle_stage}",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=["SageMaker Model Package State Change"],
                # The group only: the deployer reads the version's ModelLifeCycle itself and
                # skips what is not pending in its stage (SageMaker may send several events for
                # one change, and an event's detail is not documented to carry the stage).
                detail={"ModelPackageGroupName": [group_name]},
            ),
            targets=[QueueTarget(self.deployments, message_group_id=settings.lifecycle_stage)],
        )
        self._acknowledge_findings(config, bucket, group_name)

    def _acknowledge_findings(
        self, config: PipelineConfig, bucket: s3.IBucket, group_name: str
    ) -> None:
        adapters = f"IAM5[{bucket_objects(self, bucket, f'pipelines/{config.name}/{MODELS}/*')}]"
        endpoint_policy = self.role.node.find_child("DefaultPolicy")
        for finding, reason in (
            (
                "IAM5[Resource::*]",
                "ecr:GetAuthorizationToken and cloudwatch:PutMetricData support no resource-level permissions; PutMetricData is limited to SageMaker namespaces by condition",
            ),
            (
                f"IAM5[{account_resource(self, 'logs', 'log-group:/aws/sagemaker/*')}]",
                "SageMaker endpoint log groups, named by the service",
            ),
            (
                adapters,
                "reads the adapters the pipeline trained, whose keys name the run; it writes nothing",
            ),
            *(
                (
                    f"IAM5[{bucket_objects(self, bucket, f'{model}*')}]",
                    "reads the base model's files kept in the bucket; it writes nothing",
                )
                for model in [config.base_model]
                if model.endswith("/") and not model.startswith("s3://")
            ),
        ):
            acknowledge(endpoint_policy, finding, reason)
        deployer = self.deployer.role
        assert deployer is not None
        for finding, reason in (
            (
                "IAM5[Resource::*]",
                "sagemaker:Search and ListInferenceComponents support no resource-level permissions; they find the version a deployment retires and the components it creates or deletes",
            ),
            (
                f"IAM5[{account_resource(self, 'sagemaker', f'model-package/{group_name}/*')}]",
                "versions of this project's model package group, numbered at registration",
            ),
            (
                f"IAM5[{account_resource(self, 'sagemaker', f'inference-component/{self.endpoint_name}-*')}]",
                "this endpoint's adapter components, one per version, named when the version is promoted",
            ),
            (
                adapters,
                "tags the adapter it deployed, whose key names its training run; it reads or writes no object",
            ),
            (
                f"IAM5[{bucket_objects(self, bucket, f'pipelines/{config.name}/{EVALUATIONS}/*')}]",
                "reads the smoke request of the version it deploys from its evaluation, whose key names the run that wrote it",
            ),
        ):
            acknowledge(deployer, finding, reason)
