"""`peftops invoke` against endpoints that misbehave, and with inputs it must not send: every
case is one line and an exit code, never a traceback."""

from __future__ import annotations

import http.server
import io
import json
import threading
import time
import urllib.error
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.serving import client
from training_scripts import tasks

SPEC = tasks.resolve_task_spec(tasks.DEFAULT_TASK).document()


class Misbehaving(http.server.BaseHTTPRequestHandler):
    """`/tasks` lists the default task; each invocation path answers wrongly its own way."""

    behaviour = "no-json"
    received: ClassVar[list[tuple[str, dict[str, str], bytes]]] = []  # path, headers, body

    def log_message(self, *_: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.behaviour == "silent":
            time.sleep(3)
            self.reply(200, b"{}", "application/json")
        elif self.behaviour == "no-tasks":
            self.reply(404, b"<html>Not here</html>", "text/html")
        elif self.behaviour == "tasks-not-a-dict":
            self.reply(200, b'["dialogue-summary"]', "application/json")
        else:
            self.reply(200, json.dumps({tasks.DEFAULT_TASK: SPEC}).encode(), "application/json")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        if self.behaviour == "chat":
            answer = {"choices": [{"message": {"role": "assistant", "content": "A summary."}}]}
            self.reply(200, json.dumps(answer).encode(), "application/json")
        elif self.behaviour == "no-json":
            self.reply(200, b"<html>hello</html>", "text/html")
        elif self.behaviour == "html-error":
            self.reply(502, b"<html><h1>Bad Gateway</h1></html>", "text/html")
        elif self.behaviour == "empty-error":
            self.reply(500, b"", "text/plain")
        elif self.behaviour == "not-chat":
            self.reply(200, b'{"generated_text": "hi"}', "application/json")
        elif self.behaviour == "silent":  # answers after any client's patience
            time.sleep(3)
        else:  # hang up without a reply
            self.close_connection = True

    def reply(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class QuietServer(http.server.ThreadingHTTPServer):
    """Some behaviours answer after the client has given up; the broken pipe that follows is
    the point, and its traceback, printed from the handler's thread whenever it comes, would
    land in whatever test holds sys.stderr then."""

    def handle_error(self, request: object, client_address: object) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[type[Misbehaving]]:
    server = QuietServer(("127.0.0.1", 0), Misbehaving)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Misbehaving.url = f"http://127.0.0.1:{server.server_address[1]}"
    Misbehaving.received = []
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


def test_a_local_invocation_posts_the_tasks_body_to_its_component_and_reads_the_answer(
    endpoint: type[Misbehaving],
) -> None:
    endpoint.behaviour = "chat"
    body = tasks.chat_request(tasks.resolve_task_spec(tasks.DEFAULT_TASK), "Hi.")
    assert client.invoke(endpoint.url + "/", "notes", body) == "A summary."
    assert client.invoke(endpoint.url + "/proxiX", "notes", body) == "A summary."
    [(path, headers, sent), (prefixed, _, _)] = endpoint.received
    assert (path, prefixed, json.loads(sent)) == ("/invocations", "/proxiX/invocations", body)
    assert headers["content-type"] == "application/json"
    assert headers["x-amzn-sagemaker-inference-component"] == "notes"


def test_a_sagemaker_invocation_sends_the_body_to_the_tasks_component() -> None:
    import boto3
    from botocore.response import StreamingBody
    from botocore.stub import Stubber

    runtime = boto3.client("sagemaker-runtime", region_name="eu-west-1")
    body = {"messages": [{"role": "user", "content": "Hi."}], "max_tokens": 4}
    answer = json.dumps({"choices": [{"message": {"content": "Hello."}}]}).encode()
    with Stubber(runtime) as stub:
        stub.add_response(
            "invoke_endpoint",
            {"Body": StreamingBody(io.BytesIO(answer), len(answer))},
            {
                "EndpointName": "peftops-adapter-staging",
                "InferenceComponentName": "peftops-adapter-staging-t1-000002",
                "ContentType": "application/json",
                "Accept": "application/json",
                "Body": json.dumps(body).encode(),
            },
        )
        said = client.invoke_sagemaker(
            "peftops-adapter-staging", "peftops-adapter-staging-t1-000002", body, runtime
        )
        stub.assert_no_pending_responses()
    assert said == "Hello."


def test_a_target_that_is_no_url_or_sagemaker_endpoint_is_refused_saying_both_forms() -> None:
    with pytest.raises(client.InvokeError) as refused:
        client.invoke("127.0.0.1:8080", "notes", {})
    assert str(refused.value) == (
        "--endpoint '127.0.0.1:8080': use http://HOST:PORT or sagemaker:ENDPOINT"
    )


LONG = {"text": "x" * 300}


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        ({"choices": [{"message": {"content": "ok"}}, {"message": {"content": "no"}}]}, "ok"),
        ({"choices": [{"message": {"content": 7}}]}, "7"),
        ({"choices": []}, "not a chat-completions answer: {'choices': []}"),
        (["a"], "not a chat-completions answer: ['a']"),
        ({"choices": [{"text": "hi"}]}, "not a chat-completions answer: {'choices': [{'text': 'hi'}]}"),
        (LONG, f"not a chat-completions answer: {str(LONG)[:200]}"),
    ],
)  # fmt: skip
def test_an_answers_text_is_its_first_choices_message_or_an_error_showing_its_start(
    answer: object, said: str
) -> None:
    try:
        text = client.answer_text(answer)
    except client.InvokeError as err:
        text = str(err)
    assert text == said


def http_error(raw: bytes, reason: str = "Bad Gateway") -> urllib.error.HTTPError:
    return urllib.error.HTTPError("http://x/invocations", 502, reason, None, io.BytesIO(raw))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        (b'{"detail": "no adapter serves task x"}', "no adapter serves task x"),
        (b'{"detail": "two\\nlines  and   gaps"}', "two lines and gaps"),
        (b'{"detail": ""}', '{"detail": ""}'),
        (b'{"error": "busy"}', '{"error": "busy"}'),
        (b'["a list"]', '["a list"]'),
        (b"<html>\n<h1>Bad\n Gateway</h1>\n</html>", "<html> <h1>Bad Gateway</h1> </html>"),
        (b"y" * 300, "y" * 200),
        (b"caf\xc3 ok", "caf\ufffd ok"),
        (b"", "Bad Gateway"),
        (b"  \n ", "Bad Gateway"),
    ],
)
def test_an_error_reply_is_read_as_its_detail_or_the_start_of_its_text_in_one_line(
    raw: bytes, said: str
) -> None:
    assert client.error_detail(http_error(raw)) == said


@pytest.mark.parametrize(
    "call",
    [
        lambda url: client.invoke_local(url, "notes", {}, timeout=0.5),
        lambda url: client.served_task_specs(url, timeout=0.5),
    ],
    ids=["invocation", "task list"],
)
def test_a_local_endpoint_that_does_not_answer_in_time_is_one_line(
    endpoint: type[Misbehaving], call: Any
) -> None:
    endpoint.behaviour = "silent"
    started = time.monotonic()
    with pytest.raises(client.InvokeError) as late:
        call(endpoint.url)
    assert time.monotonic() - started < 2.5
    assert str(late.value) == f"{endpoint.url}: TimeoutError: timed out"


def test_a_sagemaker_target_invokes_the_tasks_serving_component_in_the_region(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`sagemaker:ENDPOINT`: the component that serves the task now, read from the endpoint,
    invoked through the runtime, both clients in the given region."""
    import datetime

    import boto3
    from botocore.response import StreamingBody
    from botocore.stub import Stubber

    made = {name: boto3.client(name, region_name="eu-west-1")
            for name in ("sagemaker", "sagemaker-runtime")}  # fmt: skip
    asked: list[tuple[str, str | None]] = []

    def made_client(name: str, region_name: str | None = None) -> object:
        asked.append((name, region_name))
        return made[name]

    monkeypatch.setattr(boto3, "client", made_client)
    from pipelines.functions.registered_adapter import adapter_component_name

    component = adapter_component_name("ep", "routing", 2)
    answer = json.dumps({"choices": [{"message": {"content": "Routed."}}]}).encode()
    with Stubber(made["sagemaker"]) as control, Stubber(made["sagemaker-runtime"]) as runtime:
        control.add_response(
            "list_inference_components",
            {"InferenceComponents": [{
                "InferenceComponentName": component, "VariantName": "AllTraffic",
                "InferenceComponentArn": f"arn:aws:sagemaker:eu-west-1:123456789012:inference-component/{component}",
                "EndpointName": "ep",
                "EndpointArn": "arn:aws:sagemaker:eu-west-1:123456789012:endpoint/ep",
                "CreationTime": datetime.datetime(2026, 12, 1),
                "LastModifiedTime": datetime.datetime(2026, 12, 1),
                "InferenceComponentStatus": "InService",
            }]},
            {"EndpointNameEquals": "ep", "StatusEquals": "InService"},
        )  # fmt: skip
        runtime.add_response(
            "invoke_endpoint",
            {"Body": StreamingBody(io.BytesIO(answer), len(answer))},
            {"EndpointName": "ep", "InferenceComponentName": component,
             "ContentType": "application/json", "Accept": "application/json",
             "Body": b"{}"},
        )  # fmt: skip
        assert client.invoke("sagemaker:ep", "routing", {}, region="eu-west-1") == "Routed."
    assert sorted(asked) == [("sagemaker", "eu-west-1"), ("sagemaker-runtime", "eu-west-1")]


@pytest.mark.parametrize(
    ("behaviour", "said"),
    [
        ("no-tasks", "{url}/tasks answered 404: is it a peftops endpoint?"),
        ("tasks-not-a-dict", "{url}/tasks answered no task list: is it a peftops endpoint?"),
    ],
)
def test_an_endpoint_that_lists_no_tasks_is_one_line_naming_its_tasks_path(
    endpoint: type[Misbehaving], behaviour: str, said: str
) -> None:
    endpoint.behaviour = behaviour
    with pytest.raises(client.InvokeError) as refused:
        client.served_task_specs(endpoint.url)
    assert str(refused.value) == said.format(url=endpoint.url)


def test_an_https_target_is_a_local_endpoint_too() -> None:
    with pytest.raises(client.InvokeError) as refused:
        client.invoke("https://127.0.0.1:1", "notes", {})
    assert str(refused.value).startswith("https://127.0.0.1:1: ")
    assert str(refused.value).endswith("; is `peftops serve` running?")
