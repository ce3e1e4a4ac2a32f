"""Checkpoints a run can resume from: each sealed with its files' digests once saved, the newest
whose files match their seal chosen (unfinished or damaged ones removed), and the run's
identity (arguments, data, base model) that a resumed run must share."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__:  # imported as part of the training_scripts package (pipeline, tests, benchmarks)
    from . import contracts, tasks
else:  # run as a file in the SageMaker job: sibling modules are top-level
    import contracts
    import tasks

from transformers import TrainerCallback

logger = logging.getLogger("train")

if TYPE_CHECKING:
    from .train import TrainArguments


RUN_CONFIG_FILE = "run_config.json"
CHECKPOINT_SEAL = "checkpoint_seal.json"  # written last: the digests of a checkpoint's files


def content_hash(split_dir: str) -> str:
    try:
        return hashlib.sha256(contracts.split_file(split_dir).read_bytes()).hexdigest()
    except (FileNotFoundError, OSError):
        return "none"  # no such split (validation is optional): nothing to tell runs apart by


def base_model_identity(name_or_path: str) -> str:
    """A base model as resume cares about it: a folder (a job's channel, whose path may
    change) by its config and the names and sizes of its files; a hub id by itself."""
    folder = Path(name_or_path)
    if not folder.is_dir():
        return name_or_path
    config = folder / "config.json"
    listing = sorted(
        (p.relative_to(folder).as_posix(), p.stat().st_size)
        for p in folder.rglob("*")
        if p.is_file()
    )
    content = (config.read_text(encoding="utf-8") if config.is_file() else "") + json.dumps(listing)
    return hashlib.sha256(content.encode()).hexdigest()


# Arguments that may change between a run and its resumption: paths, --merge, logging, and
# names of things identified by content below.
RESUMABLE_CHANGES = frozenset(
    {
        "output_dir",
        "output_data_dir",
        "checkpoint_dir",
        "merge",
        "train_dir",
        "validation_dir",
        "model_name_or_path",
        "logging_steps",
        "validation_steps",
        "dataset_version",  # named by the data's content below
        "attention",  # implementations of the same attention
    }
)


def run_identity(args: TrainArguments) -> dict[str, Any]:
    """What must not change between a run and its resumption: the arguments (but
    RESUMABLE_CHANGES), the data's content and the base model's identity."""
    stable: dict[str, Any] = {
        k: str(v) for k, v in asdict(args).items() if k not in RESUMABLE_CHANGES
    }
    stable["data"] = {
        "train": content_hash(args.train_dir),
        "validation": content_hash(args.validation_dir),
    }
    # The task renders every prompt: the same records under another spec are other examples.
    stable["task"] = tasks.split_task(args.train_dir).sha256
    stable["base_model"] = base_model_identity(args.model_name_or_path)
    return stable


def run_fingerprint(args: TrainArguments) -> str:
    return hashlib.sha256(json.dumps(run_identity(args), sort_keys=True).encode()).hexdigest()


class SealCheckpoints(TrainerCallback):
    """Writes each checkpoint's seal (its files' digests) once the Trainer has saved it
    (on_save runs after every file, trainer_state.json included, is written)."""

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            seal_checkpoint(folder)
        return control


def checkpoint_step(path: Path) -> int | None:
    prefix, _, step = path.name.partition("-")
    return int(step) if prefix == "checkpoint" and step.isdigit() else None


def file_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file of a checkpoint but the seal itself."""
    digests = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != CHECKPOINT_SEAL:
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            digests[path.relative_to(folder).as_posix()] = digest.hexdigest()
    return digests


def seal_checkpoint(folder: Path) -> None:
    contracts.write_json_atomic(folder / CHECKPOINT_SEAL, file_digests(folder))


def damage(folder: Path) -> str | None:
    """Why a checkpoint cannot be resumed from, or None when its files are the ones sealed."""
    seal = folder / CHECKPOINT_SEAL
    if not seal.is_file():
        return "its save did not finish (no seal)"
    try:
        sealed = json.loads(seal.read_text())
    except (OSError, ValueError) as err:
        return f"its seal is unreadable ({err})"
    found = file_digests(folder)
    changed = sorted(
        name for name in sealed.keys() | found.keys() if sealed.get(name) != found.get(name)
    )
    return f"its files differ from the seal ({', '.join(changed)})" if changed else None


def newest_complete_checkpoint(directory: Path) -> Path | None:
    """The newest checkpoint whose files are those its save sealed. A spot interruption
    mid-save leaves a folder without a seal, and storage or a sync can damage one later (a
    truncated weights file would crash every rerun): such folders are removed, so the run
    falls back to the previous good checkpoint, or starts over."""
    if not directory.is_dir():
        return None
    steps = sorted(
        ((step, path) for path in directory.iterdir()
         if (step := checkpoint_step(path)) is not None and path.is_dir()),
        reverse=True,
    )  # fmt: skip
    for _, path in steps:
        problem = damage(path)
        if problem is None:
            return path
        logger.warning("removing checkpoint %s: %s", path, problem)
        shutil.rmtree(path, ignore_errors=True)
    return None


def check_run_config(checkpoint_dir: Path, args: TrainArguments, *, is_main: bool) -> None:
    path = checkpoint_dir / RUN_CONFIG_FILE
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous["fingerprint"] != run_fingerprint(args):
            earlier, now = previous.get("identity", {}), run_identity(args)
            differing = sorted(k for k in now if earlier.get(k) != now[k]) or ["unknown"]
            raise ValueError(
                f"{checkpoint_dir} holds checkpoints of another run (differing: "
                f"{', '.join(differing)}); resume with the same arguments, data and base model, "
                "or use an empty --checkpoint-dir"
            )
    elif is_main:
        contracts.write_json_atomic(
            path,
            {
                "fingerprint": run_fingerprint(args),
                "identity": run_identity(args),
                "arguments": {k: str(v) for k, v in asdict(args).items()},
            },
        )
