"""The stage deployer against the SageMaker and runtime APIs (botocore's Stubber: moto has no
inference components nor ModelLifeCycle). botocore validates every request against the service
model before the Stubber sees it, and the Stubber every answer (a call no test expects fails
it: no component is ever updated in place); where the exact request matters it is expected in
full. Covered: a component per version, the smoke test, a failure that deletes the new
component and leaves the old one serving, the old one deleted after a success, and the outcome
recorded on the versions."""

from __future__ import annotations

import hashlib
import io
import json
import re
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from pipelines.functions import deployer
from pipelines.functions.model_lifecycle import decode_history, lineage_of

GROUP = "peftops-adapters"
ENDPOINT = "peftops-staging"
BASE_COMPONENT = f"{ENDPOINT}-base"
SETTINGS = deployer.Settings(
    stage="staging", group=GROUP, endpoint=ENDPOINT, variant="AllTraffic",
    base_component=BASE_COMPONENT, wait_s=60, poll_s=15,
)  # fmt: skip
TASK_PREFIX = f"{ENDPOINT}-dialogue-summary-"
COMPONENT = f"{TASK_PREFIX}2"  # version 2's
OLD_COMPONENT = f"{TASK_PREFIX}1"  # version 1's, serving the task when version 2 is promoted
NEW_ADAPTER = "s3://bucket/models/v2/model.tar.gz"
OLD_ADAPTER = "s3://bucket/models/v1/model.tar.gz"
ACCOUNT_ARN = "arn:aws:sagemaker:us-east-1:111122223333"
EVALUATION_KEY = "pipelines/p/evaluations/job/adapter/evaluation.json"
SMOKE = {
    "messages": [{"role": "user", "content": "Summarize the following dialogue in one or two "
                  "sentences.\n\n#Person1#: The report by Friday?\n#Person2#: Sure."}],
    "max_tokens": 16,
    "temperature": 0.0,
}  # fmt: skip
EVALUATION = json.dumps({"task": {"name": "dialogue-summary", "smoke_request": SMOKE}}).encode()


def arn(version: int) -> str:
    return f"{ACCOUNT_ARN}:model-package/{GROUP}/{version}"


def package(
    version: int, status: str, task: str = "dialogue-summary", evaluation: bytes = EVALUATION
) -> dict[str, Any]:
    return {
        "ModelPackageName": GROUP,
        "ModelPackageGroupName": GROUP,
        "ModelPackageVersion": version,
        "ModelPackageArn": arn(version),
        "CreationTime": "2026-12-01T00:00:00Z",
        "ModelPackageStatus": "Completed",
        "ModelPackageStatusDetails": {"ValidationStatuses": []},
        "ModelApprovalStatus": "Approved",
        "ModelLifeCycle": {"Stage": "staging", "StageStatus": status},
        "CustomerMetadataProperties": {
            "task": task, "base_model": "m", "peft_method": "qlora", "lora_r": "16",
            "evaluation_sha256": hashlib.sha256(evaluation).hexdigest(),
        },
        "ModelMetrics": {"ModelQuality": {"Statistics": {
            "ContentType": "application/json", "S3Uri": f"s3://bucket/{EVALUATION_KEY}",
        }}},
        "InferenceSpecification": {
            "Containers": [{"Image": "lmi", "ModelDataUrl": f"s3://bucket/models/v{version}/model.tar.gz"}],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    }  # fmt: skip


def component(status: str, artifact: str = NEW_ADAPTER) -> dict[str, Any]:
    return {
        "InferenceComponentName": COMPONENT,
        "InferenceComponentArn": f"{ACCOUNT_ARN}:inference-component/{COMPONENT}",
        "EndpointName": ENDPOINT,
        "EndpointArn": f"{ACCOUNT_ARN}:endpoint/{ENDPOINT}",
        "CreationTime": "2026-12-01T00:00:00Z",
        "LastModifiedTime": "2026-12-01T00:00:00Z",
        "InferenceComponentStatus": status,
        "Specification": {
            "BaseInferenceComponentName": BASE_COMPONENT,
            "Container": {"ArtifactUrl": artifact},
        },
    }


def specification(artifact: str) -> dict[str, Any]:
    return {"BaseInferenceComponentName": BASE_COMPONENT, "Container": {"ArtifactUrl": artifact}}


class Recorder:
    """What each UpdateModelPackage sent, by version ARN, in order."""

    def __init__(self, client: Any) -> None:
        self.updates: list[dict[str, Any]] = []
        client.meta.events.register(
            "provide-client-params.sagemaker.UpdateModelPackage",
            lambda params, **_: self.updates.append(params),
        )


S3 = boto3.client("s3", region_name="us-east-1")
S3_STUB: list[Stubber] = []  # the running test's S3 stubber


@pytest.fixture
def clients():
    sagemaker = boto3.client("sagemaker", region_name="us-east-1")
    runtime = boto3.client("sagemaker-runtime", region_name="us-east-1")
    with Stubber(sagemaker) as sm, Stubber(runtime) as rt, Stubber(S3) as s3:
        S3_STUB[:] = [s3]
        yield sagemaker, runtime, sm, rt
        sm.assert_no_pending_responses()
        rt.assert_no_pending_responses()
        s3.assert_no_pending_responses()  # a failed deployment tags nothing


def tags_as_promoted(artifact: str = NEW_ADAPTER) -> None:
    """The deployed adapter's artifact gets the tag promotion accounts may read by."""
    bucket, _, key = artifact.removeprefix("s3://").partition("/")
    S3_STUB[0].add_response(
        "put_object_tagging",
        {},
        {"Bucket": bucket, "Key": key,
         "Tagging": {"TagSet": [{"Key": "peftops-promoted", "Value": "true"}]}},
    )  # fmt: skip


def reads_the_smoke_request(evaluation: bytes = EVALUATION) -> None:
    """The version's registered evaluation.json, where its smoke request is."""
    S3_STUB[0].add_response(
        "get_object",
        {"Body": StreamingBody(io.BytesIO(evaluation), len(evaluation))},
        {"Bucket": "bucket", "Key": EVALUATION_KEY},
    )


def make(sagemaker: Any, runtime: Any) -> tuple[deployer.Deployer, list[float]]:
    slept: list[float] = []
    clock = iter(range(0, 10_000, 15))
    return (
        deployer.Deployer(
            SETTINGS, sagemaker, runtime, S3, clock=lambda: "2026-12-04T00:00:00+00:00",
            sleep=slept.append, monotonic=lambda: float(next(clock)),
        ),
        slept,
    )  # fmt: skip


def answer(body: Any) -> dict[str, Any]:
    raw = json.dumps(body).encode()
    return {"Body": StreamingBody(io.BytesIO(raw), len(raw)), "ContentType": "application/json"}


def smoke_request() -> dict[str, Any]:
    """The invocation the deployer sends: exactly the registered body, nothing of its own."""
    return {
        "EndpointName": ENDPOINT, "InferenceComponentName": COMPONENT,
        "ContentType": "application/json", "Accept": "application/json",
        "Body": json.dumps(SMOKE).encode(),
    }  # fmt: skip


def chat_answer(text: str) -> dict[str, Any]:
    return answer({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})


def lists(sm: Stubber, name_contains: str, **statuses: str) -> None:
    """The endpoint's components whose names hold `name_contains`, with their statuses."""
    sm.add_response(
        "list_inference_components",
        {"InferenceComponents": [
            {"InferenceComponentName": name, "InferenceComponentStatus": status,
             "InferenceComponentArn": f"{ACCOUNT_ARN}:inference-component/{name}",
             "EndpointArn": f"{ACCOUNT_ARN}:endpoint/{ENDPOINT}", "EndpointName": ENDPOINT,
             "VariantName": "AllTraffic", "CreationTime": "2026-12-01T00:00:00Z",
             "LastModifiedTime": "2026-12-01T00:00:00Z"}
            for name, status in statuses.items()
        ]},
        {"EndpointNameEquals": ENDPOINT, "NameContains": name_contains},
    )  # fmt: skip


def arn_of(name: str) -> str:
    return f"{ACCOUNT_ARN}:inference-component/{name}"


def tagged(sm: Stubber, name: str, serving: bool = False) -> None:
    """ListTags on a component: whether it carries the tag of a passed smoke test. A component
    without tags may be answered without `Tags` (the member is optional in the API model)."""
    response = {"Tags": [{"Key": "peftops:serving", "Value": "true"}]} if serving else {}
    sm.add_response("list_tags", response, {"ResourceArn": arn_of(name)})


def marks_serving(sm: Stubber, name: str = COMPONENT) -> None:
    """After the smoke test: the component is tagged, which is what clients resolve by."""
    lists(sm, name, **{name: "InService"})
    sm.add_response(
        "add_tags",
        {"Tags": [{"Key": "peftops:serving", "Value": "true"}]},
        {"ResourceArn": arn_of(name), "Tags": [{"Key": "peftops:serving", "Value": "true"}]},
    )


def deletes(sm: Stubber, name: str) -> None:
    sm.add_response("delete_inference_component", {}, {"InferenceComponentName": name})


def records(sm: Stubber, version: int) -> None:
    sm.add_response(
        "update_model_package",
        {"ModelPackageArn": arn(version)},
        {"ModelPackageArn": arn(version), "ModelLifeCycle": ANY,
         "CustomerMetadataProperties": ANY},
    )  # fmt: skip


def search_deployed(sm: Stubber, *packages: dict[str, Any]) -> None:
    """Search for the group's versions deployed in this stage (property names and operators
    as the Search API spells them), answered with `packages`."""
    sm.add_response(
        "search",
        {"Results": [{"ModelPackage": p} for p in packages]},
        {"Resource": "ModelPackage", "SearchExpression": {"Filters": [
            {"Name": "ModelPackageGroupName", "Operator": "Equals", "Value": GROUP},
            {"Name": "ModelLifeCycle.Stage", "Operator": "Equals", "Value": "staging"},
            {"Name": "ModelLifeCycle.StageStatus", "Operator": "Equals", "Value": "Deployed"},
        ]}},
    )  # fmt: skip


def reads_pending(sm: Stubber) -> None:
    """The event's version: 2, pending in this stage."""
    sm.add_response(
        "describe_model_package", package(2, "PendingDeployment"), {"ModelPackageName": arn(2)}
    )


def finds_its_component_in_service(sm: Stubber) -> None:
    """Version 2's component is already on the endpoint and in service (an earlier attempt,
    or a version deployed before): it is not created again."""
    reads_pending(sm)
    reads_the_smoke_request()
    lists(sm, COMPONENT, **{COMPONENT: "InService"})
    sm.add_response(
        "describe_inference_component",
        component("InService"),
        {"InferenceComponentName": COMPONENT},
    )


def creates_a_component(sm: Stubber) -> None:
    """A version pending here: the deployer creates its component, beside the one serving."""
    reads_pending(sm)
    reads_the_smoke_request()
    lists(sm, COMPONENT)  # none yet: version 2 was never deployed here
    sm.add_response(
        "create_inference_component",
        {"InferenceComponentArn": component("Creating")["InferenceComponentArn"]},
        # No variant, copy count or resources: an adapter runs on its base component's compute.
        {"InferenceComponentName": COMPONENT, "EndpointName": ENDPOINT,
         "Specification": specification(NEW_ADAPTER)},
    )  # fmt: skip


def passes_its_smoke_test(sm: Stubber, rt: Stubber) -> None:
    """Version 2's new component starts, answers its smoke request, is tagged serving, and the
    version is recorded deployed."""
    creates_a_component(sm)
    sm.add_response(
        "describe_inference_component",
        component("InService"),
        {"InferenceComponentName": COMPONENT},
    )
    rt.add_response("invoke_endpoint", chat_answer("ok"), smoke_request())
    tags_as_promoted()
    marks_serving(sm)
    records(sm, 2)


def test_a_deployment_adds_the_versions_component_then_retires_and_deletes_the_old_one(
    clients,
) -> None:
    sagemaker, runtime, sm, rt = clients
    sent = Recorder(sagemaker)
    creates_a_component(sm)
    sm.add_response(
        "describe_inference_component", component("Creating"), {"InferenceComponentName": COMPONENT}
    )
    sm.add_response(
        "describe_inference_component",
        component("InService"),
        {"InferenceComponentName": COMPONENT},
    )
    rt.add_response("invoke_endpoint", chat_answer("A report by Thursday."), smoke_request())
    old, other_task = package(1, "Deployed"), package(3, "Deployed", task="meeting-notes")
    tags_as_promoted()
    marks_serving(sm)
    records(sm, 2)
    # The task's components once version 2 serves: version 1's is deleted, and so are the
    # task's one from before components per version and one an earlier attempt left; one being
    # deleted, the base model's, and a task whose name starts with this one's
    # ("dialogue-summary-long") are left alone.
    lists(sm, f"{ENDPOINT}-", **{
        BASE_COMPONENT: "InService", f"{ENDPOINT}-dialogue-summary": "InService",
        OLD_COMPONENT: "InService", COMPONENT: "InService", f"{TASK_PREFIX}7": "Failed",
        f"{TASK_PREFIX}5": "Deleting", f"{TASK_PREFIX}long-1": "InService",
    })  # fmt: skip
    search_deployed(sm, old, other_task, package(2, "Deployed"))
    # Each candidate described afresh: version 1 (Search and its component) is deployed here
    # and retires; version 7 (a component an earlier attempt left) failed, and stays as it is.
    sm.add_response("describe_model_package", old, {"ModelPackageName": arn(1)})
    sm.add_response(
        "describe_model_package", package(7, "DeploymentFailed"), {"ModelPackageName": arn(7)}
    )
    records(sm, 1)
    deletes(sm, f"{ENDPOINT}-dialogue-summary")
    deletes(sm, OLD_COMPONENT)
    deletes(sm, f"{TASK_PREFIX}7")
    run, slept = make(sagemaker, runtime)
    outcome = run.deploy(arn(2))
    assert outcome["outcome"] == "deployed"
    assert slept == [15]  # polled once while it was Creating
    # Deployed before the old version retires: a client resolving the task meanwhile finds
    # the newest deployed version, whose component is already in service.
    deployed, retired = sent.updates
    assert retired["ModelPackageArn"] == arn(1)  # the other task's version 3 is untouched
    assert retired["ModelLifeCycle"] == {
        "Stage": "staging", "StageStatus": "Retired", "StageDescription": "version 2 took staging over",
    }  # fmt: skip
    assert deployed["ModelPackageArn"] == arn(2)
    assert deployed["ModelLifeCycle"]["StageStatus"] == "Deployed"
    (decision,) = decode_history(deployed["CustomerMetadataProperties"])
    assert (decision.who, decision.action, decision.before, decision.after) == (
        deployer.DEPLOYER, "deploy", "Approved/staging:PendingDeployment", "Approved/staging:Deployed",
    )  # fmt: skip
    assert lineage_of(deployed["CustomerMetadataProperties"]) == {
        "task": "dialogue-summary",
        "base_model": "m",
        "peft_method": "qlora",
        "lora_r": "16",
        "evaluation_sha256": hashlib.sha256(EVALUATION).hexdigest(),
    }


def test_a_failed_smoke_test_deletes_the_new_component_and_leaves_the_old_one_serving(
    clients,
) -> None:
    """Nothing touches version 1's component: no update, no delete (the Stubber refuses any
    call it was not told of)."""
    sagemaker, runtime, sm, rt = clients
    sent = Recorder(sagemaker)
    creates_a_component(sm)
    sm.add_response(
        "describe_inference_component",
        component("InService"),
        {"InferenceComponentName": COMPONENT},
    )
    rt.add_response("invoke_endpoint", chat_answer("   "), smoke_request())
    lists(sm, COMPONENT, **{COMPONENT: "InService"})
    tagged(sm, COMPONENT)  # not serving: it is deleted
    deletes(sm, COMPONENT)
    records(sm, 2)
    run, _ = make(sagemaker, runtime)
    outcome = run.deploy(arn(2))
    assert outcome["outcome"] == "failed" and "no answer in" in outcome["detail"]
    (failed,) = sent.updates  # no version retired: the old adapter serves on
    assert failed["ModelLifeCycle"]["StageStatus"] == "DeploymentFailed"
    assert decode_history(failed["CustomerMetadataProperties"])[0].action == "fail"


def test_a_component_that_fails_to_start_is_removed_and_the_version_marked_failed(
    clients,
) -> None:
    sagemaker, runtime, sm, _ = clients
    sent = Recorder(sagemaker)
    creates_a_component(sm)
    failed = {
        **component("Failed"),
        "FailureReason": "adapter rank 64 exceeds OPTION_MAX_LORA_RANK",
    }
    sm.add_response("describe_inference_component", failed, {"InferenceComponentName": COMPONENT})
    lists(sm, COMPONENT, **{COMPONENT: "Failed"})
    tagged(sm, COMPONENT)  # not serving: it is deleted
    deletes(sm, COMPONENT)
    records(sm, 2)
    run, _ = make(sagemaker, runtime)
    outcome = run.deploy(arn(2))
    assert outcome == {
        "outcome": "failed",
        "detail": f"component {COMPONENT} failed: adapter rank 64 exceeds OPTION_MAX_LORA_RANK",
    }
    assert sent.updates[0]["ModelLifeCycle"]["StageDescription"] == outcome["detail"]


def test_a_component_still_starting_at_the_deadline_fails_the_deployment(clients) -> None:
    sagemaker, runtime, sm, _ = clients
    creates_a_component(sm)
    for _ in range(4):  # 60 s of waiting at 15 s a poll: four looks, then it gives up
        sm.add_response(
            "describe_inference_component",
            component("Creating"),
            {"InferenceComponentName": COMPONENT},
        )
    lists(sm, COMPONENT, **{COMPONENT: "Creating"})
    tagged(sm, COMPONENT)  # not serving: it is deleted
    deletes(sm, COMPONENT)
    records(sm, 2)
    run, slept = make(sagemaker, runtime)
    outcome = run.deploy(arn(2))
    assert (
        outcome["outcome"] == "failed"
        and "still Creating with s3://bucket/models/v2/model.tar.gz after 60 s" in outcome["detail"]
    )
    assert slept == [15, 15, 15]


@pytest.mark.parametrize(
    ("stage", "status"),
    [
        *(("staging", s) for s in ("Deployed", "Retired", "DeploymentFailed", "Archived")),
        # Another stage's deployer's work, whatever its status: this one never touches it.
        *(("production", s) for s in ("PendingDeployment", "Deployed", "Retired")),
        ("development", "PendingDeployment"),
        ("archived", "Archived"),
    ],
)
def test_an_event_for_a_version_not_pending_here_changes_nothing(
    clients, stage: str, status: str
) -> None:
    sagemaker, runtime, sm, _ = clients
    elsewhere = package(2, status) | {"ModelLifeCycle": {"Stage": stage, "StageStatus": status}}
    sm.add_response("describe_model_package", elsewhere, {"ModelPackageName": arn(2)})
    run, _ = make(sagemaker, runtime)
    assert run.deploy(arn(2))["outcome"] == "skipped"
    sm.assert_no_pending_responses()  # and it called nothing else


def test_the_handler_reads_the_state_change_event(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Lambda builds its deployer from its environment (each variable into its setting)
    and its clients, and deploys the version the event names."""
    seen: list[tuple[Any, ...]] = []

    def deploy(self: deployer.Deployer, arn: str) -> dict[str, str]:
        seen.append(
            (
                self.settings,
                *(type(c).__name__ for c in (self.sagemaker, self.runtime, self.s3)),
                arn,
            )
        )
        return {}

    monkeypatch.setattr(deployer.Deployer, "deploy", deploy)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    for name, value in {"LIFECYCLE_STAGE": "production", "MODEL_PACKAGE_GROUP": "a-group",
                        "ENDPOINT_NAME": "an-endpoint", "VARIANT_NAME": "a-variant",
                        "BASE_COMPONENT": "a-base", "MAX_LORA_RANK": "128"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    event = {
        "detail-type": "SageMaker Model Package State Change",
        "detail": {"ModelPackageArn": arn(2)},
    }
    deployer.handler(event, None)
    (settings, *clients, deployed) = seen[0]
    assert (settings.stage, settings.group, settings.endpoint, settings.variant,
            settings.base_component, settings.max_lora_rank) == (
        "production", "a-group", "an-endpoint", "a-variant", "a-base", 128)  # fmt: skip
    assert clients == ["SageMaker", "SageMakerRuntime", "S3"] and deployed == arn(2)
    # As the stage's FIFO queue delivers it: the same event as an SQS record's body.
    queued = {"Records": [{"messageId": "m", "body": json.dumps(event)}]}
    assert deployer.handler(queued, None) == [{}]
    assert seen[-1][-1] == arn(2) and len(seen) == 2


def test_decisions_are_stamped_in_utc_to_the_second() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", deployer._now())


def test_a_component_an_earlier_attempt_left_is_used_not_created_again(clients) -> None:
    """The function timed out after creating version 2's component, before its outcome: the
    next attempt finds the component and goes on with it."""
    sagemaker, runtime, sm, rt = clients
    finds_its_component_in_service(sm)
    rt.add_response("invoke_endpoint", chat_answer("ok"), smoke_request())
    tags_as_promoted()
    marks_serving(sm)
    records(sm, 2)
    lists(sm, f"{ENDPOINT}-", **{COMPONENT: "InService"})
    search_deployed(sm)
    run, _ = make(sagemaker, runtime)
    assert run.deploy(arn(2))["outcome"] == "deployed"


def test_a_component_still_being_deleted_fails_the_attempt_and_is_left_alone(clients) -> None:
    sagemaker, runtime, sm, _ = clients
    sent = Recorder(sagemaker)
    reads_pending(sm)
    reads_the_smoke_request()
    lists(sm, COMPONENT, **{COMPONENT: "Deleting"})
    lists(sm, COMPONENT, **{COMPONENT: "Deleting"})  # no delete: it is on its way out
    records(sm, 2)
    run, _ = make(sagemaker, runtime)
    outcome = run.deploy(arn(2))
    assert outcome == {
        "outcome": "failed",
        "detail": f"component {COMPONENT} of an earlier attempt is still being deleted; "
        "promote the version again once it is gone",
    }
    assert sent.updates[0]["ModelLifeCycle"]["StageStatus"] == "DeploymentFailed"


def test_a_refused_request_is_recorded_as_a_failed_deployment(clients) -> None:
    sagemaker, runtime, sm, _ = clients
    sent = Recorder(sagemaker)
    reads_pending(sm)
    reads_the_smoke_request()
    lists(sm, COMPONENT)
    sm.add_client_error(
        "create_inference_component",
        service_error_code="ResourceLimitExceeded",
        service_message="The account-level service limit for inference components is 0.\nAsk for more.",
    )
    lists(sm, COMPONENT)  # never created: nothing to delete
    records(sm, 2)
    run, _ = make(sagemaker, runtime)
    outcome = run.deploy(arn(2))
    assert outcome["outcome"] == "failed" and "ResourceLimitExceeded" in outcome["detail"]
    (failed,) = sent.updates
    assert failed["ModelLifeCycle"]["StageStatus"] == "DeploymentFailed"
    assert "\n" not in failed["ModelLifeCycle"]["StageDescription"]  # the API's `.{0,1024}`


NO_SMOKE_REQUEST = json.dumps({"task": {"name": "dialogue-summary"}}).encode()


@pytest.mark.parametrize(
    ("registered", "evaluation", "why"),
    [
        (
            EVALUATION,
            EVALUATION.replace(b"Friday", b"Monday"),
            "is not the evaluation the version was registered with",
        ),
        (NO_SMOKE_REQUEST, NO_SMOKE_REQUEST, "KeyError"),
    ],
)
def test_a_version_without_its_registered_smoke_request_is_failed_before_anything_changes(
    clients, registered: bytes, evaluation: bytes, why: str
) -> None:
    """An evaluation changed after registration, or one that names no smoke request: no
    component is touched, the version is marked failed."""
    sagemaker, runtime, sm, _ = clients
    sent = Recorder(sagemaker)
    pending = package(2, "PendingDeployment", evaluation=registered)
    sm.add_response("describe_model_package", pending, {"ModelPackageName": arn(2)})
    reads_the_smoke_request(evaluation)
    sm.add_response("update_model_package", {"ModelPackageArn": arn(2)}, None)
    run, _ = make(sagemaker, runtime)
    outcome = run.deploy(arn(2))
    assert outcome["outcome"] == "failed" and why in outcome["detail"]
    (failed,) = sent.updates
    assert failed["ModelLifeCycle"]["StageStatus"] == "DeploymentFailed"


def staged_history() -> dict[str, str]:
    """The history entry a staging deployer writes when the version's smoke test passed."""
    from pipelines.functions.model_lifecycle import Decision, history_entries

    return history_entries(
        (
            Decision(
                at="2026-12-03T00:00:00+00:00",
                who=deployer.DEPLOYER,
                action="deploy",
                before="Approved/staging:PendingDeployment",
                after="Approved/staging:Deployed",
                why="smoke test passed",
            ),
        )
    )


def forged_history() -> dict[str, str]:
    """The same words, written by someone else than the deployer."""
    return {k: v.replace(deployer.DEPLOYER, "mallory") for k, v in staged_history().items()}


@pytest.mark.parametrize(
    ("stage", "approval", "history", "why"),
    [
        ("staging", "Rejected", {}, "version 2 is Rejected; only an approved version is deployed"),
        # What the endpoint's vLLM cannot load: a prompt-tuning adapter, a rank above the
        # base component's OPTION_MAX_LORA_RANK (64 here), a version that records no rank.
        ("staging", "Approved", {"peft_method": "prompt_tuning"},
         "version 2 is a prompt_tuning adapter; the endpoint's vLLM serves LoRA adapters only"),
        ("staging", "Approved", {"lora_r": "128"},
         "version 2 has LoRA rank 128, and the endpoint loads ranks up to 64"),
        ("staging", "Approved", {"lora_r": None}, "version 2 has LoRA rank (none recorded)"),
        ("staging", "PendingManualApproval", {},
         "version 2 is PendingManualApproval; only an approved version is deployed"),
        ("production", "Approved", {}, "version 2 has not passed a staging smoke test"),
        ("production", "Approved", forged_history(),
         "version 2 has not passed a staging smoke test"),
        ("production", "Rejected", staged_history(), "version 2 is Rejected"),
    ],
)  # fmt: skip
def test_a_version_that_breaks_a_promotion_rule_is_refused_and_nothing_is_deployed(
    clients, stage: str, approval: str, history: dict[str, str], why: str
) -> None:
    """Whoever set the stage (anyone allowed UpdateModelPackage can): a version not approved,
    or in production without a passed staging smoke test, makes no inference-component call
    and reads nothing; the refusal is recorded on the package."""
    sagemaker, runtime, sm, _ = clients
    sent = Recorder(sagemaker)
    pending = package(2, "PendingDeployment")
    pending["ModelApprovalStatus"] = approval
    pending["ModelLifeCycle"]["Stage"] = stage
    metadata = pending["CustomerMetadataProperties"] | history
    pending["CustomerMetadataProperties"] = {k: v for k, v in metadata.items() if v is not None}
    sm.add_response("describe_model_package", pending, {"ModelPackageName": arn(2)})
    sm.add_response("update_model_package", {"ModelPackageArn": arn(2)}, None)
    run, _ = make(sagemaker, runtime)
    run.settings = replace_stage(stage)
    outcome = run.deploy(arn(2))
    assert outcome["outcome"] == "refused" and outcome["detail"].startswith(why), outcome
    (refused,) = sent.updates
    assert refused["ModelLifeCycle"] == {
        "Stage": stage,
        "StageStatus": "DeploymentFailed",
        "StageDescription": outcome["detail"],
    }
    (decision,) = decode_history(refused["CustomerMetadataProperties"])[-1:]
    assert (decision.who, decision.action) == (deployer.DEPLOYER, "refuse")


def test_a_version_the_staging_deployer_deployed_may_go_to_production() -> None:
    pending = package(2, "PendingDeployment")
    pending["ModelLifeCycle"]["Stage"] = "production"
    pending["CustomerMetadataProperties"].update(staged_history())
    production = deployer.Deployer(
        replace_stage("production"), None, None, None, clock=lambda: "2026-12-04T00:00:00+00:00"
    )
    assert production.refusal(pending) == ""
    assert deployer.Deployer(SETTINGS, None, None, None).refusal(package(2, "Pending")) == ""


def replace_stage(stage: str) -> deployer.Settings:
    import dataclasses

    return dataclasses.replace(SETTINGS, stage=stage)


def test_a_version_whose_component_name_cannot_fit_is_failed_before_anything_changes(
    clients,
) -> None:
    """An endpoint name the stack would refuse (over 46 characters) leaves no room for a
    version's component within SageMaker's 63: recorded, no component call, nothing read."""
    import dataclasses

    sagemaker, runtime, sm, _ = clients
    sent = Recorder(sagemaker)
    reads_pending(sm)
    records(sm, 2)
    run, _ = make(sagemaker, runtime)
    run.settings = dataclasses.replace(SETTINGS, endpoint="e" * 50)
    outcome = run.deploy(arn(2))
    assert outcome["outcome"] == "failed" and "at most 46 characters" in outcome["detail"]
    assert sent.updates[0]["ModelLifeCycle"]["StageStatus"] == "DeploymentFailed"


def test_a_serving_component_is_never_deleted_by_a_failed_attempt(clients) -> None:
    """Version 2 serves (its component is tagged); someone sets it pending again by hand and
    its smoke test fails this time: it is recorded failed, and its component serves on."""
    sagemaker, runtime, sm, rt = clients
    finds_its_component_in_service(sm)
    rt.add_response("invoke_endpoint", chat_answer(""), smoke_request())
    lists(sm, COMPONENT, **{COMPONENT: "InService"})
    tagged(sm, COMPONENT, serving=True)  # no delete follows
    records(sm, 2)
    run, _ = make(sagemaker, runtime)
    assert run.deploy(arn(2))["outcome"] == "failed"


def test_whatever_fails_after_the_component_starts_the_version_is_not_left_pending(
    clients,
) -> None:
    """The artifact's tag cannot be written (a bucket policy, a KMS key): the new component
    is deleted and the version recorded failed, never left pending with a component no one
    tagged."""
    sagemaker, runtime, sm, rt = clients
    sent = Recorder(sagemaker)
    creates_a_component(sm)
    sm.add_response(
        "describe_inference_component",
        component("InService"),
        {"InferenceComponentName": COMPONENT},
    )
    rt.add_response("invoke_endpoint", chat_answer("ok"), smoke_request())
    S3_STUB[0].add_client_error("put_object_tagging", "AccessDenied", "no tagging here")
    lists(sm, COMPONENT, **{COMPONENT: "InService"})
    tagged(sm, COMPONENT)
    deletes(sm, COMPONENT)
    records(sm, 2)
    run, _ = make(sagemaker, runtime)
    outcome = run.deploy(arn(2))
    assert outcome["outcome"] == "failed"
    assert outcome["detail"] == (
        f"{COMPONENT}: AccessDenied: An error occurred (AccessDenied) when calling the "
        "PutObjectTagging operation: no tagging here"
    )
    assert sent.updates[0]["ModelLifeCycle"]["StageStatus"] == "DeploymentFailed"


def test_a_version_search_does_not_show_yet_is_retired_by_its_component(clients) -> None:
    """Search's index lags an update: version 1, deployed here a moment ago, is not in its
    results; its component on the endpoint names it, so it is retired all the same, from its
    own description (its history whole), and its component deleted."""
    sagemaker, runtime, sm, rt = clients
    sent = Recorder(sagemaker)
    passes_its_smoke_test(sm, rt)
    lists(sm, f"{ENDPOINT}-", **{OLD_COMPONENT: "InService", COMPONENT: "InService"})
    search_deployed(sm)  # nothing yet
    sm.add_response("describe_model_package", package(1, "Deployed"), {"ModelPackageName": arn(1)})
    records(sm, 1)
    deletes(sm, OLD_COMPONENT)
    run, _ = make(sagemaker, runtime)
    assert run.deploy(arn(2)) == {
        "outcome": "deployed",
        "detail": f"smoke test passed on {ENDPOINT}/{COMPONENT}",  # nothing left over
    }
    assert [u["ModelPackageArn"] for u in sent.updates] == [arn(2), arn(1)]
    assert sent.updates[1]["ModelLifeCycle"]["StageStatus"] == "Retired"
    (retirement,) = decode_history(sent.updates[1]["CustomerMetadataProperties"])
    assert (retirement.action, retirement.why) == ("retire", "version 2 took staging over")


def test_the_versions_retired_are_those_deployed_here_for_the_task_whatever_search_or_the_endpoint_hold(
    clients,
) -> None:
    """Once version 2 serves, each candidate is judged on its own description: version 1's
    component is left but the version was deleted from the group (nothing to retire, the
    others still looked at); version 3 is deployed here and Search finds it, though its
    component is gone (retired); version 4's component is left and its version holds neither
    a lifecycle nor metadata (left as it is); a version of the group Search finds with no
    metadata names no task (not this one's), and version 2 itself, already indexed as deployed,
    is not retired. A component that cannot be deleted is said in the outcome, not fatal."""
    sagemaker, runtime, sm, rt = clients
    sent = Recorder(sagemaker)
    passes_its_smoke_test(sm, rt)
    lists(sm, f"{ENDPOINT}-", **{
        f"{TASK_PREFIX}1": "InService", COMPONENT: "InService", f"{TASK_PREFIX}4": "Failed",
        f"{TASK_PREFIX}5": "InService",
    })  # fmt: skip
    untagged = {
        k: v for k, v in package(6, "Deployed").items() if k != "CustomerMetadataProperties"
    }
    search_deployed(sm, package(2, "Deployed"), package(3, "Deployed"), untagged)
    sm.add_client_error(
        "describe_model_package", "ValidationException", "ModelPackage does not exist",
        expected_params={"ModelPackageName": arn(1)},
    )  # fmt: skip
    sm.add_response("describe_model_package", package(3, "Deployed"), {"ModelPackageName": arn(3)})
    bare = {
        k: v
        for k, v in package(4, "DeploymentFailed").items()
        if k not in ("ModelLifeCycle", "CustomerMetadataProperties")
    }
    sm.add_response("describe_model_package", bare, {"ModelPackageName": arn(4)})
    no_metadata = {
        k: v for k, v in package(5, "Deployed").items() if k != "CustomerMetadataProperties"
    }
    sm.add_response("describe_model_package", no_metadata, {"ModelPackageName": arn(5)})
    records(sm, 3)
    sm.add_client_error(
        "delete_inference_component", "ValidationException", "busy",
        expected_params={"InferenceComponentName": f"{TASK_PREFIX}1"},
    )  # fmt: skip
    sm.add_client_error(
        "delete_inference_component", "ThrottlingException", "slow down",
        expected_params={"InferenceComponentName": f"{TASK_PREFIX}4"},
    )  # fmt: skip
    deletes(sm, f"{TASK_PREFIX}5")
    run, _ = make(sagemaker, runtime)
    outcome = run.deploy(arn(2))
    assert [u["ModelPackageArn"] for u in sent.updates] == [arn(2), arn(3)]
    assert sent.updates[1]["ModelLifeCycle"]["StageStatus"] == "Retired"
    assert outcome == {
        "outcome": "deployed",
        "detail": f"smoke test passed on {ENDPOINT}/{COMPONENT}; "
        f"deleting {TASK_PREFIX}1 failed: An error occurred (ValidationException) when calling "
        "the DeleteInferenceComponent operation: busy; "
        f"deleting {TASK_PREFIX}4 failed: An error occurred (ThrottlingException) when calling "
        "the DeleteInferenceComponent operation: slow down",
    }


def test_a_version_without_metadata_or_history_has_not_passed_staging() -> None:
    assert deployer.passed_staging({}) is False
    assert deployer.passed_staging({"CustomerMetadataProperties": {}}) is False


LONG = {"generated_text": "x" * 300}  # another server's schema, longer than the detail keeps


@pytest.mark.parametrize(
    ("answer_or_error", "passed", "detail"),
    [
        (
            chat_answer("A report by Thursday."),
            True,
            f"smoke test passed on {ENDPOINT}/{COMPONENT}",
        ),
        (answer({"choices": []}), False, "smoke test failed: no answer in {'choices': []}"),
        (answer(LONG), False, f"smoke test failed: no answer in {str(LONG)[:200]}"),
        (answer(None), False, "smoke test failed: no answer in None"),
        (
            ("ModelError", "the adapter failed to load"),
            False,
            "smoke test failed: ModelError: An error occurred (ModelError) when calling the "
            "InvokeEndpoint operation: the adapter failed to load",
        ),
    ],
)
def test_the_smoke_test_passes_only_on_a_chat_completion_with_text(
    clients, answer_or_error: Any, passed: bool, detail: str
) -> None:
    sagemaker, runtime, _, rt = clients
    if isinstance(answer_or_error, tuple):
        code, message = answer_or_error
        rt.add_client_error("invoke_endpoint", code, message, expected_params=smoke_request())
    else:
        rt.add_response("invoke_endpoint", answer_or_error, smoke_request())
    run, _ = make(sagemaker, runtime)
    assert run.smoke(COMPONENT, SMOKE) == (passed, detail)


def test_a_component_described_without_its_specification_yet_is_waited_for(clients) -> None:
    """DescribeInferenceComponent's Specification and its Container are optional members: a
    component starting may be described without them, and is looked at again."""
    sagemaker, runtime, sm, _ = clients
    no_specification = {k: v for k, v in component("Creating").items() if k != "Specification"}
    no_container = component("Creating") | {
        "Specification": {"BaseInferenceComponentName": BASE_COMPONENT}
    }
    for described in (no_specification, no_container, component("InService")):
        sm.add_response(
            "describe_inference_component", described, {"InferenceComponentName": COMPONENT}
        )
    run, slept = make(sagemaker, runtime)
    assert run.in_service(COMPONENT, NEW_ADAPTER)[0] is True
    assert slept == [15, 15]


NOT_PENDING = {k: v for k, v in package(2, "PendingDeployment").items() if k != "ModelLifeCycle"}


def test_a_version_never_promoted_is_skipped(clients) -> None:
    sagemaker, runtime, sm, _ = clients
    sm.add_response("describe_model_package", NOT_PENDING, {"ModelPackageName": arn(2)})
    run, _ = make(sagemaker, runtime)
    assert run.deploy(arn(2)) == {
        "outcome": "skipped",
        "detail": f"{arn(2)} is not pending in staging",
    }


def bare(**kept: Any) -> dict[str, Any]:
    """A pending version with some members removed (None) or replaced."""
    full = package(2, "PendingDeployment")
    full = {
        k: v for k, v in full.items() if k not in ("ModelApprovalStatus", "ModelPackageVersion")
    }
    return {k: v for k, v in (full | kept).items() if v is not None}


METADATA = package(2, "Deployed")["CustomerMetadataProperties"]


@pytest.mark.parametrize(
    ("described", "why"),
    [
        (bare(), "version ? is not approved; only an approved version is deployed"),
        (bare(ModelApprovalStatus="Approved", ModelPackageVersion=2, CustomerMetadataProperties=None),
         "version 2 is a unnamed adapter; the endpoint's vLLM serves LoRA adapters only (lora, qlora)"),
        (bare(ModelApprovalStatus="Approved", ModelPackageVersion=2,
              CustomerMetadataProperties=METADATA | {"lora_r": "65"}),
         "version 2 has LoRA rank 65, and the endpoint loads ranks up to 64: raise "
         "serving.max_lora_rank in cdk.json, or train at a lower LoraRank"),
        (bare(ModelApprovalStatus="Approved", ModelPackageVersion=2,
              CustomerMetadataProperties=METADATA | {"lora_r": "64"}), ""),  # at the limit
        (bare(ModelApprovalStatus="Approved", ModelPackageVersion=2,
              CustomerMetadataProperties=METADATA | {"peft_method": "lora"}), ""),
    ],
)  # fmt: skip
def test_each_refusal_reads_the_version_as_described_members_absent_or_not(
    clients, described: dict[str, Any], why: str
) -> None:
    sagemaker, runtime, _, _ = clients
    run, _ = make(sagemaker, runtime)
    assert run.refusal(described) == why


def test_a_version_with_no_metadata_is_refused_and_recorded(clients) -> None:
    """Whoever set it pending, a version that records nothing about itself is refused, and the
    refusal is its history's first entry."""
    sagemaker, runtime, sm, _ = clients
    sent = Recorder(sagemaker)
    described = bare(ModelApprovalStatus="Approved", ModelPackageVersion=2,
                     CustomerMetadataProperties=None)  # fmt: skip
    sm.add_response("describe_model_package", described, {"ModelPackageName": arn(2)})
    records(sm, 2)
    run, _ = make(sagemaker, runtime)
    assert run.deploy(arn(2))["outcome"] == "refused"
    (update,) = sent.updates
    (decision,) = decode_history(update["CustomerMetadataProperties"])
    assert (decision.action, decision.before, decision.after) == (
        "refuse", "Approved/staging:PendingDeployment", "Approved/staging:DeploymentFailed",
    )  # fmt: skip


def test_a_failed_component_without_a_reason_says_so_plainly(clients) -> None:
    sagemaker, runtime, sm, _ = clients
    sm.add_response(
        "describe_inference_component", component("Failed"), {"InferenceComponentName": COMPONENT}
    )
    run, _ = make(sagemaker, runtime)
    assert run.in_service(COMPONENT, NEW_ADAPTER) == (False, f"component {COMPONENT} failed: ")


def test_a_version_that_names_no_task_fails_before_anything_changes(clients) -> None:
    sagemaker, runtime, sm, _ = clients
    sent = Recorder(sagemaker)
    metadata = {k: v for k, v in METADATA.items() if k != "task"}
    described = package(2, "PendingDeployment") | {"CustomerMetadataProperties": metadata}
    sm.add_response("describe_model_package", described, {"ModelPackageName": arn(2)})
    records(sm, 2)
    run, _ = make(sagemaker, runtime)
    assert run.deploy(arn(2)) == {
        "outcome": "failed",
        "detail": "cannot deploy the version: ValueError: the version names no task",
    }
    (decision,) = decode_history(sent.updates[0]["CustomerMetadataProperties"])
    assert (decision.action, decision.after) == ("fail", "Approved/staging:DeploymentFailed")
