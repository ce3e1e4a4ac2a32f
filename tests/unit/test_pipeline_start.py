"""`peftops pipeline start` against SageMaker: overrides reach the API (moto), and the
idempotency token reaches it the same on every retry (botocore Stubber: moto ignores it)."""

from __future__ import annotations

import hashlib
import json

import boto3
import botocore.session
import pytest
from botocore.stub import Stubber
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
    arn = json.loads(result.stdout)["PipelineExecutionArn"]
    execution = sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn)
    assert execution["PipelineExecutionStatus"] in {"Executing", "Succeeded"}
    parameters = sagemaker.list_pipeline_parameters_for_execution(PipelineExecutionArn=arn)[
        "PipelineParameters"
    ]
    assert {"Name": "LoraRank", "Value": "8"} in parameters


def stubbed_sagemaker(monkeypatch: pytest.MonkeyPatch) -> tuple[Stubber, list[dict]]:
    """The CLI's SageMaker client with stubbed answers (botocore still validates every
    request), and the StartPipelineExecution requests it sends."""
    client = botocore.session.get_session().create_client(
        "sagemaker",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    sent: list[dict] = []
    client.meta.events.register(
        "provide-client-params.sagemaker.StartPipelineExecution",
        lambda params, **_: sent.append(dict(params)),
    )
    monkeypatch.setattr(boto3, "client", lambda *args, **kwargs: client)
    return Stubber(client), sent


def test_the_token_reaches_the_api_the_same_on_every_retry(monkeypatch) -> None:
    """SageMaker starts one execution per ClientRequestToken: a retried start with the same
    --token must send the same token, and starts without one must not collide."""
    stubber, sent = stubbed_sagemaker(monkeypatch)
    arn = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/peftops-adapter/execution/abc"
    for _ in range(4):
        stubber.add_response("start_pipeline_execution", {"PipelineExecutionArn": arn})
    with stubber:
        for args in (["--token", "nightly-2026-11-27"],) * 2 + ([],) * 2:
            result = CliRunner().invoke(app, ["pipeline", "start", *args])
            assert result.exit_code == 0 and result.stdout.strip() == arn, result.output
    stubber.assert_no_pending_responses()
    tokens = [request["ClientRequestToken"] for request in sent]
    assert tokens[0] == tokens[1] == hashlib.sha256(b"nightly-2026-11-27").hexdigest()
    assert len(set(tokens)) == 3 and all(32 <= len(t) <= 128 for t in tokens)


def test_start_of_an_unknown_pipeline_is_a_one_line_error(sagemaker) -> None:
    result = CliRunner().invoke(app, ["pipeline", "start", "--name", "nope"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("peftops: error: AWS:")


def test_malformed_override_is_refused(sagemaker) -> None:
    result = CliRunner().invoke(app, ["pipeline", "start", "--param", "LoraRank"])
    assert result.exit_code == 2 and "use Name=Value" in result.output


IMPORT_EVERYTHING_THEN_START = """
import importlib, json, os, pkgutil, sys
before = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "SAGEMAKER_"))}
for package in ("training_scripts", "pipelines", "infra"):
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
after = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "SAGEMAKER_"))}
assert after == before, (before, after)

import boto3
from moto import mock_aws
from typer.testing import CliRunner
from pipelines.cli import app

with mock_aws():
    boto3.client("sagemaker").create_pipeline(
        PipelineName="peftops-adapter",
        PipelineDefinition=json.dumps({"Version": "2020-12-01", "Parameters": [], "Steps": []}),
        RoleArn="arn:aws:iam::123456789012:role/peftops",
    )
    result = CliRunner().invoke(app, ["pipeline", "start", "--json"])
    print(result.output)
"""


def test_start_calls_the_users_region_after_every_module_is_imported(tmp_path) -> None:
    """Importing the project leaves the AWS environment alone: the region of the user's
    profile is used, not one the project would set for the process."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    config = tmp_path / "aws-config"
    config.write_text("[default]\nregion = eu-west-2\n")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONPATH": str(REPO),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": str(config),
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    }
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING_THEN_START],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    arn = json.loads(done.stdout.strip().splitlines()[-1])["PipelineExecutionArn"]
    assert arn.startswith("arn:aws:sagemaker:eu-west-2:"), arn


OUT_OF_RANGE = [
    ("Epochs", "1e308", "in (0, 1000]"),
    ("Epochs", "0", "in (0, 1000]"),
    ("Epochs", "nan", "in (0, 1000]"),
    ("Epochs", "inf", "in (0, 1000]"),
    ("LoraRank", "0", "a whole number in [1, 1024]"),
    ("LoraRank", "8.5", "a whole number in [1, 1024]"),
    ("LoraRank", "eight", "a whole number in [1, 1024]"),
    ("MinSteps", "-1", "a whole number in [0, 1e+06]"),
    ("LearningRate", "2", "in [0, 1]"),
    ("TokenBudget", "-5", "0 or a whole number in [1024, 1.04858e+06]"),
    ("TokenBudget", "512", "0 or a whole number in [1024, 1.04858e+06]"),
    ("TrainInstanceCount", "0", "a whole number in [1, 100]"),
]


@pytest.mark.parametrize(("name", "value", "allowed"), OUT_OF_RANGE)
def test_a_value_no_job_can_run_is_refused_before_a_start_or_a_run(
    tmp_path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, allowed: str
) -> None:
    """One line naming the parameter and its range, exit 2, and nothing started: no
    StartPipelineExecution request, no local job (the model is never even prepared)."""
    from pipelines.local import run as local_run
    from pipelines.local.errors import LocalRunError
    from pipelines.local.presets import PRESETS

    stub, sent = stubbed_sagemaker(monkeypatch)
    with stub:
        refused = CliRunner().invoke(app, ["pipeline", "start", "--param", f"{name}={value}"])
    assert refused.exit_code == 2 and sent == []
    line = refused.output.strip()
    assert (
        line == f"peftops: error: --param {name}={value}: {name} must be {allowed}, got {value!r}"
    )

    tiny = PRESETS["tiny"]
    monkeypatch.setitem(
        PRESETS, "tiny", tiny.__class__(**{**vars(tiny), "prepare_model": pytest.fail})
    )
    with pytest.raises(LocalRunError, match=rf"^--param {name}={value}: {name} must be"):
        local_run.run_local(
            preset_name="tiny", data=local_run.SAMPLE_PATH, out=tmp_path / "run",
            registry_path=tmp_path / "registry.sqlite", parameters={name: value},
        )  # fmt: skip


def test_every_default_and_preset_value_is_in_its_range() -> None:
    from pipelines.definition.builder import Parameters
    from pipelines.definition.config import PipelineConfig
    from pipelines.definition.parameter_ranges import PARAMETER_RANGES, parameter_range_error
    from pipelines.local.presets import LOCAL_DEPLOYMENT, PRESETS

    defaults = {
        p.name: p.default_value
        for p in Parameters.from_config(PipelineConfig(), LOCAL_DEPLOYMENT).all()
    }
    assert set(PARAMETER_RANGES) <= set(defaults)
    for values in (defaults, *(preset.parameters for preset in PRESETS.values())):
        assert [e for n, v in values.items() if (e := parameter_range_error(n, v))] == []


@pytest.mark.parametrize(
    ("name", "edge", "past"),
    [
        ("Epochs", "1000", "1000.001"),
        ("LoraRank", "1024", "1025"),
        ("LoraRank", "1", "0"),
        ("LearningRate", "1", "1.0001"),
        ("LearningRate", "0", "-0.0001"),
        ("MinSteps", "0", "-1"),
        ("TokenBudget", "1024", "1023"),
        ("TokenBudget", "0", "-1"),
        ("TokenBudget", "1048576", "1048577"),
        ("TrainInstanceCount", "100", "101"),
    ],
)
def test_a_range_holds_its_ends_and_nothing_past_them(name: str, edge: str, past: str) -> None:
    from pipelines.definition.parameter_ranges import parameter_range_error

    assert parameter_range_error(name, edge) is None
    assert parameter_range_error(name, past) is not None
    assert parameter_range_error("Task", "anything") is None  # not a numeric parameter
