"""Invoke a served task, locally or on a stage's SageMaker endpoint, with the same body: the
task's chat-completions request (`tasks.chat_request`), built from the task spec the adapter
was trained with. A client changes only its target (`http://127.0.0.1:8080` or
`sagemaker:ENDPOINT`)."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from typing import Any

from pipelines.functions.registered_adapter import inference_component_name
from pipelines.serving.server import COMPONENT_HEADER


class InvokeError(Exception):
    """The endpoint refused or failed the request; the message is its answer."""


def answer_text(answer: Any) -> str:
    """The assistant's text of a chat.completion answer."""
    try:
        return str(answer["choices"][0]["message"]["content"])
    except (KeyError, IndexError, TypeError):
        raise InvokeError(f"not a chat-completions answer: {str(answer)[:200]}") from None


def invoke_local(url: str, task: str, body: dict[str, Any], timeout: float = 300) -> str:
    try:
        request = urllib.request.Request(
            f"{url.rstrip('/')}/invocations",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", COMPONENT_HEADER: task},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as err:
        raise InvokeError(f"{url} answered {err.code}: {error_detail(err)}") from None
    except urllib.error.URLError as err:
        raise InvokeError(f"{url}: {err.reason}; is `peftops serve` running?") from None
    except (http.client.HTTPException, OSError, ValueError) as err:
        # A malformed URL, a closed connection, a server that is not HTTP: one line each.
        raise InvokeError(f"{url}: {type(err).__name__}: {err}") from None
    try:
        answer = json.loads(raw)
    except ValueError:
        raise InvokeError(f"{url} answered no JSON: is it a peftops endpoint?") from None
    return answer_text(answer)


def error_detail(err: urllib.error.HTTPError) -> str:
    """An error reply's message: its JSON `detail`, else the start of its text."""
    raw = err.read() or b""
    try:
        detail = json.loads(raw).get("detail")
    except (ValueError, AttributeError):
        detail = None
    text = str(detail) if detail else raw[:200].decode("utf-8", "replace")
    return " ".join(text.split()) or err.reason  # one line, whatever the page held


def invoke_sagemaker(endpoint: str, task: str, body: dict[str, Any], runtime: Any = None) -> str:
    import boto3

    runtime = runtime or boto3.client("sagemaker-runtime")
    response = runtime.invoke_endpoint(
        EndpointName=endpoint,
        InferenceComponentName=inference_component_name(endpoint, task),
        ContentType="application/json",
        Accept="application/json",
        Body=json.dumps(body).encode(),
    )
    return answer_text(json.loads(response["Body"].read()))


def served_task_specs(url: str, timeout: float = 30) -> dict[str, dict[str, Any]]:
    """The specs of the tasks a local endpoint serves (its `GET /tasks`)."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/tasks", timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as err:
        raise InvokeError(f"{url}/tasks answered {err.code}: is it a peftops endpoint?") from None
    except urllib.error.URLError as err:
        raise InvokeError(f"{url}: {err.reason}; is `peftops serve` running?") from None
    except (http.client.HTTPException, OSError, ValueError) as err:
        raise InvokeError(f"{url}: {type(err).__name__}: {err}") from None
    try:
        specs = json.loads(raw)
    except ValueError:
        raise InvokeError(f"{url}/tasks answered no JSON: is it a peftops endpoint?") from None
    if not isinstance(specs, dict):
        raise InvokeError(f"{url}/tasks answered no task list: is it a peftops endpoint?")
    return specs


def invoke(target: str, task: str, body: dict[str, Any]) -> str:
    if target.startswith("sagemaker:"):
        return invoke_sagemaker(target.removeprefix("sagemaker:"), task, body)
    if target.startswith(("http://", "https://")):
        return invoke_local(target, task, body)
    raise InvokeError(f"--endpoint {target!r}: use http://HOST:PORT or sagemaker:ENDPOINT")
