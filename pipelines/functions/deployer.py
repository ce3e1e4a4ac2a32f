"""The stage deployer (a Lambda function the stack subscribes to the model package group's
state changes): a version promoted to this stage (`ModelLifeCycle` = stage/PendingDeployment)
becomes its task's adapter inference component on the stage's endpoint.

Each version gets its own component (`<endpoint>-<task>-<version>`) beside the one serving:
the deployer creates it on the base model's component, waits until it is in service, sends the
version's smoke request through it (the body its evaluation built from its task spec, read
from the registered evaluation.json), and on success tags it `peftops:serving` (clients take a
task's newest tagged component), records the version `Deployed` and the task's previous
version in the stage `Retired`, and deletes the task's other components. On failure, whatever
failed, the new component is deleted and the version marked `DeploymentFailed`; the previous
one never stopped serving. No component is ever updated in place, and no error is told apart
by its wording."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

try:  # a package in the project, top-level modules in the Lambda runtime
    from . import model_lifecycle as lifecycle
    from .registered_adapter import (
        EVALUATION_DIGEST,
        SERVABLE_METHODS,
        SERVING_TAG,
        TASK,
        adapter_component_name,
        adapter_location,
        component_version,
        is_task_component,
        task_component_prefix,
    )
except ImportError:
    import model_lifecycle as lifecycle  # type: ignore[no-redef]
    from registered_adapter import (  # type: ignore[no-redef]
        EVALUATION_DIGEST,
        SERVABLE_METHODS,
        SERVING_TAG,
        TASK,
        adapter_component_name,
        adapter_location,
        component_version,
        is_task_component,
        task_component_prefix,
    )

DEPLOYER = "peftops-stage-deployer"


@dataclass(frozen=True)
class Settings:
    """The stage's endpoint, from the function's environment (the stack sets it)."""

    stage: str
    group: str
    endpoint: str
    variant: str
    base_component: str
    max_lora_rank: int = 64  # the base component's OPTION_MAX_LORA_RANK
    wait_s: float = 600.0  # leaves the smoke test and a rollback within the function's 15 minutes
    poll_s: float = 15.0

    @classmethod
    def from_environment(cls, environ: dict[str, str]) -> Settings:
        return cls(
            stage=environ["LIFECYCLE_STAGE"],
            group=environ["MODEL_PACKAGE_GROUP"],
            endpoint=environ["ENDPOINT_NAME"],
            variant=environ["VARIANT_NAME"],
            base_component=environ["BASE_COMPONENT"],
            max_lora_rank=int(environ["MAX_LORA_RANK"]),
        )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Deployer:
    def __init__(
        self,
        settings: Settings,
        sagemaker: Any,
        runtime: Any,
        s3: Any,
        *,
        clock: Callable[[], str] = _now,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.sagemaker = sagemaker
        self.s3 = s3
        self.runtime = runtime
        self.clock = clock
        self.sleep = sleep
        self.monotonic = monotonic

    # --- the components ---------------------------------------------------------------

    def components(self, name_contains: str) -> dict[str, dict[str, Any]]:
        """The endpoint's components whose names hold `name_contains`, by name. A listing, not
        a describe: a component that does not exist is then no error to read."""
        pages = self.sagemaker.get_paginator("list_inference_components").paginate(
            EndpointNameEquals=self.settings.endpoint, NameContains=name_contains
        )
        return {
            c["InferenceComponentName"]: c for page in pages for c in page["InferenceComponents"]
        }

    def serving(self, summary: dict[str, Any]) -> bool:
        """Does the component carry the tag of a passed smoke test?"""
        tags = self.sagemaker.list_tags(ResourceArn=summary["InferenceComponentArn"])
        return any(t["Key"] == SERVING_TAG for t in tags.get("Tags", []))

    def create(self, component: str, artifact: str) -> None:
        """An adapter component names only its base and its artifact: it runs on the base
        component's compute, so it takes no variant, copy count or resources."""
        self.sagemaker.create_inference_component(
            InferenceComponentName=component,
            EndpointName=self.settings.endpoint,
            Specification={
                "BaseInferenceComponentName": self.settings.base_component,
                "Container": {"ArtifactUrl": artifact},
            },
        )

    def start(self, component: str, artifact: str) -> tuple[bool, str]:
        """The version's component, in service. One left by an earlier attempt that stopped
        before its outcome (the function timed out) is used as it is; one still being deleted
        after a failed attempt cannot be yet."""
        try:
            summary = self.components(component).get(component)
            if summary and summary["InferenceComponentStatus"] == "Deleting":
                return False, (
                    f"component {component} of an earlier attempt is still being deleted; "
                    "promote the version again once it is gone"
                )
            if summary is None:
                self.create(component, artifact)
            return self.in_service(component, artifact)
        except ClientError as err:  # refused: recorded, never left pending
            return False, f"{component}: {err}"

    def mark_serving(self, component: str) -> None:
        """Tag the component whose smoke test passed: clients take a task's tagged component."""
        summary = self.components(component)[component]
        self.sagemaker.add_tags(
            ResourceArn=summary["InferenceComponentArn"],
            Tags=[{"Key": SERVING_TAG, "Value": "true"}],
        )

    def discard(self, component: str, detail: str) -> str:
        """Delete a version's component after its deployment failed: unless it is being deleted
        already, or it serves (a version deployed before and set pending again by hand)."""
        try:
            summary = self.components(component).get(component)
            if (
                summary
                and summary["InferenceComponentStatus"] != "Deleting"
                and not self.serving(summary)
            ):
                self.sagemaker.delete_inference_component(InferenceComponentName=component)
        except ClientError as err:
            return f"{detail}; deleting {component} failed too: {err}"
        return detail

    def other_components(self, task: str, keep: str) -> list[str]:
        """The task's adapter components on the endpoint but `keep`: a retired version's, one
        from before components per version, any an earlier attempt left (not those already
        being deleted)."""
        endpoint = self.settings.endpoint
        return sorted(
            name
            for name, summary in self.components(f"{endpoint}-").items()
            if name != keep
            and summary["InferenceComponentStatus"] != "Deleting"
            and is_task_component(name, endpoint, task)
        )

    def delete(self, components: list[str]) -> str:
        """Delete components; what could not be, in words."""
        failed = []
        for name in components:
            try:
                self.sagemaker.delete_inference_component(InferenceComponentName=name)
            except ClientError as err:
                failed.append(f"deleting {name} failed: {err}")
        return "; ".join(failed)

    def in_service(self, component: str, artifact: str) -> tuple[bool, str]:
        """In service with `artifact`: right after an update, or after the service rolled a
        failed one back, the component can be InService with the previous adapter."""
        deadline = self.monotonic() + self.settings.wait_s
        while True:
            described = self.sagemaker.describe_inference_component(
                InferenceComponentName=component
            )
            status = described["InferenceComponentStatus"]
            serving = described.get("Specification", {}).get("Container", {}).get("ArtifactUrl")
            if status == "InService" and serving == artifact:
                return True, "in service"
            if status == "Failed":
                return False, f"component {component} failed: {described.get('FailureReason', '')}"
            if self.monotonic() >= deadline:
                return False, (
                    f"component {component} still {status} with {serving} after "
                    f"{self.settings.wait_s:.0f} s"
                )
            self.sleep(self.settings.poll_s)

    def smoke_request(self, package: dict[str, Any]) -> dict[str, Any]:
        """The body the version's evaluation built from its task spec and a test example
        (evaluation.json's `task.smoke_request`), read from the evaluation the version was
        registered with, and only if that file is still the one registered (its digest)."""
        uri = package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        registered = package.get("CustomerMetadataProperties", {}).get(EVALUATION_DIGEST)
        if registered != hashlib.sha256(body).hexdigest():
            raise ValueError(f"{uri} is not the evaluation the version was registered with")
        return json.loads(body)["task"]["smoke_request"]

    def smoke(self, component: str, request: dict[str, Any]) -> tuple[bool, str]:
        try:
            response = self.runtime.invoke_endpoint(
                EndpointName=self.settings.endpoint,
                InferenceComponentName=component,
                ContentType="application/json",
                Accept="application/json",
                Body=json.dumps(request).encode(),
            )
            answer = json.loads(response["Body"].read())
        except Exception as err:  # an error answer is a failed smoke test, not a crash
            return False, f"smoke test failed: {type(err).__name__}: {err}"
        try:  # LMI answers the chat-completions schema with a chat.completion object
            text = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            text = ""
        if not str(text).strip():
            return False, f"smoke test failed: no answer in {str(answer)[:200]}"
        return True, f"smoke test passed on {self.settings.endpoint}/{component}"

    # --- the registry -------------------------------------------------------------------

    def record(self, package: dict[str, Any], status: str, action: str, why: str) -> None:
        """The version's outcome in this stage: only versions of this stage are recorded (one
        pending here, or one deployed here that retires)."""
        stage = self.settings.stage
        approval = package.get("ModelApprovalStatus", "")
        decision = lifecycle.Decision(
            at=self.clock(),
            who=DEPLOYER,
            action=action,
            before=lifecycle.state(approval, stage, package["ModelLifeCycle"]["StageStatus"]),
            after=lifecycle.state(approval, stage, status),
            why=why,
        )
        self.sagemaker.update_model_package(
            ModelPackageArn=package["ModelPackageArn"],
            ModelLifeCycle={
                "Stage": stage,
                "StageStatus": status,
                "StageDescription": lifecycle.one_line(why),
            },
            CustomerMetadataProperties=lifecycle.recorded(
                package.get("CustomerMetadataProperties", {}), decision
            ),
        )

    def deployed_in_stage(self, task: str) -> list[str]:
        """The ARNs of the task's versions Search finds deployed in this stage."""
        pages = self.sagemaker.get_paginator("search").paginate(
            Resource="ModelPackage",
            SearchExpression={
                "Filters": [
                    {"Name": "ModelPackageGroupName", "Operator": "Equals", "Value": self.settings.group},
                    {"Name": "ModelLifeCycle.Stage", "Operator": "Equals", "Value": self.settings.stage},
                    {"Name": "ModelLifeCycle.StageStatus", "Operator": "Equals",
                     "Value": lifecycle.StageStatus.DEPLOYED},
                ]
            },
        )  # fmt: skip
        return [
            result["ModelPackage"]["ModelPackageArn"]
            for page in pages
            for result in page["Results"]
            if result["ModelPackage"].get("CustomerMetadataProperties", {}).get(TASK) == task
        ]

    def previous_versions(self, task: str, arn: str, components: list[str]) -> list[dict[str, Any]]:
        """The task's other versions deployed in this stage, described afresh: those Search
        finds, and those whose components are on the endpoint (Search's index may not show an
        update yet), but `arn` itself (Search may show it deployed already). Retiring from the
        described version keeps its history whole."""
        prefix = task_component_prefix(self.settings.endpoint, task)
        group_arn = arn.rsplit("/", 1)[0]
        arns = set(self.deployed_in_stage(task))
        for name in components:
            version = component_version(name, prefix)
            if version is not None:
                arns.add(f"{group_arn}/{version}")
        arns.discard(arn)
        found = []
        for other in sorted(arns):
            try:
                described = self.sagemaker.describe_model_package(ModelPackageName=other)
            except ClientError:  # a version deleted from the group: nothing to retire
                continue
            cycle = described.get("ModelLifeCycle", {})
            if (cycle.get("Stage"), cycle.get("StageStatus")) == (
                self.settings.stage,
                lifecycle.StageStatus.DEPLOYED,
            ) and described.get("CustomerMetadataProperties", {}).get(TASK) == task:
                found.append(described)
        return found

    # --- the whole deployment -----------------------------------------------------------

    def deploy(self, arn: str) -> dict[str, str]:
        package = self.sagemaker.describe_model_package(ModelPackageName=arn)
        cycle = package.get("ModelLifeCycle", {})
        if (cycle.get("Stage"), cycle.get("StageStatus")) != (
            self.settings.stage,
            lifecycle.StageStatus.PENDING,
        ):
            return {
                "outcome": "skipped",
                "detail": f"{arn} is not pending in {self.settings.stage}",
            }
        refused = self.refusal(package)
        if refused:  # nothing deployed: recorded, never left pending
            self.record(package, lifecycle.StageStatus.FAILED, "refuse", refused)
            return {"outcome": "refused", "detail": refused}
        task = package.get("CustomerMetadataProperties", {}).get(TASK, "")
        try:
            if not task:
                raise ValueError("the version names no task")
            component = adapter_component_name(
                self.settings.endpoint, task, int(package["ModelPackageVersion"])
            )
            request = self.smoke_request(package)
        except (ClientError, KeyError, ValueError) as err:  # nothing deployed yet
            detail = f"cannot deploy the version: {type(err).__name__}: {err}"
            self.record(package, lifecycle.StageStatus.FAILED, "fail", detail)
            return {"outcome": "failed", "detail": detail}
        try:
            artifact = adapter_location(package["InferenceSpecification"]["Containers"][0])
            passed, detail = self.start(component, artifact)
            if passed:
                passed, detail = self.smoke(component, request)
            if passed:
                self.mark_promoted(artifact)
                # From the tag on, clients take the new component (the newest tagged), while
                # the old one answers until it is deleted below.
                self.mark_serving(component)
        except Exception as err:  # whatever failed, the version is not left pending
            passed, detail = False, f"{component}: {type(err).__name__}: {err}"
        if not passed:
            detail = self.discard(component, detail)
            self.record(package, lifecycle.StageStatus.FAILED, "fail", detail)
            return {"outcome": "failed", "detail": detail}
        self.record(package, lifecycle.StageStatus.DEPLOYED, "deploy", detail)
        others = self.other_components(task, keep=component)
        for old in self.previous_versions(task, arn, others):
            self.record(
                old,
                lifecycle.StageStatus.RETIRED,
                "retire",
                f"version {package['ModelPackageVersion']} took {self.settings.stage} over",
            )
        leftovers = self.delete(others)
        return {"outcome": "deployed", "detail": f"{detail}; {leftovers}" if leftovers else detail}

    def refusal(self, package: dict[str, Any]) -> str:
        """Why the version may not serve in this stage, whoever marked it pending: the rules
        `peftops models promote` applies, checked again here, because anyone allowed to
        update a model package can set its stage. Empty: it may. (That its evaluation is the
        registered one is checked where its smoke request is read.)"""
        name = f"version {package.get('ModelPackageVersion', '?')}"
        approval = package.get("ModelApprovalStatus", "")
        if approval != "Approved":
            return f"{name} is {approval or 'not approved'}; only an approved version is deployed"
        metadata = package.get("CustomerMetadataProperties", {})
        method, rank = metadata.get("peft_method", ""), metadata.get("lora_r", "")
        if method not in SERVABLE_METHODS:
            return (
                f"{name} is a {method or 'unnamed'} adapter; the endpoint's vLLM serves LoRA "
                f"adapters only ({', '.join(SERVABLE_METHODS)})"
            )
        if not rank.isdigit() or int(rank) > self.settings.max_lora_rank:
            return (
                f"{name} has LoRA rank {rank or '(none recorded)'}, and the endpoint loads "
                f"ranks up to {self.settings.max_lora_rank}: raise serving.max_lora_rank in "
                "cdk.json, or train at a lower LoraRank"
            )
        if self.settings.stage == lifecycle.Stage.PRODUCTION and not passed_staging(package):
            return (
                f"{name} has not passed a staging smoke test (no deployment to staging by "
                f"{DEPLOYER} in its history); promote it to staging first"
            )
        return ""

    def mark_promoted(self, artifact: str) -> None:
        """Tag the deployed adapter's artifact: the accounts a stage promotes to may read
        objects with this tag, and no other (the bucket policy's condition)."""
        bucket, _, key = artifact.removeprefix("s3://").partition("/")
        self.s3.put_object_tagging(
            Bucket=bucket,
            Key=key,
            Tagging={"TagSet": [{"Key": lifecycle.PROMOTED_TAG, "Value": "true"}]},
        )


def passed_staging(package: dict[str, Any]) -> bool:
    """Did a staging deployer deploy the version (its smoke test passed there)? Only that
    deployer records `deploy` decisions in a version's history."""
    deployed = f"/{lifecycle.Stage.STAGING}:{lifecycle.StageStatus.DEPLOYED}"
    history = lifecycle.decode_history(package.get("CustomerMetadataProperties", {}))
    return any(
        d.who == DEPLOYER and d.action == "deploy" and d.after.endswith(deployed) for d in history
    )


def promoted_versions(event: dict[str, Any]) -> list[str]:
    """The version ARNs an invocation is about: the stage's FIFO queue delivers EventBridge
    "SageMaker Model Package State Change" events as SQS records; a direct event is one."""
    if "Records" in event:
        return [json.loads(r["body"])["detail"]["ModelPackageArn"] for r in event["Records"]]
    return [event["detail"]["ModelPackageArn"]]


def handler(event: dict[str, Any], context: Any) -> list[dict[str, str]]:
    """The Lambda entry point: each promoted version's outcome, in the queue's order."""
    import boto3

    settings = Settings.from_environment(dict(os.environ))
    deployer = Deployer(
        settings,
        boto3.client("sagemaker"),
        boto3.client("sagemaker-runtime"),
        boto3.client("s3"),
    )
    return [deployer.deploy(arn) for arn in promoted_versions(event)]
