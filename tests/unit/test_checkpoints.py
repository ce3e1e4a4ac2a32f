"""Which checkpoint a run resumes from (training_scripts/checkpoints.py): each sealed with its
files' digests once saved; the newest whose files match their seal is chosen, and folders that
are unfinished or damaged are removed, each with its reason. Resuming end to end is tested in
tests/integration/test_resume.py."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from training_scripts.checkpoints import (
    CHECKPOINT_SEAL,
    SealCheckpoints,
    checkpoint_step,
    damage,
    file_digests,
    newest_complete_checkpoint,
    seal_checkpoint,
)


def checkpoint(root: Path, step: int, *, sealed: bool = True) -> Path:
    folder = root / f"checkpoint-{step}"
    (folder / "nested").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights %d" % step)
    (folder / "nested" / "optimizer.pt").write_bytes(b"state")
    if sealed:
        seal_checkpoint(folder)
    return folder


@pytest.mark.parametrize(
    ("name", "step"),
    [
        ("checkpoint-12", 12),
        ("checkpoint-0", 0),
        ("checkpoint-", None),
        ("checkpoint-12a", None),
        ("checkpoint-1-2", None),
        ("snapshot-12", None),
        ("checkpoint", None),
        ("run_config.json", None),
    ],
)
def test_a_checkpoints_step_is_read_from_its_folder_name(name: str, step: int | None) -> None:
    assert checkpoint_step(Path("/out") / name) == step


def test_a_seal_holds_the_digest_of_every_file_but_itself(tmp_path: Path) -> None:
    folder = checkpoint(tmp_path, 3)
    assert json.loads((folder / CHECKPOINT_SEAL).read_text()) == {
        "model.safetensors": hashlib.sha256(b"weights 3").hexdigest(),
        "nested/optimizer.pt": hashlib.sha256(b"state").hexdigest(),
    }
    assert file_digests(folder) == json.loads((folder / CHECKPOINT_SEAL).read_text())
    big = folder / "big.bin"
    big.write_bytes(b"x" * (3 << 20))  # read in blocks: several of them
    assert file_digests(folder)["big.bin"] == hashlib.sha256(big.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("harm", "reason"),
    [
        ("none", None),
        ("unsealed", "its save did not finish (no seal)"),
        ("truncated", "its files differ from the seal (model.safetensors)"),
        ("added", "its files differ from the seal (extra.bin)"),
        ("removed", "its files differ from the seal (nested/optimizer.pt)"),
        ("both", "its files differ from the seal (model.safetensors, nested/optimizer.pt)"),
        ("garbled", "its seal is unreadable (Expecting value: line 1 column 1 (char 0))"),
    ],
)
def test_a_checkpoint_is_damaged_when_its_files_are_not_the_ones_sealed(
    tmp_path: Path, harm: str, reason: str | None
) -> None:
    folder = checkpoint(tmp_path, 5, sealed=harm != "unsealed")
    if harm in ("truncated", "both"):
        (folder / "model.safetensors").write_bytes(b"weig")
    if harm == "added":
        (folder / "extra.bin").write_bytes(b"x")
    if harm in ("removed", "both"):
        (folder / "nested" / "optimizer.pt").unlink()
    if harm == "garbled":
        (folder / CHECKPOINT_SEAL).write_text("not json")
    assert damage(folder) == reason


def test_the_newest_sound_checkpoint_is_chosen_and_newer_broken_ones_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    checkpoint(tmp_path, 9)
    sound = checkpoint(tmp_path, 10)
    unfinished = checkpoint(tmp_path, 30, sealed=False)
    damaged = checkpoint(tmp_path, 20)
    (damaged / "model.safetensors").write_bytes(b"")
    (tmp_path / "checkpoint-40").write_text("a file, not a checkpoint")
    (tmp_path / "other").mkdir()
    with caplog.at_level(logging.WARNING, logger="train"):
        assert newest_complete_checkpoint(tmp_path) == sound
    assert caplog.messages == [
        f"removing checkpoint {unfinished}: its save did not finish (no seal)",
        f"removing checkpoint {damaged}: its files differ from the seal (model.safetensors)",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-10",
        "checkpoint-40",
        "checkpoint-9",
        "other",
    ]


def test_numbers_not_names_order_checkpoints(tmp_path: Path) -> None:
    checkpoint(tmp_path, 9)
    assert newest_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-9"
    checkpoint(tmp_path, 10)
    assert newest_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-10"


def test_without_a_sound_checkpoint_a_run_starts_over(tmp_path: Path) -> None:
    assert newest_complete_checkpoint(tmp_path / "missing") is None
    checkpoint(tmp_path, 4, sealed=False)
    assert newest_complete_checkpoint(tmp_path) is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("main", "saved", "sealed"), [(True, True, True), (False, True, False),
                                                       (True, False, False)])  # fmt: skip
def test_the_main_process_seals_each_checkpoint_the_trainer_saved(
    tmp_path: Path, main: bool, saved: bool, sealed: bool
) -> None:
    if saved:
        checkpoint(tmp_path, 7, sealed=False)
    control = object()
    state = SimpleNamespace(global_step=7, is_world_process_zero=main)
    done = SealCheckpoints().on_save(SimpleNamespace(output_dir=str(tmp_path)), state, control)
    assert done is control
    assert (tmp_path / "checkpoint-7" / CHECKPOINT_SEAL).is_file() is sealed


def test_a_run_resumes_only_with_its_arguments_data_task_and_base_model(
    tmp_path: Path, splits: Path, tiny_causal: Path
) -> None:
    """A checkpoint folder remembers the run that wrote it; a run that differs in anything but
    paths and logging is refused, naming what differs."""
    import dataclasses
    import shutil

    from tests.integration.test_train_methods import make_args
    from training_scripts import tasks
    from training_scripts.checkpoints import RUN_CONFIG_FILE, check_run_config
    from training_scripts.enums import PeftMethod

    data = shutil.copytree(splits, tmp_path / "splits")
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    args = make_args(tiny_causal, data, tmp_path, PeftMethod.LORA)
    check_run_config(folder, args, is_main=False)
    assert not (folder / RUN_CONFIG_FILE).exists()  # only the main process writes it
    check_run_config(folder, args, is_main=True)
    assert (folder / RUN_CONFIG_FILE).is_file()
    moved = dataclasses.replace(args, output_dir=str(tmp_path / "elsewhere"), logging_steps=1)
    check_run_config(folder, moved, is_main=True)  # paths and logging may change

    def refused(changed: object) -> str:
        with pytest.raises(ValueError) as stopped:
            check_run_config(folder, changed, is_main=True)  # type: ignore[arg-type]
        return str(stopped.value)

    reason = (
        "; resume with the same arguments, data and base model, or use an empty --checkpoint-dir"
    )
    assert refused(dataclasses.replace(args, lora_r=4)) == (
        f"{folder} holds checkpoints of another run (differing: lora_r){reason}"
    )
    spec = tasks.split_task(data / "train")
    edited = dataclasses.replace(spec, system="Answer in French.")
    (data / "train" / tasks.TASK_SPEC_FILE).write_text(edited.canonical_json())
    assert refused(args) == f"{folder} holds checkpoints of another run (differing: task){reason}"


def test_a_broken_checkpoint_that_cannot_be_removed_is_passed_over(tmp_path: Path) -> None:
    """Removal errors do not stop the run (another process may have removed the folder first):
    here the newest checkpoint is a link, which rmtree refuses to follow."""
    sound = checkpoint(tmp_path, 10)
    elsewhere = checkpoint(tmp_path / "elsewhere", 30, sealed=False)
    (tmp_path / "checkpoint-30").symlink_to(elsewhere, target_is_directory=True)
    assert newest_complete_checkpoint(tmp_path) == sound
