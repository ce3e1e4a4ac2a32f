"""How the endpoint forms a batch once its model is free (pipelines/serving/server.py's
Batcher), with a model that records each batch and answers at once: the requests that arrive
within the gathering window join, whatever the gaps between them, and one that waited from
before the window opened does not start a batch without them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pipelines.serving.adapters import Answer, Request
from pipelines.serving.server import Batcher


class RecordingModel:
    def __init__(self, generating_s: float) -> None:
        self.generating_s = generating_s
        self.batches: list[list[str]] = []

    def generate(self, requests: list[Request], gone: list[Any]) -> list[Answer]:
        self.batches.append([r.messages[0]["content"] for r in requests])
        time.sleep(self.generating_s)
        return [Answer(text="ok", new_tokens=1) for _ in requests]


Ask = Callable[[str], Awaitable[None]]


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
        await batcher.answer(Request("t", [{"role": "user", "content": name}], 1), _never)

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
