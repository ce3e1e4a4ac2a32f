"""`peftops pipeline start` against SageMaker (moto): overrides and the idempotency token reach the API."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from pipelines.cli import app


@pytest.fixture
def sagemaker(monkeypatch: pytest.MonkeyPatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("sagemaker", region_name="us-east-1")
        definition = {
            "Version": "2020-12-01",
            "Parameters": [{"Name": "LoraRank", "Type": "Integer", "DefaultValue": 16}],
            "Steps": [],
        }
        client.create_pipeline(
            PipelineName="peftops-adapter",
            PipelineDefinition=json.dumps(definition),
            RoleArn="arn:aws:iam::123456789012:role/peftops",
        )
        yield client


def test_start_passes_overrides_and_reports_the_execution(sagemaker) -> None:
    result = CliRunner().invoke(
        app,
        ["pipeline", "start", "--param", "LoraRank=8", "--token", "nightly-2026-11-27", "--json"],
    )
    assert result.exit_code == 0, result.output
    arn = json.loads(result.output)["PipelineExecutionArn"]
    execution = sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn)
    assert execution["PipelineExecutionStatus"] in {"Executing", "Succeeded"}
    parameters = sagemaker.list_pipeline_parameters_for_execution(PipelineExecutionArn=arn)[
        "PipelineParameters"
    ]
    assert {"Name": "LoraRank", "Value": "8"} in parameters


def test_start_of_an_unknown_pipeline_is_a_one_line_error(sagemaker) -> None:
    result = CliRunner().invoke(app, ["pipeline", "start", "--name", "nope"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("peftops: error: AWS:")


def test_malformed_override_is_refused(sagemaker) -> None:
    result = CliRunner().invoke(app, ["pipeline", "start", "--param", "LoraRank"])
    assert result.exit_code == 2 and "use Name=Value" in result.output
