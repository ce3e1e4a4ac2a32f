"""The Trainer's callbacks and the loss measured between steps, in process: what each callback
sends to tracking and to the log at each step, when the validation loss is measured, the
gradient guard, the loss curves the card draws, and the summary-token loss on real tiny models
against the cross-entropy worked out example by example."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import TrainerControl, TrainerState

from training_scripts import guarded_trainer
from training_scripts.batching import make_collator
from training_scripts.guarded_trainer import (
    VALIDATION_LOSS,
    GradientNormGuard,
    LossCurves,
    NonFiniteError,
    ProgressLog,
    StepPlan,
    loss_curves,
    target_token_loss,
)
from training_scripts.model_loading import load_model, load_tokenizer


class Clock:
    """time.perf_counter as the test sets it."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(guarded_trainer.time, "perf_counter", clock)
    return clock


def state(step: int, *, max_steps: int = 10, main: bool = True) -> TrainerState:
    state = TrainerState(global_step=step, max_steps=max_steps)
    state.is_world_process_zero = main
    return state


class Sent:
    """tracking.MetricLogger: what a callback sent, with its step."""

    def __init__(self) -> None:
        self.points: list[tuple[dict[str, Any], int]] = []

    def __call__(self, metrics: dict[str, Any], step: int) -> None:
        self.points.append((metrics, step))


def test_loss_curves_are_the_logged_steps_and_validation_from_step_0_to_the_last() -> None:
    history = [
        {"step": 1, VALIDATION_LOSS: 2.6},  # the first step is a step like the others
        {"step": 1, "loss": 2.5, "learning_rate": 1e-4},
        {"step": 2, VALIDATION_LOSS: 2.2},
        {"step": 2, "loss": 2.1},
        {"step": 4, VALIDATION_LOSS: 1.9},
        {"step": 4, "loss": 1.8},
        {"step": 6, VALIDATION_LOSS: 1.7},  # measured at the end again: the end's is `after`
        {"step": 0, VALIDATION_LOSS: 9.9},  # a start measured twice: the start's is `before`
        {"step": 6, "train_runtime": 3.0},
    ]
    training, validation = loss_curves(history, before=3.0, after=1.6, last_step=6)
    assert training == [
        {"step": 1, "loss": 2.5},
        {"step": 2, "loss": 2.1},
        {"step": 4, "loss": 1.8},
    ]
    assert validation == [
        {"step": 0, "loss": 3.0},
        {"step": 1, "loss": 2.6},
        {"step": 2, "loss": 2.2},
        {"step": 4, "loss": 1.9},
        {"step": 6, "loss": 1.6},
    ]


def test_a_run_without_logged_points_has_its_two_validation_ends() -> None:
    assert loss_curves([], before=3.0, after=2.0, last_step=5) == (
        [],
        [{"step": 0, "loss": 3.0}, {"step": 5, "loss": 2.0}],
    )


@pytest.mark.parametrize(
    ("logs", "main", "sent"),
    [
        ({"loss": 1.5, "learning_rate": 2e-4, "grad_norm": 0.7}, True,
         [({"train_loss": 1.5, "learning_rate": 2e-4, "grad_norm": 0.7}, 3)]),
        ({"loss": 1.5}, True, [({"train_loss": 1.5, "learning_rate": None, "grad_norm": None}, 3)]),
        ({"loss": 1.5, "learning_rate": 2e-4}, False, []),  # another rank: the main one sends
        ({"train_runtime": 4.0}, True, []),  # the end-of-training summary is no loss point
        ({}, True, []),
        (None, True, []),
    ],
)  # fmt: skip
def test_each_logged_loss_goes_to_tracking_once_from_the_main_process(
    logs: dict | None, main: bool, sent: list
) -> None:
    log = Sent()
    curves = LossCurves(lambda: pytest.fail("no validation on a log"), every=2, log=log)
    control = TrainerControl()
    assert curves.on_log(None, state(3, main=main), control, logs=logs) is control
    assert log.points == sent


@pytest.mark.parametrize(
    ("every", "max_steps", "measured_at"),
    [
        (2, 7, [2, 4, 6]),
        (3, 9, [3, 6]),  # not at the last step: the run measures its end itself
        (1, 3, [1, 2]),
        (0, 5, []),  # --validation-steps 0: never
    ],
)
def test_the_validation_loss_is_measured_every_n_steps_before_the_last(
    clock: Clock, every: int, max_steps: int, measured_at: list[int]
) -> None:
    measured: list[int] = []
    log = Sent()
    run = state(0, max_steps=max_steps)

    def validation_loss() -> float:
        measured.append(run.global_step)
        clock.now += 1.5  # each measurement takes 1.5 s
        return 10.0 - run.global_step

    curves = LossCurves(validation_loss, every=every, log=log)
    control = TrainerControl()
    for step in range(1, max_steps + 1):
        run.global_step = step
        clock.now += 10.0  # training between measurements is not validation time
        assert curves.on_step_end(None, run, control) is control
    assert measured == measured_at
    assert run.log_history == [{VALIDATION_LOSS: 10.0 - s, "step": s} for s in measured_at]
    assert log.points == [({VALIDATION_LOSS: 10.0 - s}, s) for s in measured_at]
    assert curves.validation_seconds == pytest.approx(1.5 * len(measured_at))


def test_every_rank_measures_the_validation_loss_and_only_the_main_one_reports_it(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    log = Sent()
    other_rank = state(4, max_steps=10, main=False)
    curves = LossCurves(lambda: 0.25, every=2, log=log)
    with caplog.at_level(logging.INFO, logger="train"):
        curves.on_step_end(None, other_rank, TrainerControl())
    assert other_rank.log_history == [{VALIDATION_LOSS: 0.25, "step": 4}]
    assert log.points == []
    assert caplog.messages == []
    main = state(4, max_steps=10)
    with caplog.at_level(logging.INFO, logger="train"):
        curves.on_step_end(None, main, TrainerControl())
    assert caplog.messages == ["step 4: validation loss 0.2500"]
    assert log.points == [({VALIDATION_LOSS: 0.25}, 4)]


@pytest.mark.parametrize(
    ("plan", "messages"),
    [
        (StepPlan(40, 8, 40, 20), [("INFO", "training: 40 optimizer steps, 5.00 epochs of 8 steps (--epochs)")]),
        (StepPlan(6, 3, None, 20), [
            ("INFO", "training: 6 optimizer steps, 2.00 epochs of 3 steps (--max-steps)"),
            ("WARNING", StepPlan(6, 3, None, 20).warning()),
        ]),
    ],
)  # fmt: skip
def test_the_run_begins_with_its_steps_and_any_warning_on_the_main_process(
    clock: Clock, caplog: pytest.LogCaptureFixture, plan: StepPlan, messages: list
) -> None:
    progress = ProgressLog(plan)
    with caplog.at_level(logging.INFO, logger="train"):
        progress.on_train_begin(None, state(0, main=False), TrainerControl())
        assert caplog.records == []
        progress.on_train_begin(None, state(0), TrainerControl())
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == messages


def test_progress_lines_give_the_pace_of_the_steps_this_run_took(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """A run resumed at step 4 of 12 that took 2 steps in 30 s has 6 more to go: 90 s."""
    progress = ProgressLog(StepPlan(12, 12, 12, 1))
    progress.on_train_begin(None, state(4, max_steps=12), TrainerControl())
    clock.now += 30.0
    caplog.clear()  # the plan's lines
    with caplog.at_level(logging.INFO, logger="train"):
        progress.on_log(None, state(6, max_steps=12), TrainerControl(), logs={"loss": 1.23456})
        progress.on_log(
            None, state(6, max_steps=12, main=False), TrainerControl(), logs={"loss": 1}
        )
        progress.on_log(None, state(6, max_steps=12), TrainerControl(), logs={"train_runtime": 1})
        progress.on_log(None, state(6, max_steps=12), TrainerControl(), logs=None)
    assert caplog.messages == ["step 6/12 (50%), 30s elapsed, about 90s left, loss 1.2346"]


def model_with_gradients(*gradients: torch.Tensor | None, frozen: int | None = None) -> Any:
    model = torch.nn.Module()
    model.weights = torch.nn.ParameterList(
        torch.nn.Parameter(torch.zeros_like(g) if g is not None else torch.zeros(2))
        for g in gradients
    )
    for parameter, gradient in zip(model.weights, gradients, strict=True):
        parameter.grad = gradient
    if frozen is not None:
        model.weights[frozen].requires_grad_(False)
    return model


@pytest.mark.parametrize(
    ("gradients", "frozen"),
    [
        ((torch.tensor([3.0, 4.0]), torch.tensor([1.0])), None),
        ((torch.tensor([3.0]), None), None),  # a parameter without a gradient is skipped
        ((torch.tensor([3.0]), torch.tensor([math.inf])), 1),  # a frozen one is not trained
        ((None,), None),
    ],
)
def test_finite_gradients_pass_the_guard(gradients: tuple, frozen: int | None) -> None:
    control = TrainerControl()
    model = model_with_gradients(*gradients, frozen=frozen)
    assert (
        GradientNormGuard().on_pre_optimizer_step(None, state(2), control, model=model) is control
    )


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_a_non_finite_gradient_norm_stops_the_run_before_the_optimizer_step(bad: float) -> None:
    model = model_with_gradients(torch.tensor([1.0, 2.0]), torch.tensor([0.5, bad]))
    with pytest.raises(NonFiniteError) as stopped:
        GradientNormGuard().on_pre_optimizer_step(None, state(6), TrainerControl(), model=model)
    assert str(stopped.value) == (
        f"non-finite gradient norm ({'nan' if math.isnan(bad) else 'inf'}) at step 7; "
        "lower --learning-rate or --max-grad-norm, or use --precision fp32"
    )


def example(prompt: list[int], answer: list[int]) -> dict[str, list[int]]:
    ids = prompt + answer
    return {
        "input_ids": ids,
        "labels": [-100] * len(prompt) + answer,
        "attention_mask": [1] * len(ids),
    }


CAUSAL_ROWS = [
    example([5, 9, 13, 2, 8], [21, 4]),
    example([7, 3], [11, 12, 13, 14, 15]),
    example([30, 31, 32, 33, 34, 35, 36], [40]),
    example([], [17, 18, 19]),  # no prompt: its first token is predicted by nothing
]


def by_hand_causal(model: Any, rows: list[dict[str, list[int]]]) -> float:
    """Every answer token's cross-entropy, each example alone, summed and divided by their
    count: the mean over target tokens, whatever the batches."""
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            logits = model(input_ids=torch.tensor([row["input_ids"]])).logits[0, :-1]
            targets = torch.tensor(row["labels"][1:])
            kept = targets != -100
            total += float(
                torch.nn.functional.cross_entropy(logits[kept], targets[kept], reduction="sum")
            )
            count += int(kept.sum())
    return total / count


@pytest.mark.parametrize("batches", [[[0, 1, 2, 3]], [[0], [1], [2], [3]], [[2, 0], [3, 1]]])
@pytest.mark.parametrize("summary_logits_only", [False, True])
@pytest.mark.parametrize("padding_free", [False, True], ids=["padded", "packed"])
def test_the_loss_between_steps_is_the_mean_over_every_answer_token_whatever_the_batches(
    tiny_causal: Path, batches: list[list[int]], summary_logits_only: bool, padding_free: bool
) -> None:
    """Packed rows too: each example attends to itself alone, as it would alone."""
    model = load_model(str(tiny_causal), quantize_4bit=False, dtype=torch.float32)
    model.train()
    collator = make_collator(
        load_tokenizer(str(tiny_causal)), model, padding_free=padding_free, bounded_rows=True
    )
    loss = target_token_loss(
        model,
        CAUSAL_ROWS,
        collator,
        batches,
        seq2seq=False,
        summary_logits_only=summary_logits_only,
    )
    assert loss == pytest.approx(by_hand_causal(model, CAUSAL_ROWS), rel=1e-5)
    assert model.training  # back to training for the next step


@pytest.mark.parametrize("batches", [[[0, 1]], [[0], [1]], [[1], [0]]])
def test_the_seq2seq_loss_counts_every_label_token(
    tiny_seq2seq: Path, batches: list[list[int]]
) -> None:
    """A seq2seq label is the decoder's own target, not shifted: each label token counts."""
    model = load_model(str(tiny_seq2seq), quantize_4bit=False, dtype=torch.float32)
    rows = [
        {"input_ids": [5, 9, 13, 1], "attention_mask": [1] * 4, "labels": [21, 4, 1]},
        {"input_ids": [7, 3, 8, 8, 8, 1], "attention_mask": [1] * 6, "labels": [11, 1]},
    ]
    with torch.no_grad():
        alone = [
            float(model(**{k: torch.tensor([v]) for k, v in row.items()}).loss) for row in rows
        ]
    expected = (alone[0] * 3 + alone[1] * 2) / 5
    collator = make_collator(load_tokenizer(str(tiny_seq2seq)), model, padding_free=False)
    assert target_token_loss(model, rows, collator, batches, seq2seq=True) == pytest.approx(
        expected, rel=1e-5
    )


def test_no_rows_is_no_loss(tiny_causal: Path) -> None:
    model = load_model(str(tiny_causal), quantize_4bit=False, dtype=torch.float32)
    collator = make_collator(load_tokenizer(str(tiny_causal)), model, padding_free=False)
    assert math.isnan(target_token_loss(model, [], collator, [], seq2seq=False))
