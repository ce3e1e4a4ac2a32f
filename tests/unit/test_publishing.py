"""What seeds a cloud run, against S3 and the Model Registry (moto): `peftops data publish` makes
immutable dataset versions the pipeline's ResolveInputs function picks the newest of,
`peftops baseline publish` stores what reuse mode reads, and CheckRegistered finds an adapter
artifact that is already a version."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.functions import layout, registered_adapter, resolve_inputs

REGION = "eu-central-1"  # not the SDK's default: the commands use what they are told
BUCKET = "peftops-artifacts-123456789012"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        yield client


def dataset(path: Path, *rows: tuple[str, str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(json.dumps({"dialogue": d, "summary": s}) + "\n" for d, s in rows),
        encoding="utf-8",
    )
    return path


def week(tag: str) -> list[tuple[str, str]]:
    """Three dialogues: the fewest that leave the pipeline a test split."""
    return [(f"{tag} A: hi", "greeting"), (f"{tag} B: bye", "farewell"), (f"{tag} C: ok", "ok")]


def publish(path: Path, *options: str) -> dict:
    result = CliRunner().invoke(
        app,
        [
            "data",
            "publish",
            "--data",
            str(path),
            "--bucket",
            BUCKET,
            "--region",
            "us-east-1",
            "--json",
            *options,
        ],
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def keys(s3, prefix: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]


def invoke_resolve(**event: str) -> dict:
    return resolve_inputs.handler(
        {
            "Bucket": BUCKET,
            "Task": "dialogue-summary",
            "StageTasks": "dialogue-summary,support-routing",
            "DatasetVersion": "latest",
            "BaselineMode": "train",
            "BaselineEvaluationUri": layout.TASK_BASELINE,
            **event,
        },
        None,
    )


def test_publish_makes_versions_and_the_function_picks_the_newest(s3, tmp_path: Path) -> None:
    first = publish(dataset(tmp_path / "week1" / "data.jsonl", *week("w1")))
    assert first["new"] and first["records"] == 3
    prefix = f"datasets/dialogue-summary/versions/{first['version']}/"
    assert first["uri"] == f"s3://{BUCKET}/{prefix}"
    # The data and the task spec it is read by: a run's preprocess finds both there.
    assert keys(s3, prefix) == [f"{prefix}data.jsonl", f"{prefix}task.json"]
    assert invoke_resolve() == {
        "DatasetVersion": first["version"],
        "DatasetUri": first["uri"],
        "BaselineEvaluationUri": f"s3://{BUCKET}/baselines/dialogue-summary/evaluation.json",
    }

    # The same files again: nothing new, so a scheduled run hits the step cache.
    again = publish(dataset(tmp_path / "elsewhere" / "data.jsonl", *week("w1")))
    assert again == {**first, "new": False}
    assert len(keys(s3, layout.dataset_markers("dialogue-summary"))) == 1

    second = publish(dataset(tmp_path / "week2" / "data.jsonl", *week("w2")))
    assert second["new"] and second["version"] > first["version"]
    assert invoke_resolve()["DatasetVersion"] == second["version"]
    # A pinned version still resolves, and its files were never rewritten.
    assert invoke_resolve(DatasetVersion=first["version"])["DatasetUri"] == first["uri"]
    body = s3.get_object(Bucket=BUCKET, Key=f"{prefix}data.jsonl")
    assert b"w1 A: hi" in body["Body"].read()


def routing_records(path: Path, tag: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {"messages": [{"role": "user", "content": f"{tag} {text}"},
                      {"role": "assistant", "content": label}]}
        for text, label in (("card declined", "billing"), ("app crashes", "technical"),
                            ("where is my parcel", "shipping"))
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_each_task_of_a_stage_has_its_own_versions_and_baseline(s3, tmp_path: Path) -> None:
    """Two tasks in one bucket: publishing one never makes a version of the other, each run
    resolves its own task's newest data and stored baseline, and the same files published for
    two tasks are two versions."""
    summaries = publish(dataset(tmp_path / "d" / "data.jsonl", *week("w1")))
    routing = publish(
        routing_records(tmp_path / "r" / "data.jsonl", "w1"), "--task", "support-routing"
    )
    assert routing["uri"].startswith(f"s3://{BUCKET}/datasets/support-routing/versions/")
    assert invoke_resolve()["DatasetUri"] == summaries["uri"]
    resolved = invoke_resolve(Task="support-routing")
    assert resolved["DatasetUri"] == routing["uri"]
    assert resolved["BaselineEvaluationUri"] == (
        f"s3://{BUCKET}/baselines/support-routing/evaluation.json"
    )
    newer = publish(
        routing_records(tmp_path / "r2" / "data.jsonl", "w2"), "--task", "support-routing"
    )
    assert invoke_resolve(Task="support-routing")["DatasetVersion"] == newer["version"]
    assert invoke_resolve()["DatasetVersion"] == summaries["version"]

    from tests.evaluations import evaluation as make_evaluation

    trained = make_evaluation(adapter=0.5, full_finetune=0.5, base=0.5)
    trained["baseline_source"] = {"kind": "trained"}
    trained["task"]["name"] = "support-routing"
    path = tmp_path / "routing-evaluation.json"
    path.write_text(json.dumps(trained))
    stored = CliRunner().invoke(
        app,
        [
            "baseline",
            "publish",
            "--evaluation",
            str(path),
            "--bucket",
            BUCKET,
            "--region",
            "us-east-1",
        ],
    )
    assert stored.stdout.strip() == (
        f"stored the baseline at s3://{BUCKET}/baselines/support-routing/evaluation.json"
    )
    assert invoke_resolve(Task="support-routing", BaselineMode="reuse")
    # The other task has no baseline yet: its reuse run stops, naming its task.
    with pytest.raises(
        resolve_inputs.InputsError, match="a BaselineMode=train run of task dialogue-summary"
    ):
        invoke_resolve(BaselineMode="reuse")


def test_bad_data_is_refused_before_anything_is_uploaded(s3, tmp_path: Path) -> None:
    path = dataset(tmp_path / "d.jsonl", ("A: hi", "greeting"))
    path.write_text(path.read_text() + '{"dialogue": "B: x"}\n', encoding="utf-8")
    result = CliRunner().invoke(
        app, ["data", "publish", "--data", str(path), "--bucket", BUCKET, "--region", "us-east-1"]
    )
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"peftops: error: {path} line 2:") and "summary" in line
    assert "--skip-invalid" not in line  # publish has no such option: the pipeline skips nothing
    assert keys(s3, "datasets/") == []

    too_few = dataset(tmp_path / "two.jsonl", ("A: hi", "greeting"), ("B: bye", "farewell"))
    result = CliRunner().invoke(
        app,
        ["data", "publish", "--data", str(too_few), "--bucket", BUCKET, "--region", "us-east-1"],
    )
    assert result.exit_code == 2
    assert "leave no test split for the pipeline's evaluation" in result.output
    assert keys(s3, "datasets/") == []


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({}, f"no dataset of task dialogue-summary is published in "
             f"s3://{BUCKET}/datasets/dialogue-summary/published/; publish one: "
             f"peftops data publish --task dialogue-summary --data FILE --bucket {BUCKET}"),
        ({"DatasetVersion": "20260101T000000000000Z-0123456789ab"}, "is not published"),
        ({"Task": "../other"}, "Task '../other' is not one of this stage's tasks "
                               "(dialogue-summary, support-routing); add it to the stage's tasks"),
    ],
)  # fmt: skip
def test_a_run_without_published_data_fails_naming_the_command(s3, event, message) -> None:
    with pytest.raises(resolve_inputs.InputsError, match=re.escape(message)):
        invoke_resolve(**event)


def test_reuse_mode_needs_a_baseline_published_from_a_train_run(s3, tmp_path: Path) -> None:
    first = publish(dataset(tmp_path / "d.jsonl", *week("w1")))["version"]
    with pytest.raises(resolve_inputs.InputsError, match="peftops baseline publish --evaluation"):
        invoke_resolve(BaselineMode="reuse")
    # The functions may read stored baselines only where `baseline publish` puts them.
    with pytest.raises(resolve_inputs.InputsError, match=f"is not under s3://{BUCKET}/baselines/"):
        invoke_resolve(BaselineMode="reuse", BaselineEvaluationUri="s3://elsewhere/e.json")

    from tests.evaluations import evaluation as make_evaluation

    evaluation = make_evaluation(adapter=0.5, full_finetune=0.5, base=0.5)
    evaluation["dataset_version"] = first  # what a train run on that version records
    reused = tmp_path / "reused.json"
    reused.write_text(json.dumps(evaluation | {"baseline_source": {"kind": "reused"}}))
    refused = CliRunner().invoke(
        app,
        [
            "baseline",
            "publish",
            "--evaluation",
            str(reused),
            "--bucket",
            BUCKET,
            "--region",
            "us-east-1",
        ],
    )
    assert refused.exit_code == 2 and "publish the evaluation.json of a BaselineMode=train run" in (
        refused.output
    )

    trained = tmp_path / "trained.json"
    trained.write_text(json.dumps(evaluation | {"baseline_source": {"kind": "trained"}}))
    stored = CliRunner().invoke(
        app,
        [
            "baseline",
            "publish",
            "--evaluation",
            str(trained),
            "--bucket",
            BUCKET,
            "--region",
            "us-east-1",
        ],
    )
    assert stored.exit_code == 0, stored.output
    assert stored.stdout.strip() == (
        f"stored the baseline at s3://{BUCKET}/baselines/dialogue-summary/evaluation.json"
    )
    resolved = invoke_resolve(BaselineMode="reuse")
    assert resolved["DatasetUri"].startswith(f"s3://{BUCKET}/")
    # The run reads the baseline by its content: another one published is another input, and
    # the evaluation step's cache cannot answer with the old one's figures.
    digest = hashlib.sha256(trained.read_bytes()).hexdigest()
    copy = f"baselines/dialogue-summary/sha256-{digest}/evaluation.json"
    assert resolved["BaselineEvaluationUri"] == f"s3://{BUCKET}/{copy}"
    s3.delete_object(Bucket=BUCKET, Key=copy)  # published by a version without copies
    with pytest.raises(resolve_inputs.InputsError, match=f"has no copy at s3://{BUCKET}/{copy}"):
        invoke_resolve(BaselineMode="reuse")
    s3.put_object(Bucket=BUCKET, Key=copy, Body=trained.read_bytes())

    # New data published: the stored baseline was scored on other data, so the run stops
    # here, in seconds, before it pays for a training that Evaluate would then refuse.
    second = publish(dataset(tmp_path / "d2.jsonl", *week("w2")))["version"]
    with pytest.raises(resolve_inputs.InputsError) as refused_run:
        invoke_resolve(BaselineMode="reuse")
    assert str(refused_run.value) == (
        f"the stored baseline s3://{BUCKET}/baselines/dialogue-summary/evaluation.json was "
        f"scored on dataset version {first}, not on {second}, which this run trains on: run "
        f"BaselineMode=train with DatasetVersion={second} once and publish its evaluation "
        f"(peftops baseline publish --evaluation <its evaluation.json> --bucket {BUCKET}), or "
        f"pass DatasetVersion={first}"
    )
    assert invoke_resolve(BaselineMode="reuse", DatasetVersion=first)["DatasetVersion"] == first
    # A baseline of the new data, published: the run passes.
    trained.write_text(json.dumps(json.loads(trained.read_text()) | {"dataset_version": second}))
    assert CliRunner().invoke(
        app, ["baseline", "publish", "--evaluation", str(trained), "--bucket", BUCKET,
              "--region", "us-east-1"],
    ).exit_code == 0  # fmt: skip
    republished = invoke_resolve(BaselineMode="reuse")
    assert republished["DatasetVersion"] == second
    assert republished["BaselineEvaluationUri"] != resolved["BaselineEvaluationUri"]


def test_check_registered_finds_an_artifact_already_in_the_group(s3, monkeypatch) -> None:
    """The Lambda over the registry's API: one ListModelPackages page and one
    BatchDescribeModelPackage call for up to 100 versions (moto has no BatchDescribe, so the
    SageMaker client is botocore's Stubber), and the digest of the evaluation it was given."""
    from botocore.stub import Stubber

    arn = f"arn:aws:sagemaker:{REGION}:123456789012:model-package/peftops-adapters/%d"
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    stub = Stubber(sagemaker)
    evaluation = {"models": {"adapter": {"rougeL": 0.4}}, "gate": {}}
    s3.put_object(Bucket=BUCKET, Key="ev/evaluation.json", Body=json.dumps(evaluation, indent=2))

    def container(job: str) -> dict:
        return {
            "Image": "763104351884.dkr.ecr.eu-central-1.amazonaws.com/tgi:1",
            "ModelDataUrl": f"s3://{BUCKET}/models/{job}/model.tar.gz",
        }

    def expect_group() -> None:
        stub.add_response(
            "list_model_packages",
            {
                "ModelPackageSummaryList": [
                    {
                        "ModelPackageArn": arn % v,
                        "ModelPackageName": "peftops-adapters",
                        "CreationTime": f"2026-11-0{v}T00:00:00Z",
                        "ModelPackageStatus": "Completed",
                    }
                    for v in (2, 1)
                ]
            },
            {
                "ModelPackageGroupName": "peftops-adapters",
                "SortBy": "CreationTime",
                "SortOrder": "Descending",
                "MaxResults": 100,
            },
        )
        stub.add_response(
            "batch_describe_model_package",
            {
                "ModelPackageSummaries": {
                    arn % v: {
                        "ModelPackageGroupName": "peftops-adapters",
                        "ModelPackageArn": arn % v,
                        "CreationTime": f"2026-11-0{v}T00:00:00Z",
                        "InferenceSpecification": {
                            "Containers": [container(f"job-{v}")],
                            "SupportedContentTypes": ["application/json"],
                            "SupportedResponseMIMETypes": ["application/json"],
                        },
                        "ModelPackageStatus": "Completed",
                    }
                    for v in (2, 1)
                }
            },
            {"ModelPackageArnList": [arn % 2, arn % 1]},
        )

    clients = {"sagemaker": sagemaker, "s3": s3}
    monkeypatch.setattr(boto3, "client", lambda name, **_: clients[name])

    def check(job: str) -> dict:
        return registered_adapter.handler(
            {
                "ModelPackageGroupName": "peftops-adapters",
                "ModelDataUrl": f"s3://{BUCKET}/models/{job}/model.tar.gz",
                "EvaluationUri": f"s3://{BUCKET}/ev/evaluation.json",
            },
            None,
        )

    digest = registered_adapter.evaluation_digest(json.dumps(evaluation).encode())
    with stub:
        expect_group()
        found = check("job-1")
        expect_group()
        new = check("job-3")
        stub.assert_no_pending_responses()
    assert found["Registered"] == "true" and found["ModelPackageArn"] == arn % 1
    assert found["EvaluationSha256"] == digest
    assert new == {
        "Registered": "false",
        "ModelPackageArn": "",
        "Message": "a new adapter",
        "EvaluationSha256": digest,
    }


def test_the_adapter_is_found_where_an_isolated_registration_puts_it() -> None:
    from pipelines.functions.registered_adapter import adapter_location

    assert adapter_location({"ModelDataUrl": "s3://b/a.tar.gz"}) == "s3://b/a.tar.gz"
    isolated = {
        "ModelDataSource": {"S3DataSource": {"S3Uri": "s3://b/base/"}},
        "AdditionalModelDataSources": [
            {"ChannelName": "adapter", "S3DataSource": {"S3Uri": "s3://b/a.tar.gz"}}
        ],
    }
    assert adapter_location(isolated) == "s3://b/a.tar.gz"


NEWEST = "20260102T000000000000Z-0123456789ab"


@pytest.mark.parametrize(
    ("published", "event", "message"),
    [
        ([], {}, f"no dataset of task dialogue-summary is published in s3://{BUCKET}/datasets/"
                 f"dialogue-summary/published/; publish one: peftops data publish --task "
                 f"dialogue-summary --data FILE --bucket {BUCKET}"),
        ([], {"DatasetVersion": NEWEST}, f"dataset version '{NEWEST}' is not published in "
             f"s3://{BUCKET}/datasets/dialogue-summary/published/ (newest: none); pass "
             "DatasetVersion=latest or a published version"),
        (["20251231T000000000000Z-0123456789ab", "20260101T000000000000Z-0123456789ab", NEWEST],
         {"DatasetVersion": "2026"},
         f"dataset version '2026' is not published in s3://{BUCKET}/datasets/dialogue-summary/"
         f"published/ (newest: {NEWEST}); pass DatasetVersion=latest or a published version"),
        ([NEWEST], {"BaselineMode": "reuse", "BaselineEvaluationUri": "s3://elsewhere/e.json"},
         f"BaselineEvaluationUri s3://elsewhere/e.json is not under s3://{BUCKET}/baselines/, "
         "where `peftops baseline publish` stores baselines and this pipeline may read them"),
        ([NEWEST], {"BaselineMode": "reuse"},
         f"BaselineMode=reuse needs a stored baseline at s3://{BUCKET}/baselines/dialogue-summary/"
         "evaluation.json (there is none this function can read); seed it from a "
         "BaselineMode=train run of task dialogue-summary: peftops baseline publish "
         f"--evaluation <that run's evaluation.json> --bucket {BUCKET}"),
    ],
)  # fmt: skip
def test_each_refusal_of_resolve_inputs_says_all_of_this(
    published: list[str], event: dict[str, str], message: str
) -> None:
    """The whole one-line message: what is missing, where it was looked for, and the fix."""
    markers = [layout.marker_key("dialogue-summary", v) for v in published]
    with pytest.raises(resolve_inputs.InputsError) as refused:
        resolve_inputs.resolve_inputs(
            {
                "Bucket": BUCKET,
                "Task": "dialogue-summary",
                "StageTasks": "dialogue-summary",
                "DatasetVersion": "latest",
                "BaselineMode": "train",
                "BaselineEvaluationUri": layout.TASK_BASELINE,
                **event,
            },
            lambda bucket, prefix: [k for k in markers if k.startswith(prefix)],
            lambda uri: None,
        )
    assert str(refused.value) == message


@pytest.mark.parametrize(
    ("code", "missing"),
    # Without s3:ListBucket on the key S3 answers a missing object 403 AccessDenied.
    [("AccessDenied", True), ("NoSuchKey", True), ("403", True), ("404", True),
     ("InternalError", False), ("SlowDown", False)],
)  # fmt: skip
def test_the_function_reads_a_missing_baseline_as_missing_and_fails_on_anything_else(
    monkeypatch: pytest.MonkeyPatch, code: str, missing: bool
) -> None:
    from botocore.exceptions import ClientError
    from botocore.stub import Stubber

    client = boto3.client(
        "s3", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )
    stub = Stubber(client)
    marker = layout.marker_key("dialogue-summary", NEWEST)
    stub.add_response(
        "list_objects_v2",
        {"Contents": [{"Key": marker}], "IsTruncated": False},
        {"Bucket": BUCKET, "Prefix": layout.dataset_markers("dialogue-summary")},
    )
    baseline = layout.baseline_key("dialogue-summary")
    stub.add_client_error("get_object", service_error_code=code, http_status_code=403,
                          expected_params={"Bucket": BUCKET, "Key": baseline})  # fmt: skip
    monkeypatch.setattr(boto3, "client", lambda name, **_: client)
    with stub:
        if missing:
            with pytest.raises(resolve_inputs.InputsError, match="needs a stored baseline"):
                invoke_resolve(BaselineMode="reuse")
        else:
            with pytest.raises(ClientError):
                invoke_resolve(BaselineMode="reuse")
        stub.assert_no_pending_responses()
