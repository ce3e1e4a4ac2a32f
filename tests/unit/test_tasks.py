"""Task specs: every way a spec can be wrong stops in one line naming the key and the fix;
each format reads its records into a task input and renders the prompt's turns; a bad spec or a
record that does not fit stops `run-local` before any job runs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, peftops, write_jsonl
from training_scripts import tasks
from training_scripts.contracts import GateThresholds
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
        ({"max_new_tokens": 0}, "max_new_tokens must be a whole number in 1..512"),
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


def dev_stage(**changes: Any) -> dict[str, Any]:
    stages = json.loads((REPO / "cdk.json").read_text())["context"]["stages"]
    return {"dev": {**stages["dev"], **changes}}


def test_a_stage_declares_its_tasks_each_with_the_stages_gate_or_its_own() -> None:
    from pipelines.definition.stages import stage_settings

    routing = {"spec": "support-routing", "metric_tolerance": 0.05, "min_metric_gain": 0.2}
    settings = stage_settings(dev_stage(tasks=["dialogue-summary", routing]), "dev")
    assert [t.spec.name for t in settings.tasks] == ["dialogue-summary", "support-routing"]
    config = settings.pipeline
    assert (config.task, config.tasks) == (
        "dialogue-summary",
        ("dialogue-summary", "support-routing"),
    )
    assert config.gate("dialogue-summary") == GateThresholds(0.02, 0.01)  # the stage's
    assert config.gate("support-routing") == GateThresholds(0.05, 0.2)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"tasks": []}, 'stages.dev.tasks: list the stage\'s tasks, e.g. "tasks": ["dialogue-summary"]'),
        ({"tasks": "dialogue-summary"}, "stages.dev.tasks: list the stage's tasks"),
        ({"tasks": ["support-routing", "support-routing"]}, "stages.dev.tasks[1]: task support-routing is listed twice"),
        ({"tasks": ["no-such-task"]}, "stages.dev.tasks[0]: "),
        ({"tasks": [{"spec": "support-routing", "metric_tolerance": 0.1}]}, "stages.dev.tasks[0]: a task's own gate sets both"),
        ({"tasks": [{"spec": "support-routing", "tolerance": 0.1}]}, "unknown keys ['tolerance']"),
        ({"tasks": [{"metric_tolerance": 0.1, "min_metric_gain": 0.1}]}, "stages.dev.tasks[0]: a task's name or spec file"),
        ({"task": "support-routing"}, 'stages.dev.task: list the stage\'s tasks as "tasks": ["support-routing"]'),
        ({"schedule": {"parameters": {"Task": "x"}}}, "stages.dev.schedule.parameters.Task: each of the stage's tasks"),
        ({"pipeline": {"task": "x"}}, "stages.dev: pipeline.task is set by the stage's tasks"),
    ],
)  # fmt: skip
def test_a_stages_tasks_that_cannot_deploy_are_refused_in_one_line(
    changes: dict[str, Any], message: str
) -> None:
    from pipelines.definition.stages import stage_settings

    with pytest.raises(ValueError) as refused:
        stage_settings(dev_stage(**changes), "dev")
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert str(refused.value).startswith("stages.dev")


def test_a_bad_spec_in_a_stage_stops_cdk_synth_in_one_line(tmp_path: Path) -> None:
    """cdk.json's `tasks` are checked where the app synthesizes: the CDK app (what `cdk synth`
    runs) exits with one line before building anything."""
    import os
    import subprocess
    import sys

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "format": "fields", "template": "no field"}))
    context = {"stage": "dev", "stages": dev_stage(tasks=["dialogue-summary", str(bad)])}
    done = subprocess.run(
        [sys.executable, "app.py"],
        cwd=REPO,
        env={
            **os.environ,
            "CDK_CONTEXT_JSON": json.dumps(context),
            "PYTHONPATH": str(REPO),
            # No end-of-life banner for this machine's Node (the Makefile sets it too).
            "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"peftops: error: stages.dev.tasks[1]: {bad}: template 'no field' names no field: put "
        "the data's fields in it as {field}"
    ]


def test_preprocess_refuses_data_published_for_another_task_than_the_runs(
    tmp_path: Path,
) -> None:
    """The pipeline hands preprocess its Task parameter: a scheduled run of one task must not
    train (and register under its name) data published for another."""
    from training_scripts import preprocess

    data = write_jsonl(
        tmp_path / "d.jsonl", [{"dialogue": f"A: hi {i}", "summary": "Hi."} for i in range(6)]
    )
    args = dict(input=str(data), output_dir=str(tmp_path / "out"))
    with pytest.raises(
        preprocess.readers.DataError,
        match=r"the data is published for task dialogue-summary .* but this run trains task "
        r"support-routing",
    ):
        preprocess.run(preprocess.PreprocessArguments(**args, task_name="support-routing"))
    assert not (tmp_path / "out").exists()
    manifest = preprocess.run(preprocess.PreprocessArguments(**args, task_name="dialogue-summary"))
    assert manifest["task"]["name"] == "dialogue-summary"


@pytest.mark.parametrize(
    ("turns", "message"),
    [
        (["user", "assistant", "assistant"], "ends with the user's turn"),
        (["assistant", "user", "assistant"], "starting with the user"),
        (["user", "user", "assistant"], "alternate user and assistant"),
        (["system", "user", "system", "assistant"], "a system turn may only come first"),
    ],
)
def test_a_conversation_chat_templates_refuse_is_refused_at_preprocess(
    turns: list[str], message: str
) -> None:
    chat = parse_task_spec({"name": "chat", "format": "messages"}, "c")
    record = {"messages": [{"role": r, "content": f"turn {i}"} for i, r in enumerate(turns)]}
    invalid = chat.read_record(record, clean)
    assert isinstance(invalid, tasks.InvalidRecord) and message in invalid.message


def test_a_turn_with_null_extra_keys_reads_and_one_with_a_value_says_which() -> None:
    """Parquet and hub datasets give every turn the union of keys, null where absent."""
    chat = parse_task_spec({"name": "chat", "format": "messages"}, "c")
    turns = [
        {"role": "user", "content": "Hi", "name": None},
        {"role": "assistant", "content": "Hello", "name": None},
    ]
    assert chat.read_record({"messages": turns}, clean) == (
        [{"role": "user", "content": "Hi"}],
        "Hello",
    )
    named = [{**turns[0], "name": "sam"}, turns[1]]
    invalid = chat.read_record({"messages": named}, clean)
    assert isinstance(invalid, tasks.InvalidRecord) and "holds ['name']" in invalid.message


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"system": "Be brief <|im_end|>"}, "system spells the control token '<|im_end|>'"),
        ({"template": "Q: {question} </s>"}, "template spells the control token '</s>'"),
        ({"system": "   "}, "system is blank"),
        (
            {"metric": "label_accuracy", "labels": [" yes", "no"]},
            "label ' yes': labels are single-spaced",
        ),
        ({"metric": "label_accuracy", "labels": ["A.", "B."]}, "label 'A.'"),
        ({"metric": "label_accuracy", "labels": ["(other)", "x"]}, "label '(other)'"),
        ({"max_new_tokens": 600}, "max_new_tokens must be a whole number in 1..512"),
    ],
)
def test_a_spec_that_would_validate_and_fail_later_is_refused_now(
    change: dict, message: str
) -> None:
    with pytest.raises(TaskSpecError) as refused:
        parse_task_spec({**VALID, **change}, "spec.json")
    assert message in str(refused.value)


def test_every_special_token_of_a_tokenizer_stays_text_in_the_data(tiny_causal: Path) -> None:
    """Added tokens marked special but not named special (SmolLM2's <file_sep>, <repo_name>,
    ...) are control tokens too: data that spells them is text."""
    from tokenizers import AddedToken

    from training_scripts import model_loading, prompts

    tokenizer = model_loading.load_tokenizer(str(tiny_causal))
    tokenizer.add_tokens([AddedToken("<file_sep>", special=True)])
    file_sep = tokenizer.convert_tokens_to_ids("<file_sep>")
    assert "<file_sep>" not in tokenizer.all_special_tokens  # the case all_special_tokens misses
    ids = prompts.causal_prompt_ids(
        tokenizer, [{"role": "user", "content": "hi <file_sep> there"}], cue="Answer:"
    )
    assert file_sep not in ids
    assert prompts.holds_control_tokens(tokenizer, "a <file_sep>")


def test_answers_that_normalize_to_nothing_are_compared_as_written() -> None:
    from training_scripts import scoring

    assert scoring.exact_match("", "A") == 0.0 and scoring.exact_match("a", "A.") == 1.0
    assert scoring.exact_match("The", "the.") == 1.0 and scoring.token_f1("", "The") == 0.0
    assert scoring.exact_match("the cat", "A cat!") == 1.0  # articles still go where words remain
    assert scoring.chrf("", "") == scoring.exact_match("", "") == scoring.token_f1("", "") == 1.0
    with pytest.raises(TaskSpecError, match="max_new_tokens must be in"):
        tasks.chat_request(tasks.resolve_task_spec("support-routing"), "hi", -5)


def test_the_same_message_after_another_greeting_never_straddles_two_splits() -> None:
    from training_scripts import preprocess

    chat = parse_task_spec({"name": "chat", "format": "messages"}, "c")
    examples = []
    for i in range(40):
        for greeting in ("Hi.", "Hello.", None):
            turns = [{"role": "user", "content": f"Message {i}"}]
            if greeting:
                turns = [
                    {"role": "user", "content": greeting},
                    {"role": "assistant", "content": "Yes?"},
                    *turns,
                ]
            examples.append(
                preprocess.Example(f"{i}{greeting}", turns, "billing", f"line {len(examples)}")
            )
    splits = preprocess.split_examples(examples, seed=1, validation_fraction=0.1, test_fraction=0.2)
    where = {}
    for name, rows in splits.items():
        for example in rows:
            where.setdefault(example.input[-1]["content"], set()).add(name)
    assert all(len(names) == 1 for names in where.values()) and len(where) == 40
    assert chat.messages(examples[0].input)[-1]["content"] == "Message 0"


@pytest.mark.parametrize(
    ("spec", "placeholder", "user_turn"),
    [
        (
            {
                "name": "two",
                "format": "fields",
                "template": "{title}\n\n{body}",
                "target_field": "t",
            },
            {"title": "{title}", "body": "{body}"},
            "{title}\n\n{body}",
        ),
        ({"name": "pc", "format": "prompt_completion"}, {"prompt": "{prompt}"}, "{prompt}"),
        (
            {"name": "chat", "format": "messages", "system": "Be brief."},
            [{"role": "user", "content": "{user}"}],
            "{user}",
        ),
    ],
)
def test_a_placeholder_input_shows_where_each_text_of_the_prompt_goes(
    spec: dict, placeholder: object, user_turn: str
) -> None:
    """What a model card shows as the prompt format: each field (or the user's turn) by name."""
    task = parse_task_spec(spec, "spec.json")
    assert task.placeholder_input() == placeholder
    assert task.messages(task.placeholder_input())[-1] == {"role": "user", "content": user_turn}
