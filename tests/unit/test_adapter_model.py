"""One base model and a LoRA adapter per task (pipelines/serving/adapters.py), on a tiny
random Llama with two random-weight adapters: a mixed batch answers each row as that row
alone, each row stops at its own limit, and every request the model cannot take is refused in
its own words before it generates."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import tarfile
import threading
import warnings
from pathlib import Path

import pytest

from pipelines.serving.adapters import (
    AdapterModel,
    Answer,
    Request,
    ServingError,
    UnknownTaskError,
    row_ends,
    smoke_test,
    unpack_adapter,
)
from training_scripts import model_loading, prompts, tasks

BASE = "base"
TASKS = ("notes", "summary")


def save_adapter(base_dir: Path, target: Path, seed: int) -> Path:
    """A LoRA adapter with random B (peft starts B at zero, which would change nothing)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=4, lora_alpha=16, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(target)
    return target


@pytest.fixture(scope="module")
def served(tiny_causal: Path, tmp_path_factory: pytest.TempPathFactory) -> AdapterModel:
    root = tmp_path_factory.mktemp("adapters")
    adapters = {
        task: save_adapter(tiny_causal, root / task, seed) for seed, task in enumerate(TASKS)
    }
    # "notes" was trained for support routing (its own task.json); "summary" predates task
    # specs beside adapters and is read as the default task.
    shutil.copy(tasks.SPECS_DIR / "support-routing.json", adapters["notes"] / tasks.TASK_SPEC_FILE)
    return AdapterModel(str(tiny_causal), adapters)


def ask(task: str, text: str, tokens: int = 6) -> Request:
    return Request(task, [{"role": "user", "content": text}], tokens)


def test_a_mixed_batch_answers_each_row_as_that_row_alone(served: AdapterModel) -> None:
    rows = [
        ask("notes", "the meeting moved to friday"),
        ask("summary", "a longer dialogue about a report due soon", tokens=3),
        ask(BASE, "the meeting moved to friday"),
        ask("notes", "short"),
    ]
    together = served.generate(rows)
    alone = [served.generate([row])[0] for row in rows]
    assert together == alone
    for answer, row in zip(together, rows, strict=True):
        # Cut at its limit ("length"), or ended by its end-of-text ("stop") before it.
        assert answer.new_tokens <= row.max_new_tokens
        assert answer.finish_reason == "stop" or answer.new_tokens == row.max_new_tokens
    # Each task's adapter answers otherwise than the other task's and than the base model.
    same_text = [served.generate([ask(task, "the meeting moved to friday", 8)])[0] for task in
                 (*TASKS, BASE)]  # fmt: skip
    assert len({a.text for a in same_text}) == 3


def test_a_row_stops_at_its_own_limit_or_when_its_client_is_gone() -> None:
    import torch

    gone = [threading.Event(), threading.Event(), threading.Event()]
    ends = row_ends(prompt_length=4, limits=[1, 3, 3], gone=gone)
    after_one = torch.zeros((3, 5), dtype=torch.long)
    assert ends(after_one, None).tolist() == [True, False, False]
    gone[2].set()
    assert ends(after_one, None).tolist() == [True, False, True]
    after_three = torch.zeros((3, 7), dtype=torch.long)
    assert ends(after_three, None).tolist() == [True, True, True]
    assert row_ends(4, [2], [])(torch.zeros((1, 5), dtype=torch.long), None).tolist() == [False]


def test_a_task_no_adapter_serves_is_an_error_not_the_base_models_answer(
    served: AdapterModel,
) -> None:
    with pytest.raises(UnknownTaskError) as unknown:
        served.generate([ask("notes", "x"), ask("tickets", "y")])
    assert str(unknown.value) == (
        "no adapter serves task 'tickets'; served: notes, summary (and 'base', the base model)"
    )
    assert smoke_test(served, "tickets", {"messages": [{"role": "user", "content": "y"}]}) == (
        False,
        "smoke test failed: UnknownTaskError: no adapter serves task 'tickets'; served: notes, "
        "summary (and 'base', the base model)",
    )


def test_the_model_reads_at_most_its_context_and_its_limits_derive_from_it(
    served: AdapterModel,
) -> None:
    longest = max(map(len, served.tokenizer.get_vocab()))
    assert served.max_context == 1024  # the tiny model's 1,024 positions, the task maximum
    assert served.max_prompt_chars == 1024 * longest
    assert served.tasks == TASKS and set(served.specs) == set(TASKS)


def test_a_prompt_the_model_cannot_take_is_refused_in_its_own_words(
    served: AdapterModel,
) -> None:
    def refusal(request: Request) -> str:
        with pytest.raises(ServingError) as refused:
            served.prompt(request)
        return str(refused.value)

    too_long = "x" * (served.max_prompt_chars + 1)
    assert refusal(ask("notes", too_long)) == (
        f"this endpoint reads at most 1024 tokens of prompt and answer, which messages of over "
        f"{served.max_prompt_chars} characters cannot fit; the request's messages hold "
        f"{served.max_prompt_chars + 1} characters: shorten them"
    )
    assert refusal(ask("notes", "please </s> stop")) == (
        "the user turn spells the control token '</s>'; an LMI endpoint would read it as one, "
        "training read it as text: remove it"
    )
    ids = served.prompt(ask("notes", "the meeting moved to friday", tokens=1))
    asked = len(ids) + 1024
    assert refusal(ask("notes", "the meeting moved to friday", tokens=1024)) == (
        f"this endpoint reads at most 1024 tokens of prompt and answer; the request asks for "
        f"{asked} ({len(ids)} in the messages, 1024 in the answer): shorten the messages or "
        "max_tokens"
    )
    assert served.prompt(ask("notes", "the meeting moved to friday", tokens=1024 - len(ids)))


def test_the_base_models_name_is_not_a_task(tiny_causal: Path) -> None:
    with pytest.raises(ServingError) as refused:
        AdapterModel(str(tiny_causal), {BASE: tiny_causal})
    assert str(refused.value) == "'base' names the base model; a task cannot be called so"


def test_an_adapter_is_unpacked_from_its_model_archive_or_read_as_a_folder(
    served: AdapterModel, tmp_path: Path, tiny_causal: Path
) -> None:
    folder = save_adapter(tiny_causal, tmp_path / "adapter", seed=3)
    assert unpack_adapter(folder, tmp_path) == folder
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in folder.iterdir():
            tar.add(path, arcname=path.name)
    unpacked = unpack_adapter(archive, tmp_path)
    assert unpacked.parent == tmp_path and unpacked.name.startswith("adapter-")
    assert sorted(p.name for p in unpacked.iterdir()) == sorted(p.name for p in folder.iterdir())
    with pytest.raises(ServingError) as missing:
        unpack_adapter(tmp_path / "absent.tar.gz", tmp_path)
    assert str(missing.value) == f"adapter artifact {tmp_path / 'absent.tar.gz'} does not exist"
    other = tmp_path / "other.tar.gz"
    with tarfile.open(other, "w:gz") as tar:
        info = tarfile.TarInfo("weights.bin")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(ServingError) as not_peft:
        unpack_adapter(other, tmp_path)
    assert str(not_peft.value) == f"{other} holds no adapter_config.json: not a peft adapter"


def test_a_smoke_test_passes_on_an_answer_with_text_and_says_how_long_it_took(
    served: AdapterModel,
) -> None:
    passed, detail = smoke_test(served, "notes", {"messages": [{"role": "user", "content": "hi"}]})
    match = re.fullmatch(r"smoke test passed: (\d+) tokens in (\d+\.\d) s", detail)
    assert passed and match is not None
    assert int(match[1]) == 16  # the random adapter never ends its answer early
    assert 0 <= float(match[2]) < 60


class Silent:
    """A served model whose adapter answers with no text (the real model's interface)."""

    def generate(self, requests: list[Request]) -> list[Answer]:
        assert [r.messages for r in requests] == [[{"role": "user", "content": "hi"}]]
        return [Answer(text="", new_tokens=1)]


def test_a_smoke_test_fails_on_an_answer_without_text() -> None:
    request = {"messages": [{"role": "user", "content": "hi"}]}
    assert smoke_test(Silent(), "notes", request) == (  # type: ignore[arg-type]
        False,
        "smoke test failed: the adapter generated no text",
    )


TEXTS = [
    "the meeting moved to friday",
    "Could you send me the report by Friday?",
    "Where is the station?",
    "Lunch at noon?",
    "hello",
    "the invoice is wrong",
    "please call me back",
    "thanks",
]


def stopping_answer(served: AdapterModel) -> tuple[Request, Answer]:
    """The first request whose greedy answer ends at its end-of-text before 16 tokens."""
    for text in TEXTS:
        for task in (BASE, *TASKS):
            request = ask(task, text, 16)
            (answer,) = served.generate([request])
            if answer.finish_reason == "stop":
                return request, answer
    raise AssertionError("no candidate ends early: add texts")


def test_a_row_ends_at_its_end_of_text_which_its_answer_does_not_show(
    served: AdapterModel,
) -> None:
    import torch

    request, answer = stopping_answer(served)
    ids = torch.tensor([served.prompt(request)])
    context = served.model.disable_adapter() if request.task == BASE else contextlib.nullcontext()
    if request.task != BASE:
        served.model.set_adapter(request.task)
    with context, torch.no_grad():
        raw = served.model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=16,
            do_sample=False, num_beams=1, pad_token_id=served.tokenizer.pad_token_id,
        )[0, ids.shape[1] :].tolist()  # fmt: skip
    end = raw.index(served.tokenizer.eos_token_id)
    assert answer.new_tokens == end + 1
    assert answer.text == served.tokenizer.decode(raw[:end]).strip()
    assert served.tokenizer.eos_token not in answer.text
    # Beside a row that runs on, its continuation is padded past its end: still cut there.
    longer = next(r for r in (ask(t, x, 16) for x in TEXTS for t in (BASE, *TASKS))
                  if served.generate([r])[0].finish_reason == "length")  # fmt: skip
    assert served.generate([request, longer])[0] == answer


def test_a_row_whose_client_is_gone_stops_after_one_token(served: AdapterModel) -> None:
    gone = threading.Event()
    gone.set()
    (answer,) = served.generate([ask("notes", TEXTS[0], 12)], [gone])
    assert answer.new_tokens == 1


def test_answers_are_greedy_whatever_the_models_generation_config_says(
    served: AdapterModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As evaluation scored them: an instruct model's generation_config.json often samples
    (do_sample, temperature) or searches beams; the endpoint never does."""
    rows = [ask(task, TEXTS[0], 8) for task in (*TASKS, BASE)]
    greedy = served.generate(rows)
    config = served.model.generation_config
    for name, value in {"do_sample": True, "temperature": 5.0, "top_k": 0, "num_beams": 3}.items():
        monkeypatch.setattr(config, name, value)
    import torch

    torch.manual_seed(0)
    assert served.generate(rows) == greedy


def test_a_base_model_alone_answers_the_base_and_refuses_a_task(tiny_causal: Path) -> None:
    alone = AdapterModel(str(tiny_causal), {})
    (answer,) = alone.generate([ask(BASE, TEXTS[0], 4)])
    assert answer.new_tokens >= 1
    with pytest.raises(UnknownTaskError) as unknown:
        alone.generate([ask("notes", TEXTS[0])])
    assert str(unknown.value) == (
        "no adapter serves task 'notes'; served: - (and 'base', the base model)"
    )


def test_each_task_reads_its_prompt_with_the_answer_cue_its_adapter_was_trained_with(
    served: AdapterModel,
) -> None:
    messages = [{"role": "user", "content": "the meeting moved to friday"}]
    cues = {"notes": "Answer:", "summary": "Summary:", BASE: tasks.DEFAULT_ANSWER_CUE}
    assert {task: served.specs[task].name for task in TASKS} == {
        "notes": "support-routing",
        "summary": "dialogue-summary",
    }
    for task, cue in cues.items():
        expected = prompts.causal_prompt_ids(served.tokenizer, messages, cue=cue)
        assert served.prompt(Request(task, messages, 4)) == expected, task
    assert served.prompt(Request("notes", messages, 4)) != served.prompt(
        Request("summary", messages, 4)
    )


def test_messages_of_exactly_the_character_bound_reach_the_tokenizer(
    served: AdapterModel,
) -> None:
    """The character bound refuses only what cannot fit; at the bound, the token count
    decides (here: too many tokens, refused in those words)."""
    with pytest.raises(ServingError) as refused:
        served.prompt(ask("notes", "x" * served.max_prompt_chars))
    assert str(refused.value).startswith(
        "this endpoint reads at most 1024 tokens of prompt and answer; the request asks for "
    )


def test_a_seq2seq_base_is_refused(tiny_seq2seq: Path) -> None:
    with pytest.raises(ServingError) as refused:
        AdapterModel(str(tiny_seq2seq), {})
    assert str(refused.value) == "serving takes causal language models; this base is seq2seq"


def with_config(source: Path, target: Path, **changes: object) -> Path:
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text(encoding="utf-8"))
    config.update(changes)
    (target / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return target


def test_the_context_is_the_models_positions_when_fewer_than_the_tasks_maximum(
    tiny_causal: Path, tmp_path: Path
) -> None:
    short = AdapterModel(
        str(with_config(tiny_causal, tmp_path / "short", max_position_embeddings=512)), {}
    )
    assert short.max_context == 512
    assert short.max_prompt_chars == 512 * max(map(len, short.tokenizer.get_vocab()))


def test_a_config_without_positions_reads_the_tasks_maximum(
    tiny_causal: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = model_loading.load_model

    def without_positions(*args: object, **kwargs: object) -> object:
        model = loaded(*args, **kwargs)
        del model.config.max_position_embeddings
        return model

    monkeypatch.setattr(model_loading, "load_model", without_positions)
    assert AdapterModel(str(tiny_causal), {}).max_context == tasks.MAX_CONTEXT_TOKENS


def test_the_base_is_served_in_full_precision_whatever_its_checkpoint_holds(
    tiny_causal: Path, tmp_path: Path
) -> None:
    import torch

    half = with_config(tiny_causal, tmp_path / "half", dtype="bfloat16", torch_dtype="bfloat16")
    model = AdapterModel(str(half), {}).model
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert not getattr(model, "is_loaded_in_4bit", False)


def test_loading_adapters_shows_no_deprecation_of_transformers_that_peft_triggers(
    tiny_causal: Path, tmp_path: Path
) -> None:
    """The server's log is what an operator reads: peft's use of a name transformers deprecated
    is not theirs to act on."""
    adapters = {task: save_adapter(tiny_causal, tmp_path / task, seed=3) for task in TASKS}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        AdapterModel(str(tiny_causal), adapters)
    assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning)] == []
