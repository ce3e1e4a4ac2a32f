"""`peftops invoke`'s request (pipelines/cli/serve.py): the spec a task's body is built from
(--task-spec, the endpoint's, the shipped one), the input as text or a JSON file, the answer
length, the region of a SageMaker endpoint, and each refusal's words and exit code. The call
itself is recorded here; test_invoke_client.py and test_server_requests.py send it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.serving import client
from training_scripts import tasks

NOTES = {
    "name": "meeting-notes",
    "format": "fields",
    "template": "Notes on {topic}:\n{transcript}",
    "target_field": "notes",
}


def ask(
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    *,
    served: dict[str, Any] | Exception | None = None,
    answer: str | Exception = "An answer.",
) -> tuple[int, str, list[tuple]]:
    """`peftops invoke ARGV` against an endpoint that serves `served` specs; the exit code,
    output and each call made."""
    calls: list[tuple] = []

    def served_task_specs(url: str) -> dict[str, Any]:
        calls.append(("tasks", url))
        if isinstance(served, Exception):
            raise served
        return served or {}

    def invoke(target: str, task: str, body: dict, *, region: str | None = None) -> str:
        calls.append(("invoke", target, task, body, region))
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(client, "served_task_specs", served_task_specs)
    monkeypatch.setattr(client, "invoke", invoke)
    done = CliRunner().invoke(app, ["invoke", *argv])
    return done.exit_code, done.output, calls


def body(task: str, task_input: Any, max_new_tokens: int = 0) -> dict[str, Any]:
    return tasks.chat_request(tasks.resolve_task_spec(task), task_input, max_new_tokens)


LOCAL = "http://127.0.0.1:8080"


def test_a_shipped_task_is_asked_with_its_template_on_the_local_endpoint_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, output, calls = ask(monkeypatch, ["--task", "dialogue-summary", "A: hi.\nB: bye."])
    assert (code, output) == (0, "An answer.\n")
    assert calls == [
        ("tasks", LOCAL),  # the endpoint's own spec first
        ("invoke", LOCAL, "dialogue-summary", body("dialogue-summary", "A: hi.\nB: bye."), None),
    ]


def test_the_endpoints_own_spec_for_a_task_builds_its_body(monkeypatch: pytest.MonkeyPatch) -> None:
    served = {"meeting-notes": {**NOTES, "template": "Notes:\n{transcript}"}}
    code, _, calls = ask(monkeypatch, ["--task", "meeting-notes", "Q3 plan"], served=served)
    spec = tasks.parse_task_spec(served["meeting-notes"], "served")
    assert code == 0
    assert calls[-1] == (
        "invoke",
        LOCAL,
        "meeting-notes",
        tasks.chat_request(spec, "Q3 plan"),
        None,
    )


def test_a_task_spec_file_and_a_json_input_build_the_body_with_the_answer_length_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spec_file = tmp_path / "notes.json"
    spec_file.write_text(json.dumps(NOTES))
    fields = {"topic": "the budget", "transcript": "A: cut it.\nB: no."}
    (tmp_path / "input.json").write_text(json.dumps(fields), encoding="utf-8")
    code, _, calls = ask(
        monkeypatch,
        ["--task", "meeting-notes", "--task-spec", str(spec_file),
         "--messages", str(tmp_path / "input.json"), "--max-new-tokens", "7"],
    )  # fmt: skip
    assert code == 0
    expected = tasks.chat_request(tasks.load_task_spec(spec_file), fields, 7)
    assert expected["max_tokens"] == 7
    assert calls == [("invoke", LOCAL, "meeting-notes", expected, None)]  # no spec asked for


def test_the_base_model_is_asked_with_the_default_tasks_template(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, _, calls = ask(monkeypatch, ["--task", "base", "A: hi."])
    assert code == 0
    assert calls == [("invoke", LOCAL, "base", body(tasks.DEFAULT_TASK, "A: hi."), None)]


def test_a_sagemaker_endpoint_is_asked_in_the_region_given(monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["--task", "support-routing", "--endpoint", "sagemaker:peftops-staging",
            "--region", "eu-west-1", "My bill is wrong."]  # fmt: skip
    code, _, calls = ask(monkeypatch, argv)
    assert code == 0
    assert calls == [
        ("invoke", "sagemaker:peftops-staging", "support-routing",
         body("support-routing", [{"role": "user", "content": "My bill is wrong."}]), "eu-west-1"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["hi"], "--task: name the task to ask ('base' for the base model)"),
        (["--task", "Meeting_Notes", "hi"],
         "--task 'Meeting_Notes': a task name is lower-case letters, digits and single hyphens "
         "('base' for the base model)"),
        (["--task", "dialogue-summary"], "give the input as TEXT or as --messages FILE, one of them"),
        (["--task", "dialogue-summary", "--messages", "m.json", "hi"],
         "give the input as TEXT or as --messages FILE, one of them"),
        (["--task", "dialogue-summary", "--messages", "{missing}"],
         "--messages {missing}: not a readable JSON file ([Errno 2] No such file or directory: "
         "'{missing}')"),
        (["--task", "dialogue-summary", "--messages", "{not_json}"],
         "--messages {not_json}: not a readable JSON file (Expecting value: line 1 column 1 (char 0))"),
        (["--task", "other-task", "--task-spec", "{spec}", "hi"],
         "--task-spec {spec} is task 'meeting-notes', not 'other-task'"),
        (["--task", "unknown-task", "hi"],
         "no spec for task 'unknown-task': the endpoint does not serve it and no shipped task "
         "has that name; pass --task-spec"),
    ],
)  # fmt: skip
def test_a_request_that_cannot_be_built_is_refused_before_any_call(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, argv: list[str], said: str
) -> None:
    paths = {"missing": tmp_path / "missing.json", "not_json": tmp_path / "bad.json",
             "spec": tmp_path / "notes.json"}  # fmt: skip
    paths["not_json"].write_text("not json")
    paths["spec"].write_text(json.dumps(NOTES))
    code, output, calls = ask(monkeypatch, [a.format(**paths) for a in argv])
    assert (code, output) == (2, f"peftops: error: {said.format(**paths)}\n")
    assert [c for c in calls if c[0] == "invoke"] == []


@pytest.mark.parametrize(
    ("served", "answer", "said"),
    [
        (client.InvokeError("http://127.0.0.1:8080: connection refused"), "unused",
         "http://127.0.0.1:8080: connection refused"),
        ({}, client.InvokeError("answered 500: Internal Server Error"),
         "answered 500: Internal Server Error"),
        ({}, ClientError({"Error": {"Code": "ValidationException", "Message": "no endpoint"}},
                         "InvokeEndpoint"),
         "AWS: An error occurred (ValidationException) when calling the InvokeEndpoint "
         "operation: no endpoint"),
    ],
)  # fmt: skip
def test_an_endpoint_that_fails_exits_1_in_one_line(
    monkeypatch: pytest.MonkeyPatch, served: Any, answer: Any, said: str
) -> None:
    code, output, _ = ask(
        monkeypatch, ["--task", "dialogue-summary", "hi"], served=served, answer=answer
    )
    assert (code, output) == (1, f"peftops: error: {said}\n")


def test_the_base_model_can_be_asked_with_a_task_spec_files_template(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What the base model answers to the prompt an adapter was trained on: the comparison."""
    spec_file = tmp_path / "notes.json"
    spec_file.write_text(json.dumps({**NOTES, "template": "Notes:\n{transcript}"}))
    code, _, calls = ask(monkeypatch, ["--task", "base", "--task-spec", str(spec_file), "Q3"])
    assert code == 0
    expected = tasks.chat_request(tasks.load_task_spec(spec_file), "Q3")
    assert calls == [("invoke", LOCAL, "base", expected, None)]


def test_an_https_endpoint_is_asked_for_its_own_spec_too(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "https://serving.example.internal"
    one_field = {**NOTES, "template": "Notes:\n{transcript}"}
    code, _, calls = ask(monkeypatch, ["--task", "meeting-notes", "--endpoint", url, "Q3"],
                         served={"meeting-notes": one_field})  # fmt: skip
    assert code == 0, _
    assert calls[0] == ("tasks", url)
    spec = tasks.parse_task_spec(one_field, "served")
    assert calls[1] == ("invoke", url, "meeting-notes", tasks.chat_request(spec, "Q3"), None)


def test_a_bad_spec_from_the_endpoint_is_named_by_where_it_came_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served = {"meeting-notes": {**NOTES, "format": "chat"}}
    code, output, _ = ask(monkeypatch, ["--task", "meeting-notes", "hi"], served=served)
    assert code == 2
    assert output.startswith(f"peftops: error: {LOCAL}/tasks meeting-notes: ")


def test_empty_text_is_sent_as_the_tasks_empty_input(monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, calls = ask(monkeypatch, ["--task", "dialogue-summary", ""])
    assert code == 0
    assert calls[-1] == ("invoke", LOCAL, "dialogue-summary", body("dialogue-summary", ""), None)
