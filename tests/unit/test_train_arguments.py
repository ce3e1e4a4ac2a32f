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


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("learning_rate", 1e-3),
        ("lora_r", 4),
        ("lora_alpha", 64),
        ("lora_dropout", 0.1),
        ("epochs", 2.0),
        ("max_steps", 7),
        ("per_device_batch_size", 2),
        ("gradient_accumulation_steps", 4),
        ("token_budget", 2048),
        ("max_seq_length", 256),
        ("seed", 7),
        ("lr_scheduler", "constant"),
    ],
)
def test_resuming_with_another_training_setting_is_refused_by_name(
    tmp_path: Path, name: str, value: object
) -> None:
    """Checkpoints of one run must not continue under another learning rate, rank, budget...:
    the resumed adapter would be neither run's."""
    from training_scripts.train import check_run_config

    folders = split_folders(tmp_path / "data", '{"input": "x", "target": "y"}\n')
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    first = TrainArguments(model_name_or_path="org/model", **folders)
    assert getattr(first, name) != value
    check_run_config(checkpoints, first, is_main=True)
    check_run_config(checkpoints, first, is_main=True)  # the same run resumes
    changed = TrainArguments(model_name_or_path="org/model", **folders, **{name: value})
    with pytest.raises(ValueError, match=rf"another run \(differing: {name}\)"):
        check_run_config(checkpoints, changed, is_main=True)


def test_where_a_run_writes_and_how_often_it_logs_do_not_stop_a_resume(tmp_path: Path) -> None:
    from training_scripts.train import check_run_config

    folders = split_folders(tmp_path / "data", '{"input": "x", "target": "y"}\n')
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    check_run_config(
        checkpoints, TrainArguments(model_name_or_path="org/model", **folders), is_main=True
    )
    moved = TrainArguments(
        model_name_or_path="org/model",
        **split_folders(tmp_path / "moved", '{"input": "x", "target": "y"}\n'),
        output_dir=str(tmp_path / "elsewhere"),
        logging_steps=1,
        merge=True,
    )
    check_run_config(checkpoints, moved, is_main=True)
