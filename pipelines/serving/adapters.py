"""One base model in memory and every served task's LoRA adapter on it (peft's multi-adapter
model): a batch may mix tasks, each row through its own adapter (`adapter_names`), the way an
LMI endpoint serves adapter inference components on one base component."""

from __future__ import annotations

import tarfile
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.functions.registered_adapter import BASE_COMPONENT as BASE

# peft's name for "no adapter" in a mixed batch.
_PEFT_BASE = "__base__"


class ServingError(Exception):
    """What a served model cannot do; the message says why and what to do."""


class UnknownTaskError(ServingError):
    """A request for a task no adapter serves: an error, never the base model's answer."""


@dataclass(frozen=True)
class Request:
    task: str  # a served task, or BASE
    messages: list[dict[str, str]]  # the task's prompt turns (tasks.chat_request's body)
    max_new_tokens: int


@dataclass(frozen=True)
class Answer:
    text: str
    new_tokens: int
    finish_reason: str = "stop"  # "length": cut at max_tokens


def adapter_task(adapter_dir: Path) -> Any:
    """The task an adapter was trained for: its task.json, or the default task for an adapter
    written before adapters carried one."""
    from training_scripts import tasks

    path = adapter_dir / tasks.TASK_SPEC_FILE
    return (
        tasks.load_task_spec(path)
        if path.is_file()
        else tasks.resolve_task_spec(tasks.DEFAULT_TASK)
    )


def unpack_adapter(archive: Path, into: Path) -> Path:
    """An adapter folder from a model.tar.gz (SageMaker's model data) or a folder."""
    if archive.is_dir():
        return archive
    if not archive.is_file():
        raise ServingError(f"adapter artifact {archive} does not exist")
    target = Path(tempfile.mkdtemp(prefix="adapter-", dir=into))
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    if not (target / "adapter_config.json").is_file():
        raise ServingError(f"{archive} holds no adapter_config.json: not a peft adapter")
    return target


class AdapterModel:
    """The base model once, and one named adapter per task on it."""

    def __init__(self, base_model: str, adapters: dict[str, Path]) -> None:
        import torch
        from peft import PeftModel
        from transformers.utils import logging as transformers_logging

        from training_scripts import model_loading, tasks

        # A server's console shows requests and errors, not a progress bar per weight file.
        transformers_logging.disable_progress_bar()
        if BASE in adapters:
            raise ServingError(f"{BASE!r} names the base model; a task cannot be called so")
        self.tokenizer = model_loading.load_tokenizer(base_model)
        self.tokenizer.padding_side = "left"  # causal LMs continue from the last token
        # Served unquantized, as the endpoint's base component serves it: a QLoRA adapter's
        # weights apply to the full-precision base (the QLoRA paper's inference setting).
        base = model_loading.load_model(base_model, quantize_4bit=False, dtype=torch.float32)
        if model_loading.is_seq2seq(base.config):
            raise ServingError("serving takes causal language models; this base is seq2seq")
        # The context training and evaluation read at most (tasks.MAX_CONTEXT_TOKENS), as LMI's
        # OPTION_MAX_MODEL_LEN bounds it in the cloud, within the model's own positions.
        positions = (
            getattr(base.config, "max_position_embeddings", None) or tasks.MAX_CONTEXT_TOKENS
        )
        self.max_context = min(tasks.MAX_CONTEXT_TOKENS, positions)
        # No token spells more characters than the vocabulary's longest entry (byte-level and
        # sentencepiece entries spell at least the characters they decode to), so messages
        # longer than this cannot fit the context: refused before the tokenizer reads them.
        longest_token = max(map(len, self.tokenizer.get_vocab()), default=1)
        self.max_prompt_chars = self.max_context * longest_token
        self.tasks = tuple(sorted(adapters))
        # Each adapter's task, as it was trained (the spec train.py wrote beside it).
        self.specs = {task: adapter_task(adapters[task]) for task in self.tasks}
        self.model: Any = base
        with warnings.catch_warnings():
            # peft asks transformers about gradient checkpointing by a name it deprecated.
            warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
            for index, task in enumerate(self.tasks):
                path = str(adapters[task])
                if index == 0:
                    self.model = PeftModel.from_pretrained(base, path, adapter_name=task)
                else:
                    self.model.load_adapter(path, adapter_name=task)
        self.model.eval()
        self.lock = threading.Lock()  # one generate at a time: a model is not thread-safe
        # Prompts are tokenized on the server's worker threads and the generating one; a fast
        # tokenizer's settings are shared state (transformers sets them on each call).
        self.tokenizer_lock = threading.Lock()

    def prompt(self, request: Request) -> list[int]:
        """The ids the model reads: the request's turns rendered as training rendered them."""
        from training_scripts import prompts, tasks

        chars = sum(len(turn["content"]) for turn in request.messages)
        if chars > self.max_prompt_chars:
            raise ServingError(
                f"this endpoint reads at most {self.max_context} tokens of prompt and answer, "
                f"which messages of over {self.max_prompt_chars} characters cannot fit; the "
                f"request's messages hold {chars} characters: shorten them"
            )
        for turn in request.messages:
            spelled = next(
                (t for t in prompts.control_tokens(self.tokenizer) if t in turn["content"]), None
            )
            if spelled:
                raise ServingError(
                    f"the {turn['role']} turn spells the control token {spelled!r}; an LMI "
                    "endpoint would read it as one, training read it as text: remove it"
                )
        spec = self.specs.get(request.task)
        cue = spec.answer_cue if spec else tasks.DEFAULT_ANSWER_CUE
        with self.tokenizer_lock:
            ids = prompts.causal_prompt_ids(self.tokenizer, request.messages, cue=cue)
        # Refused, never cut: no client gets an answer to another prompt than it sent.
        if len(ids) + request.max_new_tokens > self.max_context:
            raise ServingError(
                f"this endpoint reads at most {self.max_context} tokens of prompt and "
                f"answer; the request asks for {len(ids) + request.max_new_tokens} "
                f"({len(ids)} in the messages, {request.max_new_tokens} in the answer): "
                "shorten the messages or max_tokens"
            )
        return ids

    def generate(
        self, requests: Sequence[Request], gone: Sequence[threading.Event] = ()
    ) -> list[Answer]:
        """Greedy continuations of a batch whose rows may each name another task. Each row stops
        at its own end (its end-of-text, its max_new_tokens, or its `gone` event, set when no
        one waits for its answer any more): the batch lasts as long as its longest live row."""
        import torch

        unknown = sorted({r.task for r in requests} - {*self.tasks, BASE})
        if unknown:
            raise UnknownTaskError(
                f"no adapter serves task {unknown[0]!r}; served: {', '.join(self.tasks) or '-'}"
                f" (and {BASE!r}, the base model)"
            )
        batch = self.tokenizer.pad(
            {"input_ids": [self.prompt(r) for r in requests]},
            padding=True,
            return_tensors="pt",
        )
        names = [_PEFT_BASE if r.task == BASE else r.task for r in requests]
        longest = max(r.max_new_tokens for r in requests)
        kwargs: dict[str, Any] = {"adapter_names": names} if self.tasks else {}
        ends = row_ends(batch["input_ids"].shape[1], [r.max_new_tokens for r in requests], gone)
        with self.lock, torch.no_grad():
            generated = self.model.generate(
                **batch,
                max_new_tokens=longest,
                do_sample=False,
                num_beams=1,
                pad_token_id=self.tokenizer.pad_token_id,
                stopping_criteria=ends,
                **kwargs,
            )
        continuation = generated[:, batch["input_ids"].shape[1] :]
        answers = []
        for row, request in zip(continuation.tolist(), requests, strict=True):
            # Greedy decoding: a shorter limit is a prefix of the longer one's continuation.
            tokens = row[: request.max_new_tokens]
            stopped = self.tokenizer.eos_token_id in tokens
            if stopped:
                tokens = tokens[: tokens.index(self.tokenizer.eos_token_id) + 1]
            text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
            answers.append(
                Answer(
                    text=text, new_tokens=len(tokens), finish_reason="stop" if stopped else "length"
                )
            )
        return answers


def row_ends(prompt_length: int, limits: Sequence[int], gone: Sequence[threading.Event]) -> Any:
    """A stopping criterion that ends each row of a batch at its own token limit, or at once
    when its `gone` event is set (transformers stops a batch when every row has ended)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class RowEnds(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            generated = input_ids.shape[1] - prompt_length
            ended = [
                generated >= limit or (index < len(gone) and gone[index].is_set())
                for index, limit in enumerate(limits)
            ]
            return torch.tensor(ended, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([RowEnds()])


def smoke_test(
    model: AdapterModel, task: str, request: dict[str, Any], *, max_new_tokens: int = 16
) -> tuple[bool, str]:
    """Does the task's adapter answer a real request (the registered version's smoke request,
    a test example's body)? What a stage's deployer checks before the version serves."""
    started = time.perf_counter()
    try:
        (answer,) = model.generate([Request(task, request["messages"], max_new_tokens)])
    except Exception as err:  # any failure of the served model fails the smoke test
        return False, f"smoke test failed: {type(err).__name__}: {err}"
    seconds = time.perf_counter() - started
    if not answer.text:
        return False, "smoke test failed: the adapter generated no text"
    return True, f"smoke test passed: {answer.new_tokens} tokens in {seconds:.1f} s"
