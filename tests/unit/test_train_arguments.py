"""train.py refuses arguments that would train nothing or make no sense, before loading
anything: an untrained adapter must never reach evaluation and registration."""

from __future__ import annotations

import pytest

from training_scripts.train import TrainArguments


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"epochs": 0.0}, "--epochs 0.0 trains nothing"),
        ({"epochs": -1.0}, "--epochs -1.0 trains nothing"),
        ({"lora_alpha": -5}, "--lora-alpha must be > 0, got -5"),
        ({"lora_r": 0}, "--lora-r must be > 0, got 0"),
        ({"per_device_batch_size": 0}, "--per-device-batch-size must be > 0"),
        ({"learning_rate": -1e-4}, "--learning-rate must be >= 0"),
    ],
)
def test_arguments_that_train_nothing_are_refused(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainArguments(model_name_or_path="some/model", **overrides)


def test_max_steps_alone_is_enough() -> None:
    args = TrainArguments(model_name_or_path="some/model", epochs=0.0, max_steps=3)
    assert args.max_steps == 3
