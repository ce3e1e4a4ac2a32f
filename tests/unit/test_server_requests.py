"""What the local endpoint (pipelines/serving/server.py) answers each request, word for word:
a chat completion with its usage, the answer length a body leaves to its task, /ping and
/tasks, every refusal's status and one-line reason, and pydantic's errors in one line.

The server is the real one (uvicorn, FastAPI, peft's multi-adapter model) on a tiny
random-weight Llama with two random LoRA adapters, each with its own task spec."""

from __future__ import annotations

import dataclasses
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from pipelines.serving.adapters import BASE, AdapterModel, Answer, Request
from pipelines.serving.server import (
    COMPONENT_HEADER,
    DEFAULT_MAX_NEW_TOKENS,
    JSON_CHAR_BYTES,
    JSON_TURN_BYTES,
    MAX_QUEUE,
    MAX_TURNS,
    REQUEST_TIMEOUT_S,
    completion,
    max_body_bytes,
    validation_detail,
)
from tests.endpoints import Endpoint, serving
from training_scripts import tasks

DEFAULT_SPEC = tasks.resolve_task_spec(tasks.DEFAULT_TASK)
# Each task answers at its own length, and neither at the base model's default.
SPECS = {
    "notes": dataclasses.replace(DEFAULT_SPEC, name="notes", max_new_tokens=5),
    "summary": dataclasses.replace(DEFAULT_SPEC, name="summary", max_new_tokens=7),
}
DIALOGUE = "#Person1#: Could you send me the report by Friday?\n#Person2#: Sure, on Thursday."
GOOD = tasks.chat_request(DEFAULT_SPEC, DIALOGUE, 4)
HEADER_MISSING = f"name the task in the {COMPONENT_HEADER} header (or 'base' for the base model)"


@pytest.fixture(scope="module")
def model(tiny_causal: Path, tmp_path_factory: pytest.TempPathFactory) -> AdapterModel:
    from tests.unit.test_adapter_model import save_adapter

    root = tmp_path_factory.mktemp("adapters")
    adapters = {}
    for seed, (task, spec) in enumerate(SPECS.items()):
        adapters[task] = save_adapter(tiny_causal, root / task, seed)
        (adapters[task] / tasks.TASK_SPEC_FILE).write_text(json.dumps(spec.document()))
    return AdapterModel(str(tiny_causal), adapters)


@pytest.fixture(scope="module")
def endpoint(model: AdapterModel) -> Any:
    with serving(model) as served:
        yield served


def alone(model: AdapterModel, task: str, body: dict[str, Any], limit: int) -> Answer:
    return model.generate([Request(task, body["messages"], limit)])[0]


# --- answers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", [*SPECS, BASE])
def test_an_invocation_is_answered_as_a_chat_completion_with_its_usage(
    endpoint: Endpoint, model: AdapterModel, task: str
) -> None:
    reply = endpoint.post(GOOD, task)
    request = Request(task, GOOD["messages"], GOOD["max_tokens"])
    answer = alone(model, task, GOOD, GOOD["max_tokens"])
    prompt_tokens = len(model.prompt(request))
    assert reply.status == 200, reply
    assert reply.body == completion(answer, prompt_tokens)  # its shape: the test below


@pytest.mark.parametrize(
    ("task", "length"),
    [("notes", 5), ("summary", 7), (BASE, DEFAULT_MAX_NEW_TOKENS)],
)
def test_a_body_without_max_tokens_is_answered_at_its_tasks_length(
    endpoint: Endpoint, model: AdapterModel, task: str, length: int
) -> None:
    """As evaluation generated it: the adapter's own spec says how long an answer may run;
    the base model, which has none, answers at the server's default."""
    full = tasks.chat_request(DEFAULT_SPEC, "#Person1#: Where is the station?\n#Person2#: North.")
    body = {key: value for key, value in full.items() if key != "max_tokens"}
    assert alone(model, task, body, length).finish_reason == "length"  # never ends early
    reply = endpoint.post(body, task)
    assert reply.status == 200, reply
    assert reply.body["usage"]["completion_tokens"] == length
    assert reply.body["choices"][0]["finish_reason"] == "length"


def test_a_chat_completion_counts_prompt_and_answer_tokens() -> None:
    assert completion(Answer("a b", new_tokens=2, finish_reason="length"), 11) == {
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "a b"},
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13},
    }


# --- what the endpoint says about itself --------------------------------------------------------


def limits(model: AdapterModel, max_queue: int, timeout_s: float) -> dict[str, Any]:
    return {
        "max_context_tokens": model.max_context,
        "max_prompt_chars": model.max_prompt_chars,
        "max_body_bytes": max_body_bytes(model),
        "max_queue": max_queue,
        "request_timeout_s": timeout_s,
    }


def test_ping_reports_the_stage_its_tasks_its_load_and_what_a_client_may_send(
    model: AdapterModel,
) -> None:
    with serving(model, max_queue=3, request_timeout_s=9.5) as endpoint:
        idle = endpoint.get("/ping")
        first = endpoint.post(GOOD, "notes")
        second = endpoint.post(GOOD, "summary")
        busy = endpoint.get("/ping")
    expected = {
        "status": "Healthy",
        "stage": "test",
        "tasks": {"notes": 1, "summary": 1},
        "batches": 0,
        "largest_batch": 0,
        "longest_answer": 0,
        "queued": 0,
        "abandoned": 0,
        "refused_busy": 0,
        "limits": limits(model, 3, 9.5),
    }
    assert idle.status == 200 and idle.body == expected
    answered = [r.body["usage"]["completion_tokens"] for r in (first, second)]
    assert busy.body == {
        **expected,
        "batches": 2,
        "largest_batch": 1,
        "longest_answer": max(answered),
    }


def test_the_default_limits_are_the_queue_and_timeout_a_sagemaker_endpoint_has(
    endpoint: Endpoint, model: AdapterModel
) -> None:
    assert endpoint.get("/ping").body["limits"] == limits(model, MAX_QUEUE, REQUEST_TIMEOUT_S)
    assert (MAX_QUEUE, REQUEST_TIMEOUT_S) == (64, 60.0)


def test_the_body_limit_fits_the_longest_prompt_however_escaped_with_every_turns_json(
    model: AdapterModel,
) -> None:
    worst = JSON_CHAR_BYTES * model.max_prompt_chars + JSON_TURN_BYTES * MAX_TURNS
    assert max_body_bytes(model) == worst + 1024  # and a kilobyte for the rest of the body
    astral = json.dumps({"role": "user", "content": "\U0001f600"})
    assert len(astral) - len(json.dumps({"role": "user", "content": ""})) == JSON_CHAR_BYTES
    assert len(json.dumps({"role": "assistant", "content": ""}) + ", ") <= JSON_TURN_BYTES


def test_tasks_lists_each_served_tasks_spec(endpoint: Endpoint) -> None:
    reply = endpoint.get("/tasks")
    assert reply.status == 200
    assert reply.body == {task: spec.document() for task, spec in SPECS.items()}


# --- refusals ----------------------------------------------------------------------------------

ASSISTANT_FIRST = {**GOOD, "messages": [{"role": "assistant", "content": "hi"}]}
# The refusals pydantic words, as the endpoint puts them in one line.
INVALID = [
    (
        {**GOOD, "messages": []},
        "messages: List should have at least 1 item after validation, not 0",
    ),
    ({**GOOD, "max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
    ({**GOOD, "max_tokens": "4"}, "max_tokens: Input should be a valid integer"),
    ({**GOOD, "temperature": 0.5}, "temperature: Input should be less than or equal to 0"),
    ({**GOOD, "stream": True}, "stream: Extra inputs are not permitted"),
    ({"max_tokens": 4}, "messages: Field required"),
    (
        {**GOOD, "messages": [{"role": "user", "content": ""}]},
        "messages.0.content: String should have at least 1 character",
    ),
]


@pytest.mark.parametrize(("body", "detail"), INVALID, ids=[d.split(":")[0] for _, d in INVALID])
def test_a_body_that_does_not_validate_is_a_422_naming_its_field(
    endpoint: Endpoint, body: dict[str, Any], detail: str
) -> None:
    reply = endpoint.post(body)
    assert (reply.status, reply.body) == (422, {"detail": detail})


REFUSALS = [  # (task header, body, status, detail)
    (None, GOOD, 400, HEADER_MISSING),
    ("", GOOD, 400, HEADER_MISSING),
    (
        "other",
        GOOD,
        404,
        "no adapter serves task 'other' in test; served: notes, summary (and 'base', the base "
        "model)",
    ),
    (
        "notes",
        ASSISTANT_FIRST,
        422,
        "the turns after the system prompt alternate user and assistant, starting with the user "
        "(as chat templates require)",
    ),
]


@pytest.mark.parametrize(("task", "body", "status", "detail"), REFUSALS)
def test_a_request_no_model_should_read_is_refused_with_its_reason(
    endpoint: Endpoint, task: str | None, body: dict[str, Any], status: int, detail: str
) -> None:
    reply = endpoint.post(body, task)
    assert (reply.status, reply.body) == (status, {"detail": detail})


def test_a_prompt_the_model_cannot_take_is_a_400_in_the_models_words(
    endpoint: Endpoint, model: AdapterModel
) -> None:
    body = tasks.chat_request(DEFAULT_SPEC, "word " * model.max_context, 4)
    request = Request("notes", body["messages"], 4)
    with pytest.raises(Exception) as refused:
        model.prompt(request)
    reply = endpoint.post(body, "notes")
    assert (reply.status, reply.body) == (400, {"detail": str(refused.value)})


def test_a_body_that_is_not_json_is_a_422_saying_so(endpoint: Endpoint) -> None:
    reply = endpoint.post(None, raw=b"{not json")
    assert reply.status == 422
    assert reply.body == {
        "detail": "the body is not JSON (Expecting property name enclosed in double quotes)"
    }


def test_a_body_declared_over_the_limit_is_a_413_before_it_is_read(
    endpoint: Endpoint, model: AdapterModel
) -> None:
    limit = max_body_bytes(model)
    client = socket.create_connection((endpoint.host, endpoint.port), timeout=10)
    head = (
        f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"{COMPONENT_HEADER}: notes\r\nContent-Length: {limit + 1}\r\n\r\n"
    )
    client.sendall(head.encode())  # and not a byte of the body
    reply = client.makefile("rb").read().decode()
    client.close()
    assert reply.startswith("HTTP/1.1 413 ")
    detail = (
        f"a body of over {limit} bytes cannot fit this endpoint's context: shorten the messages"
    )
    assert reply.endswith(json.dumps({"detail": detail}, separators=(",", ":")))


def test_a_body_at_the_limit_is_read_and_a_body_in_small_chunks_is_read_whole(
    endpoint: Endpoint, model: AdapterModel
) -> None:
    whole = endpoint.post(GOOD, "notes")
    chunked = endpoint.post(GOOD, "notes", headers={"Transfer-Encoding": "chunked"}, chunk=7)
    assert (whole.status, chunked.body) == (200, whole.body)
    limit = max_body_bytes(model)
    padded = json.dumps(GOOD).encode()
    padded = padded[:-1] + b" " * (limit - len(padded)) + b"}"
    assert len(padded) == limit
    assert endpoint.post(None, "notes", raw=padded).body == whole.body


def test_a_failure_while_reading_the_prompt_is_a_json_500_without_a_trace(
    model: AdapterModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any) -> Any:
        raise KeyError("/opt/secret/path.py")

    with serving(model) as endpoint:
        monkeypatch.setattr(model, "prompt", broken)
        reply = endpoint.post(GOOD)
    assert (reply.status, reply.body) == (
        500,
        {"detail": "the endpoint failed (KeyError); its log says why"},
    )


# --- pydantic's errors in one line ---------------------------------------------------------------


def error(loc: tuple[Any, ...], msg: str = "bad", kind: str = "value_error") -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind}


@pytest.mark.parametrize(
    ("errors", "detail"),
    [
        ([error(("body", "messages", 0, "content"))], "messages.0.content: bad"),
        ([error(("body",))], "body: bad"),
        ([error(())], "body: bad"),
        ([{"loc": ("body", "x")}], "x: invalid"),
        ([{"msg": "bad", "type": "missing"}], "body: bad"),
        ([error(("body", "a b"))], "'a b': bad"),
        ([error(("body", "\u00e9 " * 30))], ascii("\u00e9 " * 30)[:40] + ": bad"),
        (
            [{"loc": ("body", 9), "type": "json_invalid", "ctx": {"error": "Expecting value"}}],
            "the body is not JSON (Expecting value)",
        ),
        ([{"loc": ("body",), "type": "json_invalid"}], "the body is not JSON (invalid)"),
        ([error(("body", "a")), error(("body", "b"), "worse")], "a: bad; b: worse"),
        ([error(("body", f"f{i}")) for i in range(5)], "; ".join(f"f{i}: bad" for i in range(5))),
        (
            [error(("body", f"f{i}")) for i in range(7)],
            "; ".join(f"f{i}: bad" for i in range(5)) + "; and 2 more",
        ),
        (
            [error(("body", f"f{i}")) for i in range(6)],
            "; ".join(f"f{i}: bad" for i in range(5)) + "; and 1 more",
        ),
    ],
)
def test_validation_errors_read_as_one_line_naming_each_field(
    errors: list[dict[str, Any]], detail: str
) -> None:
    assert validation_detail(errors) == detail


def test_the_client_sends_what_the_endpoint_takes_and_reads_what_it_answers(
    endpoint: Endpoint,
) -> None:
    """The CLI's client against this server, given the URL as a person may type it."""
    from pipelines.serving import client

    url = f"http://{endpoint.host}:{endpoint.port}/"
    assert client.invoke(url, "notes", GOOD) == endpoint.post(GOOD, "notes").text
    assert client.served_task_specs(url.rstrip("/")) == {
        task: spec.document() for task, spec in SPECS.items()
    }
    with pytest.raises(client.InvokeError) as refused:
        client.invoke(url, "other", GOOD)
    assert str(refused.value) == (
        f"{url} answered 404: no adapter serves task 'other' in test; served: notes, summary "
        "(and 'base', the base model)"
    )
