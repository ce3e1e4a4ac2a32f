"""train.py refuses arguments that would train nothing or make no sense, before loading
anything: an untrained adapter must never reach evaluation and registration."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from training_scripts import checkpoints
from training_scripts.checkpoints import run_fingerprint, run_identity
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
        return run_fingerprint(TrainArguments(model_name_or_path=model, **folders))

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
        ("min_steps", 38),
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
    from training_scripts.checkpoints import check_run_config

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


def test_where_a_run_writes_and_reads_and_how_often_it_reports_do_not_stop_a_resume(
    tmp_path: Path,
) -> None:
    """A retried job gets new local paths for the same data and base model (SageMaker's
    channels, another job folder), may log or validate more often, or compute the same
    attention another way: it must still resume."""
    from training_scripts.checkpoints import check_run_config

    def model_folder(root: Path) -> str:
        root.mkdir(parents=True)
        (root / "config.json").write_text('{"model_type": "llama"}')
        (root / "model.safetensors").write_bytes(b"w" * 64)
        return str(root)

    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    first = TrainArguments(
        model_name_or_path=model_folder(tmp_path / "job1" / "model"),
        **split_folders(tmp_path / "job1", '{"input": "x", "target": "y"}\n'),
        dataset_version="v1",
    )
    check_run_config(checkpoints, first, is_main=True)
    retried = TrainArguments(
        model_name_or_path=model_folder(tmp_path / "job2" / "model"),
        **split_folders(tmp_path / "job2", '{"input": "x", "target": "y"}\n'),
        dataset_version="v1-retry",
        output_dir=str(tmp_path / "out"),
        output_data_dir=str(tmp_path / "data-out"),
        checkpoint_dir=str(tmp_path / "elsewhere"),
        logging_steps=1,
        validation_steps=5,
        merge=True,
        attention="sdpa",
    )
    assert run_fingerprint(retried) == run_fingerprint(first)
    check_run_config(checkpoints, retried, is_main=True)


def test_the_identity_names_the_data_and_base_model_by_content(tmp_path: Path) -> None:
    """run_config.json outlives a release: its identity keys are a contract with the next one."""
    folders = split_folders(tmp_path, '{"input": "x", "target": "y"}\n')
    identity = run_identity(TrainArguments(model_name_or_path="org/model", **folders))
    train_hash = hashlib.sha256((tmp_path / "train" / "data.jsonl").read_bytes()).hexdigest()
    valid_hash = hashlib.sha256((tmp_path / "validation" / "data.jsonl").read_bytes()).hexdigest()
    assert identity["data"] == {"train": train_hash, "validation": valid_hash}
    assert identity["base_model"] == "org/model"  # a hub id is its own identity
    for path_or_report in ("output_dir", "output_data_dir", "checkpoint_dir", "train_dir",
                           "validation_dir", "model_name_or_path", "logging_steps",
                           "validation_steps", "dataset_version", "merge"):  # fmt: skip
        assert path_or_report not in identity, path_or_report
    assert identity["learning_rate"] == "0.0" and identity["lora_r"] == "16"
    without_validation = run_identity(
        TrainArguments(
            model_name_or_path="org/model", train_dir=folders["train_dir"], validation_dir=""
        )
    )
    assert without_validation["data"] == {"train": train_hash, "validation": "none"}


def test_the_fingerprint_is_of_the_identitys_content_not_its_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = TrainArguments(model_name_or_path="org/model")
    identity = run_identity(args)
    monkeypatch.setattr(
        checkpoints, "run_identity", lambda args: dict(reversed(list(identity.items())))
    )
    reordered = run_fingerprint(args)
    monkeypatch.undo()
    assert reordered == run_fingerprint(args)


def test_a_base_model_folder_is_known_by_its_config_and_files_not_its_path(
    tmp_path: Path,
) -> None:
    from training_scripts.checkpoints import base_model_identity

    def folder(name: str, config: str = '{"hidden_size": 8, "name": "ÿ"}', weights: int = 64):
        root = tmp_path / name
        (root / "tokenizer").mkdir(parents=True)
        (root / "config.json").write_text(config, encoding="utf-8")
        (root / "model.safetensors").write_bytes(b"w" * weights)
        (root / "tokenizer" / "vocab.json").write_text("{}")
        return root

    same = base_model_identity(str(folder("a")))
    assert base_model_identity(str(folder("b"))) == same  # another job's channel path
    # Another config of the same size: only its content tells the models apart.
    assert base_model_identity(str(folder("c", config='{"hidden_size": 9, "name": "ÿ"}'))) != same
    assert base_model_identity(str(folder("d", weights=65))) != same
    renamed = folder("e")
    (renamed / "tokenizer" / "vocab.json").rename(renamed / "tokenizer" / "merges.txt")
    assert base_model_identity(str(renamed)) != same  # a file in a subfolder counts
    bare = folder("f")
    (bare / "config.json").unlink()
    assert base_model_identity(str(bare)) not in (same, str(bare))


def test_a_refusal_names_every_differing_setting_and_the_way_out(tmp_path: Path) -> None:
    from training_scripts.checkpoints import check_run_config

    folders = split_folders(tmp_path / "data", '{"input": "x", "target": "y"}\n')
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    check_run_config(
        checkpoints, TrainArguments(model_name_or_path="org/model", **folders), is_main=True
    )
    other = TrainArguments(model_name_or_path="org/model", **folders, seed=7, lora_r=4)
    with pytest.raises(ValueError) as refused:
        check_run_config(checkpoints, other, is_main=True)
    assert str(refused.value) == (
        f"{checkpoints} holds checkpoints of another run (differing: lora_r, seed); resume "
        "with the same arguments, data and base model, or use an empty --checkpoint-dir"
    )
    # A stored fingerprint that no identity explains (another release's hashing): refused.
    stored = json.loads((checkpoints / "run_config.json").read_text())
    stored["fingerprint"] = "0" * 64
    (checkpoints / "run_config.json").write_text(json.dumps(stored))
    same = TrainArguments(model_name_or_path="org/model", **folders)
    with pytest.raises(ValueError, match=r"another run \(differing: unknown\)"):
        check_run_config(checkpoints, same, is_main=True)
    # One without the identity (written before it was recorded): every setting is named.
    del stored["identity"]
    (checkpoints / "run_config.json").write_text(json.dumps(stored))
    with pytest.raises(ValueError, match=r"\(differing: base_model, batching, data, "):
        check_run_config(checkpoints, same, is_main=True)


def test_only_the_main_process_writes_the_run_config(tmp_path: Path) -> None:
    from training_scripts.checkpoints import check_run_config

    args = TrainArguments(model_name_or_path="org/model")
    check_run_config(tmp_path, args, is_main=False)
    assert list(tmp_path.iterdir()) == []
    check_run_config(tmp_path, args, is_main=True)
    stored = json.loads((tmp_path / "run_config.json").read_text())
    assert stored["fingerprint"] == run_fingerprint(args)
    # The arguments in full, for whoever reads the folder later.
    assert stored["arguments"]["model_name_or_path"] == "org/model"
    assert stored["arguments"]["learning_rate"] == "0.0"
