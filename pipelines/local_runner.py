"""Run a pipeline definition on this machine: the same JSON the cloud runs, interpreted.

SageMaker's local mode needs Docker and cannot run model registration; this executor runs
every step type the project's pipeline uses. It reads the definition, resolves parameters,
property references, `Std:Join`, `Std:JsonGet` and execution variables, and runs each job's
entry point from the staged code artifact (`sourcedir.tar.gz`, as the job would) in a
subprocess with SageMaker's environment variables and paths mapped into a run folder. S3
URIs map to `<run>/s3/<bucket>/<key>`. Registration writes to a local registry. Anything the
executor does not implement stops the run with `UnsupportedConstructError`, never a silent skip.

What differs from the cloud, by design: the job's `pip install -r requirements.txt` is not
run (this venv holds the same pins; a test keeps them equal), torchrun starts one process on
the CPU, and step caching is off.
"""

from __future__ import annotations

import json
import operator
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.registry import LocalRegistry, ModelVersion, Registration

CONTAINER_ROOT = "/opt/ml/"


class UnsupportedConstructError(Exception):
    """The definition uses something this executor does not implement."""


class StepFailedError(Exception):
    """A step's job exited non-zero; the message carries the job's own last error line."""


@dataclass
class StepRecord:
    name: str
    type: str
    status: str
    seconds: float = 0.0
    detail: str = ""


@dataclass
class RunResult:
    status: str  # Succeeded | Failed
    steps: list[StepRecord] = field(default_factory=list)
    evaluation: dict[str, Any] | None = None
    evaluation_path: Path | None = None
    registered: ModelVersion | None = None
    failure: str = ""


def _s3_parts(uri: str) -> tuple[str, str]:
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise UnsupportedConstructError(f"expected an s3:// URI, got {uri!r}")
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _number(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "Equals": operator.eq,
    "GreaterThan": operator.gt,
    "GreaterThanOrEqualTo": operator.ge,
    "LessThan": operator.lt,
    "LessThanOrEqualTo": operator.le,
}


class LocalExecutor:
    def __init__(
        self,
        definition: dict[str, Any],
        *,
        run_dir: Path,
        registry: LocalRegistry,
        parameters: dict[str, Any] | None = None,
        pipeline_name: str = "local-pipeline",
        log: Callable[[str], None] = print,
    ) -> None:
        self.definition = definition
        self.run_dir = run_dir
        self.s3_root = run_dir / "s3"
        self.registry = registry
        self.log = log
        self.pipeline_name = pipeline_name
        self.execution_id = f"local-{time.strftime('%Y%m%d-%H%M%S')}"
        declared = {p["Name"]: p for p in definition.get("Parameters", [])}
        unknown = sorted(set(parameters or {}) - set(declared))
        if unknown:
            raise UnsupportedConstructError(
                f"unknown pipeline parameters {unknown}; the definition declares {sorted(declared)}"
            )
        self.parameters = {name: p.get("DefaultValue") for name, p in declared.items()}
        for name, value in (parameters or {}).items():
            self.parameters[name] = self._typed(declared[name], value)
        self.properties: dict[str, dict[str, Any]] = {}
        self.property_files: dict[str, dict[str, Any]] = {}

    @staticmethod
    def _typed(declaration: dict[str, Any], value: Any) -> Any:
        kind = declaration["Type"]
        try:
            converted = {
                "Integer": int,
                "Float": float,
                "Boolean": lambda v: str(v).lower() == "true",
            }.get(kind, str)(value)
        except ValueError as err:
            raise UnsupportedConstructError(
                f"parameter {declaration['Name']} must be {kind}, got {value!r}"
            ) from err
        allowed = declaration.get("EnumValues")
        if allowed and converted not in allowed:
            raise UnsupportedConstructError(
                f"parameter {declaration['Name']} must be one of {allowed}, got {value!r}"
            )
        return converted

    # --- S3 mirror ----------------------------------------------------------------------------

    def local_path(self, uri: str) -> Path:
        bucket, key = _s3_parts(uri)
        return self.s3_root / bucket / key

    def put_assets(self, bucket: str, assets: dict[str, bytes]) -> None:
        for key, data in assets.items():
            path = self.s3_root / bucket / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    def download(self, uri: str, target: Path) -> None:
        """An S3Prefix input: the object itself, or every object under the prefix."""
        source = self.local_path(uri)
        target.mkdir(parents=True, exist_ok=True)
        if source.is_file():
            shutil.copy2(source, target / source.name)
        elif source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            raise StepFailedError(f"input {uri} does not exist (local mirror {source})")

    def upload(self, source: Path, uri: str) -> None:
        target = self.local_path(uri)
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        elif source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)

    # --- expressions --------------------------------------------------------------------------

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self.resolve(v) for v in node]
        if not isinstance(node, dict):
            return node
        if set(node) == {"Get"}:
            return self._get(node["Get"])
        if set(node) == {"Std:Join"}:
            return node["Std:Join"]["On"].join(
                self._text(self.resolve(v)) for v in node["Std:Join"]["Values"]
            )
        if set(node) == {"Std:JsonGet"}:
            return self._json_get(node["Std:JsonGet"])
        if len(node) == 1 and next(iter(node)).startswith("Std:"):
            raise UnsupportedConstructError(
                f"function {next(iter(node))} is not supported by the local runner"
            )
        return {k: self.resolve(v) for k, v in node.items()}

    @staticmethod
    def _text(value: Any) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        return str(value)

    def _get(self, reference: str) -> Any:
        head, _, rest = reference.partition(".")
        if head == "Parameters":
            return self.parameters[rest]
        if head == "Execution":
            values = {
                "PipelineExecutionId": self.execution_id,
                "PipelineName": self.pipeline_name,
                "PipelineExecutionArn": f"local:{self.execution_id}",
            }
            if rest not in values:
                raise UnsupportedConstructError(
                    f"execution variable {rest} is not supported by the local runner"
                )
            return values[rest]
        if head == "Steps":
            step, _, path = rest.partition(".")
            produced = self.properties.get(step)
            if produced is None:
                raise UnsupportedConstructError(
                    f"{reference}: step {step} has not run (steps run in definition order)"
                )
            if path not in produced:
                raise UnsupportedConstructError(
                    f"{reference}: the local runner does not produce property {path} of {step}"
                )
            return produced[path]
        raise UnsupportedConstructError(
            f"reference {reference} is not supported by the local runner"
        )

    def _json_get(self, spec: dict[str, Any]) -> Any:
        reference = (
            spec["PropertyFile"]["Get"]
            if isinstance(spec["PropertyFile"], dict)
            else spec["PropertyFile"]
        )
        match = re.fullmatch(r"Steps\.(\w+)\.PropertyFiles\.(\w+)", reference)
        if not match:
            raise UnsupportedConstructError(
                f"JsonGet on {reference} is not supported by the local runner"
            )
        document = self.property_files.get(f"{match[1]}.{match[2]}")
        if document is None:
            raise UnsupportedConstructError(f"property file {reference} was not produced")
        value: Any = document
        for part in re.findall(r"[^.\[\]]+", spec["Path"]):
            value = value[int(part)] if isinstance(value, list) else value[part]
        return value

    def condition(self, condition: dict[str, Any]) -> bool:
        kind = condition["Type"]
        if kind in COMPARISONS:
            left, right = (
                _number(self.resolve(condition["LeftValue"])),
                _number(self.resolve(condition["RightValue"])),
            )
            return COMPARISONS[kind](left, right)
        if kind == "Not":
            return not self.condition(condition["Expression"])
        if kind == "Or":
            return any(self.condition(c) for c in condition["Conditions"])
        if kind == "In":
            return self.resolve(condition["QueryValue"]) in self.resolve(condition["Values"])
        raise UnsupportedConstructError(
            f"condition type {kind} is not supported by the local runner"
        )

    # --- jobs ---------------------------------------------------------------------------------

    def _container(self, job_dir: Path, path: str) -> Path:
        if not path.startswith(CONTAINER_ROOT):
            raise UnsupportedConstructError(f"container path {path} is outside /opt/ml")
        return job_dir / "container" / path.removeprefix("/")

    def _map_argument(self, job_dir: Path, value: str) -> str:
        return str(self._container(job_dir, value)) if value.startswith(CONTAINER_ROOT) else value

    def _extract_code(self, archive_dir: Path, target: Path) -> None:
        archive = archive_dir / "sourcedir.tar.gz"
        if not archive.is_file():
            raise UnsupportedConstructError(
                f"no sourcedir.tar.gz in the code input ({archive_dir})"
            )
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")

    def _run(self, name: str, command: list[str], *, cwd: Path, env: dict[str, str]) -> None:
        import os

        self.log(f"  $ {' '.join(Path(c).name if i < 2 else c for i, c in enumerate(command))}")
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        tail: list[str] = []
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip()
            tail = [*tail[-40:], line]
            if self._worth_showing(line):
                self.log(f"  [{name}] {line}")
        if process.wait() != 0:
            errors = [t for t in tail if "error" in t.lower()]
            raise StepFailedError(f"step {name} failed: {(errors or tail or ['no output'])[-1]}")

    @staticmethod
    def _worth_showing(line: str) -> bool:
        """Progress and results, not library chatter."""
        return bool(re.match(r"\s*(\{'loss'|\{'train_runtime'|preprocess:|train:|evaluate:)", line))

    def run_processing(self, step: dict[str, Any]) -> None:
        name = step["Name"]
        args = self.resolve(step["Arguments"])
        job_dir = self.run_dir / "jobs" / name
        shutil.rmtree(job_dir, ignore_errors=True)
        inputs = {i["InputName"]: i["S3Input"] for i in args.get("ProcessingInputs", [])}
        for spec in inputs.values():
            self.download(spec["S3Uri"], self._container(job_dir, spec["LocalPath"]))
        if "code" not in inputs or "entrypoint" not in inputs:
            raise UnsupportedConstructError(
                f"step {name}: only FrameworkProcessor jobs (code + runproc.sh entrypoint) are supported locally"
            )
        code_dir = self._container(job_dir, inputs["code"]["LocalPath"])
        self._extract_code(code_dir, code_dir)
        runproc = (
            self._container(job_dir, inputs["entrypoint"]["LocalPath"]) / "runproc.sh"
        ).read_text()
        script = re.search(r'python3 (\S+\.py) "\$@"', runproc)
        if script is None:
            raise UnsupportedConstructError(
                f"step {name}: cannot find the script in its runproc.sh"
            )
        arguments = [
            self._map_argument(job_dir, str(a))
            for a in args["AppSpecification"].get("ContainerArguments", [])
        ]
        outputs = args.get("ProcessingOutputConfig", {}).get("Outputs", [])
        for output in outputs:
            self._container(job_dir, output["S3Output"]["LocalPath"]).mkdir(
                parents=True, exist_ok=True
            )
        self._run(
            name,
            [sys.executable, script[1], *arguments],
            cwd=code_dir,
            env={k: str(v) for k, v in args.get("Environment", {}).items()},
        )
        produced: dict[str, Any] = {"ProcessingJobName": f"{name.lower()}-{self.execution_id}"}
        local_outputs = {}
        for output in outputs:
            local = self._container(job_dir, output["S3Output"]["LocalPath"])
            self.upload(local, output["S3Output"]["S3Uri"])
            produced[f"ProcessingOutputConfig.Outputs['{output['OutputName']}'].S3Output.S3Uri"] = (
                output["S3Output"]["S3Uri"]
            )
            local_outputs[output["OutputName"]] = local
        self.properties[name] = produced
        for spec in step.get("PropertyFiles", []):
            path = local_outputs[spec["OutputName"]] / spec["FilePath"]
            self.property_files[f"{name}.{spec['PropertyFileName']}"] = json.loads(path.read_text())

    def run_training(self, step: dict[str, Any]) -> None:
        from sagemaker.train.container_drivers.common.utils import hyperparameters_to_cli_args

        name = step["Name"]
        args = self.resolve(step["Arguments"])
        job_name = f"{name.lower()}-{self.execution_id}"
        job_dir = self.run_dir / "jobs" / name
        shutil.rmtree(job_dir, ignore_errors=True)
        data_root = self._container(job_dir, "/opt/ml/input/data")
        env = {k: str(v) for k, v in args.get("Environment", {}).items()}
        for channel in args.get("InputDataConfig", []):
            target = data_root / channel["ChannelName"]
            self.download(channel["DataSource"]["S3DataSource"]["S3Uri"], target)
            env[f"SM_CHANNEL_{channel['ChannelName'].upper()}"] = str(target)
        code_dir = job_dir / "code"
        self._extract_code(data_root / "code", code_dir)
        source = json.loads((data_root / "sm_drivers" / "sourcecode.json").read_text())
        if not source.get("entry_script"):
            raise UnsupportedConstructError(
                f"step {name}: only entry-script training jobs are supported locally"
            )
        checkpoint = args.get("CheckpointConfig")
        if checkpoint:
            local_checkpoints = self._container(job_dir, checkpoint["LocalPath"])
            if self.local_path(checkpoint["S3Uri"]).exists():
                self.download(
                    checkpoint["S3Uri"], local_checkpoints
                )  # what SageMaker restores on a restart
        model_dir = self._container(job_dir, "/opt/ml/model")
        output_dir = self._container(job_dir, "/opt/ml/output/data")
        model_dir.mkdir(parents=True)
        output_dir.mkdir(parents=True)
        env.update(
            SM_MODEL_DIR=str(model_dir),
            SM_OUTPUT_DATA_DIR=str(output_dir),
            SM_NUM_GPUS="0",
            SM_CURRENT_HOST="algo-1",
        )
        arguments = [
            self._map_argument(job_dir, a)
            for a in hyperparameters_to_cli_args(args.get("HyperParameters", {}))
        ]
        self._run(name, [sys.executable, source["entry_script"], *arguments], cwd=code_dir, env=env)
        if checkpoint:
            self.upload(local_checkpoints, checkpoint["S3Uri"])
        artifact = (
            f"{args['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{job_name}/output/model.tar.gz"
        )
        archive = self.local_path(artifact)
        archive.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "w:gz", compresslevel=1) as tar:  # speed over size, locally
            for path in sorted(model_dir.iterdir()):
                tar.add(path, arcname=path.name)
        self.properties[name] = {
            "ModelArtifacts.S3ModelArtifacts": artifact,
            "TrainingJobName": job_name,
        }

    def run_register(self, step: dict[str, Any]) -> ModelVersion:
        args = self.resolve(step["Arguments"])
        containers = args["InferenceSpecification"]["Containers"]
        statistics = args.get("ModelMetrics", {}).get("ModelQuality", {}).get("Statistics", {})
        evaluation_uri = statistics.get("S3Uri")
        evaluation = (
            json.loads(self.local_path(evaluation_uri).read_text()) if evaluation_uri else None
        )
        version = self.registry.register(
            Registration(
                group=args["ModelPackageGroupName"],
                model_data_url=containers[0]["ModelDataUrl"],
                status=args.get("ModelApprovalStatus", "PendingManualApproval"),
                metadata={k: str(v) for k, v in args.get("CustomerMetadataProperties", {}).items()},
                evaluation_uri=evaluation_uri,
                evaluation=evaluation,
                description=args.get("ModelPackageDescription", ""),
                inference_specification=args["InferenceSpecification"],
            )
        )
        self.properties[step["Name"]] = {"ModelPackageArn": version.arn}
        return version

    # --- the run ------------------------------------------------------------------------------

    def execute(self) -> RunResult:
        result = RunResult(status="Succeeded")
        try:
            self._execute_steps(self.definition["Steps"], result)
        except StepFailedError as err:
            result.status, result.failure = "Failed", str(err)
        for key, document in self.property_files.items():
            if key.split(".")[1].startswith("EvaluationReport"):
                result.evaluation = document
        return result

    def _execute_steps(self, steps: list[dict[str, Any]], result: RunResult) -> None:
        for step in steps:
            if result.status == "Failed":
                return
            name, kind = step["Name"], step["Type"]
            self.log(f"▶ {name} ({kind})")
            started = time.perf_counter()
            record = StepRecord(name, kind, "Succeeded")
            result.steps.append(record)
            try:
                if kind == "Processing":
                    self.run_processing(step)
                elif kind == "Training":
                    self.run_training(step)
                elif kind == "RegisterModel":
                    result.registered = self.run_register(step)
                    record.detail = (
                        f"version {result.registered.version} ({result.registered.status})"
                    )
                elif kind == "Condition":
                    outcome = all(self.condition(c) for c in step["Arguments"]["Conditions"])
                    record.detail = f"outcome {outcome}"
                    self.properties[name] = {"Outcome": outcome}
                    branch = step["Arguments"]["IfSteps" if outcome else "ElseSteps"]
                    record.seconds = time.perf_counter() - started
                    self.log(
                        f"  {name}: {str(outcome).lower()} -> {[s['Name'] for s in branch] or 'nothing'}"
                    )
                    self._execute_steps(branch, result)
                    continue
                elif kind == "Fail":
                    message = self._text(self.resolve(step["Arguments"].get("ErrorMessage", "")))
                    record.status, record.detail = "Failed", message
                    result.status, result.failure = "Failed", f"{name}: {message}"
                    self.log(f"  {name}: {message}")
                    return
                else:
                    raise UnsupportedConstructError(
                        f"step {name}: type {kind} is not supported by the local runner"
                    )
            except StepFailedError:
                record.status = "Failed"
                record.seconds = time.perf_counter() - started
                raise
            record.seconds = time.perf_counter() - started
            self.log(f"  {name}: done in {record.seconds:.1f}s")
