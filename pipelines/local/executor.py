"""Run a pipeline definition on this machine: the same JSON the cloud runs, step by step.

SageMaker's local mode needs Docker and cannot run model registration; this executor runs
every step type the project's pipeline uses, in definition order, following condition
branches. Expressions resolve in `expressions`, jobs run in `jobs`, S3 is a folder
(`s3_mirror`), registration writes to a local registry, and Lambda steps call the same
functions the cloud deploys (`pipelines.functions`), handed in by ARN. Step caching follows
SageMaker's cache key (`step_cache`), so a second run over one mirror behaves as a second
execution would. Anything it does not implement stops the run with
`UnsupportedConstructError`, never a silent skip.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.definition.service_rules import RequestRuleError, check_job
from pipelines.functions.registered_adapter import adapter_location
from pipelines.local.errors import MissingInputError, StepFailedError, UnsupportedConstructError
from pipelines.local.expressions import Scope, as_text, typed_parameter
from pipelines.local.jobs import JobResult, JobRunner
from pipelines.local.s3_mirror import S3Mirror
from pipelines.local.step_cache import StepCache, cache_key
from pipelines.registry import ModelVersion, Registration, Registry
from training_scripts import contracts

# What fails a step, as the service would fail it: a job that exits non-zero, a missing input,
# a request the service refuses, an output file that breaks its contract.
STEP_FAILURES = (StepFailedError, MissingInputError, RequestRuleError, contracts.ContractError)
# A Lambda step's function: its resolved arguments in, its output parameters out.
Function = Callable[[dict[str, Any]], dict[str, Any]]
_OUTPUT_PROPERTY = re.compile(r"ProcessingOutputConfig\.Outputs\['(\w+)'\]\.S3Output\.S3Uri")


@dataclass
class StepRecord:
    name: str
    type: str
    status: str
    seconds: float = 0.0
    detail: str = ""


@dataclass(frozen=True)
class PropertyFileRecord:
    step: str
    name: str
    path: Path  # the file in the job's output folder
    document: dict[str, Any]


@dataclass
class RunResult:
    status: str  # Succeeded | Failed
    execution_id: str = ""
    steps: list[StepRecord] = field(default_factory=list)
    property_files: list[PropertyFileRecord] = field(default_factory=list)
    registered: ModelVersion | None = None
    failure: str = ""


class LocalExecutor:
    def __init__(
        self,
        definition: dict[str, Any],
        *,
        mirror: S3Mirror,
        jobs_root: Path,
        registry: Registry,
        parameters: dict[str, Any] | None = None,
        pipeline_name: str = "local-pipeline",
        functions: dict[str, Function] | None = None,
        cache: StepCache | None = None,
        log: Callable[[str], None] = print,
        worth_showing: Callable[[str], bool] = lambda line: False,
    ) -> None:
        self.definition = definition
        self.mirror = mirror
        self.registry = registry
        self.functions = functions or {}
        self.cache = cache
        self.log = log
        # Unique like the service's: two runs started in the same second stay apart.
        execution_id = f"local-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.execution_id = execution_id
        self.jobs = JobRunner(mirror, jobs_root / execution_id, execution_id, log, worth_showing)
        declared = {p["Name"]: p for p in definition.get("Parameters", [])}
        unknown = sorted(set(parameters or {}) - set(declared))
        if unknown:
            raise UnsupportedConstructError(
                f"unknown pipeline parameters {unknown}; the definition declares {sorted(declared)}"
            )
        values = {name: p.get("DefaultValue") for name, p in declared.items()}
        for name, value in (parameters or {}).items():
            values[name] = typed_parameter(declared[name], value)
        self.scope = Scope(
            parameters=values,
            execution={
                "PipelineExecutionId": execution_id,
                "PipelineName": pipeline_name,
                "PipelineExecutionArn": f"local:{execution_id}",
            },
        )
        self.result = RunResult(status="Succeeded", execution_id=execution_id)

    # --- steps ----------------------------------------------------------------------------------

    def record_job(self, step: dict[str, Any], job: JobResult) -> None:
        name = step["Name"]
        self.scope.properties[name] = job.properties
        for spec in step.get("PropertyFiles", []):
            path = job.outputs[spec["OutputName"]] / spec["FilePath"]
            if not path.is_file():
                raise StepFailedError(
                    f"step {name} did not write its property file {spec['FilePath']}"
                )
            document = json.loads(path.read_text(encoding="utf-8"))
            self.scope.property_files[f"{name}.{spec['PropertyFileName']}"] = document
            self.result.property_files.append(
                PropertyFileRecord(name, spec["PropertyFileName"], path, document)
            )

    def run_job(self, step: dict[str, Any], record: StepRecord) -> None:
        """A processing or training job, or the earlier run's job when the cache has one."""
        name, kind = step["Name"], step["Type"]
        request = self.scope.resolve(step["Arguments"])
        check_job(kind, name, request)  # the service validates before it looks at its cache
        caching = step.get("CacheConfig", {})
        key = cache_key(kind, request)
        if self.cache is not None and caching.get("Enabled"):
            hit = self.cache.lookup(name, key, caching.get("ExpireAfter", "P30D"))
            if hit is not None:
                record.detail = f"cache hit: the job of {hit.execution_id}"
                self.log(f"  {name}: {record.detail}")
                outputs = {
                    match[1]: self.mirror.path(uri)
                    for prop, uri in hit.properties.items()
                    if (match := _OUTPUT_PROPERTY.fullmatch(prop))
                }
                self.record_job(step, JobResult(hit.properties, outputs))
                return
        run = self.jobs.processing if kind == "Processing" else self.jobs.training
        job = run(name, request)
        self.record_job(step, job)
        if self.cache is not None and caching.get("Enabled"):
            self.cache.store(name, key, self.execution_id, job.properties)

    def call_function(self, step: dict[str, Any], record: StepRecord) -> None:
        """A Lambda step: the function behind its ARN, with its resolved arguments."""
        name, arn = step["Name"], step["FunctionArn"]
        function = self.functions.get(arn)
        if function is None:
            raise UnsupportedConstructError(f"step {name}: no local function for {arn}")
        try:
            outputs = function(self.scope.resolve(step.get("Arguments", {})))
        except Exception as err:  # a function error fails the step, as the service reports it
            raise StepFailedError(f"step {name} failed: {err}") from err
        declared = [o["OutputName"] for o in step.get("OutputParameters", [])]
        missing = [o for o in declared if o not in outputs]
        if missing:
            raise StepFailedError(f"step {name}: the function returned no {missing}")
        self.scope.properties[name] = {f"OutputParameters['{o}']": outputs[o] for o in declared}
        message = outputs.get("Message")
        record.detail = (
            str(message) if message else ", ".join(f"{o}={outputs[o]}" for o in declared)
        )
        self.log(f"  {name}: {record.detail}")

    def register(self, step: dict[str, Any]) -> ModelVersion:
        args = self.scope.resolve(step["Arguments"])
        check_job(step["Type"], step["Name"], args)
        containers = args["InferenceSpecification"]["Containers"]
        statistics = args.get("ModelMetrics", {}).get("ModelQuality", {}).get("Statistics", {})
        evaluation_uri = statistics.get("S3Uri")
        evaluation = (
            contracts.EVALUATION.read(self.mirror.path(evaluation_uri)) if evaluation_uri else None
        )
        version = self.registry.register(
            Registration(
                group=args["ModelPackageGroupName"],
                model_data_url=adapter_location(containers[0]),
                status=args.get("ModelApprovalStatus", "PendingManualApproval"),
                metadata={k: str(v) for k, v in args.get("CustomerMetadataProperties", {}).items()},
                evaluation_uri=evaluation_uri,
                evaluation=evaluation,
                description=args.get("ModelPackageDescription", ""),
                inference_specification=args["InferenceSpecification"],
                model_card=args.get("ModelCard"),
                artifact_root=str(self.mirror.root),
            )
        )
        self.scope.properties[step["Name"]] = {"ModelPackageArn": version.arn}
        return version

    def run_step(self, step: dict[str, Any], record: StepRecord) -> list[dict[str, Any]]:
        """Run one step; returns the steps of the branch a condition step chose."""
        name, kind = step["Name"], step["Type"]
        if kind in ("Processing", "Training"):
            self.run_job(step, record)
        elif kind == "Lambda":
            self.call_function(step, record)
        elif kind == "RegisterModel":
            registered = self.register(step)
            self.result.registered = registered
            record.detail = f"version {registered.version} ({registered.status})"
        elif kind == "Condition":
            outcome = self.scope.all_hold(step["Arguments"]["Conditions"])
            self.scope.properties[name] = {"Outcome": outcome}
            branch = step["Arguments"]["IfSteps" if outcome else "ElseSteps"]
            record.detail = f"outcome {outcome}"
            self.log(
                f"  {name}: {str(outcome).lower()} -> {[s['Name'] for s in branch] or 'nothing'}"
            )
            return branch
        elif kind == "Fail":
            message = as_text(self.scope.resolve(step["Arguments"].get("ErrorMessage", "")))
            record.status, record.detail = "Failed", message
            self.result.status, self.result.failure = "Failed", f"{name}: {message}"
            self.log(f"  {name}: {message}")
        else:
            raise UnsupportedConstructError(
                f"step {name}: type {kind} is not supported by the local runner"
            )
        return []

    # --- the run ----------------------------------------------------------------------------------

    def execute(self, observer_environment: dict[str, str] | None = None) -> RunResult:
        """Run the definition; `observer_environment` is set in every job's environment by
        the runner itself, so it is no input of any step (no cache key)."""
        self.jobs = dataclasses.replace(
            self.jobs, observer_environment=dict(observer_environment or {})
        )
        try:
            self.run_steps(self.definition["Steps"])
        except STEP_FAILURES as err:
            self.result.status, self.result.failure = "Failed", str(err)
        return self.result

    def run_steps(self, steps: list[dict[str, Any]]) -> None:
        for step in steps:
            if self.result.status == "Failed":
                return
            self.log(f"▶ {step['Name']} ({step['Type']})")
            record = StepRecord(step["Name"], step["Type"], "Succeeded")
            self.result.steps.append(record)
            started = time.perf_counter()
            try:
                branch = self.run_step(step, record)
            except STEP_FAILURES:
                record.status = "Failed"
                raise
            finally:
                record.seconds = time.perf_counter() - started
            if step["Type"] == "Condition":
                self.run_steps(branch)
            elif record.status == "Succeeded":
                self.log(f"  {step['Name']}: done in {record.seconds:.1f}s")
