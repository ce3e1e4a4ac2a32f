"""Invoke a served task, locally or on a stage's SageMaker endpoint, with the same body: a
client changes only its target (`http://127.0.0.1:8080` or `sagemaker:ENDPOINT`)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from pipelines.functions.registered_adapter import inference_component_name
from pipelines.serving.server import COMPONENT_HEADER


class InvokeError(Exception):
    """The endpoint refused or failed the request; the message is its answer."""


def body(text: str, max_new_tokens: int) -> bytes:
    return json.dumps({"inputs": text, "parameters": {"max_new_tokens": max_new_tokens}}).encode()


def invoke_local(url: str, task: str, text: str, max_new_tokens: int, timeout: float = 300) -> str:
    request = urllib.request.Request(
        f"{url.rstrip('/')}/invocations",
        data=body(text, max_new_tokens),
        headers={"Content-Type": "application/json", COMPONENT_HEADER: task},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())["generated_text"]
    except urllib.error.HTTPError as err:
        detail = json.loads(err.read() or b"{}").get("detail", err.reason)
        raise InvokeError(f"{url} answered {err.code}: {detail}") from None
    except urllib.error.URLError as err:
        raise InvokeError(f"{url}: {err.reason}; is `peftops serve` running?") from None


def invoke_sagemaker(
    endpoint: str, task: str, text: str, max_new_tokens: int, runtime: Any = None
) -> str:
    import boto3

    runtime = runtime or boto3.client("sagemaker-runtime")
    response = runtime.invoke_endpoint(
        EndpointName=endpoint,
        InferenceComponentName=inference_component_name(endpoint, task),
        ContentType="application/json",
        Accept="application/json",
        Body=body(text, max_new_tokens),
    )
    answer = json.loads(response["Body"].read())
    return (answer[0] if isinstance(answer, list) else answer)["generated_text"]


def invoke(target: str, task: str, text: str, max_new_tokens: int) -> str:
    if target.startswith("sagemaker:"):
        return invoke_sagemaker(target.removeprefix("sagemaker:"), task, text, max_new_tokens)
    if target.startswith(("http://", "https://")):
        return invoke_local(target, task, text, max_new_tokens)
    raise InvokeError(f"--endpoint {target!r}: use http://HOST:PORT or sagemaker:ENDPOINT")
