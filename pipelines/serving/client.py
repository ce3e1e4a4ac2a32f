"""Invoke a served task, locally or on a stage's SageMaker endpoint, with the same body: the
task's chat-completions request (`tasks.chat_request`), built from the task spec the adapter
was trained with. A client changes only its target (`http://127.0.0.1:8080` or
`sagemaker:ENDPOINT`)."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from pipelines.functions.registered_adapter import (
    BASE_COMPONENT,
    SERVING_TAG,
    base_component_name,
    is_task_component,
    legacy_component_name,
)
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
    answer = json_reply(
        url,
        "/invocations",
        timeout,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", COMPONENT_HEADER: task},
        error_reply=error_detail,
    )
    return answer_text(answer)


def json_reply(
    url: str,
    path: str,
    timeout: float,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    error_reply: Callable[[urllib.error.HTTPError], str],
) -> Any:
    """A local endpoint's JSON reply to one request (POST with `data`, else GET); each way the
    exchange can fail is one InvokeError line: an error reply (`error_reply` words it), no
    server, a malformed URL, a closed connection, a server that is not HTTP, a reply that is
    not JSON."""
    where = url if path == "/invocations" else f"{url}{path}"
    try:
        request = urllib.request.Request(
            f"{url.rstrip('/')}{path}",
            data=data,
            headers=headers or {},
            method="POST" if data is not None else "GET",
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as err:
        raise InvokeError(f"{where} answered {err.code}: {error_reply(err)}") from None
    except urllib.error.URLError as err:
        raise InvokeError(f"{url}: {err.reason}; is `peftops serve` running?") from None
    except (http.client.HTTPException, OSError, ValueError) as err:
        raise InvokeError(f"{url}: {type(err).__name__}: {err}") from None
    try:
        return json.loads(raw)
    except ValueError:
        raise InvokeError(f"{where} answered no JSON: is it a peftops endpoint?") from None


def error_detail(err: urllib.error.HTTPError) -> str:
    """An error reply's message: its JSON `detail`, else the start of its text."""
    raw = err.read() or b""
    try:
        detail = json.loads(raw).get("detail")
    except (ValueError, AttributeError):
        detail = None
    text = str(detail) if detail else raw[:200].decode("utf-8", "replace")
    return " ".join(text.split()) or err.reason  # one line, whatever the page held


def serving_component(sagemaker: Any, endpoint: str, task: str) -> str:
    """The inference component that answers `task` on a stage's endpoint now. Each version has
    its own; the stage deployer tags one `peftops:serving` once its smoke test passed and then
    deletes the task's others. So: the task's one component in service, or, while a
    deployment hands over, the newest tagged one (one from before components per version, which
    carries no tag, while nothing else is tagged). Read from the endpoint itself, whatever stage
    the registry now gives the version."""
    if task == BASE_COMPONENT:
        return base_component_name(endpoint)
    pages = sagemaker.get_paginator("list_inference_components").paginate(
        EndpointNameEquals=endpoint, StatusEquals="InService"
    )
    candidates = [
        c
        for page in pages
        for c in page["InferenceComponents"]
        if is_task_component(c["InferenceComponentName"], endpoint, task)
    ]
    if not candidates:
        raise InvokeError(
            f"endpoint {endpoint} serves no component for task {task}: has a version of it "
            "been deployed to the endpoint's stage?"
        )
    if len(candidates) > 1:
        tagged = [
            c
            for c in candidates
            if any(
                t["Key"] == SERVING_TAG
                for t in sagemaker.list_tags(ResourceArn=c["InferenceComponentArn"])["Tags"]
            )
        ]
        legacy = [
            c for c in candidates
            if c["InferenceComponentName"] == legacy_component_name(endpoint, task)
        ]  # fmt: skip
        candidates = tagged or legacy or candidates
    return max(candidates, key=lambda c: c["CreationTime"])["InferenceComponentName"]


def invoke_sagemaker(endpoint: str, component: str, body: dict[str, Any], runtime: Any) -> str:
    response = runtime.invoke_endpoint(
        EndpointName=endpoint,
        InferenceComponentName=component,
        ContentType="application/json",
        Accept="application/json",
        Body=json.dumps(body).encode(),
    )
    return answer_text(json.loads(response["Body"].read()))


def served_task_specs(url: str, timeout: float = 30) -> dict[str, dict[str, Any]]:
    """The specs of the tasks a local endpoint serves (its `GET /tasks`)."""
    specs = json_reply(url, "/tasks", timeout, error_reply=lambda _: "is it a peftops endpoint?")
    if not isinstance(specs, dict):
        raise InvokeError(f"{url}/tasks answered no task list: is it a peftops endpoint?")
    return specs


def invoke(target: str, task: str, body: dict[str, Any], *, region: str | None = None) -> str:
    """`target`'s answer: a local endpoint's, or a SageMaker endpoint's in `region`."""
    if target.startswith("sagemaker:"):
        import boto3

        runtime = boto3.client("sagemaker-runtime", region_name=region)
        sagemaker = boto3.client("sagemaker", region_name=region)
        endpoint = target.removeprefix("sagemaker:")
        component = serving_component(sagemaker, endpoint, task)
        return invoke_sagemaker(endpoint, component, body, runtime)
    if target.startswith(("http://", "https://")):
        return invoke_local(target, task, body)
    raise InvokeError(f"--endpoint {target!r}: use http://HOST:PORT or sagemaker:ENDPOINT")
