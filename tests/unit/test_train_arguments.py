"""train.py refuses arguments that would train nothing or make no sense, before loading
anything: an untrained adapter must never reach evaluation and registration."""

from __future__ import annotations

from pathlib import Path

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


def split_folders(root: Path, train: str) -> dict[str, str]:
    for name, body in (("train", train), ("validation", '{"input": "v", "target": "w"}\n')):
        (root / name).mkdir(parents=True)
        (root / name / "data.jsonl").write_text(body)
    return {"train_dir": str(root / "train"), "validation_dir": str(root / "validation")}


def test_resume_fingerprint_follows_the_data_and_base_model_not_their_paths(
    tmp_path: Path,
) -> None:
    """Two runs on different data must never resume each other's checkpoints (they would
    print `resuming from checkpoint-N` and write the old adapter); the same data in another
    job folder is the same run."""
    first = split_folders(tmp_path / "a", '{"input": "x", "target": "y"}\n')
    moved = split_folders(tmp_path / "b", '{"input": "x", "target": "y"}\n')
    other = split_folders(tmp_path / "c", '{"input": "other", "target": "y"}\n')

    def fingerprint(folders: dict[str, str], model: str = "org/model") -> str:
        return TrainArguments(model_name_or_path=model, **folders).fingerprint()

    assert fingerprint(first) == fingerprint(moved)
    assert fingerprint(first) != fingerprint(other)
    assert fingerprint(first) != fingerprint(first, model="org/other-model")
