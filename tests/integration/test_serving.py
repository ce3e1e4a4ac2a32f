"""Two tasks' adapters (tiny preset) approved, promoted to staging and served by one
`peftops serve` process: each task answers in its own template what its adapter generates
alone, `base` is the base model's answer, an unknown task is a 4xx, a mixed batch answers as
separate requests do, and the ids the server generates from are those evaluation scored."""

from __future__ import annotations

import io
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines.registry import LocalRegistry
from pipelines.serving.adapters import BASE, AdapterModel, Request, unpack_adapter
from pipelines.serving.catalog import artifact_path
from pipelines.serving.client import InvokeError, invoke_local
from pipelines.serving.server import COMPONENT_HEADER
from tests.conftest import REPO, peftops
from training_scripts import tasks
from training_scripts.contracts import INPUT_KEY, TARGET_KEY

DIALOGUES = [
    "#Person1#: Could you send me the report by Friday?\n#Person2#: Sure, on Thursday.",
    "#Person1#: Where is the station?\n#Person2#: Two blocks north, next to the bank.",
    "#Person1#: I lost my keys.\n#Person2#: Check the kitchen table, you left them there.",
]
MAX_NEW_TOKENS = 12
TASKS = ("dialogue-summary", "meeting-notes")
# The second task: the same records under another template and system prompt.
MEETING_NOTES = {
    "name": "meeting-notes",
    "format": "fields",
    "system": "You keep short meeting notes.",
    "template": "Note what was agreed:\n{dialogue}",
    "target_field": "summary",
    "answer_cue": "Notes:",
    "max_new_tokens": 5,  # a client naming no length gets this many tokens at most
}
SPECS = {
    TASKS[0]: tasks.resolve_task_spec(TASKS[0]),
    TASKS[1]: tasks.parse_task_spec(MEETING_NOTES, "meeting-notes"),
    # What `invoke --task base` sends; a base model reads no task's cue, only the default.
    BASE: tasks.resolve_task_spec(tasks.DEFAULT_TASK),
}
BASE_CUE = tasks.DEFAULT_ANSWER_CUE


def body(task: str, dialogue: str) -> dict:
    return tasks.chat_request(SPECS[task], dialogue, MAX_NEW_TOKENS)


@dataclass(frozen=True)
class Served:
    root: Path
    registry: str
    url: str


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def staging(tiny_run, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The shared tiny run's version (task dialogue-summary) and a second run's for another
    task, both approved (forced: smoke-test adapters) and promoted to staging, served."""
    first_root, done = tiny_run
    assert done.returncode == 0, done.stderr[-2000:]
    root = tmp_path_factory.mktemp("serving")
    shutil.copy(first_root / "registry.sqlite", root / "registry.sqlite")
    registry = f"local:{root / 'registry.sqlite'}#peftops-smoke"
    spec = root / "meeting-notes.json"
    spec.write_text(json.dumps(MEETING_NOTES))
    second = peftops(
        "run-local", "--preset", "tiny", "--task-spec", str(spec), "--param", "LoraRank=4",
        "--out", str(root / "run"), "--registry", registry, "--tracking", "none", cwd=REPO,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr[-2000:]
    for version in ("1", "2"):
        for command in (
            ["approve", version, "-d", "plumbing check", "--force"],
            ["promote", version, "--to", "staging", "-d", "serve both"],
        ):
            decided = peftops("models", *command, "--registry", registry, cwd=root)
            assert decided.returncode == 0, decided.stderr
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "serve", "--registry", registry,
         "--stage", "staging", "--port", str(port)],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                    assert json.loads(response.read())["tasks"] == {TASKS[0]: 1, TASKS[1]: 2}
                break
            except OSError:
                assert server.poll() is None, server.communicate()[1][-2000:]
                time.sleep(0.5)
        yield Served(root, registry, url)
    finally:
        server.terminate()
        server.wait(timeout=30)


def alone(base_model: str, adapter: Path | None, spec: tasks.TaskSpec, cue: str = "") -> list[str]:
    """What plain transformers + peft generate, one prompt at a time: no server code."""
    import torch
    from peft import PeftModel

    from training_scripts import model_loading, prompts

    tokenizer = model_loading.load_tokenizer(base_model)
    model = model_loading.load_model(base_model, quantize_4bit=False, dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    answers = []
    for dialogue in DIALOGUES:
        ids = torch.tensor(
            [
                prompts.causal_prompt_ids(
                    tokenizer, spec.messages(dialogue), cue=cue or spec.answer_cue
                )
            ]
        )
        with torch.no_grad():
            out = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=MAX_NEW_TOKENS,
                do_sample=False, num_beams=1, pad_token_id=tokenizer.pad_token_id,
            )  # fmt: skip
        answers.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())
    return answers


@pytest.fixture(scope="module")
def expected(staging: Served) -> dict[str, list[str]]:
    registry = LocalRegistry(staging.root / "registry.sqlite", "peftops-smoke")
    versions = {v.task: v for v in registry.list()}
    base_model = versions[TASKS[0]].metadata["base_model"]
    with tempfile.TemporaryDirectory() as scratch:
        answers = {
            task: alone(
                base_model,
                unpack_adapter(artifact_path(versions[task]), Path(scratch)),
                SPECS[task],
            )
            for task in TASKS
        }
    answers[BASE] = alone(base_model, None, SPECS[BASE], cue=BASE_CUE)
    assert answers[TASKS[0]] != answers[TASKS[1]] != answers[BASE]  # three different models
    return answers


def test_each_task_answers_as_its_adapter_alone_and_base_as_the_base_model(
    staging: Served, expected: dict[str, list[str]]
) -> None:
    for task in (*TASKS, BASE):
        got = [invoke_local(staging.url, task, body(task, d)) for d in DIALOGUES]
        assert got == expected[task], task


def test_invoke_with_raw_text_gets_each_tasks_template(
    staging: Served, expected: dict[str, list[str]]
) -> None:
    """`peftops invoke --task NAME TEXT` builds the body from the spec the endpoint serves the
    task with: each task's raw text reads as its adapter learned it."""
    for task in TASKS:
        invoked = peftops(
            "invoke", DIALOGUES[0], "--task", task, "--endpoint", staging.url,
            "--max-new-tokens", str(MAX_NEW_TOKENS), cwd=staging.root,
        )  # fmt: skip
        assert invoked.returncode == 0, invoked.stderr
        assert invoked.stdout == expected[task][0] + "\n", task


@pytest.mark.parametrize(
    "bad",
    [
        {"inputs": DIALOGUES[0], "parameters": {"max_new_tokens": 4}},  # skips the template
        {"messages": [{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "x"}]},
        {"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "y"}]},
        {"messages": [{"role": "user", "content": "x"}], "max_tokens": 513},
        {"messages": [{"role": "user", "content": "x"}], "max_tokens": True},
        {"messages": [{"role": "user", "content": "x"}], "temperature": 0.7},
        {"messages": [{"role": "user", "content": "x"}], "max_new_token": 4},  # a typo
    ],
)
def test_a_body_training_never_saw_is_refused(staging: Served, bad: dict) -> None:
    request = urllib.request.Request(
        f"{staging.url}/invocations",
        data=json.dumps(bad).encode(),
        headers={"Content-Type": "application/json", COMPONENT_HEADER: TASKS[0]},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 422


def test_evaluation_scores_the_answers_serving_gives(
    staging: Served, expected: dict[str, list[str]]
) -> None:
    """The gate decides on what the endpoint will answer: evaluation generates with the
    adapter merged into the unquantized base, in its batches, and gets the served answers."""
    import torch

    from training_scripts import evaluate, generation, model_loading

    registry = LocalRegistry(staging.root / "registry.sqlite", "peftops-smoke")
    versions = {v.task: v for v in registry.list()}
    base_model = versions[TASKS[0]].metadata["base_model"]
    tokenizer = model_loading.load_tokenizer(base_model)
    arguments = evaluate.EvaluateArguments(
        base_model=base_model, adapter_dir="-", baseline_dir="-", test_dir="-",
        max_new_tokens=MAX_NEW_TOKENS, batch_size=len(DIALOGUES),
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        for task in TASKS:
            adapter = unpack_adapter(artifact_path(versions[task]), Path(scratch))
            model = evaluate.scored_adapter(
                base_model, adapter, quantized=False, dtype=torch.float32
            )
            assert not hasattr(model, "peft_config")  # merged: generation at the base's speed
            test = evaluate.TestSet(
                [{INPUT_KEY: d, TARGET_KEY: ""} for d in DIALOGUES], "-", SPECS[task]
            )
            prompt_ids, _ = test.prompt_ids(tokenizer, seq2seq=False, args=arguments)
            scored = generation.generate_answers(
                model,
                tokenizer,
                prompt_ids,
                batch_size=arguments.batch_size,
                max_new_tokens=test.max_new_tokens(arguments),
            )
            assert scored.answers == expected[task], task


def test_an_unknown_task_is_a_404_never_the_base_models_answer(staging: Served) -> None:
    with pytest.raises(InvokeError, match="answered 404: no adapter serves task 'summarise'"):
        invoke_local(staging.url, "summarise", body(TASKS[0], DIALOGUES[0]))
    # The client cannot build a body for a task nothing describes: it says so, in one line.
    invoked = peftops(
        "invoke", DIALOGUES[0], "--task", "summarise", "--endpoint", staging.url, cwd=staging.root
    )
    assert invoked.returncode == 2 and invoked.stdout == ""
    assert invoked.stderr.count("\n") == 1 and "the endpoint does not serve it" in invoked.stderr


def test_concurrent_requests_of_both_tasks_answer_as_separate_ones(
    staging: Served, expected: dict[str, list[str]]
) -> None:
    jobs = [(task, i) for i in range(len(DIALOGUES)) for task in (*TASKS, BASE)] * 2
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(
            pool.map(
                lambda job: invoke_local(staging.url, job[0], body(job[0], DIALOGUES[job[1]])),
                jobs,
            )
        )
    assert got == [expected[task][i] for task, i in jobs]
    with urllib.request.urlopen(f"{staging.url}/ping", timeout=5) as response:
        assert json.loads(response.read())["largest_batch"] > 1  # requests were batched together


def test_one_mixed_batch_equals_separate_generations(
    staging: Served, expected: dict[str, list[str]]
) -> None:
    """Rows of three models in one generate call (peft's adapter_names), in-process."""
    registry = LocalRegistry(staging.root / "registry.sqlite", "peftops-smoke")
    versions = {v.task: v for v in registry.list()}
    with tempfile.TemporaryDirectory() as scratch:
        model = AdapterModel(
            versions[TASKS[0]].metadata["base_model"],
            {t: unpack_adapter(artifact_path(versions[t]), Path(scratch)) for t in TASKS},
        )
    rows = [(task, i) for i in range(len(DIALOGUES)) for task in (BASE, *TASKS)]
    answers = model.generate(
        [Request(t, body(t, DIALOGUES[i])["messages"], MAX_NEW_TOKENS) for t, i in rows]
    )
    assert [a.text for a in answers] == [expected[t][i] for t, i in rows]


def test_models_show_prints_the_stage_and_every_decision(staging: Served) -> None:
    shown = peftops("models", "show", "2", "--registry", staging.registry, cwd=staging.root)
    assert shown.returncode == 0, shown.stderr
    version = json.loads(
        peftops(
            "models", "show", "2", "--registry", staging.registry, "--json", cwd=staging.root
        ).stdout
    )
    assert version["task"] == "meeting-notes"
    assert version["lifecycle"]["stage"] == "staging"
    assert version["lifecycle"]["status"] == "Deployed"
    assert [d["action"] for d in version["history"]] == ["force-approve", "promote", "deploy"]
    assert version["history"][2]["who"] == "peftops-local-deployer"
    refused = peftops(
        "models", "promote", "1", "--to", "staging", "-d", "again",
        "--registry", staging.registry, cwd=staging.root,
    )  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr == "peftops: error: version 1 is already in staging (Deployed)\n"


def test_a_bounded_load_test_loses_no_request(staging: Served) -> None:
    from benchmarks.serving import load_test

    figures = load_test(
        staging.url, requests=16, concurrency=8, time_limit_s=240, max_new_tokens=MAX_NEW_TOKENS
    )
    assert (figures["completed"], figures["failed"], figures["unfinished"]) == (16, 0, 0)
    assert 0 < figures["p50_latency_s"] <= figures["p95_latency_s"]


def test_two_adapters_cost_at_most_their_size_and_a_tenth_more_than_the_base_alone(
    tiny_causal: Path, tmp_path: Path
) -> None:
    from benchmarks.serving import make_adapters, resident
    from training_scripts import measurements

    adapters = make_adapters(str(tiny_causal), tmp_path)
    base_alone = resident(str(tiny_causal), {})["rss_bytes"]
    with_adapters = resident(str(tiny_causal), adapters)["rss_bytes"]
    adapter_bytes = sum(measurements.directory_size(p) for p in adapters.values())
    assert base_alone < with_adapters <= base_alone * 1.10 + adapter_bytes


def test_the_server_reads_the_ids_evaluation_scored_for_every_test_example(
    staging: Served, tmp_path: Path
) -> None:
    """Parity, per task, over its whole test split: the body `invoke_sagemaker` sends (caught
    on the wire of a real boto3 client) becomes, in the local server, the very prompt ids
    evaluate.py generated from."""
    import boto3
    from botocore.response import StreamingBody
    from botocore.stub import Stubber

    from pipelines.serving.client import invoke_sagemaker
    from training_scripts import evaluate, preprocess

    registry = LocalRegistry(staging.root / "registry.sqlite", "peftops-smoke")
    versions = {v.task: v for v in registry.list()}
    base_model = versions[TASKS[0]].metadata["base_model"]
    with tempfile.TemporaryDirectory() as scratch:
        model = AdapterModel(
            base_model,
            {t: unpack_adapter(artifact_path(versions[t]), Path(scratch)) for t in TASKS},
        )
    runtime = boto3.client("sagemaker-runtime", region_name="us-east-1")
    sent: list[dict] = []
    runtime.meta.events.register(
        "before-parameter-build.sagemaker-runtime.InvokeEndpoint",
        lambda params, **_: sent.append(json.loads(params["Body"])),
    )
    answer = json.dumps({"choices": [{"message": {"role": "assistant", "content": "ok"}}]})
    for task in TASKS:
        spec_file = tmp_path / f"{task}.json"
        spec_file.write_text(json.dumps(SPECS[task].document()))
        out = tmp_path / task
        preprocess.run(
            preprocess.PreprocessArguments(
                input=str(REPO / "data/sample/dialogues.jsonl"),
                output_dir=str(out),
                task_spec=str(spec_file),
            )
        )
        arguments = evaluate.EvaluateArguments(
            base_model=base_model, adapter_dir="-", baseline_dir="-", test_dir=str(out / "test"),
        )  # fmt: skip
        test = evaluate.read_test_set(arguments)
        scored, _ = test.prompt_ids(model.tokenizer, seq2seq=False, args=arguments)
        sent.clear()
        with Stubber(runtime) as stub:
            for row in test.rows:
                stub.add_response(
                    "invoke_endpoint",
                    {"Body": StreamingBody(io.BytesIO(answer.encode()), len(answer))},
                )
                invoke_sagemaker(
                    "peftops-staging",
                    f"peftops-staging-{task}-1",
                    tasks.chat_request(test.task, row["input"]),
                    runtime,
                )
        served = [model.prompt(Request(task, body["messages"], 4)) for body in sent]
        assert len(served) == len(test.rows) > 0
        assert served == scored, task


def test_a_body_without_max_tokens_answers_at_the_tasks_length(staging: Served) -> None:
    """The spec's max_new_tokens (meeting-notes: 5) is what a client that names no length
    gets, not a server-wide default: greedy answers, so it is the 12-token answer's prefix."""

    def completion_tokens(body: dict) -> int:
        request = urllib.request.Request(
            f"{staging.url}/invocations",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", COMPONENT_HEADER: TASKS[1]},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())["usage"]["completion_tokens"]

    messages = body(TASKS[1], DIALOGUES[1])["messages"]
    longer = completion_tokens({"messages": messages, "max_tokens": MAX_NEW_TOKENS})
    assert completion_tokens({"messages": messages}) == min(5, longer)


def post_invocation(staging: Served, task: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{staging.url}/invocations",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", COMPONENT_HEADER: task},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_request_past_the_context_is_refused_alone_and_names_the_limit(
    staging: Served,
) -> None:
    """Prompt and answer tokens are bounded by the context training and evaluation read (LMI's
    OPTION_MAX_MODEL_LEN in the cloud): one token past it is a 400 that says by how much, one
    token within it is answered, and a neighbour sent beside the refused one is answered."""
    limit = tasks.MAX_CONTEXT_TOKENS
    long_text = " ".join(f"line {i}." for i in range(120))  # 512 < its tokens < 1024
    status, reply = post_invocation(
        staging, TASKS[0], {"messages": [{"role": "user", "content": long_text}], "max_tokens": 512}
    )
    assert status == 400, reply
    match = re.search(
        r"asks for (\d+) \((\d+) in the messages, 512 in the answer\)", reply["detail"]
    )
    assert match and f"at most {limit} tokens" in reply["detail"], reply
    prompt_tokens = int(match[2])
    assert int(match[1]) == prompt_tokens + 512 > limit and prompt_tokens < limit
    within = {
        "messages": [{"role": "user", "content": long_text}],
        "max_tokens": limit - prompt_tokens,
    }
    past = {**within, "max_tokens": limit - prompt_tokens + 1}
    with ThreadPoolExecutor(2) as pool:
        answered, refused = pool.map(
            lambda b: post_invocation(staging, TASKS[0], b), [within, past]
        )
    assert refused[0] == 400 and f"asks for {limit + 1} " in refused[1]["detail"]
    assert answered[0] == 200 and answered[1]["usage"]["prompt_tokens"] == prompt_tokens
