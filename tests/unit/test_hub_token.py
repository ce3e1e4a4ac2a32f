"""Gated base models: the jobs get a Secrets Manager secret's ARN, never the token, and read the
token at start; the role may read that one secret (moto for Secrets Manager)."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from pipelines.definition import definition_json
from pipelines.definition.config import Deployment, PipelineConfig
from pipelines.definition.service_rules import steps_of
from training_scripts import contracts, job_environment, model_loading

TOKEN = "hf_secretvalue1234567890"


@pytest.fixture(autouse=True)
def no_hub_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """The code under test sets HF_TOKEN in this process: each test starts without one and
    leaves none behind (set first, so that the undo removes what the test wrote)."""
    monkeypatch.setenv("HF_TOKEN", "")
    monkeypatch.delenv("HF_TOKEN")


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="eu-west-1")
        yield client


def test_the_token_is_read_from_the_secret_into_the_process(secret, monkeypatch) -> None:
    arn = secret.create_secret(Name="peftops/hf-token", SecretString=TOKEN)["ARN"]
    monkeypatch.setenv(contracts.HUB_TOKEN_SECRET_VARIABLE, arn)
    assert job_environment.use_hub_token_from_secrets_manager()
    import os

    assert os.environ["HF_TOKEN"] == TOKEN


def test_a_json_secret_holds_it_under_hf_token(secret, monkeypatch) -> None:
    arn = secret.create_secret(Name="peftops/json", SecretString=json.dumps({"HF_TOKEN": TOKEN}))[
        "ARN"
    ]
    monkeypatch.setenv(contracts.HUB_TOKEN_SECRET_VARIABLE, arn)
    assert job_environment.use_hub_token_from_secrets_manager()
    import os

    assert os.environ["HF_TOKEN"] == TOKEN


def test_a_missing_secret_is_a_one_line_error_without_the_token(secret, monkeypatch) -> None:
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:peftops/none-AbCdEf"
    monkeypatch.setenv(contracts.HUB_TOKEN_SECRET_VARIABLE, arn)
    with pytest.raises(
        job_environment.HubTokenError, match="cannot read the Hugging Face token secret"
    ):
        job_environment.use_hub_token_from_secrets_manager()


def test_without_a_secret_nothing_is_read(monkeypatch) -> None:
    monkeypatch.delenv(contracts.HUB_TOKEN_SECRET_VARIABLE, raising=False)
    assert not job_environment.use_hub_token_from_secrets_manager()


def test_jobs_get_the_secret_arn_never_a_token() -> None:
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:peftops/hf-token-AbCdEf"
    deployment = Deployment(
        region="eu-west-1",
        role_arn="arn:aws:iam::123456789012:role/r",
        bucket="peftops-test-bucket",
        kms_key_arn="arn:aws:kms:eu-west-1:123456789012:key/k",
    )
    body, _ = definition_json(PipelineConfig(hf_token_secret_arn=arn), deployment)
    definition = json.loads(body)
    jobs = [s for s in steps_of(definition["Steps"]) if s["Type"] in ("Training", "Processing")]
    assert len(jobs) == 5  # preprocess, two trainings, two evaluations
    for step in jobs:
        assert step["Arguments"]["Environment"][contracts.HUB_TOKEN_SECRET_VARIABLE] == arn
    assert 'HF_TOKEN"' not in body and "hf_" not in body.replace("peftops/hf-token", "")


def test_only_a_full_secret_arn_is_accepted() -> None:
    with pytest.raises(ValueError, match="is not a secret's full ARN"):
        PipelineConfig(hf_token_secret_arn="peftops/hf-token")


def test_a_model_neither_here_nor_on_the_hub_is_one_line_naming_the_fix(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(model_loading.ModelNotFoundError) as caught:
        model_loading.load_tokenizer("peftops-tests/no-such-model")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("peftops-tests/no-such-model: no such model folder")
    assert "HF_HUB_OFFLINE=1" in message and "pass a local model folder" in message


@pytest.mark.parametrize(
    ("secret_string", "token"),
    [
        (f"  {TOKEN}\n", TOKEN),
        (json.dumps({"HF_TOKEN": f" {TOKEN} ", "other": "x"}), TOKEN),
    ],
)
def test_the_token_is_read_without_the_blanks_around_it(
    secret, monkeypatch, secret_string: str, token: str
) -> None:
    arn = secret.create_secret(Name="peftops/padded", SecretString=secret_string)["ARN"]
    monkeypatch.setenv(contracts.HUB_TOKEN_SECRET_VARIABLE, arn)
    assert job_environment.use_hub_token_from_secrets_manager()
    import os

    assert os.environ["HF_TOKEN"] == token


@pytest.mark.parametrize(
    "stored",
    [
        {"SecretString": json.dumps({"token": TOKEN})},
        {"SecretString": json.dumps({"HF_TOKEN": "  "})},
        {"SecretString": "   "},
        {"SecretBinary": TOKEN.encode()},
    ],
    ids=["json-without-the-key", "json-blank", "blank", "binary-only"],
)
def test_a_secret_without_a_token_is_refused_naming_it(secret, monkeypatch, stored) -> None:
    arn = secret.create_secret(Name="peftops/empty", **stored)["ARN"]
    monkeypatch.setenv(contracts.HUB_TOKEN_SECRET_VARIABLE, arn)
    with pytest.raises(job_environment.HubTokenError) as caught:
        job_environment.use_hub_token_from_secrets_manager()
    assert str(caught.value) == (
        f"the secret {arn} holds no Hugging Face token (or no HF_TOKEN key)"
    )
    import os

    assert "HF_TOKEN" not in os.environ


def test_an_unreadable_secret_names_it_the_error_and_the_fix(secret, monkeypatch) -> None:
    arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:peftops/none-AbCdEf"
    monkeypatch.setenv(contracts.HUB_TOKEN_SECRET_VARIABLE, arn)
    with pytest.raises(job_environment.HubTokenError) as caught:
        job_environment.use_hub_token_from_secrets_manager()
    assert str(caught.value) == (
        f"cannot read the Hugging Face token secret {arn} (ResourceNotFoundException); check that it exists "
        "and that the stage's hf_token_secret_arn names it"
    )


def test_the_secret_is_read_in_its_own_region_and_a_name_in_the_jobs(secret, monkeypatch) -> None:
    """A full ARN says its region (the job's may differ); a bare name is the job region's."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    arn = secret.create_secret(Name="peftops/eu", SecretString="hf_eu")["ARN"]
    monkeypatch.setenv(contracts.HUB_TOKEN_SECRET_VARIABLE, arn)
    assert job_environment.use_hub_token_from_secrets_manager()
    import os

    assert os.environ.pop("HF_TOKEN") == "hf_eu"
    boto3.client("secretsmanager", region_name="us-east-1").create_secret(
        Name="peftops/us", SecretString="hf_us"
    )
    monkeypatch.setenv(contracts.HUB_TOKEN_SECRET_VARIABLE, "peftops/us")
    assert job_environment.use_hub_token_from_secrets_manager()
    assert os.environ.pop("HF_TOKEN") == "hf_us"


def test_a_token_already_given_is_kept_and_no_secret_is_read(monkeypatch) -> None:
    """A job given HF_TOKEN directly (a local run) reads nothing: there is no AWS here."""
    monkeypatch.setenv("HF_TOKEN", "hf_given")
    monkeypatch.setenv(
        contracts.HUB_TOKEN_SECRET_VARIABLE,
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:peftops/unreachable-AbCdEf",
    )
    assert not job_environment.use_hub_token_from_secrets_manager()
    import os

    assert os.environ["HF_TOKEN"] == "hf_given"


def test_an_unknown_argument_is_named_with_every_word_of_it() -> None:
    from training_scripts.evaluate import EvaluateArguments

    with pytest.raises(job_environment.ArgumentsError) as caught:
        job_environment.parsed_arguments(
            EvaluateArguments,
            ["--base-model", "m", "--baseline-dir", "b", "--bogus", "1", "--other"],
        )
    assert str(caught.value) == "unknown arguments --bogus 1 --other; see --help"
