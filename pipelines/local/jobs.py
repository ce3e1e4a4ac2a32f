"""SageMaker processing and training jobs on this machine: inputs copied from the S3 mirror
into a job folder laid out like the container's /opt/ml, the entry point run from the staged
code artifact in a subprocess that ends with the runner (`job_process`), outputs copied back,
and the job's whole log kept in its folder.

What differs from the cloud, by design: the job's `pip install -r requirements.lock` is not run
(this venv holds the same pins; a test keeps them equal), and a training job's entry script
runs as one process, without torchrun.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.local.errors import StepFailedError, UnsupportedConstructError
from pipelines.local.s3_mirror import S3Mirror

CONTAINER_ROOT = "/opt/ml/"
LOG_FILE = "job.log"


def job_command(script: str, arguments: list[str]) -> list[str]:
    """`python SCRIPT ARGUMENTS`, in a process that ends when the runner does."""
    return [sys.executable, "-m", "pipelines.local.job_process", script, *arguments]


@dataclass
class JobResult:
    """What a job produced: its step properties, and where each named output was written."""

    properties: dict[str, Any]
    outputs: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class JobRunner:
    """Runs jobs under `jobs_root/<step name>/`, mapping /opt/ml/... into it."""

    mirror: S3Mirror
    jobs_root: Path
    job_suffix: str  # makes job names unique per execution, as SageMaker's are
    show: Callable[[str], None]  # receives the job's output lines worth showing live
    worth_showing: Callable[[str], bool] = lambda line: False
    # Set in every job's environment by the runner, not by the definition, so not part of any
    # step's cache key: the local run's experiment tracking store.
    observer_environment: dict[str, str] = field(default_factory=dict)

    def job_dir(self, step_name: str) -> Path:
        job_dir = self.jobs_root / step_name
        shutil.rmtree(job_dir, ignore_errors=True)
        job_dir.mkdir(parents=True)
        return job_dir

    @staticmethod
    def container_path(job_dir: Path, path: str) -> Path:
        if not path.startswith(CONTAINER_ROOT):
            raise UnsupportedConstructError(f"container path {path} is outside /opt/ml")
        return job_dir / "container" / path.removeprefix("/")

    def map_argument(self, job_dir: Path, value: str) -> str:
        """Container paths among a job's arguments point into the job folder."""
        return (
            str(self.container_path(job_dir, value)) if value.startswith(CONTAINER_ROOT) else value
        )

    @staticmethod
    def extract_code(archive_dir: Path, target: Path) -> None:
        archive = archive_dir / "sourcedir.tar.gz"
        if not archive.is_file():
            raise UnsupportedConstructError(
                f"no sourcedir.tar.gz in the code input ({archive_dir})"
            )
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")

    def run_command(
        self, step_name: str, command: list[str], *, cwd: Path, env: dict[str, str], log: Path
    ) -> None:
        """Run the job's process; every line goes to `log`, the noteworthy ones to `show`."""
        tail: list[str] = []
        self.show(f"  $ {' '.join(Path(c).name if i < 2 else c for i, c in enumerate(command))}")
        with log.open("w", encoding="utf-8") as log_file:
            log_file.write(f"$ {' '.join(command)}\n")
            process = subprocess.Popen(
                command,
                cwd=cwd,
                env={**os.environ, **self.observer_environment, **env},
                # Held open while the job runs: its end of file tells the job the runner is
                # gone (job_process), whether the runner exits or is killed.
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
            )
            assert process.stdout is not None
            try:
                for line in process.stdout:
                    log_file.write(line)
                    line = line.rstrip()
                    tail = [*tail[-40:], line]
                    if self.worth_showing(line):
                        self.show(f"  [{step_name}] {line}")
                returncode = process.wait()
            finally:
                if process.poll() is None:  # interrupted (Ctrl-C): the job ends with us
                    process.kill()
                    process.wait()
                process.stdin.close()
        if returncode != 0:
            errors = [t for t in tail if "error" in t.lower()]
            last = (errors or tail or ["no output"])[-1]
            raise StepFailedError(f"step {step_name} failed: {last} (full log: {log})")

    def processing(self, step_name: str, args: dict[str, Any]) -> JobResult:
        """A FrameworkProcessor job: `code` and `entrypoint` inputs, runproc.sh's script."""
        job_dir = self.job_dir(step_name)
        inputs = {i["InputName"]: i["S3Input"] for i in args.get("ProcessingInputs", [])}
        if "code" not in inputs or "entrypoint" not in inputs:
            raise UnsupportedConstructError(
                f"step {step_name}: only FrameworkProcessor jobs (code + runproc.sh entrypoint) "
                "are supported locally"
            )
        for spec in inputs.values():
            self.mirror.download(spec["S3Uri"], self.container_path(job_dir, spec["LocalPath"]))
        code_dir = self.container_path(job_dir, inputs["code"]["LocalPath"])
        self.extract_code(code_dir, code_dir)
        entrypoint = self.container_path(job_dir, inputs["entrypoint"]["LocalPath"])
        script = re.search(r'python3 (\S+\.py) "\$@"', (entrypoint / "runproc.sh").read_text())
        if script is None:
            raise UnsupportedConstructError(
                f"step {step_name}: cannot find the script in its runproc.sh"
            )
        arguments = [
            self.map_argument(job_dir, str(a))
            for a in args["AppSpecification"].get("ContainerArguments", [])
        ]
        outputs = {
            o["OutputName"]: o["S3Output"]
            for o in args.get("ProcessingOutputConfig", {}).get("Outputs", [])
        }
        local_outputs = {
            name: self.container_path(job_dir, spec["LocalPath"]) for name, spec in outputs.items()
        }
        for local in local_outputs.values():
            local.mkdir(parents=True, exist_ok=True)
        self.run_command(
            step_name,
            job_command(script[1], arguments),
            cwd=code_dir,
            env={k: str(v) for k, v in args.get("Environment", {}).items()},
            log=job_dir / LOG_FILE,
        )
        properties: dict[str, Any] = {"ProcessingJobName": f"{step_name.lower()}-{self.job_suffix}"}
        for name, spec in outputs.items():
            self.mirror.upload(local_outputs[name], spec["S3Uri"])
            properties[f"ProcessingOutputConfig.Outputs['{name}'].S3Output.S3Uri"] = spec["S3Uri"]
        return JobResult(properties, local_outputs)

    def training(self, step_name: str, args: dict[str, Any]) -> JobResult:
        """A ModelTrainer job: channels as SM_CHANNEL_*, hyperparameters as CLI arguments,
        checkpoints restored from and synced to CheckpointConfig.S3Uri, model.tar.gz out."""
        from sagemaker.train.container_drivers.common.utils import hyperparameters_to_cli_args

        job_name = f"{step_name.lower()}-{self.job_suffix}"
        job_dir = self.job_dir(step_name)
        data_root = self.container_path(job_dir, "/opt/ml/input/data")
        env = {k: str(v) for k, v in args.get("Environment", {}).items()}
        for channel in args.get("InputDataConfig", []):
            target = data_root / channel["ChannelName"]
            self.mirror.download(channel["DataSource"]["S3DataSource"]["S3Uri"], target)
            env[f"SM_CHANNEL_{channel['ChannelName'].upper()}"] = str(target)
        code_dir = job_dir / "code"
        self.extract_code(data_root / "code", code_dir)
        source = json.loads((data_root / "sm_drivers" / "sourcecode.json").read_text())
        if not source.get("entry_script"):
            raise UnsupportedConstructError(
                f"step {step_name}: only entry-script training jobs are supported locally"
            )
        checkpoint = args.get("CheckpointConfig") or {}
        local_checkpoints = (
            self.container_path(job_dir, checkpoint["LocalPath"]) if checkpoint else None
        )
        if local_checkpoints is not None and self.mirror.path(checkpoint["S3Uri"]).exists():
            # What SageMaker restores at job start.
            self.mirror.download(checkpoint["S3Uri"], local_checkpoints)
        model_dir = self.container_path(job_dir, "/opt/ml/model")
        output_dir = self.container_path(job_dir, "/opt/ml/output/data")
        model_dir.mkdir(parents=True)
        output_dir.mkdir(parents=True)
        env.update(
            SM_MODEL_DIR=str(model_dir),
            SM_OUTPUT_DATA_DIR=str(output_dir),
            SM_NUM_GPUS="0",
            SM_CURRENT_HOST="algo-1",
        )
        arguments = [
            self.map_argument(job_dir, a)
            for a in hyperparameters_to_cli_args(args.get("HyperParameters", {}))
        ]
        self.run_command(
            step_name,
            job_command(source["entry_script"], arguments),
            cwd=code_dir,
            env=env,
            log=job_dir / LOG_FILE,
        )
        if local_checkpoints is not None:
            # Moved, not copied: the job's storage ends with the job, as on SageMaker, and a
            # full fine-tune's checkpoints (optimizer state included) are not kept twice.
            self.mirror.move_in(local_checkpoints, checkpoint["S3Uri"])
        output_path = args["OutputDataConfig"]["S3OutputPath"].rstrip("/")
        artifact = f"{output_path}/{job_name}/output/model.tar.gz"
        archive = self.mirror.path(artifact)
        archive.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "w:gz", compresslevel=1) as tar:  # speed over size, locally
            for path in sorted(model_dir.iterdir()):
                tar.add(path, arcname=path.name)
        return JobResult(
            {"ModelArtifacts.S3ModelArtifacts": artifact, "TrainingJobName": job_name},
            {"model": model_dir},
        )
