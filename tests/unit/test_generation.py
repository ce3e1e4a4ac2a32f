"""evaluate's answers line up with the examples they answer, whatever the batching: generation
sorts prompts by length into batches and must put every answer back at its example's place
(a shifted answer would be scored against another example's reference)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from training_scripts import generation


class EchoModel(torch.nn.Module):
    """A causal "model" whose greedy answer to a prompt is the prompt itself (its tokens that
    are not padding, padded on the right): each answer names the example it answers."""

    def __init__(self, pad_token_id: int) -> None:
        super().__init__()
        self.config = SimpleNamespace(is_encoder_decoder=False)
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.pad_token_id = pad_token_id

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any):
        width = input_ids.shape[1]
        rows = []
        for ids, mask in zip(input_ids, attention_mask, strict=True):
            real = ids[mask.bool()]
            padding = torch.full((width - len(real),), self.pad_token_id, dtype=ids.dtype)
            rows.append(torch.cat([ids, real, padding]))
        return torch.stack(rows)


@pytest.fixture(scope="module")
def tokenizer(tiny_causal: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_causal)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lengths=st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=17),
    batch_size=st.integers(min_value=1, max_value=8),
)
def test_every_answer_lands_at_its_examples_place(
    tokenizer, lengths: list[int], batch_size: int
) -> None:
    # Each example's text ends in its own marker, after a filler of its own length, so that
    # sorting by length reorders the examples.
    conversations = [
        [{"role": "user", "content": "word " * length + f"marker{index}"}]
        for index, length in enumerate(lengths)
    ]
    model = EchoModel(tokenizer.pad_token_id)
    done = generation.generate_answers(
        model,
        tokenizer,
        conversations,
        cue="Answer:",
        batch_size=batch_size,
        max_input_tokens=4096,
        max_new_tokens=8,
    )
    prompts = generation.prompt_token_ids(tokenizer, conversations, cue="Answer:", seq2seq=False)
    expected = [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in prompts]
    assert len(set(expected)) == len(expected)  # every answer names its example
    assert done.answers == expected
