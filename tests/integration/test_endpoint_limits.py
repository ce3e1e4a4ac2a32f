"""One client cannot break the local endpoint: hostile bodies sent beside well-formed ones are
each a 4xx of their own while the well-formed ones get the answers they get alone; bodies and
prompts are bounded by the model's context; the queue is bounded (429); a request past its
timeout is dropped (503); a client that leaves stops its work; /ping answers under load.

The server here is the real one (uvicorn, FastAPI, peft's multi-adapter model) in this process,
on a tiny random-weight model with two random LoRA adapters: what is checked is the endpoint's
behaviour, not what the adapters learned."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipelines.serving.adapters import BASE, AdapterModel
from pipelines.serving.server import COMPONENT_HEADER, max_body_bytes
from tests.endpoints import Endpoint, Reply, serving
from training_scripts import tasks

TASKS = ("dialogue-summary", "meeting-notes")
SPEC = tasks.resolve_task_spec(tasks.DEFAULT_TASK)
DIALOGUE = "#Person1#: Could you send me the report by Friday?\n#Person2#: Sure, on Thursday."


@pytest.fixture(scope="module")
def model(tiny_causal: Path, tmp_path_factory: pytest.TempPathFactory) -> AdapterModel:
    from benchmarks.serving import make_adapters

    adapters = make_adapters(str(tiny_causal), tmp_path_factory.mktemp("adapters"), rank=4)
    return AdapterModel(str(tiny_causal), adapters)


@pytest.fixture(scope="module")
def endpoint(model: AdapterModel) -> Iterator[Endpoint]:
    with serving(model) as served:
        yield served


def request(text: str = DIALOGUE, max_tokens: int = 8) -> dict[str, Any]:
    return tasks.chat_request(SPEC, text, max_tokens)


@pytest.fixture(scope="module")
def long(endpoint: Endpoint) -> tuple[str, dict[str, Any]]:
    """A task and body whose answer runs to the longest answer allowed (random weights: the
    first candidate the model does not end early)."""
    body = request(max_tokens=tasks.MAX_NEW_TOKENS_LIMIT)
    for task in (*TASKS, BASE):
        reply = endpoint.post(body, task)
        if reply.body["usage"]["completion_tokens"] == tasks.MAX_NEW_TOKENS_LIMIT:
            return task, body
    raise AssertionError("every candidate ended early: pick another dialogue")


# --- bodies: well-formed ones, and malformed ones of every kind --------------------------------

GOOD = request()
TURNS = GOOD["messages"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_subnormal=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip
not_turns = json_values.filter(
    lambda v: not (isinstance(v, list) and v and all(isinstance(t, dict) for t in v))
)
bad_max_tokens = (
    st.integers().filter(lambda n: not 1 <= n <= tasks.MAX_NEW_TOKENS_LIMIT)
    | st.floats(allow_subnormal=False)
    | st.booleans()
    | st.text(max_size=4)
    | st.lists(st.integers(1, 8), max_size=2)
)
bad_temperature = (
    st.floats(allow_subnormal=False).filter(lambda t: t != 0) | st.text(max_size=4) | st.just(None)
)
bad_turn = st.one_of(
    st.fixed_dictionaries({"role": st.text(max_size=10).filter(lambda r: r not in tasks.ROLES),
                           "content": st.text(min_size=1, max_size=10)}),
    st.fixed_dictionaries({"role": st.sampled_from(tasks.ROLES),
                           "content": json_values.filter(lambda v: not isinstance(v, str))}),
    st.fixed_dictionaries({"role": st.sampled_from(tasks.ROLES)}),
    st.fixed_dictionaries({"role": st.sampled_from(tasks.ROLES), "content": st.just(""),
                           "name": st.text(max_size=5)}),
)  # fmt: skip
field_names = st.text(min_size=1, max_size=16).filter(
    lambda k: k not in {"messages", "max_tokens", "temperature"}
)


@dataclass(frozen=True)
class Hostile:
    """One malformed request, as bytes on the wire."""

    raw: bytes
    task: str | None = TASKS[0]
    content_type: str = "application/json"


def hostile_body(value: Any) -> Hostile:
    return Hostile(json.dumps(value).encode())


# A lone surrogate escape is valid JSON and no Unicode text; NaN is what Python's json writes.
LONE_SURROGATE = Hostile(json.dumps(GOOD).replace("Friday", "Fri\\ud800day").encode())
NAN_TEMPERATURE = Hostile(json.dumps({**GOOD, "temperature": float("nan")}).encode())

hostile = st.one_of(
    st.builds(hostile_body, st.builds(lambda v: {**GOOD, "messages": v}, not_turns)),
    st.builds(hostile_body, st.builds(lambda v: {**GOOD, "max_tokens": v}, bad_max_tokens)),
    st.builds(hostile_body, st.builds(lambda v: {**GOOD, "temperature": v}, bad_temperature)),
    st.builds(hostile_body, st.builds(lambda t, i: {**GOOD, "messages": [*TURNS[:i], t]},
                                      bad_turn, st.integers(0, len(TURNS)))),
    st.builds(hostile_body, st.builds(lambda k, v: {**GOOD, k: v}, field_names, json_values)),
    st.builds(hostile_body, json_values.filter(lambda v: not isinstance(v, dict))),
    st.builds(Hostile, st.binary(max_size=64)),
    st.builds(lambda task: Hostile(json.dumps(GOOD).encode(), task=task),
              st.text(st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"),
                      max_size=20)
              .filter(lambda t: t.strip() not in (*TASKS, BASE))),
    st.builds(lambda kind: Hostile(json.dumps(GOOD).encode(), content_type=kind),
              st.sampled_from(["text/plain", "application/x-www-form-urlencoded"])),
    st.sampled_from([LONE_SURROGATE, NAN_TEMPERATURE, Hostile(json.dumps(GOOD).encode(), None)]),
)  # fmt: skip
well_formed = st.builds(
    lambda task, text, length: (task, request(text, length)),
    st.sampled_from((*TASKS, BASE)),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=80)
    .filter(lambda t: t.strip() and not tasks.CONTROL_TOKEN_SPELLINGS.search(t)),
    st.integers(1, 12),
)  # fmt: skip


def send(endpoint: Endpoint, item: tuple[str, dict[str, Any]] | Hostile) -> Reply:
    if isinstance(item, Hostile):
        return endpoint.post(
            None, item.task, raw=item.raw, headers={"Content-Type": item.content_type}
        )
    task, payload = item
    return endpoint.post(payload, task)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    goods=st.lists(well_formed, min_size=1, max_size=3),
    bads=st.lists(hostile, min_size=1, max_size=3),
)
@example(goods=[(TASKS[0], GOOD)], bads=[LONE_SURROGATE, NAN_TEMPERATURE])
def test_hostile_requests_beside_well_formed_ones_fail_alone_and_never_as_a_5xx(
    endpoint: Endpoint, goods: list[tuple[str, dict[str, Any]]], bads: list[Hostile]
) -> None:
    """Sent at once, so that the well-formed ones are batched together while the hostile ones
    are checked: each well-formed request gets the answer it gets alone, each hostile one a 4xx
    whose JSON body says why in one line."""
    mixed: list[Any] = [*goods, *bads]
    with ThreadPoolExecutor(len(mixed)) as pool:
        replies = list(pool.map(lambda item: send(endpoint, item), mixed))
    for item, reply in zip(mixed, replies, strict=True):
        assert reply.status < 500, (item, reply)
        if isinstance(item, Hostile):
            assert 400 <= reply.status < 500, (item, reply)
            detail = reply.body["detail"]
            assert isinstance(detail, str) and detail and "\n" not in detail, reply
    for good, reply in zip(goods, replies, strict=False):
        assert reply.status == 200, (good, reply)
        assert reply.text == send(endpoint, good).text, good  # the same answer alone


# --- bounds derived from the model ---------------------------------------------------------------


def test_a_body_larger_than_the_context_can_hold_is_a_413_before_it_is_read(
    endpoint: Endpoint,
) -> None:
    limit = max_body_bytes(endpoint.model)
    words = "word " * (limit // 5 + 1)
    for headers in ({}, {"Transfer-Encoding": "chunked"}):
        reply = endpoint.post(request(words), headers=headers)
        assert reply.status == 413, reply
        assert f"a body of over {limit} bytes cannot fit" in reply.body["detail"]
    # Below the byte limit but past what the context's tokens can spell: refused, not tokenized.
    chars = endpoint.model.max_prompt_chars
    reply = endpoint.post(request("x" * (chars + 1)))
    assert reply.status == 400 and f"over {chars} characters cannot fit" in reply.body["detail"]


def test_ping_stays_fast_while_the_endpoint_generates_and_refuses(
    endpoint: Endpoint, long: tuple[str, dict[str, Any]]
) -> None:
    task, body = long
    oversized = request("word " * (max_body_bytes(endpoint.model) // 5))
    with ThreadPoolExecutor(6) as pool:
        busy = [pool.submit(endpoint.post, body, task) for _ in range(4)]
        busy += [pool.submit(endpoint.post, oversized) for _ in range(2)]
        time.sleep(0.2)
        pings = [endpoint.ping()[1] for _ in range(10)]
        assert [f.result().status for f in busy] == [200] * 4 + [413] * 2
    assert max(pings) < 1.0, pings


# --- the queue, the timeout, and clients that leave -----------------------------------------


@contextlib.contextmanager
def generation_held(model: AdapterModel) -> Iterator[None]:
    """The model busy elsewhere: batches wait for it, as behind a long generation."""
    model.lock.acquire()
    try:
        yield
    finally:
        model.lock.release()


def wait_for(endpoint: Endpoint, condition: Any, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while not condition(status := endpoint.ping()[0]):
        assert time.monotonic() < deadline, f"waited 30 s for {what}: {status}"
        time.sleep(0.02)
    return status


def test_a_full_queue_answers_429_and_every_queued_request_is_answered(
    model: AdapterModel,
) -> None:
    with serving(model, max_queue=2) as endpoint, ThreadPoolExecutor(4) as pool:
        with generation_held(model):
            taken = pool.submit(endpoint.post, GOOD)  # in a batch, waiting for the model
            wait_for(endpoint, lambda s: s["batches"] == 1, "the first batch")
            queued = [pool.submit(endpoint.post, GOOD) for _ in range(2)]
            wait_for(endpoint, lambda s: s["queued"] == 2, "two queued requests")
            refused = endpoint.post(GOOD)
            assert refused.status == 429 and refused.headers["retry-after"] == "1"
            assert "2 requests waiting" in refused.body["detail"]
        answers = [f.result() for f in (taken, *queued)]
    assert [a.status for a in answers] == [200] * 3
    assert len({a.text for a in answers}) == 1


def test_requests_whose_clients_left_hold_no_place_in_the_queue(
    model: AdapterModel, long: tuple[str, dict[str, Any]]
) -> None:
    """A client that sends requests and leaves at once, while a batch generates, cannot fill
    the queue's places: the clients that stay are queued, not refused."""
    task, body = long
    with serving(model, max_queue=2) as endpoint, ThreadPoolExecutor(3) as pool:
        with generation_held(model):
            taken = pool.submit(endpoint.post, GOOD)
            wait_for(endpoint, lambda s: s["batches"] == 1, "the first batch")
            for _ in range(2):
                left = endpoint.abandon(body, task)
                wait_for(endpoint, lambda s: s["queued"] == 1, "the request queued")
                left.close()
                wait_for(endpoint, lambda s: s["queued"] == 0, "its place freed")
            staying = [pool.submit(endpoint.post, GOOD) for _ in range(2)]
            wait_for(endpoint, lambda s: s["queued"] == 2, "two staying clients queued")
        assert [f.result().status for f in (taken, *staying)] == [200] * 3
        assert endpoint.ping()[0]["refused_busy"] == 0


def test_a_request_past_its_timeout_is_a_503_and_is_never_generated(model: AdapterModel) -> None:
    with serving(model, request_timeout_s=0.5) as endpoint, ThreadPoolExecutor(2) as pool:
        with generation_held(model):
            first = pool.submit(endpoint.post, GOOD)
            wait_for(endpoint, lambda s: s["batches"] == 1, "the first batch")
            late = endpoint.post(request(max_tokens=3))
            assert late.status == 503 and "0.5 s" in late.body["detail"], late
            assert first.result().status == 503
        status = wait_for(endpoint, lambda s: s["abandoned"] == 2, "both dropped")
        after = endpoint.post(GOOD)
        assert after.status == 200, after
        # The first batch ran one step for its dropped row; the dropped second never ran.
        assert endpoint.batcher.load.longest_answers[0] == 1
        assert status["batches"] + 1 == endpoint.ping()[0]["batches"] == 2


def test_a_client_that_leaves_stops_its_work_in_the_queue_and_in_a_batch(
    model: AdapterModel, long: tuple[str, dict[str, Any]]
) -> None:
    task, body = long
    with serving(model) as endpoint:
        with generation_held(model):
            generating = endpoint.abandon(body, task)
            wait_for(endpoint, lambda s: s["batches"] == 1, "the first batch")
            queued = endpoint.abandon(body, task)
            wait_for(endpoint, lambda s: s["queued"] == 1, "a queued request")
            generating.close()
            queued.close()
            wait_for(endpoint, lambda s: s["abandoned"] == 2, "both clients gone")
        answered = endpoint.post(GOOD)
        assert answered.status == 200
        load = endpoint.batcher.load
        # The batch of the client that left stopped after one step of its 512; the request
        # that queued was never generated: the next batch is the answered request's.
        assert load.longest_answers == [1, answered.body["usage"]["completion_tokens"]]
        assert load.batches == [1, 1]


def test_after_a_client_leaves_a_long_generation_the_next_request_is_served_promptly(
    endpoint: Endpoint, long: tuple[str, dict[str, Any]]
) -> None:
    task, body = long
    started = time.perf_counter()
    assert endpoint.post(body, task).status == 200
    full = time.perf_counter() - started
    client = endpoint.abandon(body, task)
    before = endpoint.ping()[0]["batches"]
    wait_for(endpoint, lambda s: s["batches"] > before, "its batch")
    time.sleep(full / 10)
    client.close()
    started = time.perf_counter()
    assert endpoint.post(GOOD).status == 200
    assert time.perf_counter() - started < full / 2, full


def test_a_body_that_arrives_too_slowly_is_a_408_and_a_wrong_path_a_404(
    model: AdapterModel,
) -> None:
    """A client that trickles its body holds the connection no longer than the timeout; a
    trailing slash is no redirect to the host the client named."""
    data = json.dumps(GOOD).encode()
    with serving(model, request_timeout_s=0.5) as endpoint:
        client = socket.create_connection((endpoint.host, endpoint.port), timeout=10)
        head = (
            f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"{COMPONENT_HEADER}: {TASKS[0]}\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        client.sendall(head.encode() + data[:10])
        reply = http.client.HTTPResponse(client)  # read before the rest is sent
        reply.begin()
        detail = json.loads(reply.read())["detail"]
        client.close()
        assert reply.status == 408, detail
        assert detail == "the body did not arrive within the endpoint's 0.5 s"
        assert endpoint.post(GOOD).status == 200
        connection = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=10)
        connection.request(
            "POST", "/invocations/", body=data,
            headers={"Host": "evil.example", COMPONENT_HEADER: TASKS[0]},
        )  # fmt: skip
        response = connection.getresponse()
        assert response.status == 404 and json.loads(response.read()) == {"detail": "Not Found"}
        connection.close()


def test_an_internal_failure_is_a_json_500_without_a_trace(
    model: AdapterModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any) -> Any:
        raise RuntimeError("CUDA out of memory at /opt/secret/path.py:12")

    with serving(model) as endpoint:
        monkeypatch.setattr(model, "generate", broken)
        reply = endpoint.post(GOOD)
    assert reply.status == 500
    assert reply.body == {"detail": "the endpoint failed (RuntimeError); its log says why"}
