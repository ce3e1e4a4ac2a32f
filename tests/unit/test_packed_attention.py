"""packed_sdpa on its own, against references worked out here with plain SDPA: each packed
example's causal attention alone (grouped key/value heads, a given scale), and every call it
must leave to transformers' sdpa unchanged (table)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from training_scripts.packed_attention import (
    PACKED_SDPA,
    example_lengths,
    full_attention_everywhere,
    packed_sdpa_forward,
    packed_sdpa_mask,
    use_packed_attention,
)

HEAD_DIM = 8
SCALE = 0.3


class Attention(torch.nn.Module):
    """What transformers passes as `module`: only its `is_causal` is read."""

    def __init__(self, **attributes: Any) -> None:
        super().__init__()
        self.__dict__.update(attributes)


def positions(*rows: list[int]) -> torch.Tensor:
    """Position ids restarting at 0 at each example of each row."""
    return torch.tensor([[p for length in lengths for p in range(length)] for lengths in rows])


def tensors(
    batch: int, heads: int, kv_heads: int, length: int, head_dim: int = HEAD_DIM
) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(batch * 100 + heads * 10 + length)
    return tuple(
        torch.randn(batch, h, length, head_dim, generator=generator)
        for h in (heads, kv_heads, kv_heads)
    )


def each_example_alone(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    lengths: list[list[int]],
    scale: float | None,
) -> torch.Tensor:
    """(batch, positions, heads, head_dim): every example's causal attention over itself only,
    key/value heads repeated for their query heads."""
    repeat = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(repeat, dim=1), value.repeat_interleave(repeat, dim=1)
    rows = []
    for row, row_lengths in enumerate(lengths):
        outputs, start = [], 0
        for length in row_lengths:
            part = slice(start, start + length)
            outputs.append(
                torch.nn.functional.scaled_dot_product_attention(
                    query[row : row + 1, :, part],
                    key[row : row + 1, :, part],
                    value[row : row + 1, :, part],
                    is_causal=True,
                    scale=scale,
                )
            )
            start += length
        rows.append(torch.cat(outputs, dim=2))
    return torch.cat(rows).transpose(1, 2)


@pytest.mark.parametrize(
    ("heads", "kv_heads", "lengths", "shared_positions"),
    [
        (4, 4, [[3, 2, 4], [5, 4]], False),
        (4, 2, [[3, 2, 4], [5, 4]], False),  # grouped key/value heads
        (4, 2, [[2, 2]], False),  # as many positions as query heads
        (4, 2, [[1, 1]], False),  # as many positions as key/value heads; one-token examples
        (2, 2, [[2, 3], [2, 3]], True),  # one row of positions for the whole batch
    ],
)
@pytest.mark.parametrize("scale", [None, SCALE])
def test_each_packed_example_attends_to_itself_alone(
    heads: int,
    kv_heads: int,
    lengths: list[list[int]],
    shared_positions: bool,
    scale: float | None,
) -> None:
    length = sum(lengths[0])
    query, key, value = tensors(len(lengths), heads, kv_heads, length)
    position_ids = positions(lengths[0]) if shared_positions else positions(*lengths)
    output, weights = packed_sdpa_forward(
        Attention(), query, key, value, None, scaling=scale, position_ids=position_ids
    )
    assert weights is None
    assert output.shape == (len(lengths), length, heads, HEAD_DIM) and output.is_contiguous()
    torch.testing.assert_close(output, each_example_alone(query, key, value, lengths, scale))


def test_a_head_of_one_dimension_is_packed_too() -> None:
    query, key, value = tensors(1, 2, 2, 5, head_dim=1)
    output, _ = packed_sdpa_forward(
        Attention(), query, key, value, None, position_ids=positions([2, 3])
    )
    torch.testing.assert_close(output, each_example_alone(query, key, value, [[2, 3]], None))


def test_dropout_is_applied_only_when_asked() -> None:
    query, key, value = tensors(1, 2, 2, 4)
    position_ids = positions([2, 2])
    kept = packed_sdpa_forward(Attention(), query, key, value, None, position_ids=position_ids)[0]
    torch.testing.assert_close(kept, each_example_alone(query, key, value, [[2, 2]], None))
    dropped = packed_sdpa_forward(
        Attention(), query, key, value, None, dropout=1.0, position_ids=position_ids
    )[0]
    assert torch.count_nonzero(dropped) == 0


LEFT_TO_SDPA = {
    "a padding mask": dict(attention_mask=torch.ones(1, 1, 5, 5, dtype=torch.bool)),
    "a padding mask, all dropped": dict(
        attention_mask=torch.ones(1, 1, 5, 5, dtype=torch.bool), dropout=1.0
    ),
    "no positions": dict(position_ids=None),
    "not causal": dict(is_causal=False),
    "a module that is not causal": dict(module=Attention(is_causal=False)),
    "a cache": dict(kv_extra=2),
    "one query position": dict(length=1),
    "a sliding window": dict(sliding_window=3),
    "a soft cap": dict(softcap=30.0),
    "attention sinks": dict(s_aux=torch.zeros(2)),
}


@pytest.mark.parametrize("case", sorted(LEFT_TO_SDPA))
def test_every_other_call_is_transformers_sdpa_unchanged(case: str) -> None:
    settings = dict(LEFT_TO_SDPA[case])
    module = settings.pop("module", Attention())
    mask = settings.pop("attention_mask", None)
    length = settings.pop("length", 5)
    kv_extra = settings.pop("kv_extra", 0)
    is_causal = settings.pop("is_causal", None)
    dropout = settings.pop("dropout", 0.0)
    query = tensors(1, 2, 2, length)[0]
    key, value = tensors(1, 2, 2, length + kv_extra)[1:]
    lengths = [[length]] if length == 1 else [[2, length - 2]]
    kwargs = {"position_ids": positions(*lengths)} | settings
    if kwargs["position_ids"] is None:
        del kwargs["position_ids"]
    given = (module, query, key, value, mask)
    options = dict(dropout=dropout, scaling=SCALE, is_causal=is_causal)
    try:
        expected, _ = sdpa_attention_forward(*given, **options, **kwargs)
    except ValueError as refused:  # sdpa takes no soft cap: its own refusal, word for word
        with pytest.raises(ValueError) as caught:
            packed_sdpa_forward(*given, **options, **kwargs)
        assert str(caught.value) == str(refused)
        return
    output, _ = packed_sdpa_forward(*given, **options, **kwargs)
    torch.testing.assert_close(output, expected)
    if dropout:
        assert torch.count_nonzero(output) == 0
    elif length > 1 and not kv_extra:
        # What makes the two paths tell apart: sdpa reads the row as one sequence.
        alone = each_example_alone(query, key, value, lengths, SCALE)
        assert not torch.allclose(output, alone)


def test_a_module_without_a_causal_flag_is_taken_as_causal() -> None:
    query, key, value = tensors(1, 2, 2, 5)
    output, _ = packed_sdpa_forward(
        torch.nn.Module(), query, key, value, None, position_ids=positions([2, 3])
    )
    torch.testing.assert_close(output, each_example_alone(query, key, value, [[2, 3]], None))


@pytest.mark.parametrize(
    ("rows", "lengths"),
    [
        ([[0, 1, 2, 0, 1, 0]], [[3, 2, 1]]),
        ([[0, 1, 2, 3]], [[4]]),
        ([[0, 0, 0]], [[1, 1, 1]]),
        ([[0, 1, 0, 1], [0, 1, 2, 3]], [[2, 2], [4]]),
        ([[5, 6, 7, 0, 1]], [[3, 2]]),  # a row may start mid-sequence
        ([[0, 1, 3, 4]], [[2, 2]]),  # a jump is a new example too
    ],
)
def test_examples_start_wherever_a_position_does_not_continue_the_last(
    rows: list[list[int]], lengths: list[list[int]]
) -> None:
    assert example_lengths(torch.tensor(rows)) == lengths


def test_the_mask_is_left_out_only_for_a_whole_unpadded_sequence() -> None:
    assert packed_sdpa_mask(q_length=6, kv_length=6, batch_size=1) is None
    assert packed_sdpa_mask(q_length=6, kv_length=6, q_offset=0, kv_offset=0, batch_size=1) is None


@pytest.mark.parametrize(
    "call",
    [
        dict(attention_mask=torch.tensor([[0, 1, 1, 1, 1, 1]], dtype=torch.bool)),
        dict(q_length=1, allow_is_causal_skip=False),
        dict(q_offset=2, kv_length=8, allow_is_causal_skip=False),
        dict(kv_offset=2, allow_is_causal_skip=False),
        dict(q_offset=1, kv_offset=1, allow_is_causal_skip=False),
        dict(q_offset=1, allow_is_causal_skip=False),
    ],
)
def test_any_other_mask_is_transformers_sdpa_mask(call: dict[str, Any]) -> None:
    arguments = dict(batch_size=1, q_length=6, kv_length=6) | call
    mask = packed_sdpa_mask(**arguments)
    expected = sdpa_mask(**arguments)
    assert expected is not None and mask is not None and torch.equal(mask, expected)


FULL = SimpleNamespace(sliding_window=None, layer_types=["full_attention", "full_attention"])
WINDOWED = SimpleNamespace(sliding_window=4, layer_types=["full_attention", "full_attention"])
MIXED = SimpleNamespace(sliding_window=None, layer_types=["full_attention", "sliding_attention"])


class Composite(SimpleNamespace):
    """A multimodal config: the language model's settings are its text config's."""

    def get_text_config(self) -> SimpleNamespace:
        return self.text


@pytest.mark.parametrize(
    ("config", "full"),
    [
        (FULL, True),
        (SimpleNamespace(), True),  # no layer types: every layer the same, full
        (WINDOWED, False),
        (MIXED, False),
        (SimpleNamespace(layer_types=["full_attention", "chunked_attention"]), False),
        (Composite(text=FULL, sliding_window=None), True),
        (Composite(text=WINDOWED, sliding_window=None), False),
        (Composite(text=MIXED, layer_types=["full_attention"]), False),
    ],
)
def test_packed_attention_needs_full_attention_in_every_language_layer(
    config: Any, full: bool
) -> None:
    assert full_attention_everywhere(config) is full


@pytest.mark.parametrize(
    ("implementation", "now", "line"),
    [
        ("sdpa", PACKED_SDPA, "attention: packed_sdpa"),
        (
            "eager",
            "eager",
            "attention: eager (packed_sdpa replaces sdpa on full-attention models)",
        ),
    ],
)
def test_the_switch_says_which_attention_the_model_now_runs(
    implementation: str,
    now: str,
    line: str,
    tiny_causal: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_causal, attn_implementation=implementation)
    with caplog.at_level(logging.INFO, logger="training_scripts.packed_attention"):
        assert use_packed_attention(model) == now
    assert model.config._attn_implementation == now
    assert [r.getMessage() for r in caplog.records] == [line]
