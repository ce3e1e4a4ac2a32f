"""A ModelTrainer job on this machine (pipelines/local/jobs.py `JobRunner.training`), with an
entry script that records what it was given: its channels, environment and arguments as a
SageMaker container gives them, checkpoints restored from the S3 prefix and moved back there,
and the model folder archived where the service puts model.tar.gz."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from pipelines.local.errors import StepFailedError
from pipelines.local.jobs import JobRunner
from pipelines.local.s3_mirror import S3Mirror

# Records what the job saw; leaves a model and (with --checkpoint-dir) one more checkpoint.
ENTRY_SCRIPT = """
import json, os, sys
from pathlib import Path

args = sys.argv[1:]
checkpoints = Path(args[args.index("--checkpoint-dir") + 1]) if "--checkpoint-dir" in args else None
restored = sorted(p.name for p in checkpoints.iterdir()) if checkpoints and checkpoints.is_dir() else None
model = Path(os.environ["SM_MODEL_DIR"])
seen = {
    "argv": args,
    "restored": restored,
    "train": sorted(os.listdir(os.environ["SM_CHANNEL_TRAIN"])),
    "env": {k: os.environ[k] for k in ("SM_NUM_GPUS", "SM_CURRENT_HOST", "GREETING")},
    "output_is_a_folder": Path(os.environ["SM_OUTPUT_DATA_DIR"]).is_dir(),
    "cwd_has_code": Path("helper.py").is_file(),
}
(model / "seen.json").write_text(json.dumps(seen))
(model / "weights.bin").write_bytes(b"w" * 10)
if checkpoints is not None:
    checkpoints.mkdir(parents=True, exist_ok=True)
    (checkpoints / f"step-{len(restored or []) + 1}").write_text("state")
if "--fail" in args:
    print("Error: the loss went to nan")
    sys.exit(1)
"""
CHECKPOINTS = "s3://bucket/checkpoints/run-1"


@pytest.fixture
def mirror(tmp_path: Path) -> S3Mirror:
    """The staged code (sourcedir.tar.gz with the script and a helper), the drivers' source
    description, and a train channel of two files."""
    mirror = S3Mirror(tmp_path / "s3")
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name, text in (("train.py", ENTRY_SCRIPT), ("helper.py", "")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    mirror.put("bucket", "code/sourcedir.tar.gz", archive.getvalue())
    mirror.put(
        "bucket", "drivers/sourcecode.json", json.dumps({"entry_script": "train.py"}).encode()
    )
    mirror.put("bucket", "data/train/part-0.jsonl", b"{}\n")
    mirror.put("bucket", "data/train/part-1.jsonl", b"{}\n")
    return mirror


def channel(name: str, uri: str) -> dict[str, Any]:
    return {"ChannelName": name, "DataSource": {"S3DataSource": {"S3Uri": uri}}}


def request(*, hyperparameters: dict[str, str] | None, checkpoints: bool) -> dict[str, Any]:
    args: dict[str, Any] = {
        "InputDataConfig": [
            channel("code", "s3://bucket/code/"),
            channel("sm_drivers", "s3://bucket/drivers/"),
            channel("train", "s3://bucket/data/train/"),
        ],
        "OutputDataConfig": {"S3OutputPath": "s3://bucket/models/"},
        "Environment": {"GREETING": 7},
    }
    if hyperparameters is not None:
        args["HyperParameters"] = hyperparameters
    if checkpoints:
        args["CheckpointConfig"] = {"S3Uri": CHECKPOINTS, "LocalPath": "/opt/ml/checkpoints"}
    return args


def runner(mirror: S3Mirror, tmp_path: Path, suffix: str) -> JobRunner:
    return JobRunner(mirror, tmp_path / "jobs" / suffix, suffix, show=lambda line: None)


def model_files(mirror: S3Mirror, artifact: str) -> dict[str, bytes]:
    with tarfile.open(mirror.path(artifact)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_a_training_job_gets_its_channels_environment_and_arguments_and_archives_its_model(
    mirror: S3Mirror, tmp_path: Path
) -> None:
    job = runner(mirror, tmp_path, "exec1").training(
        "TrainAdapter",
        request(hyperparameters={"epochs": "2", "model-name": "tiny"}, checkpoints=False),
    )
    artifact = "s3://bucket/models/trainadapter-exec1/output/model.tar.gz"
    assert job.properties == {
        "ModelArtifacts.S3ModelArtifacts": artifact,
        "TrainingJobName": "trainadapter-exec1",
    }
    files = model_files(mirror, artifact)
    assert sorted(files) == ["seen.json", "weights.bin"]
    seen = json.loads(files["seen.json"])
    assert seen == {
        "argv": ["--epochs", "2", "--model-name", "tiny"],
        "restored": None,
        "train": ["part-0.jsonl", "part-1.jsonl"],
        "env": {"SM_NUM_GPUS": "0", "SM_CURRENT_HOST": "algo-1", "GREETING": "7"},
        "output_is_a_folder": True,
        "cwd_has_code": True,
    }
    assert job.outputs == {"model": tmp_path / "jobs/exec1/TrainAdapter/container/opt/ml/model"}
    assert not mirror.path(CHECKPOINTS).exists()


def test_a_job_without_hyperparameters_runs_with_no_arguments(
    mirror: S3Mirror, tmp_path: Path
) -> None:
    job = runner(mirror, tmp_path, "exec1").training(
        "Train", request(hyperparameters=None, checkpoints=False)
    )
    seen = json.loads(
        model_files(mirror, job.properties["ModelArtifacts.S3ModelArtifacts"])["seen.json"]
    )
    assert seen["argv"] == []


def test_checkpoints_start_empty_then_are_restored_and_moved_back_after_each_job(
    mirror: S3Mirror, tmp_path: Path
) -> None:
    """The first job finds no prefix (nothing restored, no error); the second, another
    execution, starts from the first's checkpoints, as SageMaker restores them."""
    hyperparameters = {"checkpoint-dir": "/opt/ml/checkpoints"}
    seen = []
    for suffix in ("exec1", "exec2"):
        job_runner = runner(mirror, tmp_path, suffix)
        job = job_runner.training(
            "Train", request(hyperparameters=hyperparameters, checkpoints=True)
        )
        files = model_files(mirror, job.properties["ModelArtifacts.S3ModelArtifacts"])
        seen.append(json.loads(files["seen.json"]))
        # Moved, not copied: the job's own folder keeps none.
        assert not (tmp_path / "jobs" / suffix / "Train/container/opt/ml/checkpoints").exists()
    local = str(tmp_path / "jobs/exec1/Train/container/opt/ml/checkpoints")
    assert seen[0]["argv"] == ["--checkpoint-dir", local]
    assert [s["restored"] for s in seen] == [None, ["step-1"]]
    assert sorted(p.name for p in mirror.path(CHECKPOINTS).iterdir()) == ["step-1", "step-2"]


def test_a_failed_training_job_names_its_error_line_and_log(
    mirror: S3Mirror, tmp_path: Path
) -> None:
    with pytest.raises(StepFailedError) as failed:
        runner(mirror, tmp_path, "exec1").training(
            "Train", request(hyperparameters={"fail": "1"}, checkpoints=False)
        )
    log = tmp_path / "jobs/exec1/Train/job.log"
    assert str(failed.value) == (
        f"step Train failed: Error: the loss went to nan (full log: {log})"
    )
