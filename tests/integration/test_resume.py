"""Spot interruption: a run killed after its first checkpoint resumes from it when re-run with
the same arguments, and ends with the same weights as a run that was never interrupted."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.conftest import SCRIPTS, lora_job_paths
from training_scripts import contracts
from training_scripts.checkpoints import CHECKPOINT_SEAL

MAX_STEPS = 40
SAVE_STEPS = 10


def command(model: Path, splits: Path, out: Path) -> list[str]:
    return [
        sys.executable, str(SCRIPTS / "train.py"),
        *lora_job_paths(model, splits, out),
        "--max-steps", str(MAX_STEPS),
        "--save-steps", str(SAVE_STEPS),
        "--per-device-batch-size", "4",
        "--learning-rate", "5e-3",
        "--lora-dropout", "0.1",  # dropout draws random numbers: their state must resume too
        "--gradient-checkpointing", "false",
        "--precision", "fp32",
    ]  # fmt: skip


def complete_checkpoints(directory: Path) -> list[int]:
    return sorted(
        int(p.name.split("-")[1])
        for p in directory.glob("checkpoint-*")
        if (p / CHECKPOINT_SEAL).is_file()
    )


def test_killed_run_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(
    tiny_causal: Path, splits: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    reference = subprocess.run(
        command(tiny_causal, splits, tmp_path / "reference"),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert reference.returncode == 0, reference.stderr[-3000:]

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(
        command(tiny_causal, splits, interrupted),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while not complete_checkpoints(interrupted / "checkpoints"):
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)  # what a spot reclaim does, without warning
    process.wait()
    saved = complete_checkpoints(interrupted / "checkpoints")
    assert saved and max(saved) < MAX_STEPS, f"the run was not interrupted mid-way: {saved}"
    assert not (interrupted / "model" / "adapter_model.safetensors").exists()

    resumed = subprocess.run(
        command(tiny_causal, splits, interrupted),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = contracts.TRAINING_METRICS.read(interrupted / "model")
    assert metrics["resumed_from_step"] == max(saved) and metrics["global_step"] == MAX_STEPS

    final = load_file(interrupted / "model" / "adapter_model.safetensors")
    expected = load_file(tmp_path / "reference" / "model" / "adapter_model.safetensors")
    assert final.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(final[name], tensor, atol=1e-5, rtol=1e-4, msg=name)
    untrained = load_file(
        sorted((interrupted / "checkpoints").glob("checkpoint-*"))[0] / "adapter_model.safetensors"
    )
    assert any(not torch.equal(untrained[n], final[n]) for n in final), (
        "training after the resume changed nothing"
    )

    # A rerun whose newest checkpoint was damaged after its save (a truncated weights file)
    # falls back to the previous one, and still ends with the uninterrupted run's weights.
    damaged = tmp_path / "damaged"
    shutil.copytree(tmp_path / "reference" / "checkpoints", damaged / "checkpoints")
    kept = complete_checkpoints(damaged / "checkpoints")
    assert kept == [MAX_STEPS - SAVE_STEPS, MAX_STEPS]
    weights = damaged / "checkpoints" / f"checkpoint-{MAX_STEPS}" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    rerun = subprocess.run(
        command(tiny_causal, splits, damaged), env=env, capture_output=True, text=True, timeout=300
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"removing checkpoint {weights.parent}: its files differ from the seal" in rerun.stderr
    metrics = contracts.TRAINING_METRICS.read(damaged / "model")
    assert metrics["resumed_from_step"] == MAX_STEPS - SAVE_STEPS
    final = load_file(damaged / "model" / "adapter_model.safetensors")
    for name, tensor in expected.items():
        torch.testing.assert_close(final[name], tensor, atol=1e-5, rtol=1e-4, msg=name)


def test_unfinished_or_damaged_checkpoints_are_removed(tmp_path: Path) -> None:
    from training_scripts.checkpoints import newest_complete_checkpoint, seal_checkpoint

    for step in (10, 20, 30, 40, 50):
        path = tmp_path / f"checkpoint-{step}"
        path.mkdir()
        (path / "adapter_model.safetensors").write_bytes(b"weights %d" % step)
        (path / "trainer_state.json").write_text("{}")
        if step != 50:  # 50: killed before its seal was written
            seal_checkpoint(path)
    (tmp_path / "checkpoint-40" / "adapter_model.safetensors").write_bytes(b"weights 4")
    (tmp_path / "checkpoint-30" / "optimizer.pt").write_bytes(b"left by another writer")
    assert newest_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-20"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-20"]
    (tmp_path / "checkpoint-20" / "trainer_state.json").unlink()  # a file lost in a sync
    (tmp_path / "checkpoint-10" / CHECKPOINT_SEAL).write_text("{not json")
    assert newest_complete_checkpoint(tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_resuming_with_other_arguments_is_refused(
    tiny_causal: Path, splits: Path, tmp_path: Path
) -> None:
    first = subprocess.run(
        [*command(tiny_causal, splits, tmp_path), "--max-steps", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert first.returncode == 0, first.stderr[-2000:]
    second = subprocess.run(
        [*command(tiny_causal, splits, tmp_path), "--max-steps", "2", "--lora-r", "4"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert second.returncode == 2
    assert "holds checkpoints of another run (differing: lora_r)" in second.stderr
