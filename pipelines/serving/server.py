"""The local endpoint: FastAPI on 127.0.0.1, the SageMaker container contract (`GET /ping`,
`POST /invocations`), the inference component chosen by the header SageMaker's runtime sends
(`X-Amzn-SageMaker-Inference-Component`, the task's name here), and the body LMI's
chat-completions schema takes: `{"messages": [...], "max_tokens": N, "temperature": 0}` ->
`{"choices": [{"message": {"role": "assistant", "content": "..."}, ...}], "usage": {...}}`.
Clients build the body from the task's spec (`tasks.chat_request`), so the adapter reads the
prompt it was trained on; raw `inputs` that skip the task's template are refused.

Requests that arrive together are generated together, whatever their tasks (a mixed batch),
as an LMI endpoint batches its adapter components' requests."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Body, FastAPI, Header, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from pipelines.serving.adapters import BASE, AdapterModel, Answer, Request, ServingError
from training_scripts import tasks

COMPONENT_HEADER = "X-Amzn-SageMaker-Inference-Component"
DEFAULT_MAX_NEW_TOKENS = 48  # the base model's answers (a task's are its spec's)
MAX_NEW_TOKENS_LIMIT = tasks.MAX_NEW_TOKENS_LIMIT


@dataclass
class _Pending:
    request: Request
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


class Batcher:
    """One thread runs the model; requests queued while it generates form its next batch."""

    def __init__(self, model: AdapterModel, *, max_batch: int = 8, wait_s: float = 0.01) -> None:
        self.model = model
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.queue: queue.Queue[_Pending | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="generate", daemon=True)
        self.batches: list[int] = []  # the size of every batch generated, for the load report

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=30)

    async def submit(self, request: Request) -> Answer:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.queue.put(_Pending(request, loop, future))
        return await future

    def _take(self) -> list[_Pending] | None:
        first = self.queue.get()
        if first is None:
            return None
        batch = [first]
        with contextlib.suppress(queue.Empty):
            while len(batch) < self.max_batch:
                item = self.queue.get(timeout=self.wait_s)
                if item is None:
                    self.queue.put(None)  # stop after this batch
                    break
                batch.append(item)
        return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            self.batches.append(len(batch))
            try:
                answers: list[Any] = self.model.generate([p.request for p in batch])
            except Exception as err:  # handed to each waiting request, never lost
                answers = [err] * len(batch)
            for pending, answer in zip(batch, answers, strict=True):
                setter = (
                    pending.future.set_exception
                    if isinstance(answer, Exception)
                    else pending.future.set_result
                )
                pending.loop.call_soon_threadsafe(_settle, pending.future, setter, answer)


def _settle(future: asyncio.Future, setter: Any, value: Any) -> None:
    if not future.done():  # the client may have gone
        setter(value)


class Turn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1)


class Invocation(BaseModel):
    """The chat-completions body: the task's turns and greedy decoding (what evaluation scored).
    Unknown fields are refused, never silently ignored."""

    model_config = ConfigDict(extra="forbid")

    messages: list[Turn] = Field(min_length=1)
    # Absent: the task's answer length (its spec's max_new_tokens), as evaluation generated.
    max_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS_LIMIT, strict=True)
    temperature: float = Field(0.0, ge=0.0, le=0.0, description="greedy only")


def completion(answer: Answer, prompt_tokens: int) -> dict[str, Any]:
    """An OpenAI chat.completion object, as LMI answers the chat-completions schema."""
    return {
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text},
                "finish_reason": answer.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": answer.new_tokens,
            "total_tokens": prompt_tokens + answer.new_tokens,
        },
    }


def create_app(model: AdapterModel, *, stage: str, versions: dict[str, int]) -> FastAPI:
    batcher = Batcher(model)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        batcher.stop()

    app = FastAPI(title="peftops local endpoint", lifespan=lifespan)
    app.state.batcher = batcher

    @app.get("/ping")
    def ping() -> dict[str, Any]:
        batches = batcher.batches
        return {
            "status": "Healthy",
            "stage": stage,
            "tasks": versions,
            "batches": len(batches),
            "largest_batch": max(batches, default=0),
        }

    @app.get("/tasks")
    def served_tasks() -> dict[str, Any]:
        """Each served task's spec, from which clients build their bodies."""
        return {task: spec.document() for task, spec in model.specs.items()}

    @app.post("/invocations")
    async def invocations(
        body: Annotated[Invocation, Body()],
        component: Annotated[str | None, Header(alias=COMPONENT_HEADER)] = None,
    ) -> Any:
        if not component:
            raise HTTPException(
                400,
                f"name the task in the {COMPONENT_HEADER} header (or 'base' for the base model)",
            )
        if component not in (*model.tasks, BASE):
            # Checked before batching: a batch mixes clients, and one bad name must fail alone.
            raise HTTPException(
                404,
                f"no adapter serves task {component!r} in {stage}; served: "
                f"{', '.join(model.tasks)} (and {BASE!r}, the base model)",
            )
        messages = [turn.model_dump() for turn in body.messages]
        try:  # the conversations training reads, and only those
            tasks.check_turns(messages)
        except tasks.TaskSpecError as err:
            raise HTTPException(422, str(err)) from None
        spec = model.specs.get(component)
        limit = body.max_tokens or (spec.max_new_tokens if spec else DEFAULT_MAX_NEW_TOKENS)
        request = Request(component, messages, limit)
        try:
            # Checked alone, before batching: one bad request never fails its neighbours.
            prompt = model.prompt(request)
        except ServingError as err:
            raise HTTPException(400, str(err)) from None
        answer = await batcher.submit(request)
        return completion(answer, len(prompt))

    return app
