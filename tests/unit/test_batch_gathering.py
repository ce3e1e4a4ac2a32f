"""How the endpoint forms a batch once its model is free (pipelines/serving/server.py's
Batcher), with a model that records each batch and answers at once: the requests that arrive
within the gathering window join, whatever the gaps between them, and one that waited from
before the window opened does not start a batch without them."""

from __future__ import annotations

import asyncio
import time
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


async def _never() -> dict[str, str]:
    await asyncio.Event().wait()
    return {"type": "http.disconnect"}


def run_clients(model: RecordingModel, arrivals: dict[str, float], gather_s: float) -> None:
    batcher = Batcher(model, gather_s=gather_s)  # type: ignore[arg-type]
    batcher.start()

    async def client(name: str, after_s: float) -> None:
        await asyncio.sleep(after_s)
        await batcher.answer(Request("t", [{"role": "user", "content": name}], 1), _never)

    async def clients() -> None:
        await asyncio.gather(*(client(n, s) for n, s in arrivals.items()))

    try:
        asyncio.run(clients())
    finally:
        batcher.stop()


def test_requests_arriving_within_the_window_join_one_batch_whatever_their_gaps() -> None:
    model = RecordingModel(generating_s=0.0)
    # 20 ms between arrivals: twice the old 10 ms gap that closed a batch.
    run_clients(model, {"a": 0.0, "b": 0.02, "c": 0.04}, gather_s=0.1)
    assert model.batches == [["a", "b", "c"]]


def test_a_request_that_waited_through_a_batch_waits_for_the_next_batchs_clients() -> None:
    """`late` arrives while `first`'s batch generates; the clients answered by that batch send
    again 20-40 ms after it ends. The next batch holds them all, not `late` alone."""
    model = RecordingModel(generating_s=0.3)
    run_clients(model, {"first": 0.0, "late": 0.1, "again-1": 0.32, "again-2": 0.34}, gather_s=0.1)
    assert model.batches == [["first"], ["late", "again-1", "again-2"]]
