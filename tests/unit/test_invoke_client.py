"""`peftops invoke` against endpoints that misbehave, and with inputs it must not send: every
case is one line and an exit code, never a traceback."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from training_scripts import tasks

SPEC = tasks.resolve_task_spec(tasks.DEFAULT_TASK).document()


class Misbehaving(http.server.BaseHTTPRequestHandler):
    """`/tasks` lists the default task; each invocation path answers wrongly its own way."""

    behaviour = "no-json"

    def log_message(self, *_: object) -> None:
        pass

    def do_GET(self) -> None:
        self.reply(200, json.dumps({tasks.DEFAULT_TASK: SPEC}).encode(), "application/json")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.behaviour == "no-json":
            self.reply(200, b"<html>hello</html>", "text/html")
        elif self.behaviour == "html-error":
            self.reply(502, b"<html><h1>Bad Gateway</h1></html>", "text/html")
        elif self.behaviour == "empty-error":
            self.reply(500, b"", "text/plain")
        elif self.behaviour == "not-chat":
            self.reply(200, b'{"generated_text": "hi"}', "application/json")
        else:  # hang up without a reply
            self.close_connection = True

    def reply(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def endpoint() -> Iterator[type[Misbehaving]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Misbehaving)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Misbehaving.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield Misbehaving
    server.shutdown()
    server.server_close()


def invoke(*argv: str) -> tuple[int, list[str]]:
    done = CliRunner().invoke(app, ["invoke", *argv])
    assert not isinstance(done.exception, Exception) or isinstance(done.exception, SystemExit), (
        done.exception
    )
    return done.exit_code, done.output.strip().splitlines()


@pytest.mark.parametrize(
    ("behaviour", "said"),
    [
        ("no-json", "answered no JSON: is it a peftops endpoint?"),
        ("html-error", "answered 502: <html><h1>Bad Gateway</h1></html>"),
        ("empty-error", "answered 500: Internal Server Error"),
        ("not-chat", "not a chat-completions answer: {'generated_text': 'hi'}"),
        ("hang-up", "RemoteDisconnected: Remote end closed connection without response"),
    ],
)
def test_an_endpoint_that_answers_wrongly_is_one_line(
    endpoint: type[Misbehaving], behaviour: str, said: str
) -> None:
    endpoint.behaviour = behaviour
    code, lines = invoke("--task", tasks.DEFAULT_TASK, "--endpoint", endpoint.url, "Hi.")
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith("peftops: error: ") and said in lines[0], lines


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://[::1", "Invalid IPv6 URL"),
        ("http://127.0.0.1:notaport", "nonnumeric port"),
        ("http://", "no host given"),
    ],
)
def test_a_malformed_endpoint_url_is_one_line(url: str, said: str) -> None:
    code, lines = invoke("--task", tasks.DEFAULT_TASK, "--endpoint", url, "Hi.")
    assert code == 1 and len(lines) == 1 and said in lines[0], lines


@pytest.mark.parametrize("task", ["café", "two\nlines", "tab\tname", "UPPER", "a--b", " "])
def test_a_task_name_no_endpoint_could_serve_is_refused_before_sending(task: str) -> None:
    code, lines = invoke("--task", task, "--endpoint", "http://127.0.0.1:1", "Hi.")
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"peftops: error: --task {task!a}: a task name is lower-case")
