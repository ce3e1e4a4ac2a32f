"""The local endpoint served for a test: the real server (uvicorn, FastAPI, peft's
multi-adapter model) on a free port in this process, and a plain HTTP client for it."""

from __future__ import annotations

import contextlib
import enum
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pipelines.serving.adapters import AdapterModel
from pipelines.serving.server import COMPONENT_HEADER, Batcher, create_app


class _Default(enum.Enum):
    TASK = "the model's first task"


FIRST_TASK = _Default.TASK


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any  # the JSON reply, or the raw bytes when it is not JSON
    headers: dict[str, str]

    @property
    def text(self) -> str:
        return self.body["choices"][0]["message"]["content"]


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    model: AdapterModel
    batcher: Batcher

    def post(
        self, payload: Any, task: str | _Default | None = FIRST_TASK, *, raw: bytes | None = None,
        headers: dict[str, str] | None = None, timeout: float = 60, path: str = "/invocations",
        chunk: int = 65536,
    ) -> Reply:  # fmt: skip
        """POST a body; `task` names the component (None: no header at all)."""
        data = raw if raw is not None else json.dumps(payload).encode()
        sent = {"Content-Type": "application/json", **(headers or {})}
        if task is FIRST_TASK:
            task = self.model.tasks[0]
        if task is not None:
            sent[COMPONENT_HEADER] = task
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            if sent.get("Transfer-Encoding") == "chunked":  # no Content-Length to go by
                chunks = (data[i : i + chunk] for i in range(0, len(data), chunk))
                connection.request("POST", path, body=chunks, headers=sent, encode_chunked=True)
            else:
                connection.request("POST", path, body=data, headers=sent)
            response = connection.getresponse()
            content = response.read()
        finally:
            connection.close()
        try:
            parsed: Any = json.loads(content)
        except ValueError:
            parsed = content
        return Reply(response.status, parsed, {k.lower(): v for k, v in response.getheaders()})

    def get(self, path: str) -> Reply:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return Reply(response.status, json.loads(response.read()), dict(response.getheaders()))
        finally:
            connection.close()

    def ping(self) -> tuple[dict[str, Any], float]:
        started = time.perf_counter()
        status = self.get("/ping").body
        return status, time.perf_counter() - started

    def abandon(self, payload: dict[str, Any], task: str) -> socket.socket:
        """Send a request and return its socket; closing it is the client leaving."""
        data = json.dumps(payload).encode()
        client = socket.create_connection((self.host, self.port), timeout=10)
        head = (
            f"POST /invocations HTTP/1.1\r\nHost: {self.host}\r\n"
            f"Content-Type: application/json\r\n{COMPONENT_HEADER}: {task}\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        client.sendall(head.encode() + data)
        return client


@contextlib.contextmanager
def serving(model: AdapterModel, **limits: Any) -> Iterator[Endpoint]:
    import uvicorn

    app = create_app(model, stage="test", versions=dict.fromkeys(model.tasks, 1), **limits)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield Endpoint("127.0.0.1", port, model, app.state.batcher)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
