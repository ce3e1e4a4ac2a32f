"""Greedy answers from a model: the prompts as training encoded them (fitted to the same token
budget by the same rule), in batches of similar length (less padding), returned in input order,
with a progress line per batch."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

if __package__:  # imported as part of the training_scripts package
    from . import measurements, model_loading, prompts, tasks
else:  # run as a file in a SageMaker job: sibling modules are top-level
    import measurements
    import model_loading
    import prompts
    import tasks

import torch

logger = logging.getLogger("evaluate")


@dataclass
class Generated:
    """One model's outputs on the test split, in input order, and what producing them took."""

    answers: list[str]
    new_tokens: int
    seconds: float


def prompt_token_ids(
    tokenizer: Any,
    task: tasks.TaskSpec,
    inputs: list[tasks.TaskInput],
    *,
    seq2seq: bool,
    max_tokens: int,
) -> tuple[list[list[int]], int]:
    """The ids a model reads for each input, fitted to `max_tokens` as training fits its
    examples (`prompts.fitted_prompt_ids`), and how many had to be cut: what evaluation scores,
    and what an endpoint reads for the same request."""
    fitted = [
        prompts.fitted_prompt_ids(tokenizer, task, value, max_tokens=max_tokens, seq2seq=seq2seq)
        for value in inputs
    ]
    return [ids for ids, _ in fitted], sum(cut for _, cut in fitted)


def generate_answers(
    model: Any,
    tokenizer: Any,
    prompt_tokens: list[list[int]],
    *,
    batch_size: int,
    max_new_tokens: int,
    label: str = "",
) -> Generated:
    """Greedy decoding of each prompt's ids in batches of similar length (less padding),
    returned in input order; a progress line per batch when `label` names the model."""
    seq2seq = model_loading.is_seq2seq(model.config)
    order = sorted(range(len(prompt_tokens)), key=lambda i: len(prompt_tokens[i]))
    outputs: list[str] = [""] * len(prompt_tokens)
    new_tokens = 0
    device = next(p.device for p in model.parameters())
    # Causal LMs continue from the last token, so their prompts are padded on the left.
    tokenizer.padding_side = "right" if seq2seq else "left"
    model.eval()
    started = time.perf_counter()
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        batch = tokenizer.pad(
            {"input_ids": [prompt_tokens[i] for i in indices]},
            padding=True,
            return_tensors="pt",
        ).to(device)
        with torch.no_grad():
            generated = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=tokenizer.pad_token_id,
            )
        continuation = generated if seq2seq else generated[:, batch["input_ids"].shape[1] :]
        new_tokens += int((continuation != tokenizer.pad_token_id).sum())
        for i, text in zip(
            indices, tokenizer.batch_decode(continuation, skip_special_tokens=True), strict=True
        ):
            outputs[i] = text.strip()
        if label:
            done = start + len(indices)
            elapsed = time.perf_counter() - started
            logger.info("%s: generated %s", label, measurements.progress(done, len(order), elapsed))
    return Generated(outputs, new_tokens, time.perf_counter() - started)
