"""Promotion through the stages, on both registry backends: the guards, one live version per
task and stage, the deployer's outcome, and a history that keeps every decision."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from pipelines.functions.model_lifecycle import (
    DECISION_KEY,
    METADATA_LIMIT,
    Decision,
    decode_history,
    encode_decision,
    history_entries,
    one_line,
)
from pipelines.functions.model_lifecycle import recorded as recorded_metadata
from pipelines.functions.registered_adapter import TASK
from pipelines.registry import (
    LocalRegistry,
    Registration,
    RegistryError,
    SageMakerRegistry,
    archive,
    decide,
    promote,
    record_deployment,
)

GROUP = "adapters"


def register(registry: LocalRegistry, task: str = "dialogue-summary") -> int:
    return registry.register(
        Registration(
            group=GROUP,
            model_data_url=f"s3://bucket/models/{task}/model.tar.gz",
            status="PendingManualApproval",
            metadata={TASK: task, "smoke_test": "true"},  # approval needs --force
            evaluation_uri=None,
            evaluation=None,
            description="adapter",
        )
    ).version


@pytest.fixture
def registry(tmp_path: Path) -> LocalRegistry:
    return LocalRegistry(tmp_path / "registry.sqlite", GROUP)


def approved(registry: LocalRegistry, task: str = "dialogue-summary") -> int:
    version = register(registry, task)
    decide(registry, version, "Approved", who="ana", why="reviewed", force=True)
    return version


def staged(registry: LocalRegistry, task: str = "dialogue-summary") -> int:
    version = approved(registry, task)
    promote(registry, version, "staging", who="ana", why="to staging")
    record_deployment(registry, version, passed=True, detail="smoke test passed", who="deployer")
    return version


def where(registry: LocalRegistry, version: int) -> str:
    return str(registry.get(version).lifecycle)


def refusal(registry: LocalRegistry, version: int, to: str) -> str:
    """The one-line reason a promotion is refused (it must be refused)."""
    with pytest.raises(RegistryError) as refused:
        promote(registry, version, to, who="ana", why="try")
    return str(refused.value)


def test_a_version_goes_approve_staging_production_and_the_history_keeps_each_step(
    registry: LocalRegistry,
) -> None:
    version = register(registry)
    assert where(registry, version) == "development:Registered"
    decide(registry, version, "Approved", who="ana", why="reviewed", force=True)
    promote(registry, version, "staging", who="ana", why="try it")
    assert where(registry, version) == "staging:PendingDeployment"
    record_deployment(registry, version, passed=True, detail="smoke ok", who="deployer")
    assert where(registry, version) == "staging:Deployed"
    promote(registry, version, "production", who="bo", why="ship")
    record_deployment(registry, version, passed=True, detail="smoke ok", who="deployer")
    final = registry.get(version)
    assert str(final.lifecycle) == "production:Deployed" and final.status == "Approved"
    assert [(d.who, d.action, d.before, d.after) for d in final.history] == [
        ("ana", "force-approve", "PendingManualApproval/development:Registered",
         "Approved/development:Registered"),
        ("ana", "promote", "Approved/development:Registered", "Approved/staging:PendingDeployment"),
        ("deployer", "deploy", "Approved/staging:PendingDeployment", "Approved/staging:Deployed"),
        ("bo", "promote", "Approved/staging:Deployed", "Approved/production:PendingDeployment"),
        ("deployer", "deploy", "Approved/production:PendingDeployment",
         "Approved/production:Deployed"),
    ]  # fmt: skip
    assert final.history[3].why == "ship"


def test_each_outcome_is_recorded_with_its_action_state_and_description(
    registry: LocalRegistry,
) -> None:
    """A failed deployment, a second try that deploys and retires the task's old version, and
    archiving that one: each leaves its action, state, description and reason, and a version
    no longer pending cannot be given an outcome."""
    old = staged(registry)
    new = approved(registry)
    promote(registry, new, "staging", who="ana", why="try")
    record_deployment(registry, new, passed=False, detail="smoke test failed: boom", who="d")
    promote(registry, new, "staging", who="ana", why="again")
    record_deployment(registry, new, passed=True, detail="smoke test passed", who="d")
    archive(registry, old, who="ana", why="superseded")

    def last(version: int) -> tuple[str, str, str, str, str]:
        current = registry.get(version)
        decision = current.history[-1]
        return (
            decision.action, decision.after, current.lifecycle.description, decision.why,
            decision.who,
        )  # fmt: skip

    fail = registry.get(new).history[-3]
    assert (fail.action, fail.after, fail.why) == (
        "fail", "Approved/staging:DeploymentFailed", "smoke test failed: boom",
    )  # fmt: skip
    assert last(new) == (
        "deploy", "Approved/staging:Deployed", "smoke test passed", "smoke test passed", "d",
    )  # fmt: skip
    retire = registry.get(old).history[-2]
    assert (retire.action, retire.after, retire.why, retire.who) == (
        "retire", "Approved/staging:Retired", f"version {new} took staging over", "d",
    )  # fmt: skip
    assert last(old) == (
        "archive", "Approved/archived:Archived", "archived", "superseded", "ana",
    )  # fmt: skip
    with pytest.raises(RegistryError) as settled:
        record_deployment(registry, new, passed=True, detail="again", who="d")
    assert str(settled.value) == f"version {new} is staging:Deployed, not pending a deployment"


def test_a_retired_version_says_which_version_replaced_it(registry: LocalRegistry) -> None:
    old = staged(registry)
    new = staged(registry)
    retired = registry.get(old)
    assert (str(retired.lifecycle), retired.lifecycle.description) == (
        "staging:Retired",
        f"replaced by version {new}",
    )


def test_a_second_approval_adds_to_the_history_instead_of_overwriting(
    registry: LocalRegistry,
) -> None:
    version = register(registry)
    decide(registry, version, "Approved", who="ana", why="first look", force=True)
    decide(registry, version, "Approved", who="bo", why="second look", force=True)
    history = registry.get(version).history
    assert [(d.who, d.why.split(" [")[0]) for d in history] == [
        ("ana", "first look"),
        ("bo", "second look"),
    ]


def test_production_needs_a_passed_staging_smoke_test(registry: LocalRegistry) -> None:
    version = approved(registry)
    assert refusal(registry, version, "production") == (
        f"version {version} has not passed a staging smoke test (it is development:Registered); "
        "promote it to staging first"
    )
    promote(registry, version, "staging", who="ana", why="to staging")
    record_deployment(registry, version, passed=False, detail="smoke test failed", who="d")
    with pytest.raises(RegistryError, match="has not passed a staging smoke test"):
        promote(registry, version, "production", who="ana", why="anyway")
    assert where(registry, version) == "staging:DeploymentFailed"


@pytest.mark.parametrize(
    ("status", "hint"),
    [("PendingManualApproval", " (`peftops models approve` first)"), ("Rejected", "")],
)
def test_only_an_approved_version_is_promoted(
    registry: LocalRegistry, status: str, hint: str
) -> None:
    version = register(registry)
    if status == "Rejected":
        decide(registry, version, "Rejected", who="ana", why="no", force=False)
    assert refusal(registry, version, "staging") == (
        f"version {version} is {status}; only an approved version can be promoted{hint}"
    )
    assert where(registry, version) == "development:Registered"


def test_a_version_is_not_promoted_to_the_stage_it_holds(registry: LocalRegistry) -> None:
    version = staged(registry)
    assert refusal(registry, version, "staging") == (
        f"version {version} is already in staging (Deployed)"
    )
    # A failed deployment holds nothing: the same stage may be tried again.
    other = approved(registry, task="other-task")
    promote(registry, other, "staging", who="ana", why="try")
    record_deployment(registry, other, passed=False, detail="smoke test failed", who="d")
    promote(registry, other, "staging", who="ana", why="retry")
    assert where(registry, other) == "staging:PendingDeployment"


def test_a_production_version_does_not_go_back_to_staging(registry: LocalRegistry) -> None:
    version = staged(registry)
    promote(registry, version, "production", who="bo", why="ship")
    record_deployment(registry, version, passed=True, detail="smoke ok", who="deployer")
    assert refusal(registry, version, "staging") == (
        f"version {version} is in production; it does not go back to staging"
    )
    assert where(registry, version) == "production:Deployed"


def test_only_the_promotion_stages_are_targets(registry: LocalRegistry) -> None:
    version = approved(registry)
    assert refusal(registry, version, "qa") == "--to 'qa': promote to one of staging, production"


def test_a_promotion_is_pending_with_its_reason(registry: LocalRegistry) -> None:
    from pipelines.registry.lifecycle import promotion

    version = registry.get(approved(registry))
    pending = promotion(version, "staging", registry.list())
    assert (str(pending), pending.description) == (
        "staging:PendingDeployment",
        "promoted to staging",
    )


def test_an_archived_version_is_never_promoted(registry: LocalRegistry) -> None:
    version = approved(registry)
    archived = archive(registry, version, who="ana", why="superseded")
    assert (str(archived.lifecycle), archived.lifecycle.description) == (
        "archived:Archived",
        "archived",
    )
    with pytest.raises(RegistryError, match="is archived; archived versions cannot be promoted"):
        promote(registry, version, "staging", who="ana", why="again")
    with pytest.raises(RegistryError) as twice:
        archive(registry, version, who="ana", why="again")
    assert str(twice.value) == f"version {version} is already archived"


def test_a_stage_holds_one_version_per_task(registry: LocalRegistry) -> None:
    old = staged(registry)
    other_task = staged(registry, task="meeting-notes")
    new = approved(registry)
    promote(registry, new, "staging", who="ana", why="newer")
    # While the new one is pending, the old one still serves and nothing else may enter.
    assert where(registry, old) == "staging:Deployed"
    third = approved(registry)
    with pytest.raises(RegistryError) as refused:
        promote(registry, third, "staging", who="ana", why="also")
    assert str(refused.value) == (
        f"version {new} of task dialogue-summary is being deployed to staging; a stage holds "
        "one version per task: wait for its outcome"
    )
    record_deployment(registry, new, passed=True, detail="smoke ok", who="deployer")
    assert where(registry, new) == "staging:Deployed"
    assert where(registry, old) == "staging:Retired"
    assert registry.get(old).history[-1].action == "retire"
    assert where(registry, other_task) == "staging:Deployed"  # another task is untouched


def test_a_failed_smoke_test_leaves_the_previous_version_serving(registry: LocalRegistry) -> None:
    old = staged(registry)
    new = approved(registry)
    promote(registry, new, "staging", who="ana", why="newer")
    record_deployment(registry, new, passed=False, detail="smoke test failed: boom", who="d")
    assert where(registry, old) == "staging:Deployed"
    failed = registry.get(new)
    assert str(failed.lifecycle) == "staging:DeploymentFailed"
    assert failed.lifecycle.description == "smoke test failed: boom"


def test_a_serving_version_is_neither_rejected_nor_archived(registry: LocalRegistry) -> None:
    version = staged(registry)
    with pytest.raises(RegistryError) as refused:
        decide(registry, version, "Rejected", who="ana", why="oops", force=False)
    assert str(refused.value) == (
        f"version {version} holds staging for task dialogue-summary; promote another version "
        "there before rejecting it"
    )
    with pytest.raises(RegistryError) as refused:
        archive(registry, version, who="ana", why="oops")
    assert str(refused.value) == (
        f"version {version} holds staging for task dialogue-summary; promote another version "
        "there first"
    )


def test_an_older_registry_file_reads_as_development(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # the first release's table: no stages, no history
        db.execute(
            "CREATE TABLE model_versions (model_group TEXT NOT NULL, version INTEGER NOT NULL, "
            "status TEXT NOT NULL, model_data_url TEXT NOT NULL, created TEXT NOT NULL, "
            "metadata TEXT NOT NULL, evaluation TEXT, evaluation_uri TEXT, description TEXT "
            "NOT NULL, approval_description TEXT NOT NULL DEFAULT '', inference_specification "
            "TEXT, PRIMARY KEY (model_group, version))"
        )
        db.execute(
            "INSERT INTO model_versions VALUES ('g', 1, 'Approved', 's3://b/m.tar.gz', 't', "
            "'{}', NULL, NULL, 'd', 'ana: ok', NULL)"
        )
    old = LocalRegistry(path, "g")
    (version,) = old.list()
    assert str(version.lifecycle) == "development:Registered" and version.history == ()
    assert version.task == "dialogue-summary"
    promote(old, 1, "staging", who="ana", why="upgrade")  # the first write adds the columns
    assert where(old, 1) == "staging:PendingDeployment"


# --- SageMaker: ModelLifeCycle and the history in the version's metadata --------------------


def package(version: int, status: str, cycle: dict[str, str] | None, metadata: dict) -> dict:
    described: dict[str, Any] = {
        "ModelPackageGroupName": GROUP,
        "ModelPackageVersion": version,
        "ModelPackageArn": f"arn:aws:sagemaker:us-east-1:111122223333:model-package/{GROUP}/{version}",
        "ModelApprovalStatus": status,
        "CreationTime": "2026-12-01T00:00:00Z",
        "CustomerMetadataProperties": metadata,
        "ModelPackageStatus": "Completed",
        "ModelPackageName": GROUP,
        "ModelPackageStatusDetails": {"ValidationStatuses": []},
    }
    if cycle:
        described["ModelLifeCycle"] = cycle
    return described


def test_sagemaker_promotion_sets_the_model_life_cycle_and_appends_a_decision() -> None:
    """Every request is validated against the service model by Stubber; moto has no
    ModelLifeCycle."""
    client = boto3.client("sagemaker", region_name="us-east-1")
    arn = f"arn:aws:sagemaker:us-east-1:111122223333:model-package/{GROUP}/1"
    lineage = {TASK: "dialogue-summary", "base_model": "m"}
    approval = Decision("2026-12-01T00:00:00+00:00", "ana", "approve",
                        "PendingManualApproval/development:Registered",
                        "Approved/development:Registered", "reviewed")  # fmt: skip
    before = package(
        1, "Approved", None, {**lineage, f"{DECISION_KEY}001": encode_decision(approval)}
    )
    after_cycle = {
        "Stage": "staging",
        "StageStatus": "PendingDeployment",
        "StageDescription": "try",
    }
    listing = {"ModelPackageSummaryList": [{
        "ModelPackageGroupName": GROUP, "ModelPackageVersion": 1, "ModelPackageArn": arn,
        "CreationTime": "2026-12-01T00:00:00Z", "ModelPackageStatus": "Completed",
        "ModelApprovalStatus": "Approved",
    }]}  # fmt: skip
    search = {"Results": [{"ModelPackage": before}]}
    with Stubber(client) as stub:
        stub.add_response("list_model_packages", listing, {"ModelPackageGroupName": GROUP,
                          "SortBy": "CreationTime", "SortOrder": "Ascending"})  # fmt: skip
        stub.add_response("describe_model_package", before, {"ModelPackageName": arn})
        stub.add_response("search", search, {"Resource": "ModelPackage",
                          "SearchExpression": ANY, "SortBy": "CreationTime",
                          "SortOrder": "Ascending", "MaxResults": 100})  # fmt: skip
        stub.add_response("list_model_packages", listing, {"ModelPackageGroupName": GROUP,
                          "SortBy": "CreationTime", "SortOrder": "Ascending"})  # fmt: skip
        stub.add_response("describe_model_package", before, {"ModelPackageName": arn})
        expected_update = {
            "ModelPackageArn": arn,
            "ModelLifeCycle": after_cycle,
            "CustomerMetadataProperties": ANY,
        }
        stub.add_response("update_model_package", {"ModelPackageArn": arn}, expected_update)
        recorded: dict[str, Any] = {}

        def capture(**kwargs: Any) -> None:
            recorded.update(kwargs.get("params", {}))

        client.meta.events.register("provide-client-params.sagemaker.UpdateModelPackage", capture)
        after_metadata = {**lineage, f"{DECISION_KEY}001": encode_decision(approval),
                          f"{DECISION_KEY}002": "x=ana=promote=a=b=try"}  # fmt: skip
        stub.add_response(
            "describe_model_package",
            package(1, "Approved", after_cycle, after_metadata),
            {"ModelPackageName": arn},
        )
        registry = SageMakerRegistry(GROUP, sagemaker_client=client, s3_client=object())
        promoted = promote(registry, 1, "staging", who="ana", why="try")
        stub.assert_no_pending_responses()
    assert str(promoted.lifecycle) == "staging:PendingDeployment"
    assert promoted.metadata == lineage  # decisions are history, not lineage
    # The whole metadata goes back with the new decision appended; nothing is rewritten.
    sent = recorded["CustomerMetadataProperties"]
    assert {k: v for k, v in sent.items() if not k.startswith(DECISION_KEY)} == lineage
    history = decode_history(sent)
    assert history[0] == approval
    assert (history[1].who, history[1].action, history[1].before, history[1].after) == (
        "ana", "promote", "Approved/development:Registered", "Approved/staging:PendingDeployment"
    )  # fmt: skip
    assert all(METADATA_VALUE.fullmatch(v) for v in sent.values())


# CustomerMetadataValue: at most 256 characters of `[\p{L}\p{Z}\p{N}_.:\/=+\-@]*`, checked by
# the service (botocore does not); this is that set with Python's \w for letters and digits.
METADATA_VALUE = re.compile(r"[\w .:/=+\-@]{0,256}")


def test_a_decision_entry_is_a_value_sagemaker_accepts() -> None:
    hostile = Decision(
        "2026-12-01T00:00:00+00:00", "ana=b|c", "fail", "Approved/staging:PendingDeployment",
        "Approved/staging:DeploymentFailed",
        'smoke test failed: KeyError("generated_text") (rank 64 > 16, #3)\n' * 10,
    )  # fmt: skip
    encoded = encode_decision(hostile)
    assert METADATA_VALUE.fullmatch(encoded), encoded
    (decoded,) = decode_history({f"{DECISION_KEY}001": encoded})
    assert decoded.who == "ana_b_c" and decoded.at == hostile.at
    assert (decoded.before, decoded.after) == (hostile.before, hostile.after)
    assert decoded.why.startswith("smoke test failed: KeyError__generated_text__")
    assert json.dumps(decoded.__dict__)  # plain strings all through


def test_waiting_for_a_deployer_returns_its_outcome_or_says_it_is_still_pending(
    registry: LocalRegistry,
) -> None:
    from pipelines.registry.decisions import awaited_deployment

    version = approved(registry)
    promote(registry, version, "staging", who="ana", why="try")
    clock = iter(range(0, 1000, 15))
    polls: list[float] = []

    def deployer_finishes(seconds: float) -> None:  # the deployer records while we wait
        polls.append(seconds)
        if len(polls) == 2:
            record_deployment(registry, version, passed=True, detail="smoke ok", who="d")

    done = awaited_deployment(
        registry, version, timeout_s=300, sleep=deployer_finishes, monotonic=lambda: next(clock)
    )
    assert str(done.lifecycle) == "staging:Deployed" and polls == [15.0, 15.0]

    other = approved(registry, task="meeting-notes")
    promote(registry, other, "staging", who="ana", why="try")
    waited: list[float] = []
    at_deadline = iter([0, 15, 30, 45])  # gives up at the deadline, not a poll past it
    with pytest.raises(
        RegistryError, match=f"version {other} is still pending in staging after 30 s"
    ):
        awaited_deployment(
            registry, other, timeout_s=30, sleep=waited.append, monotonic=lambda: next(at_deadline)
        )
    assert waited == [15.0]


@pytest.mark.parametrize(
    ("entry", "fields"),
    [
        # As written: six fields.
        ("t=ana=approve=a=b=gate passed", ("t", "ana", "approve", "a", "b", "gate passed")),
        # Written by hand with fewer: the missing ones read empty.
        ("t=ana=approve", ("t", "ana", "approve", "", "", "")),
        ("t", ("t", "", "", "", "", "")),
        # More separators than fields: the rest is the reason's.
        ("t=ana=approve=a=b=why=with=more", ("t", "ana", "approve", "a", "b", "why=with=more")),
    ],
)
def test_a_history_entry_reads_as_six_fields_whatever_was_written(
    entry: str, fields: tuple[str, ...]
) -> None:
    (decoded,) = decode_history({f"{DECISION_KEY}001": entry})
    assert decoded == Decision(*fields)


def test_history_is_numbered_from_one_and_read_back_oldest_first() -> None:
    decisions = tuple(
        Decision(f"2026-12-0{i}T00:00:00+00:00", "ana", "approve", "a", "b", f"reason {i}")
        for i in range(1, 4)
    )
    entries = history_entries(decisions)
    assert list(entries) == ["decision-001", "decision-002", "decision-003"]
    assert decode_history({"base_model": "m", **entries}) == decisions


def test_a_decision_is_recorded_while_the_version_has_room_for_it() -> None:
    """SageMaker holds 50 metadata entries: a version with 49 takes one more decision, one
    with 50 is refused in one line that says what to do."""
    decision = Decision("t", "ana", "approve", "a", "b", "why")
    lineage = {f"key{i}": "v" for i in range(METADATA_LIMIT - 1)}
    assert len(recorded_metadata(lineage, decision)) == METADATA_LIMIT
    full = {**lineage, "one-more": "v"}
    with pytest.raises(ValueError) as refused:
        recorded_metadata(full, decision)
    assert str(refused.value) == (
        "the version holds 50 metadata entries, SageMaker's limit: no room to record a "
        "decision; register the adapter again"
    )


def test_a_description_is_one_line_of_at_most_1024_characters() -> None:
    assert one_line("a\nb\t c") == "a b c"
    assert len(one_line("x" * 2000)) == 1024
