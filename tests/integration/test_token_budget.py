"""Token-budget batching: micro-batches fit the budget and hold every example once; packed
rows keep examples apart; one optimizer step of token-budget micro-batches (with gradient
accumulation) has the loss and gradients of the per-example sum, normalised per target token."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from tests.integration.test_train_methods import make_args
from training_scripts.batching import (
    BatchCost,
    PackedRows,
    TokenBudgetSampler,
    budget_batches,
    resolved_token_budget,
)
from training_scripts.enums import PeftMethod
from training_scripts.guarded_trainer import next_token_labels
from training_scripts.model_loading import load_model, load_tokenizer
from training_scripts.packed_attention import PACKED_SDPA, example_lengths, use_packed_attention
from training_scripts.train import FineTuneRecipe, TrainArguments


def cost(lengths: list[int], batch: list[int], kind: BatchCost) -> int:
    if kind is BatchCost.PACKED:
        return sum(lengths[i] for i in batch)
    return max(lengths[i] for i in batch) * len(batch)


@pytest.mark.parametrize("kind", list(BatchCost))
def test_every_example_once_per_epoch_in_batches_that_fit_the_budget(kind: BatchCost) -> None:
    rng = random.Random(3)
    lengths = [rng.randint(20, 300) for _ in range(500)]
    sampler = TokenBudgetSampler(lengths, budget=1024, cost=kind, max_examples=16, seed=7)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(500))
    assert all(cost(lengths, b, kind) <= 1024 and len(b) <= 16 for b in batches)
    # Full batches: a batch is cut only when the next example would not fit.
    assert sum(cost(lengths, b, kind) for b in batches) / (1024 * len(batches)) > 0.8
    assert list(sampler) == batches  # the same epoch, the same batches (a resumed run)
    sampler.set_epoch(1)
    assert list(sampler) != batches  # reshuffled per epoch
    assert len(sampler) == len(list(sampler))


def test_padded_batches_are_length_grouped_and_start_with_the_longest() -> None:
    rng = random.Random(4)
    lengths = [rng.randint(20, 600) for _ in range(400)]
    sampler = TokenBudgetSampler(
        lengths, budget=2048, cost=BatchCost.PADDED, max_examples=64, seed=1
    )
    batches = list(sampler)
    real = sum(lengths)
    grouped = real / sum(cost(lengths, b, BatchCost.PADDED) for b in batches)
    shuffled = budget_batches(
        lengths, rng.sample(range(400), 400), budget=2048, cost=BatchCost.PADDED, max_examples=64
    )
    in_random_order = real / sum(cost(lengths, b, BatchCost.PADDED) for b in shuffled)
    assert grouped > 0.9 > in_random_order
    assert max(lengths[i] for i in batches[0]) == max(lengths)  # an OOM shows at step 1


def test_an_example_longer_than_the_budget_is_refused_at_the_arguments(
    tiny_causal: Path, splits: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="--token-budget 512 cannot hold one example of up to"):
        make_args(tiny_causal, splits, tmp_path, PeftMethod.LORA, token_budget=512)
    assert resolved_token_budget(0, "cpu", 512) == 1024
    assert resolved_token_budget(0, "cpu", 8192) == 8192  # the default holds the longest
    assert resolved_token_budget(3000, "cuda", 1024) == 3000


@pytest.mark.parametrize("attention", ["sdpa", PACKED_SDPA])
def test_packed_rows_give_each_example_its_logits_alone(tiny_causal: Path, attention: str) -> None:
    """Several rows of about `row_tokens`, each ending in filler: every example's logits
    are those it gets alone (through transformers' sdpa), so examples never attend to each
    other or to the filler, on transformers' sdpa (a block-diagonal mask) and on the
    project's packed attention (each example's causal attention alone)."""
    model = load_model(str(tiny_causal), quantize_4bit=False, dtype=torch.float32).eval()
    if attention == PACKED_SDPA:
        assert use_packed_attention(model) == PACKED_SDPA
    tokenizer = load_tokenizer(str(tiny_causal))
    texts = [
        "#Person1#: A table for two, please. At eight, by the window if you can.",
        "#Person2#: Your router needs a firmware update now.",
        "Hi.",
        "#Person1#: The meeting moved to Tuesday; bring the budget figures.",
    ]
    features = [{"input_ids": tokenizer(t)["input_ids"]} for t in texts]
    for f in features:
        f["labels"] = list(f["input_ids"])
    longest = max(len(f["input_ids"]) for f in features)
    collator = PackedRows(row_tokens=longest // 2, pad_token_id=tokenizer.pad_token_id)
    rows = collator.rows([len(f["input_ids"]) for f in features])
    batch = collator(features)
    assert len(rows) >= 2 and "attention_mask" not in batch
    assert batch["input_ids"].shape == (len(rows), max(
        sum(len(features[i]["input_ids"]) for i in row) for row in rows
    ))  # fmt: skip
    with torch.no_grad():
        logits = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False
        ).logits
        with transformers_sdpa(model):
            alone = [
                model(input_ids=torch.tensor([f["input_ids"]]), use_cache=False).logits[0]
                for f in features
            ]
        for r, row in enumerate(rows):
            offset = 0
            for index in row:
                length = len(features[index]["input_ids"])
                packed = logits[r, offset : offset + length]
                torch.testing.assert_close(packed, alone[index], atol=1e-4, rtol=0)
                # No position predicts the next example's first token.
                assert batch["labels"][r, offset] == -100
                offset += length
            assert (batch["labels"][r, offset:] == -100).all()  # the filler trains nothing
        # What training does: build_model turns the cache off in the config, not per call
        # (with a cache, transformers does not look for packed sequences).
        model.config.use_cache = False
        default_call = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"]
        ).logits
        torch.testing.assert_close(default_call, logits, atol=1e-6, rtol=0)


def test_packed_attention_reads_each_rows_examples_from_their_positions() -> None:
    """An example starts wherever the position does not continue the previous one (at 0 in
    the project's rows; anywhere in a row of continued documents)."""
    positions = torch.tensor([[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5], [4, 5, 9, 10, 11, 12]])
    assert example_lengths(positions) == [[3, 2, 1], [6], [2, 4]]


def test_packed_attention_leaves_padded_batches_and_generation_as_sdpa_has_them(
    tiny_causal: Path,
) -> None:
    """Calls with a padding mask or a cache go to transformers' sdpa: a left-padded batch's
    logits and its greedy generation are the same on both implementations, and a saved model
    names no implementation another process would not know."""
    model = load_model(str(tiny_causal), quantize_4bit=False, dtype=torch.float32).eval()
    tokenizer = load_tokenizer(str(tiny_causal))
    tokenizer.padding_side = "left"
    batch = tokenizer(
        ["#Person1#: Your router needs a firmware update now.", "Hi."],
        return_tensors="pt",
        padding=True,
    )
    assert (batch["attention_mask"] == 0).any()
    with torch.no_grad():
        with transformers_sdpa(model):
            logits = model(**batch).logits
            generated = model.generate(**batch, max_new_tokens=6, do_sample=False)
        assert use_packed_attention(model) == PACKED_SDPA
        torch.testing.assert_close(model(**batch).logits, logits, atol=1e-6, rtol=0)
        assert torch.equal(model.generate(**batch, max_new_tokens=6, do_sample=False), generated)


def test_packed_attention_keeps_sdpa_where_a_layer_has_a_sliding_window(tmp_path: Path) -> None:
    from transformers import MistralConfig, MistralForCausalLM

    small = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                 num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
    windowed = MistralForCausalLM(MistralConfig(**small, sliding_window=16))
    assert use_packed_attention(windowed) == "sdpa"
    full = MistralForCausalLM(MistralConfig(**small, sliding_window=None))
    assert use_packed_attention(full) == PACKED_SDPA
    full.save_pretrained(tmp_path)
    assert PACKED_SDPA not in (tmp_path / "config.json").read_text()


@contextmanager
def transformers_sdpa(model) -> Iterator[None]:
    """The model on transformers' own sdpa attention for a while: the reference the project's
    packed attention is checked against."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    before = base.config._attn_implementation
    base.set_attn_implementation("sdpa")
    try:
        yield
    finally:
        base.set_attn_implementation(before)


def per_example_objective(model, rows: list[dict[str, list[int]]]) -> torch.Tensor:
    """The reference: each example alone through the plain model (transformers' sdpa),
    cross-entropy summed over its summary tokens, the sum over the examples divided by their
    summary tokens."""
    total = torch.zeros(())
    count = 0
    with transformers_sdpa(model):
        for row in rows:
            ids = torch.tensor([row["input_ids"]])
            targets = next_token_labels(torch.tensor([row["labels"]]))
            logits = model(input_ids=ids, use_cache=False).logits.float()
            total = total + torch.nn.functional.cross_entropy(
                logits[0], targets[0], ignore_index=-100, reduction="sum"
            )
            count += int((targets != -100).sum())
    return total / count


@pytest.mark.parametrize(
    ("batching", "attention", "runs_on"),
    [
        ("padding_free", "auto", PACKED_SDPA),
        ("padding_free", "sdpa", "sdpa"),
        ("length_grouped", "auto", "sdpa"),
    ],
)
def test_a_token_budget_step_is_the_per_target_token_mean_of_its_examples(
    tiny_causal: Path, splits: Path, tmp_path: Path, batching: str, attention: str, runs_on: str
) -> None:
    args: TrainArguments = make_args(
        tiny_causal,
        splits,
        tmp_path,
        PeftMethod.LORA,
        batching=batching,
        attention=attention,
        max_seq_length=160,
        token_budget=800,
        gradient_accumulation_steps=3,
    )
    recipe = FineTuneRecipe(args).setup()
    # Packed rows train on the project's attention unless told otherwise; the reference runs
    # transformers' sdpa.
    assert recipe.attention == runs_on
    trainer = recipe.trainer
    model = trainer.model
    model.train()
    micro_batches, num_items = trainer.get_batch_samples(
        iter(trainer.get_train_dataloader()), 3, torch.device("cpu")
    )
    assert len(micro_batches) == 3
    sizes = [len(b) for b in list(recipe.batch_sampler)[:3]]
    assert min(sizes) >= 3  # several examples per micro-batch
    model.zero_grad()
    loss = sum(trainer.training_step(model, batch, num_items) for batch in micro_batches)
    step_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    indices = [i for b in list(recipe.batch_sampler)[:3] for i in b]
    model.zero_grad()
    expected = per_example_objective(model, [recipe.train_rows[i] for i in indices])
    expected.backward()
    torch.testing.assert_close(loss, expected.detach(), atol=1e-5, rtol=0)
    for name, grad in step_grads.items():
        torch.testing.assert_close(grad, model.get_parameter(name).grad, atol=1e-5, rtol=0)


def test_two_data_parallel_ranks_step_on_the_per_target_token_mean_of_both_ranks_examples(
    tiny_causal: Path, splits: Path, tmp_path: Path
) -> None:
    """train.py under torchrun, 2 CPU processes, one SGD step at learning rate 1 without
    clipping: the adapter moves by minus the gradient, which must be the per-target-token
    mean over the examples of both ranks' micro-batches (each rank's own count would weigh
    its tokens wrongly whenever the ranks' micro-batches hold different numbers)."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    from tests.conftest import REPO

    overrides = dict(
        max_steps=1, optim="sgd", learning_rate=1.0, max_grad_norm=0.0, warmup_ratio=0.0,
        lr_scheduler="constant", max_seq_length=160, token_budget=800, save_steps=0,
    )  # fmt: skip
    args = make_args(tiny_causal, splits, tmp_path / "ddp", PeftMethod.LORA, **overrides)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               str(REPO / "training_scripts" / "train.py")]  # fmt: skip
    for name, value in vars(args).items():
        if name in ("merge",):
            continue
        command += [f"--{name.replace('_', '-')}", str(getattr(value, "value", value))]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    trained = load_file(Path(args.output_dir) / "adapter_model.safetensors")

    # The same build and seed in this process: the initial adapter and the step's examples.
    recipe = FineTuneRecipe(make_args(tiny_causal, splits, tmp_path / "ref", PeftMethod.LORA,
                                      **overrides)).setup()  # fmt: skip
    model = recipe.trainer.model
    model.train()
    batches = list(recipe.batch_sampler)
    sizes = [len(batches[0]), len(batches[1])]
    assert min(sizes) >= 2
    objective = per_example_objective(model, [recipe.train_rows[i] for b in batches[:2] for i in b])
    objective.backward()
    compared = 0
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        key = name.removeprefix("base_model.model.").replace(".default", "")
        saved = next(
            v for k, v in trained.items() if k.endswith(key.split("base_model.model.")[-1])
        )
        torch.testing.assert_close(
            saved.float(), (parameter - parameter.grad).detach().float(), atol=1e-5, rtol=0
        )
        compared += 1
    assert compared > 0


def test_packed_rows_place_the_longest_examples_first_so_rows_stay_few() -> None:
    """Longest first, each into the least-filled row: [4, 1, 1, 1, 1] fit two rows of 4; in
    input order the 4 would find no room and need a third row."""
    rows = PackedRows(row_tokens=4, pad_token_id=0).rows([1, 1, 1, 1, 4])
    assert sorted(sorted(row) for row in rows) == [[0, 1, 2, 3], [4]]


@pytest.mark.parametrize(
    ("lengths", "rows"),
    [
        ([1, 1, 1, 1, 4], 2),
        ([3, 1, 1, 1, 1, 1], 2),  # rows of 4 and 4, not 3 + 5
        ([3, 3, 2], 3),  # two rows would hold 8 only if a 3 and the 2 shared one: too long
        ([9, 2], 2),  # a longer example sets the cap: rows of up to 9
        ([2, 2, 2, 2, 2, 2, 2, 2, 2], 5),
    ],
)
def test_packed_rows_are_the_fewest_within_the_cap_each_example_once(
    lengths: list[int], rows: int
) -> None:
    packed = PackedRows(row_tokens=4, pad_token_id=0).rows(lengths)
    cap = max(4, *lengths)
    assert len(packed) == rows and all(packed)
    assert all(sum(lengths[i] for i in row) <= cap for row in packed)
    assert sorted(i for row in packed for i in row) == list(range(len(lengths)))
