"""What a SageMaker job's environment gives a script: its paths (SageMaker's variables inside a
job, local folders on a laptop) and the Hugging Face token, read from Secrets Manager at start.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, TypeVar

if __package__:  # imported as part of the training_scripts package
    from . import contracts
else:  # run as a file in a SageMaker job: sibling modules are top-level
    import contracts


T = TypeVar("T")


class ArgumentsError(ValueError):
    """A job's command line names an argument its script does not take."""


def parsed_arguments(kind: type[T], argv: list[str] | None) -> T:
    """A script's arguments as its dataclass; an unknown (or misspelt) flag is an
    `ArgumentsError` naming it, never HfArgumentParser's traceback."""
    from transformers import HfArgumentParser

    args, unknown = HfArgumentParser(kind).parse_args_into_dataclasses(
        args=argv, return_remaining_strings=True
    )
    if unknown:
        raise ArgumentsError(f"unknown arguments {' '.join(unknown)}; see --help")
    return args


class HubTokenError(ValueError):
    """The Hugging Face token secret cannot be read; the message names the secret and fix."""


def use_hub_token_from_secrets_manager() -> bool:
    """Gated base models (Llama, Gemma, Mistral) need a Hugging Face token. A job is given the
    ARN of a Secrets Manager secret holding it; the token is read here, at start, into this
    process's HF_TOKEN (which the Hub client reads) and is never logged or written. The secret
    holds the token, or a JSON object with an `HF_TOKEN` key. Returns whether it was set."""
    arn = os.environ.get(contracts.HUB_TOKEN_SECRET_VARIABLE, "")
    if not arn or os.environ.get("HF_TOKEN"):
        return False
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    region = arn.split(":")[3] if arn.count(":") >= 6 else None
    try:
        value = boto3.client("secretsmanager", region_name=region).get_secret_value(SecretId=arn)
    except (BotoCoreError, ClientError) as err:
        raise HubTokenError(
            f"cannot read the Hugging Face token secret {arn} ({type(err).__name__}); check that "
            "it exists and that the stage's hf_token_secret_arn names it"
        ) from None
    secret = value.get("SecretString", "").strip()
    if secret.startswith("{"):
        secret = str(json.loads(secret).get("HF_TOKEN", "")).strip()
    if not secret:
        raise HubTokenError(f"the secret {arn} holds no Hugging Face token (or no HF_TOKEN key)")
    os.environ["HF_TOKEN"] = secret
    return True


def sagemaker_path(env_var: str | None, container_path: str, local_path: str) -> str:
    """SageMaker's environment variable if set, the container path inside a SageMaker job,
    else a local folder, so the same script runs in a container and on a laptop."""
    if env_var and os.environ.get(env_var):
        return os.environ[env_var]
    if Path("/opt/ml").is_dir():
        return container_path
    return local_path


def sagemaker_path_field(
    container_path: str, local_path: str, help: str, *, env_var: str | None = None
) -> Any:
    """A path argument whose default is `sagemaker_path(...)`, resolved when parsed."""
    return dataclasses.field(
        default_factory=lambda: sagemaker_path(env_var, container_path, local_path),
        metadata={"help": help},
    )
