"""Shared fixtures: tiny random-weight models built once per session, and small preprocessed
splits of the bundled sample. Everything runs offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "training_scripts"

# No hub access, ever: a test that would download fails instead of hanging.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_VERBOSITY"] = "error"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The SageMaker SDK needs a region to import; tests never reach AWS (moto or offline builds).
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
# The suite runs on pytest-xdist, one worker per core: a worker (and the jobs it starts) keeps
# to one thread, or two workers' torch thread pools would fight over the same cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


# Where a SageMaker job's container keeps its files. The training scripts take its presence to
# mean "inside a job", so nothing run on this machine may write there.
CONTAINER_ROOT = Path("/opt/ml")


@pytest.fixture(autouse=True)
def nothing_written_into_the_container_root() -> Iterator[None]:
    """The local runner maps /opt/ml into each job's own folder: a job that wrote into the
    machine's /opt/ml would make every later script run as if inside SageMaker."""
    existed = CONTAINER_ROOT.exists()
    yield
    if not existed and CONTAINER_ROOT.exists():
        shutil.rmtree(CONTAINER_ROOT, ignore_errors=True)
        pytest.fail(f"the test wrote into this machine's {CONTAINER_ROOT}; removed it")


@pytest.fixture(scope="session")
def tiny_causal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.fixtures.models import build_tiny_causal

    return build_tiny_causal(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_seq2seq(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.fixtures.models import build_tiny_seq2seq

    return build_tiny_seq2seq(tmp_path_factory.mktemp("tiny-t5"))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def splits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/validation/test folders from the bundled sample, small enough for tiny runs."""
    from training_scripts import preprocess

    root = tmp_path_factory.mktemp("splits")
    full = root / "full"
    preprocess.run(
        preprocess.PreprocessArguments(
            input=str(REPO / "data/sample/dialogues.jsonl"), output_dir=str(full)
        )
    )
    small = root / "small"
    for split, keep in (("train", 96), ("validation", 16), ("test", 8)):
        rows = [
            json.loads(line) for line in (full / split / "data.jsonl").read_text().splitlines()
        ][:keep]
        write_jsonl(small / split / "data.jsonl", rows)
    return small


# A ChatML template, the kind SmolLM2 ships: for tests of what a chat model reads.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def lora_job_paths(model: Path, splits: Path, out: Path) -> list[str]:
    """train.py's arguments for a LoRA run of `model` on `splits`, writing under `out` as a
    training job does: the model, its output data and its checkpoints."""
    return [
        "--method", "lora",
        "--model-name-or-path", str(model),
        "--train-dir", str(splits / "train"),
        "--validation-dir", str(splits / "validation"),
        "--output-dir", str(out / "model"),
        "--output-data-dir", str(out / "output"),
        "--checkpoint-dir", str(out / "checkpoints"),
    ]  # fmt: skip


# What a laptop without AWS configured lacks: the CLI runs here as it runs there (the suite
# sets these for its in-process tests, which import the SageMaker SDK).
NOT_ON_A_LAPTOP = ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EC2_METADATA_DISABLED")


def peftops(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The CLI in a subprocess, in the environment of a machine with no AWS configuration."""
    environment = {k: v for k, v in os.environ.items() if k not in NOT_ON_A_LAPTOP}
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        cwd=cwd,
        env={**environment, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="session")
def tiny_run(
    tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> tuple[Path, subprocess.CompletedProcess]:
    """One `peftops run-local --preset tiny` for every test that reads a whole run's output,
    made once per suite: the first xdist worker that needs it runs it, under a lock, in the
    folder the workers share; the others wait and read it. Tests that change what it made
    (a registry decision, a second run) work on a copy."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base if worker_id == "master" else base.parent
    root, outcome = shared / "tiny-run", shared / "tiny-run.json"
    with FileLock(shared / "tiny-run.lock"):
        if not outcome.is_file():
            done = peftops(
                "run-local",
                "--preset",
                "tiny",
                "--out",
                str(root / "run"),
                "--registry",
                str(root / "registry.sqlite"),
                "--tracking",
                str(root / "mlflow.db"),
                cwd=REPO,
            )
            outcome.write_text(json.dumps([done.args, done.returncode, done.stdout, done.stderr]))
    return root, subprocess.CompletedProcess(*json.loads(outcome.read_text()))
