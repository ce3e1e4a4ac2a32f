"""A local job laid out as SageMaker lays out its container (pipelines/local/jobs.py), run
with tiny real scripts: a FrameworkProcessor job's inputs, code, arguments, environment and
outputs; a ModelTrainer job's channels, hyperparameters, checkpoints and model.tar.gz; and a
failing job named by its step, its last error line and its log."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from pipelines.local.errors import StepFailedError, UnsupportedConstructError
from pipelines.local.jobs import LOG_FILE, JobRunner
from pipelines.local.s3_mirror import S3Mirror

# Writes what the job saw (arguments, environment, input files) into its output folder.
PROCESS = """
import json, os, sys
from pathlib import Path
out = Path(sys.argv[sys.argv.index("--out") + 1])
seen = {"argv": sys.argv[1:], "env": os.environ.get("TASK_NAME"), "cwd": os.getcwd(),
        "data": sorted(p.name for p in Path(sys.argv[sys.argv.index("--data") + 1]).iterdir())}
(out / "seen.json").write_text(json.dumps(seen))
print("progress line"); print("worth it: 50%")
"""
TRAIN = """
import json, os, sys
from pathlib import Path
model = Path(os.environ["SM_MODEL_DIR"])
print("worth it: epoch 1")
restored = sorted(p.name for p in Path(sys.argv[sys.argv.index("--checkpoints") + 1]).iterdir())
Path(sys.argv[sys.argv.index("--checkpoints") + 1], "step-2").write_text("new")
(model / "adapter.json").write_text(json.dumps({
    "argv": sys.argv[1:], "train": sorted(os.listdir(os.environ["SM_CHANNEL_TRAIN"])),
    "gpus": os.environ["SM_NUM_GPUS"], "host": os.environ["SM_CURRENT_HOST"],
    "restored": restored, "output": os.environ["SM_OUTPUT_DATA_DIR"], "cwd": os.getcwd(),
    "task": os.environ.get("TASK_NAME")}))
"""
FAILS = """
import sys
print("loading"); print("ValueError: the rank must be positive"); print("cleaning up")
sys.exit(3)
"""


def code_archive(mirror: S3Mirror, key: str, script: str) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = script.encode()
        info = tarfile.TarInfo("job.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    mirror.put("bucket", f"{key}/sourcedir.tar.gz", buffer.getvalue())


def stages_processing(
    mirror: S3Mirror, script: str, runproc: bytes = b'python3 job.py "$@"\n'
) -> None:
    """A FrameworkProcessor job's inputs in the mirror: its code, runproc.sh and data."""
    code_archive(mirror, "code", script)
    mirror.put("bucket", "entry/runproc.sh", runproc)
    mirror.put("bucket", "data/train.jsonl", b"{}")


def processing_request(**arguments: Any) -> dict[str, Any]:
    def input_(name: str, uri: str, path: str) -> dict[str, Any]:
        return {"InputName": name, "S3Input": {"S3Uri": uri, "LocalPath": path}}

    return {
        "ProcessingInputs": [
            input_("code", "s3://bucket/code", "/opt/ml/processing/input/code"),
            input_("entrypoint", "s3://bucket/entry", "/opt/ml/processing/input/entrypoint"),
            input_("data", "s3://bucket/data", "/opt/ml/processing/input/data"),
        ],
        "AppSpecification": {"ContainerArguments": [
            "--data", "/opt/ml/processing/input/data", "--out", "/opt/ml/processing/output/report",
            "--name", "literal", *arguments.get("extra", []),
        ]},
        "Environment": {"TASK_NAME": "dialogue-summary"},
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "report", "S3Output": {
            "S3Uri": "s3://bucket/runs/report", "LocalPath": "/opt/ml/processing/output/report",
        }}]},
    }  # fmt: skip


@pytest.fixture
def runner(tmp_path: Path) -> tuple[JobRunner, list[str]]:
    shown: list[str] = []
    mirror = S3Mirror(tmp_path / "s3")
    return (
        JobRunner(mirror, tmp_path / "jobs", "exec1", shown.append, lambda line: "worth" in line),
        shown,
    )


def test_a_processing_job_sees_its_inputs_arguments_and_environment_as_in_its_container(
    runner: tuple[JobRunner, list[str]], tmp_path: Path
) -> None:
    jobs, shown = runner
    stages_processing(jobs.mirror, PROCESS, b'#!/bin/bash\npython3 job.py "$@"\n')
    result = jobs.processing("Preprocess", processing_request())
    job_dir = tmp_path / "jobs" / "Preprocess"
    container = job_dir / "container" / "opt" / "ml" / "processing"
    seen = json.loads(jobs.mirror.get("bucket", "runs/report/seen.json"))
    assert seen == {
        "argv": ["--data", str(container / "input/data"), "--out", str(container / "output/report"),
                 "--name", "literal"],
        "env": "dialogue-summary", "cwd": str(container / "input/code"), "data": ["train.jsonl"],
    }  # fmt: skip
    assert result.properties == {
        "ProcessingJobName": "preprocess-exec1",
        "ProcessingOutputConfig.Outputs['report'].S3Output.S3Uri": "s3://bucket/runs/report",
    }
    assert result.outputs == {"report": container / "output/report"}
    log = (job_dir / LOG_FILE).read_text().splitlines()
    # Through job_process, which ends the job when the runner is gone (test_local_jobs.py).
    assert (
        log[0]
        == f"$ {sys.executable} -m pipelines.local.job_process job.py {' '.join(seen['argv'])}"
    )
    assert "progress line" in log
    assert shown[1:] == ["  [Preprocess] worth it: 50%"]  # after the command line


def test_a_training_job_gets_its_channels_hyperparameters_and_checkpoints_and_packs_its_model(
    runner: tuple[JobRunner, list[str]], tmp_path: Path
) -> None:
    jobs, shown = runner
    code_archive(jobs.mirror, "train/code", TRAIN)
    jobs.mirror.put(
        "bucket",
        "train/sm_drivers/sourcecode.json",
        json.dumps({"entry_script": "job.py"}).encode(),
    )
    jobs.mirror.put("bucket", "splits/train/train.jsonl", b"{}")
    jobs.mirror.put("bucket", "ckpt/step-1", b"old")  # what an earlier attempt left
    channel = {"ChannelName": "train",
               "DataSource": {"S3DataSource": {"S3Uri": "s3://bucket/splits/train"}}}  # fmt: skip
    request = {
        "InputDataConfig": [
            channel,
            {"ChannelName": "code", "DataSource": {"S3DataSource": {"S3Uri": "s3://bucket/train/code"}}},
            {"ChannelName": "sm_drivers",
             "DataSource": {"S3DataSource": {"S3Uri": "s3://bucket/train/sm_drivers"}}},
        ],
        "HyperParameters": {"lora-r": "16", "checkpoints": "/opt/ml/checkpoints"},
        "CheckpointConfig": {"S3Uri": "s3://bucket/ckpt", "LocalPath": "/opt/ml/checkpoints"},
        "Environment": {"TASK_NAME": "dialogue-summary"},
        "OutputDataConfig": {"S3OutputPath": "s3://bucket/models-X/"},
    }  # fmt: skip
    result = jobs.training("TrainAdapter", request)
    container = tmp_path / "jobs" / "TrainAdapter" / "container" / "opt" / "ml"
    artifact = "s3://bucket/models-X/trainadapter-exec1/output/model.tar.gz"
    assert result.properties == {
        "ModelArtifacts.S3ModelArtifacts": artifact,
        "TrainingJobName": "trainadapter-exec1",
    }
    with tarfile.open(jobs.mirror.path(artifact)) as tar:
        assert tar.getnames() == ["adapter.json"]
        written = json.loads(tar.extractfile("adapter.json").read())  # type: ignore[union-attr]
    assert written == {
        "argv": ["--lora-r", "16", "--checkpoints", str(container / "checkpoints")],
        "train": ["train.jsonl"], "gpus": "0", "host": "algo-1", "restored": ["step-1"],
        "output": str(container / "output/data"), "task": "dialogue-summary",
        "cwd": str(tmp_path / "jobs" / "TrainAdapter" / "code"),
    }  # fmt: skip
    assert result.outputs == {"model": container / "model"}
    assert shown[1:] == ["  [TrainAdapter] worth it: epoch 1"]
    # Checkpoints moved back to S3 (the job's storage ends with the job), the old one kept.
    assert jobs.mirror.list_keys("bucket", "ckpt/") == ["ckpt/step-1", "ckpt/step-2"]
    assert not (container / "checkpoints").exists()


def test_a_failing_job_names_its_step_its_last_error_line_and_its_log(
    runner: tuple[JobRunner, list[str]], tmp_path: Path
) -> None:
    jobs, _ = runner
    stages_processing(jobs.mirror, FAILS)
    with pytest.raises(StepFailedError) as failed:
        jobs.processing("Preprocess", processing_request())
    log = tmp_path / "jobs" / "Preprocess" / LOG_FILE
    assert str(failed.value) == (
        f"step Preprocess failed: ValueError: the rank must be positive (full log: {log})"
    )


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ({"ProcessingInputs": []}, "step Preprocess: only FrameworkProcessor jobs (code + "
         "runproc.sh entrypoint) are supported locally"),
        ({"entrypoint": b"exec java -jar job.jar\n"},
         "step Preprocess: cannot find the script in its runproc.sh"),
        ({"ProcessingOutputConfig": {"Outputs": [{"OutputName": "report", "S3Output": {
            "S3Uri": "s3://bucket/r", "LocalPath": "/tmp/report"}}]}},
         "container path /tmp/report is outside /opt/ml"),
    ],
)  # fmt: skip
def test_a_job_the_runner_cannot_lay_out_is_refused_by_name(
    runner: tuple[JobRunner, list[str]], change: dict[str, Any], refusal: str
) -> None:
    jobs, _ = runner
    stages_processing(jobs.mirror, PROCESS, change.pop("entrypoint", b'python3 job.py "$@"\n'))
    with pytest.raises(UnsupportedConstructError) as refused:
        jobs.processing("Preprocess", processing_request() | change)
    assert str(refused.value) == refusal


def training_code(jobs: JobRunner, entry_script: str = "job.py") -> list[dict[str, Any]]:
    """The code and driver channels of a ModelTrainer job."""
    code_archive(jobs.mirror, "train/code", TRAIN)
    source = json.dumps({"entry_script": entry_script}).encode()
    jobs.mirror.put("bucket", "train/sm_drivers/sourcecode.json", source)
    return [
        {
            "ChannelName": name,
            "DataSource": {"S3DataSource": {"S3Uri": f"s3://bucket/train/{name}"}},
        }
        for name in ("code", "sm_drivers")
    ]


def test_a_training_job_the_runner_cannot_lay_out_is_refused_by_name(
    runner: tuple[JobRunner, list[str]],
) -> None:
    jobs, _ = runner
    output = {"OutputDataConfig": {"S3OutputPath": "s3://bucket/models"}}
    with pytest.raises(UnsupportedConstructError) as no_code:
        jobs.training("TrainAdapter", output)  # no channels at all
    assert str(no_code.value).startswith("no sourcedir.tar.gz in the code input (")
    channels = training_code(jobs, entry_script="")
    with pytest.raises(UnsupportedConstructError) as no_script:
        jobs.training("TrainAdapter", output | {"InputDataConfig": channels})
    assert str(no_script.value) == (
        "step TrainAdapter: only entry-script training jobs are supported locally"
    )


def test_an_adapter_archive_cannot_write_outside_its_folder(tmp_path: Path) -> None:
    from pipelines.serving.adapters import unpack_adapter

    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        tar.addfile(info, io.BytesIO(b""))
    (tmp_path / "into").mkdir()
    with pytest.raises(tarfile.FilterError):
        unpack_adapter(archive, tmp_path / "into")
    assert not (tmp_path / "escaped.txt").exists()


# Records its arguments and whether a checkpoint folder was there; leaves one checkpoint where
# the job was told to keep them.
BARE = """
import json, os, sys
from pathlib import Path
keep = sys.argv[sys.argv.index("--checkpoints") + 1] if "--checkpoints" in sys.argv else None
(Path(os.environ["SM_MODEL_DIR"]) / "seen.json").write_text(json.dumps({
    "argv": sys.argv[1:], "restored": sorted(os.listdir(keep)) if keep and os.path.isdir(keep) else None}))
if keep:
    Path(keep).mkdir(parents=True, exist_ok=True)
    Path(keep, "step-1").write_text("new")
"""


@pytest.mark.parametrize(
    ("extra", "argv", "kept"),
    [
        ({}, [], []),  # no hyperparameters, no checkpoints
        ({"HyperParameters": {"checkpoints": "/opt/ml/checkpoints"},
          "CheckpointConfig": {"S3Uri": "s3://bucket/ckpt", "LocalPath": "/opt/ml/checkpoints"}},
         ["--checkpoints", "{container}/checkpoints"], ["ckpt/step-1"]),  # a first run: none yet
    ],
)  # fmt: skip
def test_a_training_job_runs_without_hyperparameters_or_earlier_checkpoints(
    runner: tuple[JobRunner, list[str]], tmp_path: Path, extra: dict, argv: list, kept: list
) -> None:
    jobs, shown = runner
    channels = training_code(jobs)
    code_archive(jobs.mirror, "train/code", BARE)
    request = {"InputDataConfig": channels, "OutputDataConfig": {"S3OutputPath": "s3://bucket/m"}}
    result = jobs.training("Train", request | extra)
    with tarfile.open(
        jobs.mirror.path(result.properties["ModelArtifacts.S3ModelArtifacts"])
    ) as tar:
        seen = json.loads(tar.extractfile("seen.json").read())  # type: ignore[union-attr]
    container = tmp_path / "jobs" / "Train" / "container" / "opt" / "ml"
    assert seen == {"argv": [a.format(container=container) for a in argv], "restored": None}
    assert jobs.mirror.list_keys("bucket", "ckpt/") == kept
    shown_command = [Path(sys.executable).name, "-m", "pipelines.local.job_process", "job.py"]
    assert shown[0] == "  $ " + " ".join([*shown_command, *seen["argv"]])  # the command, short


def test_a_code_archive_cannot_write_outside_its_job_folder(
    runner: tuple[JobRunner, list[str]], tmp_path: Path
) -> None:
    jobs, _ = runner
    archive = tmp_path / "code" / "sourcedir.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("../../escaped.py"), io.BytesIO(b""))
    with pytest.raises(tarfile.FilterError):
        jobs.extract_code(archive.parent, tmp_path / "jobs" / "x" / "code")
    assert not (tmp_path / "jobs" / "escaped.py").exists()


def test_a_processing_job_without_arguments_environment_or_outputs_runs_bare(
    runner: tuple[JobRunner, list[str]],
) -> None:
    jobs, _ = runner
    stages_processing(
        jobs.mirror, "import os, sys; print('argv', sys.argv[1:], os.environ.get('TASK_NAME'))"
    )
    bare = processing_request()
    del bare["Environment"], bare["ProcessingOutputConfig"]
    bare["AppSpecification"] = {}
    result = jobs.processing("Preprocess", bare)
    assert (result.properties, result.outputs) == ({"ProcessingJobName": "preprocess-exec1"}, {})
    assert "argv [] None" in (jobs.jobs_root / "Preprocess" / LOG_FILE).read_text()


def without_input(name: str) -> Any:
    def drop(request: dict[str, Any]) -> None:
        request["ProcessingInputs"] = [
            i for i in request["ProcessingInputs"] if i["InputName"] != name
        ]

    return drop


def without_inputs(request: dict[str, Any]) -> None:
    del request["ProcessingInputs"]


@pytest.mark.parametrize(
    "change", [without_input("code"), without_input("entrypoint"), without_inputs]
)
def test_a_processing_job_without_its_code_or_its_entrypoint_is_refused_in_words(
    runner: tuple[JobRunner, list[str]], change: Any
) -> None:
    jobs, _ = runner
    stages_processing(jobs.mirror, PROCESS)
    request = processing_request()
    change(request)
    with pytest.raises(UnsupportedConstructError, match="only FrameworkProcessor jobs"):
        jobs.processing("Preprocess", request)


def printing(lines: list[str], code: int) -> str:
    """A job that prints `lines`, some to stderr, and exits with `code`."""
    return (
        "import sys\n"
        + "".join(
            f"print({line!r}, file=sys.{'stderr' if 'stderr' in line else 'stdout'}, flush=True)\n"
            for line in lines
        )
        + f"sys.exit({code})\n"
    )


@pytest.mark.parametrize(
    ("lines", "named"),
    [
        (["loading", "Error: on stderr", "cleaning up"], "Error: on stderr"),  # stderr is logged
        (["loading", "killed at step 3"], "killed at step 3"),  # no error line: the last line
        ([], "no output"),
        # The error line and the 40 lines after it are the tail; one line more and it is gone.
        (["RuntimeError: early", *(f"line {i}" for i in range(40))], "RuntimeError: early"),
        (["RuntimeError: early", *(f"line {i}" for i in range(41))], "line 40"),
    ],
)
def test_a_failed_job_is_named_by_the_last_error_line_of_its_tail(
    runner: tuple[JobRunner, list[str]], tmp_path: Path, lines: list[str], named: str
) -> None:
    jobs, _ = runner
    (tmp_path / "job.py").write_text(printing(lines, 1))
    log = tmp_path / "job.log"
    with pytest.raises(StepFailedError) as failed:
        jobs.run_command(
            "Step", [sys.executable, str(tmp_path / "job.py")], cwd=tmp_path, env={}, log=log
        )
    assert str(failed.value) == f"step Step failed: {named} (full log: {log})"
    assert log.read_text().splitlines()[1:] == lines  # every line, stderr's in its place


def test_one_output_folder_can_be_uploaded_to_two_places(
    runner: tuple[JobRunner, list[str]],
) -> None:
    jobs, _ = runner
    stages_processing(jobs.mirror, PROCESS)
    request = processing_request()
    report = request["ProcessingOutputConfig"]["Outputs"][0]
    copy = {"OutputName": "copy", "S3Output": {**report["S3Output"], "S3Uri": "s3://bucket/copy"}}
    request["ProcessingOutputConfig"]["Outputs"].append(copy)
    result = jobs.processing("Preprocess", request)
    assert result.outputs["copy"] == result.outputs["report"]
    assert jobs.mirror.read("s3://bucket/copy/seen.json") == jobs.mirror.read(
        "s3://bucket/runs/report/seen.json"
    )
