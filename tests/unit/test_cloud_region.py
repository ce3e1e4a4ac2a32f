"""Every cloud command works in the region it is told (--region, a stage's in cdk.json, an
execution ARN's) and says so when it falls back to the AWS configuration's; with no region
anywhere, it stops in one line before any AWS call."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from pipelines.cli import app
from tests.conftest import REPO

# One invocation of each cloud command the README shows.
CLOUD_COMMANDS = {
    "pipeline start": ["pipeline", "start", "--name", "peftops-adapter-dev"],
    "pipeline status": ["pipeline", "status", "execution-without-an-arn"],
    "models list": ["models", "list", "--registry", "sagemaker:peftops-adapters-dev"],
    "models approve": ["models", "approve", "1", "-d", "ok", "--registry", "sagemaker:g"],
    "data publish": [
        "data", "publish", "--data", "data/sample/dialogues.jsonl", "--bucket", "b",
    ],
    "baseline publish": ["baseline", "publish", "--evaluation", "s3://b/e.json", "--bucket", "b"],
    "invoke": ["invoke", "hi", "--task", "dialogue-summary", "--endpoint", "sagemaker:e"],
}  # fmt: skip


@pytest.fixture
def no_region(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A machine whose AWS configuration names no region."""
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.chdir(REPO)


@pytest.mark.parametrize("command", sorted(CLOUD_COMMANDS))
def test_with_no_region_anywhere_a_cloud_command_stops_in_one_line(
    command: str, no_region: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[str] = []
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # restored afterwards
    boto3.setup_default_session()
    boto3.DEFAULT_SESSION.events.register(
        "before-send", lambda request, **_: sent.append(request.url)
    )
    done = CliRunner().invoke(app, CLOUD_COMMANDS[command])
    assert done.exit_code == 2, (command, done.output)
    assert done.output == (
        "peftops: error: no AWS region: pass --region (your stage's `region` in cdk.json) "
        "or set AWS_REGION\n"
    ), command
    assert sent == []


def test_the_configurations_region_is_said_and_an_explicit_one_is_used_quietly(
    no_region: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with mock_aws():
        for region in ("eu-west-1", "us-east-1"):
            boto3.client("sagemaker", region_name=region).create_model_package_group(
                ModelPackageGroupName=f"group-{region}"
            )
        listed = CliRunner().invoke(
            app, ["models", "list", "--registry", "sagemaker:group-eu-west-1", "--json"]
        )
        told = CliRunner().invoke(
            app,
            [
                "models",
                "list",
                "--registry",
                "sagemaker:group-us-east-1",
                "--json",
                "--region",
                "us-east-1",
            ],
        )
    assert listed.exit_code == 0 and json.loads(listed.stdout) == []
    assert listed.stderr == (
        "peftops: AWS region eu-west-1, your AWS configuration's (--region to choose)\n"
    )
    assert told.exit_code == 0 and json.loads(told.stdout) == [] and told.stderr == ""


def test_a_stage_names_the_pipeline_and_its_region(no_region: None) -> None:
    stage = json.loads((REPO / "cdk.json").read_text())["context"]["stages"]["prod"]
    with mock_aws():
        boto3.client("sagemaker", region_name=stage["region"]).create_pipeline(
            PipelineName=stage["pipeline"]["name"],
            PipelineDefinition=json.dumps({"Version": "2020-12-01", "Steps": []}),
            RoleArn="arn:aws:iam::123456789012:role/peftops",
        )
        started = CliRunner().invoke(app, ["pipeline", "start", "--stage", "prod"])
        assert started.exit_code == 0, started.output
        arn = started.stdout.strip()
        assert arn.startswith(f"arn:aws:sagemaker:{stage['region']}:")
        assert f":pipeline/{stage['pipeline']['name']}/" in arn
        unknown = CliRunner().invoke(app, ["pipeline", "start", "--stage", "qa"])
    assert unknown.exit_code == 2 and unknown.output.startswith(
        "peftops: error: --stage qa: cdk.json: cdk.json context has no stage 'qa'"
    )


@pytest.mark.parametrize(
    ("region", "arn", "expected"),
    [
        ("ap-south-1", "arn:aws:sagemaker:eu-west-2:123456789012:pipeline/p", "ap-south-1"),
        (None, "arn:aws:sagemaker:eu-west-2:123456789012:pipeline/p", "eu-west-2"),
        (None, "arn:aws:sagemaker:eu-west-2", "eu-west-2"),  # just up to the region
        (None, "arn:aws:s3:::a-bucket", "us-east-1"),  # a global resource names none
        (None, "arn:aws:sagemaker", "us-east-1"),  # too short to name one
        (None, None, "us-east-1"),
    ],
)
def test_the_region_comes_from_the_option_then_the_arn_then_the_configuration(
    region: str | None, arn: str | None, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.cli.aws import cloud_region

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_REGION", raising=False)
    assert cloud_region(region, arn=arn) == expected


@pytest.mark.parametrize("bucket", [None, "named-bucket"])
def test_a_local_run_publishes_into_its_own_bucket_mirror(
    tmp_path: Path, bucket: str | None
) -> None:
    from pipelines.cli.publish import open_store
    from pipelines.local.presets import LOCAL_DEPLOYMENT
    from pipelines.local.run import MIRROR_DIR

    store, named = open_store(bucket, None, tmp_path)
    assert store.root == tmp_path / MIRROR_DIR
    assert named == (bucket or LOCAL_DEPLOYMENT.bucket)


def test_publishing_without_a_bucket_or_a_local_run_says_which_to_pass() -> None:
    from pipelines.cli.options import CommandError
    from pipelines.cli.publish import open_store

    with pytest.raises(CommandError) as caught:
        open_store(None, None, None)
    assert str(caught.value) == (
        "pass --bucket (the stack's BucketName output) or --local-run FOLDER"
    )
