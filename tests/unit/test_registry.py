"""The registry interface on both backends: SQLite, and SageMaker's Model Registry (moto)."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from pipelines.functions.model_lifecycle import Decision, history_entries
from pipelines.functions.registered_adapter import EVALUATION_DIGEST, evaluation_digest
from pipelines.registry import (
    LocalRegistry,
    Registration,
    RegistryError,
    SageMakerRegistry,
    approval_verdict,
    decide,
    open_registry,
    other_groups,
)
from tests.evaluations import evaluation as make_evaluation

GROUP = "peftops-adapters"
THRESHOLDS = {
    "metric_tolerance": "0.02",
    "min_metric_gain": "0.01",
    "peft_method": "qlora",
    "lora_r": "16",
}


def evaluation(adapter: float, full: float, base: float) -> dict[str, Any]:
    return make_evaluation(adapter=adapter, full_finetune=full, base=base)


PASSING = evaluation(adapter=0.44, full=0.45, base=0.22)
TRAILING = evaluation(adapter=0.40, full=0.45, base=0.22)


def recorded(ev: dict[str, Any] | None) -> dict[str, str]:
    """The metadata a pipeline registers: the thresholds and the evaluation's digest."""
    if ev is None:
        return THRESHOLDS
    return THRESHOLDS | {EVALUATION_DIGEST: evaluation_digest(json.dumps(ev).encode())}


def register(
    registry: Any, ev: dict[str, Any] | None, uri: str | None = None, *, group: str = GROUP
) -> Any:
    return registry.register(
        Registration(
            group=group,
            model_data_url="s3://bucket/models/adapter/model.tar.gz",
            status="PendingManualApproval",
            metadata=recorded(ev),
            evaluation_uri=uri,
            evaluation=ev,
            description="adapter",
        )
    )


@pytest.fixture
def local(tmp_path: Path) -> LocalRegistry:
    return LocalRegistry(
        tmp_path / "registry.sqlite", GROUP, clock=lambda: "2026-11-27T00:00:00+00:00"
    )


def test_local_register_list_get(local: LocalRegistry) -> None:
    first = register(local, PASSING)
    second = register(local, TRAILING)
    assert (first.version, second.version) == (1, 2)
    assert [v.version for v in local.list()] == [1, 2]
    assert local.list("Approved") == []
    assert local.get(1).evaluation == PASSING and local.get(1).metadata == recorded(PASSING)
    with pytest.raises(RegistryError, match="has no version 7"):
        local.get(7)


def test_gate_verdict_uses_the_recorded_thresholds(local: LocalRegistry) -> None:
    assert approval_verdict(register(local, PASSING)) == (True, "gate passed")
    assert approval_verdict(register(local, TRAILING))[1].startswith(
        "its rougeL may trail the full fine-tune by up to 0.0500"
    )
    assert approval_verdict(register(local, None)) == (False, "its evaluation is missing")


def test_approval_is_refused_for_a_failed_gate_unless_forced(local: LocalRegistry) -> None:
    register(local, TRAILING)
    with pytest.raises(RegistryError, match="version 1 cannot be approved: its rougeL may trail"):
        decide(local, 1, "Approved", who="ana", why="looks fine", force=False)
    assert local.get(1).status == "PendingManualApproval"
    forced = decide(local, 1, "Approved", who="ana", why="business exception", force=True)
    assert forced.status == "Approved"
    assert forced.approval_description.startswith(
        "ana: business exception [forced: its rougeL may trail"
    )


def test_a_smoke_test_version_is_approved_only_when_forced(local: LocalRegistry) -> None:
    local.register(
        Registration(
            group=GROUP,
            model_data_url="s3://bucket/models/adapter/model.tar.gz",
            status="PendingManualApproval",
            metadata=recorded(PASSING) | {"smoke_test": "true"},  # its gate passed
            evaluation_uri=None,
            evaluation=PASSING,
            description="adapter",
        )
    )
    with pytest.raises(RegistryError, match="version 1 cannot be approved: it is a smoke test's"):
        decide(local, 1, "Approved", who="ana", why="looks fine", force=False)
    forced = decide(local, 1, "Approved", who="ana", why="demo", force=True)
    assert forced.approval_description.startswith("ana: demo [forced: it is a smoke test's")


def test_approve_and_reject_record_who_and_why(local: LocalRegistry) -> None:
    register(local, PASSING)
    register(local, None)
    assert (
        decide(
            local, 1, "Approved", who="ana", why="beats baseline", force=False
        ).approval_description
        == "ana: beats baseline"
    )
    rejected = decide(local, 2, "Rejected", who="bo", why="no evaluation", force=False)
    assert (rejected.status, rejected.approval_description) == ("Rejected", "bo: no evaluation")


def test_missing_local_registry_is_an_error_not_a_new_file(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path / "nope.sqlite", GROUP)
    with pytest.raises(RegistryError, match="no local registry here"):
        registry.list()
    assert not (tmp_path / "nope.sqlite").exists()


def test_open_registry_specs(tmp_path: Path) -> None:
    assert isinstance(open_registry(f"local:{tmp_path}/r.sqlite"), LocalRegistry)
    with pytest.raises(RegistryError, match="use local:PATH, PATH or sagemaker:GROUP"):
        open_registry("s3://x")


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        sagemaker = boto3.client("sagemaker", region_name="us-east-1")
        s3 = boto3.client("s3", region_name="us-east-1")
        sagemaker.create_model_package_group(ModelPackageGroupName=GROUP)
        s3.create_bucket(Bucket="evaluations")
        yield sagemaker, s3


def test_sagemaker_backend_register_list_compare_approve_reject(aws) -> None:
    sagemaker, s3 = aws
    s3.put_object(Bucket="evaluations", Key="run-1/evaluation.json", Body=json.dumps(PASSING))
    s3.put_object(Bucket="evaluations", Key="run-2/evaluation.json", Body=json.dumps(TRAILING))
    registry = SageMakerRegistry(GROUP, sagemaker_client=sagemaker, s3_client=s3)
    first = register(registry, PASSING, "s3://evaluations/run-1/evaluation.json")
    second = register(registry, TRAILING, "s3://evaluations/run-2/evaluation.json")
    assert (first.version, second.version) == (1, 2)
    assert first.status == "PendingManualApproval" and first.metadata == recorded(PASSING)
    assert [v.version for v in registry.list()] == [1, 2]
    # The evaluation is read back from the model metrics' S3 object, as `compare` shows it.
    assert registry.get(1).evaluation == PASSING and registry.get(2).evaluation == TRAILING

    with pytest.raises(RegistryError, match="version 2 cannot be approved"):
        decide(registry, 2, "Approved", who="ana", why="ship it", force=False)
    assert registry.get(2).status == "PendingManualApproval"

    approved = decide(registry, 1, "Approved", who="ana", why="beats the baseline", force=False)
    assert (
        approved.status == "Approved" and approved.approval_description == "ana: beats the baseline"
    )
    assert [v.version for v in registry.list("Approved")] == [1]
    rejected = decide(registry, 2, "Rejected", who="bo", why="trails the baseline", force=False)
    assert rejected.status == "Rejected"
    with pytest.raises(RegistryError, match="has no version 9"):
        registry.get(9)


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[" * 100_000, b'{"models": ' + b"7" * 5000 + b"}", b"\xff\xfe", b""],
    ids=["malformed", "nested", "huge-number", "not-utf8", "empty"],
)
def test_one_unreadable_evaluation_does_not_hide_the_group(aws, body: bytes) -> None:
    sagemaker, s3 = aws
    s3.put_object(Bucket="evaluations", Key="run-1/evaluation.json", Body=json.dumps(PASSING))
    s3.put_object(Bucket="evaluations", Key="run-2/evaluation.json", Body=body)
    registry = SageMakerRegistry(GROUP, sagemaker_client=sagemaker, s3_client=s3)
    register(registry, PASSING, "s3://evaluations/run-1/evaluation.json")
    register(registry, PASSING, "s3://evaluations/run-2/evaluation.json")
    listed = registry.list()
    assert [v.version for v in listed] == [1, 2]
    assert listed[0].evaluation == PASSING and listed[1].evaluation is None
    with pytest.raises(
        RegistryError, match="version 2 cannot be approved: its evaluation is missing"
    ):
        decide(registry, 2, "Approved", who="ana", why="ship it", force=False)


def test_an_evaluation_changed_after_registration_is_not_approved(aws) -> None:
    """Jobs may write evaluation prefixes; the registry records the digest of the evaluation
    the gate read, and approval trusts the S3 object only while it still matches."""
    sagemaker, s3 = aws
    uri = "s3://evaluations/run-1/evaluation.json"
    s3.put_object(Bucket="evaluations", Key="run-1/evaluation.json", Body=json.dumps(TRAILING))
    registry = SageMakerRegistry(GROUP, sagemaker_client=sagemaker, s3_client=s3)
    register(registry, TRAILING, uri)
    # Rewritten to pass the gate, with other spacing: the content differs, so the digest does.
    s3.put_object(
        Bucket="evaluations", Key="run-1/evaluation.json", Body=json.dumps(PASSING, indent=1)
    )
    assert "changed after registration" in approval_verdict(registry.list()[0])[1]
    with pytest.raises(RegistryError, match=f"evaluation at {uri} changed after registration"):
        decide(registry, 1, "Approved", who="ana", why="ship it", force=False)
    # The same content written again with other spacing is still the registered evaluation.
    s3.put_object(
        Bucket="evaluations", Key="run-1/evaluation.json", Body=json.dumps(TRAILING, indent=3)
    )
    assert registry.get(1).evaluation_sha256 == registry.get(1).metadata[EVALUATION_DIGEST]


def test_approval_needs_the_digest_recorded_at_registration(local: LocalRegistry) -> None:
    local.register(
        Registration(
            group=GROUP,
            model_data_url="s3://bucket/models/adapter/model.tar.gz",
            status="PendingManualApproval",
            metadata=THRESHOLDS,  # registered by hand, without the pipeline's digest
            evaluation_uri=None,
            evaluation=PASSING,
            description="adapter",
        )
    )
    with pytest.raises(RegistryError, match="its evaluation's digest was not recorded"):
        decide(local, 1, "Approved", who="ana", why="ship it", force=False)


def test_listing_a_group_costs_a_search_page_not_a_call_per_version(aws) -> None:
    sagemaker, s3 = aws
    registry = SageMakerRegistry(GROUP, sagemaker_client=sagemaker, s3_client=s3)
    for run in range(5):
        key = f"run-{run}/evaluation.json"
        s3.put_object(Bucket="evaluations", Key=key, Body=json.dumps(PASSING))
        register(registry, PASSING, f"s3://evaluations/{key}")
    calls: list[str] = []
    for client in (sagemaker, s3):
        client.meta.events.register("before-call.*.*", lambda model, **_: calls.append(model.name))
    listed = registry.list()
    assert [v.version for v in listed] == [1, 2, 3, 4, 5]
    assert all(v.evaluation == PASSING for v in listed)
    assert sorted(calls) == ["GetObject"] * 5 + ["Search"]


REGISTER_ONE = """
import sys
from pathlib import Path
from pipelines.registry import LocalRegistry, Registration
LocalRegistry(Path(sys.argv[1]), "g").register(
    Registration(group="g", model_data_url="s3://b/m/" + sys.argv[2], status="PendingManualApproval",
                 metadata={}, evaluation_uri=None, evaluation=None, description="")
)
"""


def test_twenty_concurrent_registrations_get_twenty_versions(tmp_path: Path) -> None:
    """Two runs that finish together must not lose a registration to a duplicate version
    number: the newest version is read under the write lock."""
    import subprocess
    import sys

    from tests.conftest import REPO

    path = tmp_path / "registry.sqlite"
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", REGISTER_ONE, str(path), str(i)],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(20)
    ]
    failures = [w.stderr.read() for w in writers if w.wait(timeout=120) != 0]
    assert failures == []
    versions = LocalRegistry(path, "g").list()
    assert [v.version for v in versions] == list(range(1, 21))
    assert len({v.model_data_url for v in versions}) == 20


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("not-a-database", "file is not a database"),
        ("wrong-schema", "no such column"),
        ("a-folder", "is a folder, not a registry file"),
        ("read-only", "the file is read-only; make it writable"),
    ],
)
def test_a_bad_registry_file_is_one_line_before_a_run_starts(
    tmp_path: Path, case: str, message: str
) -> None:
    import os
    import sqlite3

    path = tmp_path / "registry.sqlite"
    if case == "not-a-database":
        path.write_bytes(b"this is not sqlite" * 100)
    elif case == "wrong-schema":
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE model_versions (something TEXT)")
    elif case == "a-folder":
        path.mkdir()
    else:
        register(LocalRegistry(path, GROUP), PASSING)
        path.chmod(0o444)
        if os.access(path, os.W_OK):  # root ignores file modes
            pytest.skip("this user can write read-only files")
    registry = LocalRegistry(path, GROUP)
    with pytest.raises(RegistryError) as raised:
        registry.check_writable()
        register(registry, PASSING)
    assert message in str(raised.value) and str(path) in str(raised.value)
    assert "\n" not in str(raised.value)


def test_reading_an_empty_file_lists_nothing_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite"
    path.touch()
    registry = LocalRegistry(path, GROUP)
    assert registry.list() == []
    assert path.stat().st_size == 0  # no schema written by a read
    with pytest.raises(RegistryError, match="has no version 99999999999999999999999"):
        registry.get(99999999999999999999999)


@pytest.mark.parametrize("number", [2**63, 2**63 - 1, -(2**63), -(2**63) - 1, 0, 2])
def test_a_version_number_the_file_does_not_hold_is_one_line_whatever_its_size(
    tmp_path: Path, number: int
) -> None:
    registry = LocalRegistry(tmp_path / "registry.sqlite", GROUP)
    register(registry, PASSING)
    with pytest.raises(RegistryError) as missing:
        registry.get(number, group="other-group" if number == 2 else None)
    group = "other-group" if number == 2 else GROUP
    assert str(missing.value) == (
        f"model group {group} has no version {number}; see `peftops models list`"
    )


def test_decisions_are_stamped_in_utc() -> None:
    from pipelines.registry.local_backend import _now

    assert _now().endswith("+00:00")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
registrations = st.builds(
    Registration,
    group=st.sampled_from(["peftops-adapters", "group-b"]),
    model_data_url=st.text(max_size=20),
    status=st.sampled_from(["PendingManualApproval", "Approved", "Rejected"]),
    metadata=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4),
    evaluation_uri=st.none() | st.text(max_size=20),
    evaluation=st.none() | st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    description=st.text(max_size=20),
    inference_specification=st.none() | st.dictionaries(st.text(max_size=8), json_values, max_size=2),
    model_card=st.none()
    | st.fixed_dictionaries(
        {"ModelCardContent": st.one_of(st.just(""), json_values.map(json.dumps)),
         "ModelCardStatus": st.sampled_from(["Draft", "Approved"])}
    ),
    artifact_root=st.text(max_size=20),
)  # fmt: skip


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(entry=registrations)
def test_a_version_reads_back_exactly_as_it_was_registered(
    tmp_path: Path, entry: Registration
) -> None:
    """Every field of a registration, whatever its value, is what the local registry gives
    back: the fields as registered, the evaluation's digest from the text stored, the model
    card's content, a fresh version's lifecycle, and the inference specification stored as the
    cloud registry keeps it."""
    import sqlite3

    from pipelines.registry.versions import model_card_content

    path = tmp_path / f"{uuid.uuid4().hex}.sqlite"
    store = LocalRegistry(path, entry.group, clock=lambda: "2026-12-07T00:00:00+00:00")
    version = store.register(entry).version
    read = store.get(version)
    stored_evaluation = json.dumps(entry.evaluation) if entry.evaluation is not None else None
    assert (read.group, read.version, read.status, read.model_data_url, read.created) == (
        entry.group, 1, entry.status, entry.model_data_url, "2026-12-07T00:00:00+00:00",
    )  # fmt: skip
    assert (read.metadata, read.evaluation, read.evaluation_uri, read.description) == (
        entry.metadata, entry.evaluation, entry.evaluation_uri, entry.description,
    )  # fmt: skip
    assert read.evaluation_sha256 == (
        evaluation_digest(stored_evaluation.encode()) if stored_evaluation else None
    )
    assert read.arn == f"local:{path}#{entry.group}/1"
    assert read.model_card == model_card_content(entry.model_card)
    assert read.artifact_root == entry.artifact_root
    assert (str(read.lifecycle), read.lifecycle.description, read.history) == (
        "development:Registered", "", (),
    )  # fmt: skip
    with sqlite3.connect(path) as db:
        (specification,) = db.execute(
            "SELECT inference_specification FROM model_versions"
        ).fetchone()
    assert specification == (
        json.dumps(entry.inference_specification) if entry.inference_specification else None
    )


def test_every_approval_guard_gives_its_reason(local: LocalRegistry) -> None:
    """Each record approval needs, missing or broken, refuses with its own reason."""

    def version_with(metadata: dict[str, str], ev: dict[str, Any] | None = PASSING) -> Any:
        return local.register(
            Registration(GROUP, "s3://b/m.tar.gz", "PendingManualApproval", metadata, None, ev, "")
        )

    digest = recorded(PASSING)[EVALUATION_DIGEST]
    assert approval_verdict(version_with(THRESHOLDS)) == (
        False,
        "its evaluation's digest was not recorded at registration",
    )
    assert approval_verdict(version_with({EVALUATION_DIGEST: digest})) == (
        False,
        "its gate thresholds were not recorded",
    )
    assert approval_verdict(version_with(recorded(PASSING) | {"min_metric_gain": "a lot"})) == (
        False,
        "its gate thresholds were not recorded",
    )
    unreadable = {k: v for k, v in PASSING.items() if k != "gate"}
    passed, reason = approval_verdict(version_with(recorded(unreadable), unreadable))
    assert not passed and reason.startswith("its evaluation is unreadable (")


def test_decisions_are_kept_as_approve_reject_and_force_approve(local: LocalRegistry) -> None:
    register(local, PASSING)
    register(local, TRAILING)
    decide(local, 1, "Approved", who="ana", why="good", force=False)
    decide(local, 2, "Rejected", who="bo", why="trails", force=False)
    decide(local, 2, "Approved", who="cy", why="exception", force=True)
    assert [d.action for d in local.get(1).history] == ["approve"]
    assert [d.action for d in local.get(2).history] == ["reject", "force-approve"]
    with pytest.raises(RegistryError) as refused:
        decide(local, 1, "Pending", who="ana", why="?", force=False)
    assert str(refused.value) == "status must be Approved or Rejected, not Pending"


@pytest.mark.parametrize("backend", ["local", "sagemaker"])
def test_an_empty_group_points_at_the_groups_that_hold_versions(
    backend: str, tmp_path: Path, aws
) -> None:
    """The smoke preset registers into a group of its own: whoever lists the default group and
    finds nothing is told where the versions are, by the --registry value that reads them."""
    sagemaker, s3 = aws
    if backend == "local":
        store: Any = LocalRegistry(tmp_path / "registry.sqlite", GROUP)
        assert other_groups(store) == ""  # no file yet: nothing to point at
        store.check_writable()  # an empty registry file
        counted = f"2 versions; --registry local:{tmp_path / 'registry.sqlite'}#peftops-smoke"
    else:
        store = SageMakerRegistry(GROUP, sagemaker_client=sagemaker, s3_client=s3)
        sagemaker.create_model_package_group(ModelPackageGroupName="peftops-smoke")
        sagemaker.create_model_package_group(ModelPackageGroupName="empty-group")
        counted = "--registry sagemaker:peftops-smoke"  # one version asked for per group
    assert other_groups(store) == ""
    register(store, PASSING, group="peftops-smoke")
    register(store, PASSING, group="peftops-smoke")
    assert store.list() == []
    assert set(store.groups()) == {"peftops-smoke"}
    assert other_groups(store) == f"groups that hold versions: peftops-smoke ({counted})"
    register(store, PASSING)  # the group read is never its own pointer
    assert "peftops-adapters" not in other_groups(store)


def test_the_hint_counts_each_group_and_lists_them_all(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite"
    register(LocalRegistry(path, "group-a"), PASSING, group="group-a")
    for _ in range(2):
        register(LocalRegistry(path, "group-b"), PASSING, group="group-b")
    store = LocalRegistry(path, GROUP)
    assert other_groups(store) == (
        f"groups that hold versions: group-a (1 version; --registry local:{path}#group-a), "
        f"group-b (2 versions; --registry local:{path}#group-b)"
    )


def test_a_version_as_json_names_its_task_and_task_spec(tmp_path: Path) -> None:
    """`peftops models show --json`: the task, and the spec it was trained with, with the
    digest that identifies it, beside the stored fields."""
    spec = {"name": "meeting-notes", "metric": "rouge_l"}
    ev = PASSING | {"task": {"name": "meeting-notes", "spec": spec, "sha256": "ab" * 32}}
    store = LocalRegistry(tmp_path / "registry.sqlite", GROUP)
    registered = store.register(
        Registration(
            group=GROUP,
            model_data_url="s3://bucket/models/adapter/model.tar.gz",
            status="PendingManualApproval",
            metadata=recorded(ev) | {"task": "meeting-notes"},
            evaluation_uri=None,
            evaluation=ev,
            description="adapter",
        )
    )
    shown = store.get(registered.version).to_json()
    assert (shown["task"], shown["task_spec"], shown["task_spec_sha256"]) == (
        "meeting-notes",
        spec,
        "ab" * 32,
    )
    assert shown["version"] == registered.version


def test_a_hint_the_caller_may_not_read_is_left_out(aws, caplog: pytest.LogCaptureFixture) -> None:
    """Listing the account's groups needs its own IAM right: without it the answer stays the
    answer, with no hint, never an AccessDenied in its place."""
    from botocore.stub import Stubber

    sagemaker, s3 = aws
    store = SageMakerRegistry(GROUP, sagemaker_client=sagemaker, s3_client=s3)
    with Stubber(sagemaker) as stub, caplog.at_level(logging.DEBUG, "peftops"):
        stub.add_client_error("list_model_package_groups", "AccessDeniedException", "no")
        assert other_groups(store) == ""
    assert caplog.messages == [
        "no hint of other groups: An error occurred (AccessDeniedException) when calling the "
        "ListModelPackageGroups operation: no"
    ]


DECIDED = Decision("2026-12-02T00:00:00+00:00", "ana", "approve", "a", "b", "reviewed")
PACKAGE_ARN = f"arn:aws:sagemaker:us-east-1:111122223333:model-package/{GROUP}/3"
REQUIRED = {  # DescribeModelPackage's required members, and those a group's version always has
    "ModelPackageName": GROUP, "ModelPackageGroupName": GROUP, "ModelPackageVersion": 3,
    "ModelPackageArn": PACKAGE_ARN, "CreationTime": datetime(2026, 12, 1, tzinfo=UTC),
    "ModelPackageStatus": "Completed", "ModelPackageStatusDetails": {"ValidationStatuses": []},
    "ModelApprovalStatus": "PendingManualApproval",
}  # fmt: skip
EVERY_MEMBER = REQUIRED | {
    "ModelPackageDescription": "adapter of run 7",
    "ApprovalDescription": "ana: reviewed",
    "CustomerMetadataProperties": {"task": "meeting-notes", **history_entries((DECIDED,))},
    "InferenceSpecification": {"Containers": [{"Image": "lmi", "ModelDataUrl": "s3://b/m.tar.gz"}]},
    "ModelCard": {"ModelCardContent": json.dumps({"model_overview": {"model_name": "m"}}),
                  "ModelCardStatus": "Draft"},
    "ModelLifeCycle": {"Stage": "staging", "StageStatus": "Deployed",
                       "StageDescription": "smoke test passed"},
    "ModelMetrics": {"ModelQuality": {"Statistics": {
        "ContentType": "application/json", "S3Uri": "s3://evaluations/run-7/evaluation.json"}}},
}  # fmt: skip


@pytest.mark.parametrize(
    ("described", "evaluation_body", "fields"),
    [
        (
            EVERY_MEMBER,
            json.dumps(PASSING).encode(),
            {"group": GROUP, "version": 3, "status": "PendingManualApproval",
             "model_data_url": "s3://b/m.tar.gz", "created": "2026-12-01 00:00:00+00:00",
             "metadata": {"task": "meeting-notes"}, "evaluation": PASSING,
             "evaluation_sha256": evaluation_digest(json.dumps(PASSING).encode()),
             "evaluation_uri": "s3://evaluations/run-7/evaluation.json",
             "description": "adapter of run 7", "approval_description": "ana: reviewed",
             "arn": PACKAGE_ARN, "model_card": {"model_overview": {"model_name": "m"}},
             "lifecycle": "staging:Deployed", "stage_description": "smoke test passed",
             "history": (DECIDED,)},
        ),
        (
            REQUIRED,
            None,
            {"group": GROUP, "version": 3, "status": "PendingManualApproval",
             "model_data_url": "", "created": "2026-12-01 00:00:00+00:00", "metadata": {},
             "evaluation": None, "evaluation_sha256": None, "evaluation_uri": None,
             "description": "", "approval_description": "", "arn": PACKAGE_ARN,
             "model_card": None, "lifecycle": "development:Registered", "stage_description": "",
             "history": ()},
        ),
    ],
    ids=["every-member", "required-members-only"],
)  # fmt: skip
def test_a_described_model_package_reads_as_its_version(
    aws, described: dict[str, Any], evaluation_body: bytes | None, fields: dict[str, Any]
) -> None:
    """Every field of a version from DescribeModelPackage, with each optional member there or
    absent (absent: the value a version without it has)."""
    from botocore.stub import Stubber

    sagemaker, s3 = aws
    store = SageMakerRegistry(GROUP, sagemaker_client=sagemaker, s3_client=s3)
    if evaluation_body is not None:
        s3.put_object(Bucket="evaluations", Key="run-7/evaluation.json", Body=evaluation_body)
    summary = {k: described[k] for k in ("ModelPackageArn", "CreationTime", "ModelPackageStatus")}
    with Stubber(sagemaker) as stub:
        stub.add_response(
            "list_model_packages",
            {"ModelPackageSummaryList": [summary | {"ModelPackageVersion": 3}]},
            None,
        )
        stub.add_response("describe_model_package", described, {"ModelPackageName": PACKAGE_ARN})
        read = store.get(3)
    assert {
        **{k: getattr(read, k) for k in fields if k not in ("lifecycle", "stage_description")},
        "lifecycle": str(read.lifecycle),
        "stage_description": read.lifecycle.description,
    } == fields


def test_an_evaluation_that_breaks_its_contract_reads_as_none_and_is_named_in_a_warning(
    aws, caplog: pytest.LogCaptureFixture
) -> None:
    sagemaker, s3 = aws
    store = SageMakerRegistry(GROUP, sagemaker_client=sagemaker, s3_client=s3)
    s3.put_object(Bucket="evaluations", Key="run-7/evaluation.json", Body=b'{"models": 1}')
    with caplog.at_level(logging.WARNING, "peftops"):
        read = store._version(EVERY_MEMBER)
    assert (read.evaluation, read.evaluation_sha256) == (None, None)
    (warning,) = caplog.messages
    assert warning.startswith("s3://evaluations/run-7/evaluation.json")


def test_the_hint_reads_the_first_groups_by_name_and_one_version_of_each(aws) -> None:
    """A bounded read whatever the account holds: the first GROUP_HINT_LIMIT groups in name
    order (the order the hint prints), and whether each holds a version, not how many."""
    from botocore.stub import Stubber

    from pipelines.registry.sagemaker_backend import GROUP_HINT_LIMIT

    sagemaker, s3 = aws
    store = SageMakerRegistry(GROUP, sagemaker_client=sagemaker, s3_client=s3)
    summaries = [
        {"ModelPackageGroupName": name, "ModelPackageGroupArn": f"arn:aws:sagemaker:us-east-1:"
         f"111122223333:model-package-group/{name}", "CreationTime": "2026-12-01T00:00:00Z",
         "ModelPackageGroupStatus": "Completed"}
        for name in ("a-group", "b-group")
    ]  # fmt: skip
    one = {
        "ModelPackageArn": "arn:aws:sagemaker:us-east-1:111122223333:model-package/a-group/1",
        "CreationTime": "2026-12-01T00:00:00Z",
        "ModelPackageStatus": "Completed",
    }
    with Stubber(sagemaker) as stub:
        stub.add_response(
            "list_model_package_groups",
            {"ModelPackageGroupSummaryList": summaries},
            {"MaxResults": GROUP_HINT_LIMIT, "SortBy": "Name", "SortOrder": "Ascending"},
        )
        stub.add_response(
            "list_model_packages",
            {"ModelPackageSummaryList": [one]},
            {"ModelPackageGroupName": "a-group", "MaxResults": 1},
        )
        stub.add_response(
            "list_model_packages",
            {"ModelPackageSummaryList": []},
            {"ModelPackageGroupName": "b-group", "MaxResults": 1},
        )
        assert store.groups() == {"a-group": None}
        stub.assert_no_pending_responses()


@pytest.mark.parametrize("order", ["aabab", "babba", "ab", "bbbaa"])
def test_each_group_numbers_its_own_versions_in_one_file(tmp_path: Path, order: str) -> None:
    """Two model package groups in one registry file, registrations interleaved: each group's
    versions are 1..n in the order it registered them, and each group sees only its own."""
    path = tmp_path / "registry.sqlite"
    registries = {g: LocalRegistry(path, f"group-{g}") for g in sorted(set(order))}
    urls: dict[str, list[str]] = {g: [] for g in registries}
    for step, g in enumerate(order):
        url = f"s3://bucket/models/{g}-{step}/model.tar.gz"
        version = registries[g].register(
            Registration(
                group=f"group-{g}",
                model_data_url=url,
                status="PendingManualApproval",
                metadata=THRESHOLDS,
                evaluation_uri=None,
                evaluation=None,
                description=f"{g} {step}",
            )
        )
        urls[g].append(url)
        assert version.version == len(urls[g])
    for g, registry in registries.items():
        listed = registry.list()
        assert [v.version for v in listed] == list(range(1, len(urls[g]) + 1))
        assert [v.model_data_url for v in listed] == urls[g]
        assert registry.get(len(urls[g])).model_data_url == urls[g][-1]


@pytest.mark.parametrize(
    "name", ["odd?mode=rw.sqlite", "pct%41.sqlite", "hash#1.sqlite", "space and é.sqlite"]
)
def test_reads_open_the_file_writes_wrote_whatever_its_name(tmp_path: Path, name: str) -> None:
    """A registry file named with URI syntax (`?`, `%XX`, `#`) is the file reads open, never
    another one beside it (nor a new one)."""
    registry = LocalRegistry(tmp_path / name, GROUP)
    register(registry, PASSING)
    assert [v.version for v in LocalRegistry(tmp_path / name, GROUP).list()] == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


FORGED = "ok\n    2026-11-27T00:00:00+00:00  ana  approve: PendingManualApproval -> Approved  (x)"


@pytest.mark.parametrize(
    "why",
    ["", "   ", FORGED, "tab\there", "nul\x00", "line\u2028sep", "par\u2029sep", "rlo\u202etxt"],
)
@pytest.mark.parametrize("decision", ["approve", "reject", "promote", "archive"])
def test_every_decision_says_why_in_one_line(local: LocalRegistry, decision: str, why: str) -> None:
    """A reason is one line of text, never empty: a line break would print as a history entry
    of its own (an approval nobody made). Refused before anything changes."""
    from pipelines.registry import archive, promote

    register(local, PASSING)
    act = {
        "approve": lambda: decide(local, 1, "Approved", who="ana", why=why, force=False),
        "reject": lambda: decide(local, 1, "Rejected", who="ana", why=why, force=False),
        "promote": lambda: promote(local, 1, "staging", who="ana", why=why),
        "archive": lambda: archive(local, 1, who="ana", why=why),
    }
    with pytest.raises(RegistryError) as refused:
        act[decision]()
    control = next((c for c in why.strip() if not c.isprintable() or c == "\u202e"), None)
    assert str(refused.value) == (
        "every decision says why: pass a non-empty --description"
        if not why.strip()
        else f"--description must be one line of text; it holds {control!r}: write it on one line"
    )
    assert not local.get(1).history and local.get(1).status == "PendingManualApproval"


def test_a_recorded_line_break_shows_escaped_in_one_history_line(local: LocalRegistry) -> None:
    """Text another tool wrote into the registry (a deployer's detail, a console edit) prints
    escaped: each history entry is exactly one line."""
    from typer.testing import CliRunner

    from pipelines.cli import app
    from pipelines.registry.versions import Change

    register(local, PASSING)
    local.change(1, Change(who="ci\nbot", action="reject", why=FORGED, status="Rejected"))
    shown = CliRunner().invoke(app, ["models", "show", "1", "--registry", f"local:{local.path}"])
    assert shown.exit_code == 0, shown.output
    history = shown.output.split("  history:\n", 1)[1].splitlines()
    assert len(history) == 1, history
    assert "ci\\nbot" in history[0] and "(ok\\n    2026-11-27" in history[0]


@pytest.mark.parametrize(
    ("card", "content"),
    [
        (None, None),
        ({}, None),
        ({"ModelCardContent": ""}, None),
        ({"ModelCardContent": "{not json"}, None),
        ({"ModelCardContent": "[1, 2]"}, None),  # JSON, but not a card's object
        ({"ModelCardContent": '{"model_overview": {"model_name": "m"}}'},
         {"model_overview": {"model_name": "m"}}),
    ],
)  # fmt: skip
def test_a_model_cards_content_is_its_json_object_or_nothing(
    card: dict[str, Any] | None, content: dict[str, Any] | None
) -> None:
    from pipelines.registry.versions import model_card_content

    assert model_card_content(card) == content


def test_listing_a_group_searches_its_versions_with_the_filters_the_api_spells(aws) -> None:
    """Search's property names and operators are case-sensitive: the request is exact, with
    the approval status filter when one is asked for."""
    from botocore.stub import Stubber

    sagemaker, s3 = aws
    store = SageMakerRegistry(GROUP, sagemaker_client=sagemaker, s3_client=s3)
    group_filter = {"Name": "ModelPackageGroupName", "Operator": "Equals", "Value": GROUP}
    approved = {"Name": "ModelApprovalStatus", "Operator": "Equals", "Value": "Approved"}
    with Stubber(sagemaker) as stub:
        for filters in ([group_filter], [group_filter, approved]):
            stub.add_response(
                "search",
                {"Results": [{"ModelPackage": REQUIRED}]},
                {"Resource": "ModelPackage", "SearchExpression": {"Filters": filters},
                 "SortBy": "CreationTime", "SortOrder": "Ascending", "MaxResults": 100},
            )  # fmt: skip
        assert [v.version for v in store.list()] == [3]
        assert [v.version for v in store.list("Approved")] == [3]
        stub.assert_no_pending_responses()


def test_a_sagemaker_decision_is_stamped_in_utc(
    aws,
) -> None:
    from pipelines.registry.versions import Change

    sagemaker, s3 = aws
    store = SageMakerRegistry(GROUP, sagemaker_client=sagemaker, s3_client=s3)
    version = register(store, PASSING).version
    store.change(version, Change(who="ana", action="reject", why="checked", status="Rejected"))
    (decision,) = store.get(version).history
    assert decision.at.endswith("+00:00")


def test_a_sagemaker_version_with_no_room_for_a_decision_is_refused_by_number(aws) -> None:
    from pipelines.registry.versions import Change

    sagemaker, s3 = aws
    store = SageMakerRegistry(GROUP, sagemaker_client=sagemaker, s3_client=s3)
    full = {f"key{i:02d}": "v" for i in range(50)}
    version = store.register(
        Registration(GROUP, "s3://b/m.tar.gz", "PendingManualApproval", full, None, None, "a")
    ).version
    with pytest.raises(RegistryError) as refused:
        store.change(version, Change(who="ana", action="reject", why="no", status="Rejected"))
    assert str(refused.value) == (
        f"version {version}: the version holds 50 metadata entries, SageMaker's limit: no room "
        "to record a decision; register the adapter again"
    )


def test_a_registration_with_an_approval_status_the_registry_does_not_know_is_refused(
    tmp_path: Path,
) -> None:
    from pipelines.registry import APPROVAL_STATUSES

    store = LocalRegistry(tmp_path / "registry.sqlite", GROUP)
    with pytest.raises(RegistryError) as refused:
        store.register(Registration(GROUP, "s3://b/m.tar.gz", "Pending", {}, None, None, "a"))
    assert str(refused.value) == f"approval status 'Pending' is not one of {APPROVAL_STATUSES}"


@pytest.mark.parametrize("with_everything", [True, False], ids=["card-and-metrics", "bare"])
def test_a_sagemaker_registration_sends_exactly_the_request_the_api_takes(
    aws, with_everything: bool
) -> None:
    """CreateModelPackage as sent: the model card and the evaluation as ModelQuality statistics
    when there are some, and, for a registration without an inference specification, one that
    carries the model data (the only place SageMaker keeps it)."""
    from botocore.stub import Stubber

    sagemaker, s3 = aws
    store = SageMakerRegistry(GROUP, sagemaker_client=sagemaker, s3_client=s3)
    card = {"ModelCardContent": json.dumps({"model_overview": {}}), "ModelCardStatus": "Draft"}
    entry = Registration(
        GROUP, "s3://b/m.tar.gz", "PendingManualApproval", {"task": "notes"},
        "s3://evaluations/run-7/evaluation.json" if with_everything else None, None, "adapter",
        model_card=card if with_everything else None,
    )  # fmt: skip
    expected: dict[str, Any] = {
        "ModelPackageGroupName": GROUP,
        "ModelPackageDescription": "adapter",
        "ModelApprovalStatus": "PendingManualApproval",
        "CustomerMetadataProperties": {"task": "notes"},
        "InferenceSpecification": {
            "Containers": [{"Image": "unused", "ModelDataUrl": "s3://b/m.tar.gz"}],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    }
    if with_everything:
        expected["ModelCard"] = card
        expected["ModelMetrics"] = {"ModelQuality": {"Statistics": {
            "ContentType": "application/json", "S3Uri": "s3://evaluations/run-7/evaluation.json",
        }}}  # fmt: skip
    with Stubber(sagemaker) as stub:
        stub.add_response("create_model_package", {"ModelPackageArn": PACKAGE_ARN}, expected)
        stub.add_response("describe_model_package", REQUIRED, {"ModelPackageName": PACKAGE_ARN})
        assert store.register(entry).version == 3
        stub.assert_no_pending_responses()
