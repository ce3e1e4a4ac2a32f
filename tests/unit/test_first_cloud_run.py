"""The README's "First cloud run", as a user follows it: every `peftops` command in it runs as
written (AWS calls against moto) with a profile whose region is not the stage's, and every
call lands in the stage's region; its quota and cost tables are what `peftops pipeline cost`
computes from each stage's definition."""

from __future__ import annotations

import json
import re
import shlex

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.functions.registered_adapter import EVALUATION_DIGEST, evaluation_digest
from pipelines.registry import Registration, SageMakerRegistry
from tests.conftest import REPO
from tests.evaluations import evaluation as make_evaluation

# The dev stage deploys to its cdk.json region; the user's profile names another.
REGION = json.loads((REPO / "cdk.json").read_text())["context"]["stages"]["dev"]["region"]
PROFILE_REGION = "eu-west-1"
BUCKET = "peftops-dev-storageartifacts-1a2b3c"
TRAIN_JOB = "pipelines-abc123-TrainAdapter-xyz"


def section() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    return readme.split("## First cloud run", 1)[1].split("\n## ", 1)[0]


def commands() -> list[list[str]]:
    """The section's peftops commands, continuation lines joined, as argument lists."""
    blocks = re.findall(r"```bash\n(.*?)```", section(), flags=re.S)
    lines = " ".join(blocks).replace("\\\n", " ").splitlines()
    found = []
    for line in (" ".join(b.replace("\\\n", " ").split("\n")) for b in blocks):
        for command in line.split(".venv/bin/peftops ")[1:]:
            found.append(command.split(" npx ")[0].split(" BUCKET=")[0].strip())
    assert lines and found
    return [shlex.split(c, comments=True) for c in found]


def test_the_section_shows_each_step_of_a_first_run() -> None:
    verbs = [" ".join(c[:2]) for c in commands()]
    assert verbs == [
        "pipeline cost",
        "data publish",  # one per task of the stage
        "data publish",
        "pipeline start",
        "pipeline start",
        "pipeline status",
        "baseline publish",
        "models list",
        "models approve",
    ]
    text = section()
    assert "npx cdk deploy -c stage=dev" in text
    assert "OutputKey=='BucketName'" in text
    # The AWS CLI reads the stack in the stage's region too, not the profile's.
    assert f"describe-stacks --stack-name Peftops-dev --region {REGION}" in text


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_the_quota_and_cost_tables_are_the_definitions(stage: str) -> None:
    result = CliRunner().invoke(app, ["pipeline", "cost", "--stage", stage])
    assert result.exit_code == 0, result.output
    quotas = re.findall(r"^  (ml\.\S+ for [a-z ]+): (\d+)$", result.output, flags=re.M)
    row = re.search(rf"^\| {stage} \| (.+) \|$", section(), flags=re.M)
    assert row is not None
    assert row[1] == ", ".join(f"`{name}`: {count}" for name, count in quotas)
    bounds = re.findall(r"BaselineMode=(\w+): at most (\$[\d,.]+)", result.output)
    cost_row = re.search(rf"^\| {stage} \(.*?\) \| (.+) \|$", section(), flags=re.M)
    assert cost_row is not None
    assert cost_row[1] == " | ".join(f"at most {usd}" for _, usd in bounds)


@pytest.fixture
def account(monkeypatch: pytest.MonkeyPatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", PROFILE_REGION)
    monkeypatch.chdir(REPO)  # the README's paths are relative to the checkout
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)  # us-east-1 takes no LocationConstraint
        sagemaker = boto3.client("sagemaker", region_name=REGION)
        sagemaker.create_pipeline(
            PipelineName="peftops-adapter-dev",
            PipelineDefinition=json.dumps({"Version": "2020-12-01", "Parameters": [], "Steps": []}),
            RoleArn="arn:aws:iam::123456789012:role/peftops",
        )
        sagemaker.create_model_package_group(ModelPackageGroupName="peftops-adapters-dev")
        yield s3, sagemaker


def seed_a_finished_run(s3, sagemaker) -> None:
    """What the first execution leaves: its evaluation, and version 1 pending approval."""
    evaluation = make_evaluation(adapter=0.44, full_finetune=0.45, base=0.22)
    key = f"pipelines/peftops-adapter-dev/evaluation/{TRAIN_JOB}/Evaluate/evaluation.json"
    s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(evaluation))
    SageMakerRegistry("peftops-adapters-dev", sagemaker_client=sagemaker, s3_client=s3).register(
        Registration(
            group="peftops-adapters-dev",
            model_data_url=f"s3://{BUCKET}/models/{TRAIN_JOB}/output/model.tar.gz",
            status="PendingManualApproval",
            metadata={
                "metric_tolerance": "0.02",
                "min_metric_gain": "0.01",
                # What the pipeline's CheckRegistered records at registration.
                EVALUATION_DIGEST: evaluation_digest(json.dumps(evaluation).encode()),
            },
            evaluation_uri=f"s3://{BUCKET}/{key}",
            evaluation=evaluation,
            description="adapter",
        )
    )


STEPS = {
    "PipelineExecutionSteps": [
        {"StepName": "ResolveInputs", "StepStatus": "Succeeded"},
        {
            "StepName": "CheckRegistered",
            "StepStatus": "Succeeded",
            "Metadata": {
                "Lambda": {
                    "Arn": "arn:aws:lambda:eu-west-1:123456789012:function:f",
                    "OutputParameters": [
                        {"Name": "Registered", "Value": "true"},
                        {"Name": "Message", "Value": "adapter already registered as v1"},
                    ],
                }
            },
        },
    ]
}


def stub_execution_steps(**_: object) -> tuple[object, dict]:
    """moto has no ListPipelineExecutionSteps: answer it before the request is sent."""
    from botocore.awsrequest import AWSResponse

    return AWSResponse("https://sagemaker", 200, {}, None), {
        **STEPS,
        "ResponseMetadata": {"HTTPStatusCode": 200},
    }


def test_every_command_runs_as_written(account, monkeypatch: pytest.MonkeyPatch) -> None:
    s3, sagemaker = account
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # restored afterwards, with no stub
    boto3.setup_default_session()
    boto3.DEFAULT_SESSION.events.register(
        "before-call.sagemaker.ListPipelineExecutionSteps", stub_execution_steps
    )
    sent: list[str] = []
    boto3.DEFAULT_SESSION.events.register(
        "before-send", lambda request, **_: sent.append(request.url)
    )
    runner = CliRunner()
    execution = ""
    for args in commands():
        args = [
            a.replace("$BUCKET", BUCKET)
            .replace("<TrainAdapter job>", TRAIN_JOB)
            .replace("$EXECUTION_ARN", execution)
            for a in args
        ]
        if args[:2] == ["baseline", "publish"]:
            seed_a_finished_run(s3, sagemaker)
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
        if args[:2] == ["pipeline", "status"]:
            assert "CheckRegistered: Succeeded adapter already registered as v1" in result.output
        if args[:2] == ["pipeline", "start"]:
            execution = re.search(r"arn:aws:sagemaker:\S+", result.output)[0]
            assert f":{REGION}:" in execution
    for task in ("dialogue-summary", "support-routing"):
        markers = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"datasets/{task}/published/")
        assert len(markers["Contents"]) == 1, task
    baseline = s3.get_object(Bucket=BUCKET, Key="baselines/dialogue-summary/evaluation.json")
    assert baseline["Body"].read()
    package = sagemaker.list_model_packages(ModelPackageGroupName="peftops-adapters-dev")
    assert package["ModelPackageSummaryList"][0]["ModelApprovalStatus"] == "Approved"
    assert sent and not [url for url in sent if PROFILE_REGION in url], sent


@pytest.mark.parametrize("instance_type", ["ml.g5.2xlarge", "ml.g5.12xlarge"])
def test_the_readmes_endpoint_costs_are_what_pipeline_cost_prints(
    tmp_path, instance_type: str
) -> None:
    settings = json.loads((REPO / "cdk.json").read_text())
    settings["context"]["stages"]["dev"]["serving"] = {"instance_type": instance_type}
    cdk_json = tmp_path / "cdk.json"
    cdk_json.write_text(json.dumps(settings))
    result = CliRunner().invoke(
        app, ["pipeline", "cost", "--stage", "dev", "--cdk-json", str(cdk_json)]
    )
    assert result.exit_code == 0, result.output
    printed = re.search(r"1 x \S+ \$([\d.,]+)/h, about \$([\d,]+) a month", result.output)
    assert printed is not None, result.output
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    row = re.search(
        rf'^\| with `"serving": {{"instance_type": "{re.escape(instance_type)}"}}` \| 1 x '
        rf"{re.escape(instance_type)} \| \$([\d.,]+) \(about \$([\d,]+) a month\) \|$",
        readme,
        flags=re.M,
    )
    assert row is not None
    assert row.groups() == printed.groups()
    shipped = CliRunner().invoke(app, ["pipeline", "cost", "--stage", "dev"])
    assert "endpoint: none (serving is off for this stage)" in shipped.output
