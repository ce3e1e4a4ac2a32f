"""Task specs: every way a spec can be wrong stops in one line naming the key and the fix;
each format reads its records into a task input and renders the prompt's turns; a bad spec or a
record that does not fit stops `run-local` before any job runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import REPO, peftops, write_jsonl
from training_scripts import tasks
from training_scripts.tasks import TaskSpecError, parse_task_spec

VALID = {"name": "qa", "format": "fields", "template": "Q: {question}", "target_field": "answer"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "chat"}, "format 'chat' is not one of messages, prompt_completion, fields"),
        ({"metric": "bleu"}, "metric 'bleu' is not one of rougeL, exact_match"),
        ({"template": "Answer this."}, "names no field: put the data's fields in it as {field}"),
        ({"template": "Q: {question:>10}"}, "name a field, as {field}"),
        ({"template": "Q: {question"}, "write a literal brace as {{ or }}"),
        ({"template": "Q: {answer}"}, "target_field 'answer' is also in the template"),
        ({"target_field": ""}, "a fields task needs target_field"),
        ({"metric": "label_accuracy"}, "label_accuracy needs labels"),
        ({"labels": ["a", "b"]}, "labels are for the label_accuracy metric"),
        ({"name": "Base"}, "use lower-case letters, digits and single hyphens"),
        ({"name": "base"}, "not 'base'"),
        ({"max_new_tokens": 0}, "max_new_tokens must be a whole number in 1..1024"),
        ({"system": 3}, "'system' must be text"),
        ({"prompt": "x"}, "unknown key 'prompt'"),
        ({"format": "messages"}, "a messages task takes no template or target_field"),
        (
            {"format": "prompt_completion", "target_field": "", "template": "{question}"},
            "a prompt_completion template names {prompt} and nothing else",
        ),
    ],
)
def test_a_bad_spec_is_refused_with_its_key_and_the_fix(change: dict, message: str) -> None:
    with pytest.raises(TaskSpecError) as refused:
        parse_task_spec({**VALID, **change}, "spec.json")
    assert str(refused.value).startswith("spec.json: ") and message in str(refused.value)
    assert "\n" not in str(refused.value)


def clean(text: str) -> str:
    return text.strip()


def test_each_format_reads_its_records_and_renders_the_turns_before_the_answer() -> None:
    qa = parse_task_spec({**VALID, "system": "Be brief."}, "qa")
    assert qa.read_record({"question": " Why? ", "answer": "Because."}, clean) == (
        "Why?",
        "Because.",
    )
    assert qa.messages("Why?") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Q: Why?"},
    ]
    two = parse_task_spec({**VALID, "template": "{title}\n\n{body}", "target_field": "tag"}, "two")
    record = {"title": "T", "body": "B", "tag": "x", "extra": 1}
    assert two.read_record(record, clean) == ({"title": "T", "body": "B"}, "x")
    assert two.messages({"title": "T", "body": "B"})[-1]["content"] == "T\n\nB"

    pc = parse_task_spec({"name": "pc", "format": "prompt_completion"}, "pc")
    assert pc.read_record({"prompt": "2+2?", "completion": "4"}, clean) == ("2+2?", "4")
    assert pc.messages("2+2?") == [{"role": "user", "content": "2+2?"}]

    chat = parse_task_spec({"name": "chat", "format": "messages", "system": "Default."}, "c")
    turns = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Goodbye"},
    ]
    task_input, answer = chat.read_record({"messages": turns}, clean)
    assert (task_input, answer) == (turns[:3], "Goodbye")
    assert chat.messages(task_input) == [{"role": "system", "content": "Default."}, *turns[:3]]
    own = [{"role": "system", "content": "Own."}, *turns]
    assert chat.messages(chat.read_record({"messages": own}, clean)[0])[0]["content"] == "Own."


@pytest.mark.parametrize(
    ("record", "reason", "message"),
    [
        (
            {"messages": [{"role": "user", "content": "Hi"}]},
            "not_text",
            "the last turn is the user's",
        ),
        ({"messages": "Hi"}, "missing_field", 'field "messages" is missing or not a list'),
        (
            {"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]},
            "not_text",
            "role 'bot' is not one of",
        ),
        ({"messages": [{"role": "assistant", "content": "y"}]}, "missing_field", "no user turn"),
    ],
)
def test_a_messages_record_that_does_not_fit_says_why(
    record: dict, reason: str, message: str
) -> None:
    chat = parse_task_spec({"name": "chat", "format": "messages"}, "c")
    invalid = chat.read_record(record, clean)
    assert isinstance(invalid, tasks.InvalidRecord)
    assert invalid.reason == reason and message in invalid.message


def test_the_request_body_is_the_tasks_messages_and_refuses_control_tokens() -> None:
    summary = tasks.resolve_task_spec(tasks.DEFAULT_TASK)
    body = tasks.chat_request(summary, tasks.task_input_from_text(summary, "A: hi"))
    assert body == {
        "messages": [
            {
                "role": "user",
                "content": "Summarize the following dialogue in one or two sentences.\n\nA: hi",
            }
        ],
        "max_tokens": 48,
        "temperature": 0.0,
    }
    with pytest.raises(TaskSpecError, match=re.escape("spells the control token '<|im_end|>'")):
        tasks.chat_request(summary, "A: hi <|im_end|>")
    two = parse_task_spec({**VALID, "template": "{a} {b}"}, "two")
    with pytest.raises(TaskSpecError, match="reads 2 fields"):
        tasks.task_input_from_text(two, "one text")


def test_the_digest_follows_the_spec_and_not_its_spelling(tmp_path: Path) -> None:
    spec = tmp_path / "qa.json"
    spec.write_text(json.dumps(VALID, indent=4))
    loaded = tasks.load_task_spec(spec)
    assert loaded.sha256 == parse_task_spec(dict(reversed(VALID.items())), "x").sha256
    assert loaded.sha256 != parse_task_spec({**VALID, "system": "Be brief."}, "x").sha256
    # The document round-trips: what a split folder or an adapter keeps reads back the same.
    assert parse_task_spec(loaded.document(), "again") == loaded


@pytest.mark.parametrize(
    ("spec", "records", "message"),
    [
        ({"name": "x", "format": "chat"}, None, "format 'chat' is not one of"),
        (
            {**VALID, "template": "Q: {question} {context}"},
            [{"question": "q", "answer": "a"}],
            'field "context" is missing',
        ),
        (
            {"name": "chat", "format": "messages"},
            [{"messages": [{"role": "user", "content": "hi"}]}],
            "the last turn is the user's",
        ),
    ],
)
def test_run_local_stops_on_a_bad_spec_or_record_before_any_job(
    tmp_path: Path, spec: dict, records: list | None, message: str
) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    data = write_jsonl(tmp_path / "data.jsonl", records or [VALID])
    done = peftops(
        "run-local", "--preset", "tiny", "--task-spec", str(spec_file), "--data", str(data),
        "--out", str(tmp_path / "run"), "--tracking", "none",
        "--registry", f"local:{tmp_path / 'registry.sqlite'}", cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("peftops: error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr[-2000:]
    assert not (tmp_path / "run" / "jobs").exists()  # no job ran


def test_a_label_task_refuses_an_answer_outside_its_labels_and_preprocess_counts_it(
    tmp_path: Path,
) -> None:
    from training_scripts import preprocess

    routing = tasks.resolve_task_spec("support-routing")
    turns = [{"role": "user", "content": "Where is my parcel?"}]
    assert (
        routing.read_record(
            {"messages": [*turns, {"role": "assistant", "content": "Shipping"}]}, clean
        )[1]
        == "Shipping"
    )
    invalid = routing.read_record(
        {"messages": [*turns, {"role": "assistant", "content": "sales"}]}, clean
    )
    assert isinstance(invalid, tasks.InvalidRecord) and invalid.reason == "unknown_label"
    assert "'sales' is not one of task support-routing's labels" in invalid.message
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Parcel {i} is late."},
                {"role": "assistant", "content": "shipping"},
            ]
        }
        for i in range(6)
    ] + [{"messages": [*turns, {"role": "assistant", "content": "sales"}]}]
    data = write_jsonl(tmp_path / "routing.jsonl", rows)
    args = dict(input=str(data), output_dir=str(tmp_path / "out"), task_spec="support-routing")
    with pytest.raises(
        preprocess.readers.DataError, match=r"routing\.jsonl line 7: the answer 'sales'"
    ):
        preprocess.run(preprocess.PreprocessArguments(**args))
    manifest = preprocess.run(preprocess.PreprocessArguments(**args, skip_invalid=True))
    assert manifest["dropped"]["unknown_label"] == 1 and sum(manifest["records_out"].values()) == 6
    with pytest.raises(TaskSpecError, match="labels repeat"):
        parse_task_spec(
            {"name": "x", "format": "messages", "metric": "label_accuracy", "labels": ["a", "A"]},
            "x",
        )
