"""How the endpoint batches requests (pipelines/serving/server.py's Batcher), with a model that
records each batch and answers at once: the requests that arrive within the gathering window
join, whatever the gaps between them, and one that waited from before the window opened does
not start a batch without them; a batch's failure reaches each of its requests; a full queue
refuses at once; a request past its timeout or whose client left is dropped, and counted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from pipelines.serving.adapters import Answer, Request
from pipelines.serving.server import Batcher, ClientGoneError, QueueFullError, Waiting, _Pending


class RecordingModel:
    def __init__(self, generating_s: float) -> None:
        self.generating_s = generating_s
        self.batches: list[list[str]] = []

    def generate(self, requests: list[Request], gone: list[Any]) -> list[Answer]:
        self.batches.append([r.messages[0]["content"] for r in requests])
        time.sleep(self.generating_s)
        return [
            Answer(text=r.messages[0]["content"], new_tokens=r.max_new_tokens) for r in requests
        ]


Ask = Callable[[str], Awaitable[None]]


def ask_for(name: str, tokens: int = 1) -> Request:
    return Request("t", [{"role": "user", "content": name}], tokens)


async def _never() -> dict[str, str]:
    await asyncio.Event().wait()
    return {"type": "http.disconnect"}


def run_clients(
    model: RecordingModel, gather_s: float, clients: Callable[[Ask], Awaitable[None]]
) -> None:
    """Runs `clients` against a Batcher over `model`; they send through the `ask` it is given."""
    batcher = Batcher(model, gather_s=gather_s)  # type: ignore[arg-type]
    batcher.start()

    async def ask(name: str) -> None:
        await batcher.answer(ask_for(name), _never)

    try:
        asyncio.run(clients(ask))
    finally:
        batcher.stop()


def test_requests_arriving_within_the_window_join_one_batch_whatever_their_gaps() -> None:
    """Three requests 20 ms apart (twice the 10 ms gap that once closed a batch), all well
    inside a 300 ms window."""
    model = RecordingModel(generating_s=0.0)

    async def clients(ask: Ask) -> None:
        sent = []
        for name in ("a", "b", "c"):
            sent.append(asyncio.ensure_future(ask(name)))
            await asyncio.sleep(0.02)
        await asyncio.gather(*sent)

    run_clients(model, gather_s=0.3, clients=clients)
    assert model.batches == [["a", "b", "c"]]


def test_a_request_that_waited_through_a_batch_waits_for_the_next_batchs_clients() -> None:
    """`late` arrives while `first`'s batch generates (long after its window closed); once
    `first` has its answer, two clients send 20 and 40 ms later. The next batch holds them
    all, not `late` alone. Each step waits on the one it follows, and every margin is at
    least 160 ms, so a slow machine moves the steps together without reordering them."""
    model = RecordingModel(generating_s=0.8)

    async def clients(ask: Ask) -> None:
        first = asyncio.ensure_future(ask("first"))
        await asyncio.sleep(0.5)  # the window closed at 0.2 s; generation runs past 1.0 s
        late = asyncio.ensure_future(ask("late"))
        await first
        await asyncio.sleep(0.02)
        again_1 = asyncio.ensure_future(ask("again-1"))
        await asyncio.sleep(0.02)
        await asyncio.gather(late, again_1, ask("again-2"))

    run_clients(model, gather_s=0.2, clients=clients)
    assert model.batches == [["first"], ["late", "again-1", "again-2"]]


class FailingModel(RecordingModel):
    def generate(self, requests: list[Request], gone: list[Any]) -> list[Answer]:
        super().generate(requests, gone)
        raise RuntimeError("out of memory")


def test_each_request_gets_its_own_answer_and_the_load_counts_the_batch() -> None:
    model = RecordingModel(generating_s=0.0)
    batcher = Batcher(model, gather_s=0.3)  # type: ignore[arg-type]
    batcher.start()

    async def clients() -> list[Answer]:
        asked = [ask_for("a", tokens=3), ask_for("b", tokens=5)]
        return await asyncio.gather(*(batcher.answer(request, _never) for request in asked))

    try:
        answers = asyncio.run(clients())
    finally:
        batcher.stop()
    assert [(a.text, a.new_tokens) for a in answers] == [("a", 3), ("b", 5)]
    assert (batcher.load.batches, batcher.load.longest_answers) == ([2], [5])
    assert not batcher.thread.is_alive()  # stopped


def test_a_failed_batch_fails_each_of_its_requests_with_its_error() -> None:
    model = FailingModel(generating_s=0.0)
    batcher = Batcher(model, gather_s=0.3)  # type: ignore[arg-type]
    batcher.start()

    async def clients() -> list[Any]:
        return await asyncio.gather(
            *(batcher.answer(ask_for(n), _never) for n in ("a", "b")), return_exceptions=True
        )

    try:
        failures = asyncio.run(clients())
    finally:
        batcher.stop()
    assert [repr(f) for f in failures] == ["RuntimeError('out of memory')"] * 2
    assert (model.batches, batcher.load.batches, batcher.load.longest_answers) == (
        [["a", "b"]],
        [2],
        [],
    )


async def _queue_then(batcher: Batcher, then: Callable[[], Awaitable[Any]]) -> Any:
    """One request left waiting in the queue (no thread takes it), then `then`."""
    waiting = asyncio.ensure_future(batcher.answer(ask_for("waiting"), _never))
    await asyncio.sleep(0.05)
    try:
        return await then()
    finally:
        waiting.cancel()


def test_a_full_queue_refuses_a_request_at_once_and_counts_it() -> None:
    batcher = Batcher(RecordingModel(0.0), max_queue=1)  # type: ignore[arg-type]

    async def refused() -> None:
        started = time.monotonic()
        with pytest.raises(QueueFullError):
            await batcher.answer(ask_for("refused"), _never)
        assert time.monotonic() - started < 1.0

    asyncio.run(_queue_then(batcher, refused))
    assert (batcher.load.refused_busy, batcher.load.abandoned) == (1, 1)


def test_a_request_past_its_timeout_is_dropped_from_the_queue_and_counted() -> None:
    batcher = Batcher(RecordingModel(0.0), timeout_s=0.1)  # type: ignore[arg-type]

    async def late() -> None:
        with pytest.raises(TimeoutError):
            await batcher.answer(ask_for("late"), _never)

    asyncio.run(late())
    assert (len(batcher.waiting), batcher.load.abandoned) == (0, 1)


def test_a_request_whose_client_left_is_dropped_from_the_queue_and_counted() -> None:
    batcher = Batcher(RecordingModel(0.0))  # type: ignore[arg-type]
    messages = iter([{"type": "http.request"}, {"type": "http.disconnect"}])

    async def leaving() -> dict[str, str]:
        return next(messages)

    async def gone() -> None:
        with pytest.raises(ClientGoneError):
            await batcher.answer(ask_for("gone"), leaving)

    asyncio.run(gone())
    assert (len(batcher.waiting), batcher.load.abandoned) == (0, 1)


def pending(name: str) -> _Pending:
    loop = asyncio.new_event_loop()
    return _Pending(ask_for(name), loop, loop.create_future())


def test_the_queue_hands_out_its_oldest_live_request_and_counts_only_live_ones() -> None:
    waiting = Waiting(limit=2)
    first, second, third = pending("first"), pending("second"), pending("third")
    assert waiting.put(first) and waiting.put(second)
    assert not waiting.put(third)  # two live ones wait: full
    first.gone.set()
    assert len(waiting) == 1
    assert waiting.put(third)  # the gone one held no place
    assert [waiting.get(0.0), waiting.get(0.0)] == [second, third]
    started = time.monotonic()
    assert waiting.get(0.2) is None
    assert 0.2 <= time.monotonic() - started < 1.0
