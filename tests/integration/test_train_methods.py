"""train.py on tiny random-weight models, every method: the loss falls, only the adapter
trains, the 4-bit base stays bit-identical, the saved adapter reloads to identical logits, and
a merged model matches the unmerged adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from training_scripts import tasks
from training_scripts.enums import PeftMethod
from training_scripts.model_loading import load_model, load_peft_model, load_tokenizer
from training_scripts.train import FineTuneRecipe, TrainArguments
from training_scripts.trainable_model import save_outputs

DEFAULT_TASK = tasks.resolve_task_spec(tasks.DEFAULT_TASK)

METHODS = [PeftMethod.QLORA, PeftMethod.LORA, PeftMethod.PROMPT_TUNING, PeftMethod.FULL]
# Tiny random models learn fast at high rates; prompt tuning moves only a few embeddings.
# A random-weight model barely attends to a prefix, so virtual tokens can move its loss only a
# little; the adapters and the full fine-tune move it a lot.
MIN_LOSS_DROP = {
    PeftMethod.QLORA: 0.05,
    PeftMethod.LORA: 0.05,
    PeftMethod.PROMPT_TUNING: 0.005,
    PeftMethod.FULL: 0.05,
}
LEARNING_RATES = {
    PeftMethod.QLORA: 1e-2,
    PeftMethod.LORA: 1e-2,
    PeftMethod.PROMPT_TUNING: 1e-1,
    PeftMethod.FULL: 3e-3,
}


def make_args(
    model: Path, splits: Path, out: Path, method: PeftMethod, **overrides
) -> TrainArguments:
    values = dict(
        method=method,
        model_name_or_path=str(model),
        train_dir=str(splits / "train"),
        validation_dir=str(splits / "validation"),
        output_dir=str(out / "model"),
        output_data_dir=str(out / "output"),
        checkpoint_dir=str(out / "checkpoints"),
        max_steps=24,
        per_device_batch_size=8,
        learning_rate=LEARNING_RATES[method],
        lora_r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        num_virtual_tokens=8,
        save_steps=1000,
        logging_steps=4,
        gradient_checkpointing=False,
        precision="fp32",
    )
    values.update(overrides)
    return TrainArguments(**values)


def probe_batch(model_dir: Path) -> dict[str, torch.Tensor]:
    tokenizer = load_tokenizer(str(model_dir))
    batch = tokenizer(
        ["#Person1#: I'd like to book a table for two.", "#Person2#: My router is slow."],
        return_tensors="pt",
        padding=True,
    )
    return dict(batch)


def logits_of(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        if getattr(model.config, "is_encoder_decoder", False):
            return model(**batch, decoder_input_ids=batch["input_ids"][:, :6]).logits
        return model(**batch).logits


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.value)
def test_each_method_learns_and_touches_only_what_it_should(
    method: PeftMethod,
    kind: str,
    tiny_causal: Path,
    tiny_seq2seq: Path,
    splits: Path,
    tmp_path: Path,
) -> None:
    model_dir = tiny_causal if kind == "causal" else tiny_seq2seq
    recipe = FineTuneRecipe(make_args(model_dir, splits, tmp_path, method)).setup()
    named = dict(recipe.model.named_parameters())
    trainable = {n for n, p in named.items() if p.requires_grad}
    frozen_before = {n: p.detach().clone() for n, p in named.items() if not p.requires_grad}
    trainable_before = {n: named[n].detach().clone() for n in trainable}

    if method is PeftMethod.QLORA:
        import bitsandbytes as bnb

        linear4bit = [m for m in recipe.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
        assert linear4bit, "qlora must load the base linear layers in 4-bit"
        assert all(m.weight.quant_state.quant_type == "nf4" for m in linear4bit)
        assert all(m.weight.dtype == torch.uint8 for m in linear4bit)
        # Every base linear layer is 4-bit, except the output head and what the architecture
        # keeps in full precision on purpose (T5's `wo`).
        kept = {"lm_head", *(recipe.model.get_base_model()._keep_in_fp32_modules or [])}
        unquantized = [
            n
            for n, m in recipe.model.named_modules()
            if type(m) is torch.nn.Linear
            and "lora_" not in n
            and not any(k in n.split(".") for k in kept)
        ]
        assert not unquantized, unquantized
    if method.is_lora:
        assert trainable and all("lora_" in n for n in trainable)
    elif method is PeftMethod.PROMPT_TUNING:
        assert trainable and all("prompt_encoder" in n for n in trainable)
    else:
        assert trainable == set(named)

    metrics = recipe.train()

    assert metrics["eval_loss_after"] < metrics["eval_loss_before"] - MIN_LOSS_DROP[method], metrics
    changed = {n for n in trainable if not torch.equal(named[n].detach(), trainable_before[n])}
    assert changed, "no trainable parameter moved"
    for name, before in frozen_before.items():
        assert torch.equal(named[name].detach(), before), f"frozen parameter {name} changed"
    assert metrics["trainable_params"] < metrics["total_params"] or method is PeftMethod.FULL
    assert 0 < metrics["non_pad_fraction"] <= 1
    if kind == "causal" and method is not PeftMethod.PROMPT_TUNING:
        # Packed rows: only the filler that evens out a micro-batch's rows is not a token.
        assert metrics["padding_free"] and metrics["non_pad_fraction"] > 0.85


@pytest.mark.parametrize(
    "method", [PeftMethod.QLORA, PeftMethod.LORA, PeftMethod.PROMPT_TUNING], ids=lambda m: m.value
)
def test_saved_adapter_reloads_on_a_fresh_base_to_identical_logits(
    method: PeftMethod, tiny_causal: Path, splits: Path, tmp_path: Path
) -> None:
    args = make_args(tiny_causal, splits, tmp_path, method, max_steps=6, merge=method.is_lora)
    recipe = FineTuneRecipe(args).setup()
    metrics = recipe.train()
    recipe.save(metrics)
    out = Path(args.output_dir)

    files = {p.name for p in out.iterdir()}
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "training_metrics.json",
    } <= files
    assert not (out / "model.safetensors").exists(), "an adapter run must not save the base weights"
    saved = json.loads((out / "training_metrics.json").read_text())
    for key in (
        "trainable_params",
        "total_params",
        "train_runtime_s",
        "tokens_per_second",
        "non_pad_fraction",
        "peak_memory_bytes",
        "final_loss",
    ):
        assert saved[key] is not None, key
    assert json.loads((Path(args.output_data_dir) / "training_metrics.json").read_text()) == saved

    batch = probe_batch(tiny_causal)
    trained_logits = logits_of(recipe.model, batch)
    fresh = load_peft_model(
        str(tiny_causal), str(out), quantize_4bit=method is PeftMethod.QLORA, dtype=torch.float32
    )
    assert torch.equal(logits_of(fresh, batch), trained_logits)

    if method.is_lora:
        # Merged into an unquantized base, compared with the same adapter unmerged on it.
        unmerged = load_peft_model(
            str(tiny_causal), str(out), quantize_4bit=False, dtype=torch.float32
        )
        merged = load_model(str(out / "merged"), quantize_4bit=False, dtype=torch.float32)
        assert not hasattr(merged, "peft_config")
        torch.testing.assert_close(
            logits_of(merged, batch), logits_of(unmerged, batch), atol=1e-4, rtol=0
        )


def test_full_fine_tune_saves_a_complete_model(
    tiny_causal: Path, splits: Path, tmp_path: Path
) -> None:
    args = make_args(tiny_causal, splits, tmp_path, PeftMethod.FULL, max_steps=4)
    recipe = FineTuneRecipe(args).setup()
    metrics = recipe.train()
    save_outputs(args, recipe.trainer, recipe.tokenizer, recipe.task, metrics)
    reloaded = load_model(args.output_dir, quantize_4bit=False, dtype=torch.float32)
    batch = probe_batch(tiny_causal)
    torch.testing.assert_close(
        logits_of(reloaded, batch), logits_of(recipe.model, batch), atol=1e-6, rtol=0
    )


def test_merge_is_refused_for_methods_without_a_mergeable_adapter(
    tiny_causal: Path, splits: Path, tmp_path: Path
) -> None:
    for method in (PeftMethod.PROMPT_TUNING, PeftMethod.FULL):
        with pytest.raises(ValueError, match="--merge applies to lora and qlora"):
            make_args(tiny_causal, splits, tmp_path, method, merge=True)


def test_summary_logits_only_gives_the_models_own_loss_and_gradients(tiny_causal: Path) -> None:
    """The LM head computed only where a summary token is predicted must give the loss and
    gradients of the full logits, with the Trainer's num_items_in_batch reduction too."""
    from training_scripts.batching import EncodingStats, encode_causal, make_collator

    model = load_model(str(tiny_causal), quantize_4bit=False, dtype=torch.float32)
    tokenizer = load_tokenizer(str(tiny_causal))

    rows = [
        encode_causal(
            tokenizer,
            DEFAULT_TASK,
            dialogue,
            summary,
            max_seq_length=256,
            max_target_tokens=32,
            stats=EncodingStats(),
        )
        for dialogue, summary in (
            ("#Person1#: A table for two, please.\n#Person2#: At eight?", "A booking."),
            ("#Person1#: My router is slow.\n#Person2#: Restart it.", "Router advice."),
            ("#Person1#: Hi.", "A greeting, nothing more."),
        )
    ]
    for padding_free in (True, False):  # packed rows, and length-grouped padded rows
        batch = make_collator(tokenizer, model, padding_free=padding_free)(rows)
        check_summary_logits_match(model, batch)


def check_summary_logits_match(model, batch: dict[str, torch.Tensor]) -> None:
    from training_scripts.guarded_trainer import summary_token_loss, supervised_positions

    n_targets = int((batch["labels"][..., 1:] != -100).sum())

    def loss_and_grads(summary_only: bool, num_items: int | None):
        model.zero_grad()
        if summary_only:
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            keep = supervised_positions(batch["labels"])
            outputs = model(**inputs, logits_to_keep=keep, use_cache=False)
            assert outputs.logits.shape[0] == n_targets  # the head ran on summary positions only
            loss = summary_token_loss(outputs, batch["labels"], num_items)
        else:
            kwargs = {"num_items_in_batch": num_items} if num_items else {}
            loss = model(**batch, use_cache=False, **kwargs).loss
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    for num_items in (None, 3 * n_targets):  # the mean, and a share of an accumulated batch
        full_loss, full_grads = loss_and_grads(False, num_items)
        kept_loss, kept_grads = loss_and_grads(True, num_items)
        torch.testing.assert_close(kept_loss, full_loss, atol=1e-6, rtol=1e-5)
        for kept, full in zip(kept_grads, full_grads, strict=True):
            torch.testing.assert_close(kept, full, atol=1e-6, rtol=1e-4)


def test_trainer_keeps_summary_logits_only_where_positions_are_plain(
    tiny_causal: Path, tiny_seq2seq: Path, splits: Path, tmp_path: Path
) -> None:
    expected = {
        (tiny_causal, PeftMethod.LORA): True,
        (tiny_causal, PeftMethod.FULL): True,
        (tiny_causal, PeftMethod.PROMPT_TUNING): False,  # virtual tokens shift the positions
        (tiny_seq2seq, PeftMethod.LORA): False,  # the decoder's labels are not shifted inputs
    }
    for (model, method), summary_only in expected.items():
        recipe = FineTuneRecipe(make_args(model, splits, tmp_path / method.value, method)).setup()
        assert recipe.trainer.summary_logits_only is summary_only, (model.name, method)


def test_batching_choice() -> None:
    from training_scripts.batching import Batching, uses_padding_free_batches

    lora, prompt = PeftMethod.LORA, PeftMethod.PROMPT_TUNING
    assert uses_padding_free_batches(lora, False, Batching.AUTO)
    assert not uses_padding_free_batches(lora, False, Batching.LENGTH_GROUPED)
    assert not uses_padding_free_batches(prompt, False, Batching.AUTO)
    assert not uses_padding_free_batches(lora, True, Batching.AUTO)
    for method, seq2seq in ((prompt, False), (lora, True)):
        with pytest.raises(ValueError, match="--batching padding_free needs a causal model"):
            uses_padding_free_batches(method, seq2seq, Batching.PADDING_FREE)


def test_length_grouped_batches_train_with_summary_logits_only(
    tiny_causal: Path, splits: Path, tmp_path: Path
) -> None:
    args = make_args(
        tiny_causal, splits, tmp_path, PeftMethod.LORA, batching="length_grouped", max_steps=6
    )
    recipe = FineTuneRecipe(args).setup()
    metrics = recipe.train()
    assert not metrics["padding_free"] and recipe.trainer.summary_logits_only
    # Grouped by length: less padding than the same examples batched in split order.
    lengths = [len(row["input_ids"]) for row in recipe.train_rows[: 6 * 8]]
    batches = [lengths[i : i + 8] for i in range(0, len(lengths), 8)]
    in_split_order = sum(lengths) / sum(max(b) * len(b) for b in batches)
    assert in_split_order < metrics["non_pad_fraction"] < 1.0
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]


def test_labels_cover_only_the_summary(tiny_causal: Path) -> None:
    from training_scripts.batching import EncodingStats, encode_causal

    tokenizer = load_tokenizer(str(tiny_causal))
    row = encode_causal(
        tokenizer,
        DEFAULT_TASK,
        "#Person1#: Hello.\n#Person2#: Hi.",
        "They greet.",
        max_seq_length=512,
        max_target_tokens=64,
        stats=EncodingStats(),
    )
    supervised = [
        t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100
    ]
    assert tokenizer.decode(supervised, skip_special_tokens=True).strip() == "They greet."
    assert supervised[-1] == tokenizer.eos_token_id
    assert row["labels"][0] == -100


def test_over_long_examples_are_cut_in_the_dialogue_and_counted(tiny_causal: Path) -> None:
    from training_scripts.batching import EncodingStats, encode_causal

    tokenizer = load_tokenizer(str(tiny_causal))
    stats = EncodingStats()
    dialogue = "#Person1#: " + " ".join(f"sentence number {i}." for i in range(200))
    row = encode_causal(
        tokenizer,
        DEFAULT_TASK,
        dialogue,
        "A long talk.",
        max_seq_length=128,
        max_target_tokens=64,
        stats=stats,
    )
    assert len(row["input_ids"]) <= 128 and stats.truncated_inputs == 1
    text = tokenizer.decode(row["input_ids"], skip_special_tokens=True)
    assert text.startswith(DEFAULT_TASK.template.split("{")[0]) and "Summary: A long talk." in text


def test_over_long_seq2seq_inputs_keep_the_template_around_them(tiny_seq2seq: Path) -> None:
    """An encoder's input is fitted by the causal rule too: the longest field gives way, and
    the template's text after it stays (a cut at the end would drop it, and evaluation would
    read another prompt than training did)."""
    from training_scripts.batching import EncodingStats, encode_seq2seq
    from training_scripts.tasks import parse_task_spec

    task = parse_task_spec(
        {"name": "qa", "format": "fields", "template": "Q: {question}\nContext: {context}\nEnd.",
         "target_field": "answer"}, "qa",
    )  # fmt: skip
    tokenizer = load_tokenizer(str(tiny_seq2seq))
    stats = EncodingStats()
    long_context = " ".join(f"fact {i}." for i in range(300))
    row = encode_seq2seq(
        tokenizer, task, {"question": "Which fact comes first?", "context": long_context},
        "fact 0", max_seq_length=96, max_target_tokens=16, stats=stats,
    )  # fmt: skip
    assert len(row["input_ids"]) <= 96 and stats.truncated_inputs == 1
    assert row["attention_mask"] == [1] * len(row["input_ids"])
    text = tokenizer.decode(row["input_ids"], skip_special_tokens=True)
    # (the tiny T5 vocabulary has no "Q": it decodes to nothing)
    assert ": Which fact comes first?\nContext: fact 0." in text
    assert text.rstrip().endswith("End."), text


def test_over_long_inputs_of_several_fields_are_cut_in_the_longest(tiny_causal: Path) -> None:
    """The template around the fields stays whole; the longest field gives way first."""
    from training_scripts.batching import EncodingStats, encode_causal
    from training_scripts.tasks import parse_task_spec

    task = parse_task_spec(
        {"name": "qa", "format": "fields", "template": "Q: {question}\nContext: {context}\nEnd.",
         "target_field": "answer"}, "qa",
    )  # fmt: skip
    tokenizer = load_tokenizer(str(tiny_causal))
    stats = EncodingStats()
    long_context = " ".join(f"fact {i}." for i in range(300))
    row = encode_causal(
        tokenizer,
        task,
        {"question": "Which fact comes first?", "context": long_context},
        "fact 0",
        max_seq_length=96,
        max_target_tokens=16,
        stats=stats,
    )
    assert len(row["input_ids"]) <= 96 and stats.truncated_inputs == 1
    text = tokenizer.decode(row["input_ids"], skip_special_tokens=True)
    assert "Q: Which fact comes first?" in text and "\nEnd." in text and "fact 0." in text


def test_non_finite_loss_stops_the_run(tiny_causal: Path, splits: Path, tmp_path: Path) -> None:
    from training_scripts.guarded_trainer import NonFiniteError

    recipe = FineTuneRecipe(
        make_args(
            tiny_causal,
            splits,
            tmp_path,
            PeftMethod.FULL,
            learning_rate=1e6,
            max_grad_norm=0.0,
            max_steps=40,
        )
    ).setup()
    with pytest.raises(
        NonFiniteError, match=r"non-finite (training loss|gradient norm) .* at step \d+"
    ):
        recipe.train()


@pytest.mark.parametrize(
    ("batching", "accumulation", "epochs", "min_steps"),
    [
        ("padding_free", 1, 0.5, 0),  # --epochs decides, as the Trainer counts it
        ("length_grouped", 3, 1.0, 0),
        ("padding_free", 2, 0.3, 9),  # the floor raises what --epochs gives
    ],
)
def test_the_trainer_takes_the_planned_steps_and_says_so_up_front(
    batching: str,
    accumulation: int,
    epochs: float,
    min_steps: int,
    tiny_causal: Path,
    splits: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import copy
    import logging

    args = make_args(
        tiny_causal, splits, tmp_path, PeftMethod.LORA, max_steps=-1, epochs=epochs,
        min_steps=min_steps, gradient_accumulation_steps=accumulation, batching=batching,
        logging_steps=100,
    )  # fmt: skip
    recipe = FineTuneRecipe(args).setup()
    plan = recipe.step_plan
    # The Trainer's own count of steps for these epochs, from its own dataloader.
    by_epochs = copy.copy(recipe.trainer.args)
    by_epochs.max_steps, by_epochs.num_train_epochs = -1, epochs
    *_, trainers_count = recipe.trainer.set_initial_training_values(
        by_epochs, recipe.trainer.get_train_dataloader()
    )
    assert plan.by_epochs == trainers_count
    assert plan.steps == max(trainers_count, min_steps)
    assert plan.raised_to_floor == (min_steps > 0)

    with caplog.at_level(logging.INFO, logger="train"):
        metrics = recipe.train()
    assert recipe.trainer.state.global_step == metrics["planned_steps"] == plan.steps
    said = [r for r in caplog.records if r.name == "train"]
    assert said[0].getMessage() == f"training: {plan.describe()}"
    # Every one of these runs trains under 20 steps: each says its verdict will mean little.
    assert said[1].levelno == logging.WARNING
    assert said[1].getMessage() == plan.warning()
