"""The local endpoint: FastAPI on 127.0.0.1, the SageMaker container contract (`GET /ping`,
`POST /invocations`), the inference component chosen by the header SageMaker's runtime sends
(`X-Amzn-SageMaker-Inference-Component`, the task's name here), and the body LMI's
chat-completions schema takes: `{"messages": [...], "max_tokens": N, "temperature": 0}` ->
`{"choices": [{"message": {"role": "assistant", "content": "..."}, ...}], "usage": {...}}`.
Clients build the body from the task's spec (`tasks.chat_request`), so the adapter reads the
prompt it was trained on; raw `inputs` that skip the task's template are refused.

Requests that arrive together are generated together, whatever their tasks (a mixed batch),
as an LMI endpoint batches its adapter components' requests. One client cannot hold up the
others: each request is checked alone before it joins a batch (a malformed one is a 4xx for
that request only), bodies and prompts are bounded by what the model's context can take, the
queue is bounded (429 when full), a request that waits past its timeout is dropped (503), and
a request whose client has gone is never generated, or stops generating at once. Every error
is a JSON body with a one-line `detail`, never a stack trace."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import Body, FastAPI, Header, HTTPException
from fastapi import Request as HttpRequest
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipelines.serving.adapters import BASE, AdapterModel, Answer, Request, ServingError
from training_scripts import tasks

COMPONENT_HEADER = "X-Amzn-SageMaker-Inference-Component"
DEFAULT_MAX_NEW_TOKENS = 48  # the base model's answers (a task's are its spec's)
MAX_NEW_TOKENS_LIMIT = tasks.MAX_NEW_TOKENS_LIMIT
# A SageMaker real-time endpoint answers an invocation within 60 seconds or fails it.
REQUEST_TIMEOUT_S = 60.0
MAX_QUEUE = 64  # requests waiting for a batch: four full batches
# How long a batch gathers requests once the model is free: under 1% of a typical batch's
# generation, and longer than a closed-loop client takes to send its next request.
GATHER_S = 0.05
# Rows generated together. A batch cannot take new rows while it generates (no continuous
# batching here), so a request that joins one and is then abandoned holds its row until its
# client leaves: twice the eight clients a CPU serves well leaves room for such rows.
MAX_BATCH = 16
# Each turn costs at least one token of the context, so no more turns than its tokens fit.
MAX_TURNS = tasks.MAX_CONTEXT_TOKENS
# The most one character takes in a JSON body (an astral character as two six-byte \u escapes),
# and one turn's JSON around its content ({"role": "assistant", "content": ""}, ).
JSON_CHAR_BYTES = 12
JSON_TURN_BYTES = 64
MAX_ERRORS_LISTED = 5

log = logging.getLogger("peftops.serve")


class QueueFullError(Exception):
    """The queue is full: the client should retry later."""


class ClientGoneError(Exception):
    """The client closed its connection before its answer was ready."""


@dataclass
class _Pending:
    request: Request
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    gone: threading.Event = field(default_factory=threading.Event)  # no one waits any more


@dataclass
class Load:
    """What the endpoint has done so far, shown by /ping and read by the load tests."""

    batches: list[int] = field(default_factory=list)  # each generated batch's size
    longest_answers: list[int] = field(default_factory=list)  # its longest answer, in tokens
    abandoned: int = 0  # requests whose client left or timed out before their answer
    refused_busy: int = 0  # requests refused with a 429


class Waiting:
    """The requests waiting for a batch, at most `limit` of them counting only those someone
    still waits for: a client that sends requests and leaves at once cannot fill the places
    of the clients that stay."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: collections.deque[_Pending] = collections.deque()
        self.changed = threading.Condition()

    def _drop_gone(self) -> None:
        self.items = collections.deque(p for p in self.items if not p.gone.is_set())

    def put(self, pending: _Pending) -> bool:
        """Whether it joined: False when `limit` live requests already wait."""
        with self.changed:
            self._drop_gone()
            if len(self.items) >= self.limit:
                return False
            self.items.append(pending)
            self.changed.notify()
            return True

    def get(self, timeout: float) -> _Pending | None:
        """The oldest live request, waiting up to `timeout` seconds for one; else None."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                self._drop_gone()
                if self.items:
                    return self.items.popleft()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.changed.wait(remaining)

    def __len__(self) -> int:
        with self.changed:
            self._drop_gone()
            return len(self.items)


class Batcher:
    """One thread runs the model; requests queued while it generates form its next batch."""

    def __init__(
        self,
        model: AdapterModel,
        *,
        max_batch: int = MAX_BATCH,
        max_queue: int = MAX_QUEUE,
        timeout_s: float = REQUEST_TIMEOUT_S,
        gather_s: float = GATHER_S,
    ) -> None:
        self.model = model
        self.max_batch = max_batch
        self.timeout_s = timeout_s
        self.gather_s = gather_s
        self.waiting = Waiting(max_queue)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="generate", daemon=True)
        self.load = Load()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)

    async def answer(self, request: Request, receive: Receive) -> Answer:
        """The request's answer; QueueFullError at once when the queue is full, TimeoutError
        past the timeout, ClientGoneError when `receive` (the request's ASGI channel, its body
        already read) says the client disconnected. Whichever ends the wait, a request no one
        waits for is dropped from its batch."""
        loop = asyncio.get_running_loop()
        pending = _Pending(request, loop, loop.create_future())
        if not self.waiting.put(pending):
            self.load.refused_busy += 1
            raise QueueFullError
        left = asyncio.ensure_future(_until_disconnected(receive))
        try:
            async with asyncio.timeout(self.timeout_s):
                await asyncio.wait([pending.future, left], return_when=asyncio.FIRST_COMPLETED)
            if not pending.future.done():
                raise ClientGoneError
            return pending.future.result()
        finally:
            left.cancel()
            if not pending.future.done():
                pending.gone.set()
                self.load.abandoned += 1

    def _take(self) -> list[_Pending] | None:
        """The next batch: the oldest live request and those that arrive within `gather_s` of
        the model being free for it (a request whose client left while it queued is never
        taken). A window, not a gap between arrivals: when a batch's answers go out, its
        clients' next requests arrive over some milliseconds; a request that already waited
        (one sent during the last batch, by a client about to leave, say) must not start the
        next batch before they are in, or the clients split into cohorts that each wait for
        the other's batch from then on."""
        while not self.stopping.is_set():
            first = self.waiting.get(timeout=0.1)
            if first is None:
                continue
            batch = [first]
            closes = time.monotonic() + self.gather_s
            while len(batch) < self.max_batch:
                item = self.waiting.get(closes - time.monotonic())
                if item is None:
                    break
                batch.append(item)
            return batch
        return None

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            self.load.batches.append(len(batch))
            try:
                answers: list[Any] = self.model.generate(
                    [p.request for p in batch], [p.gone for p in batch]
                )
                self.load.longest_answers.append(max(a.new_tokens for a in answers))
            except Exception as err:  # handed to each waiting request, never lost
                answers = [err] * len(batch)
            for pending, answer in zip(batch, answers, strict=True):
                setter = (
                    pending.future.set_exception
                    if isinstance(answer, Exception)
                    else pending.future.set_result
                )
                pending.loop.call_soon_threadsafe(_settle, pending.future, setter, answer)


async def _until_disconnected(receive: Receive) -> None:
    # Once the body is read, the next message a client's channel delivers is its disconnect.
    while (await receive())["type"] != "http.disconnect":
        pass


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

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    messages: list[Turn] = Field(min_length=1, max_length=MAX_TURNS)
    # Absent: the task's answer length (its spec's max_new_tokens), as evaluation generated.
    max_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS_LIMIT, strict=True)
    temperature: float = Field(0.0, ge=0.0, le=0.0, strict=True, description="greedy only")


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


def max_body_bytes(model: AdapterModel) -> int:
    """The largest body whose messages could fit the model's context, however escaped."""
    return JSON_CHAR_BYTES * model.max_prompt_chars + JSON_TURN_BYTES * MAX_TURNS + 1024


class BodyLimit:
    """ASGI middleware: a body over `limit` bytes is a 413 before any of it is parsed (a
    declared Content-Length at once, a chunked body as soon as it passes the limit), and one
    that has not all arrived within `timeout_s` a 408: a client that sends slowly holds its
    connection no longer than a request may wait for its answer."""

    def __init__(self, app: ASGIApp, limit: int, timeout_s: float) -> None:
        self.app = app
        self.limit = limit
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        chunks: list[bytes] = []
        size = int(declared) if declared.isdigit() else 0
        if size <= self.limit:
            size = 0
            try:
                async with asyncio.timeout(self.timeout_s):
                    while True:
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            return  # the client left before it finished sending
                        chunks.append(message.get("body", b""))
                        size += len(chunks[-1])
                        if size > self.limit or not message.get("more_body"):
                            break
            except TimeoutError:
                detail = f"the body did not arrive within the endpoint's {self.timeout_s:g} s"
                await JSONResponse({"detail": detail}, 408)(scope, receive, send)
                return
        if size > self.limit:
            detail = (
                f"a body of over {self.limit} bytes cannot fit this endpoint's context: "
                "shorten the messages"
            )
            await JSONResponse({"detail": detail}, 413)(scope, receive, send)
            return
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: the disconnect, when it comes
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def validation_detail(errors: list[dict[str, Any]]) -> str:
    """Pydantic's errors in one line, naming each field and never echoing the input."""

    def place(part: Any) -> str:
        text = str(part)
        return text if isinstance(part, int) or text.isidentifier() else ascii(text)[:40]

    lines = []
    for error in errors[:MAX_ERRORS_LISTED]:
        where = ".".join(place(p) for p in error.get("loc", ())[1:]) or "body"
        if error.get("type") == "json_invalid":
            lines.append(f"the body is not JSON ({error.get('ctx', {}).get('error', 'invalid')})")
        else:
            lines.append(f"{where}: {error.get('msg', 'invalid')}")
    more = len(errors) - MAX_ERRORS_LISTED
    return "; ".join(lines) + (f"; and {more} more" if more > 0 else "")


def create_app(
    model: AdapterModel,
    *,
    stage: str,
    versions: dict[str, int],
    max_queue: int = MAX_QUEUE,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
) -> FastAPI:
    batcher = Batcher(model, max_queue=max_queue, timeout_s=request_timeout_s)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        batcher.stop()

    # No redirect from /invocations/ to /invocations: a wrong path is a 404, and a redirect
    # would name whatever host the client's Host header says.
    app = FastAPI(title="peftops local endpoint", lifespan=lifespan, redirect_slashes=False)
    app.state.batcher = batcher
    limits = {  # what a client may send, all derived from the model but the last two
        "max_context_tokens": model.max_context,
        "max_prompt_chars": model.max_prompt_chars,
        "max_body_bytes": max_body_bytes(model),
        "max_queue": max_queue,
        "request_timeout_s": request_timeout_s,
    }
    app.add_middleware(BodyLimit, limit=limits["max_body_bytes"], timeout_s=request_timeout_s)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(_: HttpRequest, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_detail(list(err.errors()))}, 422)

    @app.exception_handler(Exception)
    async def internal_error(_: HttpRequest, err: Exception) -> JSONResponse:
        log.error("request failed", exc_info=err)  # the trace stays in the server's log
        return JSONResponse(
            {"detail": f"the endpoint failed ({type(err).__name__}); its log says why"}, 500
        )

    @app.get("/ping")
    async def ping() -> dict[str, Any]:
        load = batcher.load
        return {
            "status": "Healthy",
            "stage": stage,
            "tasks": versions,
            "batches": len(load.batches),
            "largest_batch": max(load.batches, default=0),
            "longest_answer": max(load.longest_answers, default=0),  # tokens, in any batch
            "queued": len(batcher.waiting),
            "abandoned": load.abandoned,
            "refused_busy": load.refused_busy,
            "limits": limits,
        }

    @app.get("/tasks")
    async def served_tasks() -> dict[str, Any]:
        """Each served task's spec, from which clients build their bodies."""
        return {task: spec.document() for task, spec in model.specs.items()}

    @app.post("/invocations")
    async def invocations(
        http: HttpRequest,
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
            # Checked alone, before batching: one bad request never fails its neighbours. The
            # tokenizer runs off the event loop, which keeps answering /ping and other clients.
            prompt = await run_in_threadpool(model.prompt, request)
        except ServingError as err:
            raise HTTPException(400, str(err)) from None
        try:
            answer = await batcher.answer(request, http.receive)
        except QueueFullError:
            raise HTTPException(
                429,
                f"the endpoint has {max_queue} requests waiting, its limit: retry later",
                headers={"Retry-After": "1"},
            ) from None
        except TimeoutError:
            raise HTTPException(
                503, f"no answer within the endpoint's {request_timeout_s:g} s: dropped"
            ) from None
        except ClientGoneError:
            return JSONResponse({"detail": "the client closed the connection"}, 499)
        return completion(answer, len(prompt))

    return app
