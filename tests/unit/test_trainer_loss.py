"""The training loss as GuardedTrainer computes it: the model's own loss, or the same from the
LM head at the answer positions only, returned as the Trainer asks for it; the first
non-finite loss stops the run in words that name the step and the fixes; token-budget batches
come in the sampler's order; and which models can run the head at some positions only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, TrainingArguments

from training_scripts.batching import ListDataset, make_collator
from training_scripts.guarded_trainer import GuardedTrainer, NonFiniteError, accepts_logits_to_keep
from training_scripts.model_loading import load_tokenizer

ROWS = [
    {
        "input_ids": [5, 9, 13, 2, 8, 21, 4],
        "labels": [-100] * 5 + [21, 4],
        "attention_mask": [1] * 7,
    },
    {"input_ids": [7, 3, 11, 12], "labels": [-100, -100, 11, 12], "attention_mask": [1] * 4},
    {"input_ids": [30, 31, 40], "labels": [-100, -100, 40], "attention_mask": [1] * 3},
]


@pytest.fixture
def model(tiny_causal: Path) -> Any:
    return AutoModelForCausalLM.from_pretrained(tiny_causal)


def trainer(model: Any, tmp_path: Path, tiny_causal: Path, **options: Any) -> GuardedTrainer:
    arguments = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    collator = make_collator(load_tokenizer(str(tiny_causal)), model, padding_free=False)
    # positional, as the Trainer's own signature allows
    return GuardedTrainer(
        model, arguments, data_collator=collator, train_dataset=ListDataset(ROWS), **options
    )


def batch(built: GuardedTrainer) -> dict[str, torch.Tensor]:
    return built.data_collator(ROWS)


@pytest.mark.parametrize("summary_logits_only", [False, True])
def test_the_loss_is_the_models_own_with_or_without_its_outputs(
    model: Any, tmp_path: Path, tiny_causal: Path, summary_logits_only: bool
) -> None:
    built = trainer(model, tmp_path, tiny_causal, summary_logits_only=summary_logits_only)
    inputs = batch(built)
    with torch.no_grad():
        expected = model(**inputs).loss
        loss = built.compute_loss(model, inputs)
        with_outputs = built.compute_loss(model, inputs, return_outputs=True)
    torch.testing.assert_close(loss, expected)
    assert isinstance(with_outputs, tuple) and len(with_outputs) == 2
    torch.testing.assert_close(with_outputs[0], expected)
    logits = with_outputs[1]["logits"]
    # the head ran at every position, or only where an answer token is predicted (flattened)
    if summary_logits_only:
        assert logits.shape[:-1] == (int((inputs["labels"] != -100).sum()),)
    else:
        assert logits.shape[:-1] == inputs["input_ids"].shape


def test_by_default_the_head_runs_at_every_position(
    model: Any, tmp_path: Path, tiny_causal: Path
) -> None:
    assert trainer(model, tmp_path, tiny_causal).summary_logits_only is False


def test_a_non_finite_loss_stops_the_run_naming_the_step_and_the_fixes(
    model: Any, tmp_path: Path, tiny_causal: Path
) -> None:
    with torch.no_grad():
        model.get_output_embeddings().weight[0, 0] = float("nan")
    built = trainer(model, tmp_path, tiny_causal)
    built.state.global_step = 3
    with pytest.raises(NonFiniteError) as stopped, torch.no_grad():
        built.compute_loss(model, batch(built))
    assert str(stopped.value) == (
        "non-finite training loss (nan) at step 4; lower --learning-rate, use --precision fp32, "
        "or check the data"
    )


class Fixed(torch.utils.data.Sampler[list[int]]):
    def __init__(self, batches: list[list[int]]) -> None:
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def test_token_budget_batches_come_in_the_samplers_order(
    model: Any, tmp_path: Path, tiny_causal: Path
) -> None:
    built = trainer(model, tmp_path, tiny_causal, batch_sampler=Fixed([[2, 0], [1]]))
    loader = built.get_train_dataloader()
    seen = [b["input_ids"].shape for b in loader]
    assert seen == [torch.Size([2, 7]), torch.Size([1, 4])]
    assert loader.base_dataloader.pin_memory == built.args.dataloader_pin_memory


def test_which_models_can_run_the_head_at_some_positions_only(
    tiny_causal: Path, tiny_seq2seq: Path
) -> None:
    from peft import LoraConfig, get_peft_model

    causal = AutoModelForCausalLM.from_pretrained(tiny_causal)
    assert accepts_logits_to_keep(causal) is True
    adapted = get_peft_model(
        causal, LoraConfig(task_type="CAUSAL_LM", r=2, target_modules=["q_proj"])
    )
    assert accepts_logits_to_keep(adapted) is True  # asked of the model under the adapter
    assert accepts_logits_to_keep(AutoModelForSeq2SeqLM.from_pretrained(tiny_seq2seq)) is False
