"""The local executor over a definition with no job (pipelines/local/executor.py): parameters
typed and defaulted, a Lambda step's function called with its resolved arguments, a condition
choosing its branch, registration into the local registry, a Fail step's message, and each
failure named by its step. The jobs themselves are the integration tests' (a run per test)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from pipelines.local.errors import UnsupportedConstructError
from pipelines.local.executor import LocalExecutor
from pipelines.local.jobs import JobResult
from pipelines.local.s3_mirror import S3Mirror
from pipelines.local.step_cache import CacheHit
from pipelines.registry import LocalRegistry

RUN = {"Get": "Execution.PipelineExecutionId"}
REGISTER = {
    "Name": "Register",
    "Type": "RegisterModel",
    "Arguments": {
        "ModelPackageGroupName": "adapters",
        "ModelApprovalStatus": "PendingManualApproval",
        "ModelPackageDescription": {"Std:Join": {"On": " ", "Values": ["rank", {"Get": "Parameters.LoraRank"}]}},
        "CustomerMetadataProperties": {"lora_r": {"Get": "Parameters.LoraRank"}, "label": {"Get": "Parameters.Label"}},
        "InferenceSpecification": {
            "Containers": [{"Image": "lmi", "ModelDataUrl": "s3://bucket/runs/model.tar.gz"}],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
    },
}  # fmt: skip
FAIL = {
    "Name": "Refuse",
    "Type": "Fail",
    "Arguments": {"ErrorMessage": {"Std:Join": {"On": " ", "Values": [
        "rank", {"Get": "Parameters.LoraRank"}, "refused:", {"Get": "Steps.Check.OutputParameters['Message']"},
        "strict", {"Get": "Parameters.Strict"},
    ]}}},
}  # fmt: skip
DEFINITION = {
    "Version": "2020-12-01",
    "Parameters": [
        {"Name": "LoraRank", "Type": "Integer", "DefaultValue": 16},
        {"Name": "Strict", "Type": "Boolean", "DefaultValue": False},
        {"Name": "Label", "Type": "String", "DefaultValue": "weekly"},
    ],
    "Steps": [
        {
            "Name": "Check",
            "Type": "Lambda",
            "FunctionArn": "arn:aws:lambda:us-east-1:111122223333:function:check",
            "Arguments": {"Rank": {"Get": "Parameters.LoraRank"}, "Run": RUN,
                          "Pipeline": {"Get": "Execution.PipelineName"}},
            "OutputParameters": [{"OutputName": "Passed"}, {"OutputName": "Message"}],
        },
        {
            "Name": "Decide",
            "Type": "Condition",
            "Arguments": {
                "Conditions": [{"Type": "Equals", "RightValue": True,
                                "LeftValue": {"Get": "Steps.Check.OutputParameters['Passed']"}}],
                "IfSteps": [REGISTER],
                "ElseSteps": [FAIL],
            },
        },
    ],
}  # fmt: skip
CHECK = "arn:aws:lambda:us-east-1:111122223333:function:check"
CLUSTER = {
    "ProcessingResources": {
        "ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge", "VolumeSizeInGB": 30}
    }
}


def executor(
    tmp_path: Path, parameters: dict[str, Any] | None = None, **overrides: Any
) -> tuple[LocalExecutor, list[dict[str, Any]]]:
    """An executor whose check function passes ranks up to 32, and the arguments it got."""
    calls: list[dict[str, Any]] = []

    def check(arguments: dict[str, Any]) -> dict[str, Any]:
        calls.append(arguments)
        passed = arguments["Rank"] <= 32
        return {"Passed": passed, "Message": "fits" if passed else "too large"}

    definition = overrides.pop("definition", DEFINITION)
    options: dict[str, Any] = {
        "mirror": S3Mirror(tmp_path / "s3"), "jobs_root": tmp_path / "jobs",
        "registry": LocalRegistry(tmp_path / "registry.sqlite", "adapters"),
        "parameters": parameters, "pipeline_name": "peftops-dev", "functions": {CHECK: check},
        "log": lambda line: None,
    } | overrides  # fmt: skip
    return LocalExecutor(definition, **options), calls


def test_a_passing_check_registers_with_the_parameters_resolved(tmp_path: Path) -> None:
    run, calls = executor(tmp_path, {"LoraRank": "8"})  # as the CLI passes it: text
    result = run.execute()
    assert result.status == "Succeeded" and result.failure == ""
    assert re.fullmatch(r"local-\d{8}-\d{6}-[0-9a-f]{6}", result.execution_id)
    assert calls == [{"Rank": 8, "Run": result.execution_id, "Pipeline": "peftops-dev"}]
    assert [(s.name, s.type, s.status, s.detail) for s in result.steps] == [
        ("Check", "Lambda", "Succeeded", "fits"),
        ("Decide", "Condition", "Succeeded", "outcome True"),
        ("Register", "RegisterModel", "Succeeded", "version 1 (PendingManualApproval)"),
    ]
    registered = result.registered
    assert registered is not None and registered.version == 1
    assert (registered.description, registered.metadata) == (
        "rank 8",
        {"lora_r": "8", "label": "weekly"},
    )
    assert registered.model_data_url == "s3://bucket/runs/model.tar.gz"
    assert registered.artifact_root == str(tmp_path / "s3")
    assert run.scope.properties["Register"] == {"ModelPackageArn": registered.arn}


def test_a_failing_check_takes_the_else_branch_and_fails_with_its_message(tmp_path: Path) -> None:
    run, _ = executor(tmp_path, {"LoraRank": 64, "Strict": "true"})
    result = run.execute()
    message = "rank 64 refused: too large strict true"
    assert (result.status, result.failure, result.registered) == (
        "Failed",
        f"Refuse: {message}",
        None,
    )
    assert [(s.name, s.status, s.detail) for s in result.steps] == [
        ("Check", "Succeeded", "too large"),
        ("Decide", "Succeeded", "outcome False"),
        ("Refuse", "Failed", message),
    ]


def test_defaults_stand_for_parameters_not_given(tmp_path: Path) -> None:
    run, calls = executor(tmp_path)
    assert run.execute().status == "Succeeded"
    assert calls[0]["Rank"] == 16
    assert run.scope.parameters == {"LoraRank": 16, "Strict": False, "Label": "weekly"}


def test_two_executors_of_one_definition_are_two_executions(tmp_path: Path) -> None:
    first, _ = executor(tmp_path)
    second, _ = executor(tmp_path)
    assert first.execution_id != second.execution_id
    assert first.scope.execution == {
        "PipelineExecutionId": first.execution_id,
        "PipelineName": "peftops-dev",
        "PipelineExecutionArn": f"local:{first.execution_id}",
    }
    assert (first.jobs.jobs_root, first.jobs.job_suffix) == (
        tmp_path / "jobs" / first.execution_id,
        first.execution_id,
    )


def failing(arguments: dict[str, Any]) -> dict[str, Any]:
    raise RuntimeError("the registry is unreachable")


@pytest.mark.parametrize(
    ("functions", "failure"),
    [
        ({CHECK: failing}, "step Check failed: the registry is unreachable"),
        ({CHECK: lambda arguments: {"Passed": True}}, "step Check: the function returned no ['Message']"),
    ],
)  # fmt: skip
def test_a_function_that_fails_or_returns_too_little_fails_its_step(
    tmp_path: Path, functions: dict[str, Any], failure: str
) -> None:
    run, _ = executor(tmp_path, functions=functions)
    result = run.execute()
    assert (result.status, result.failure) == ("Failed", failure)
    assert [(s.name, s.status) for s in result.steps] == [("Check", "Failed")]


def test_a_step_the_runner_does_not_know_stops_the_run_by_name(tmp_path: Path) -> None:
    unknown = DEFINITION | {"Steps": [{"Name": "Transform", "Type": "Transform", "Arguments": {}}]}
    run, _ = executor(tmp_path, definition=unknown)
    with pytest.raises(UnsupportedConstructError) as refused:
        run.execute()
    assert (
        str(refused.value) == "step Transform: type Transform is not supported by the local runner"
    )
    no_function = executor(tmp_path, functions={})[0]
    with pytest.raises(UnsupportedConstructError) as missing:
        no_function.execute()
    assert str(missing.value) == f"step Check: no local function for {CHECK}"


def test_a_processing_step_runs_its_job_reads_its_property_file_and_is_reused_from_the_cache(
    tmp_path: Path,
) -> None:
    """The same definition twice over one mirror and cache: the first execution runs the job
    and reads the report it wrote as its property file; the second reuses the first's job (its
    properties, its outputs where they are in the mirror) and reads the same report."""
    from pipelines.local.step_cache import StepCache, cache_key
    from tests.unit.test_local_job_layout import PROCESS, processing_request, stages_processing

    mirror = S3Mirror(tmp_path / "s3")
    stages_processing(mirror, PROCESS)
    step = {
        "Name": "Preprocess",
        "Type": "Processing",
        "Arguments": processing_request() | CLUSTER,
        "CacheConfig": {"Enabled": True, "ExpireAfter": "P1D"},
        "PropertyFiles": [
            {"PropertyFileName": "Seen", "OutputName": "report", "FilePath": "seen.json"}
        ],
    }
    gate = {
        "Name": "Seen",
        "Type": "Condition",
        "Arguments": {
            "Conditions": [{"Type": "Equals", "RightValue": "dialogue-summary", "LeftValue": {
                "Std:JsonGet": {"PropertyFile": {"Get": "Steps.Preprocess.PropertyFiles.Seen"},
                                "Path": "env"}}}],
            "IfSteps": [],
            "ElseSteps": [{"Name": "Stop", "Type": "Fail", "Arguments": {"ErrorMessage": "no"}}],
        },
    }  # fmt: skip
    definition = {"Version": "2020-12-01", "Parameters": [], "Steps": [step, gate]}
    cache = StepCache(tmp_path / "cache", "peftops-dev")
    runs = [
        executor(tmp_path, definition=definition, mirror=mirror, cache=cache)[0].execute()
        for _ in range(2)
    ]
    first, second = runs
    assert [r.status for r in runs] == ["Succeeded", "Succeeded"]
    assert first.steps[0].detail == ""
    assert second.steps[0].detail == f"cache hit: the job of {first.execution_id}"
    job_name = f"preprocess-{first.execution_id}"
    for run in runs:
        (report,) = run.property_files
        assert (report.step, report.name, report.document["env"]) == (
            "Preprocess", "Seen", "dialogue-summary",
        )  # fmt: skip
    assert first.property_files[0].path.parent == (
        tmp_path / "jobs" / first.execution_id / "Preprocess" / "container" / "opt" / "ml"
        / "processing" / "output" / "report"
    )  # fmt: skip
    assert second.property_files[0].path == mirror.path("s3://bucket/runs/report/seen.json")
    assert not (tmp_path / "jobs" / second.execution_id / "Preprocess").exists()
    hit = cache.lookup("Preprocess", cache_key("Processing", step["Arguments"]), "P1D")
    assert hit is not None and hit.properties["ProcessingJobName"] == job_name


def test_a_job_that_writes_no_property_file_fails_its_step(tmp_path: Path) -> None:
    from tests.unit.test_local_job_layout import PROCESS, processing_request, stages_processing

    mirror = S3Mirror(tmp_path / "s3")
    stages_processing(mirror, PROCESS)
    step = {
        "Name": "Preprocess",
        "Type": "Processing",
        "Arguments": processing_request() | CLUSTER,
        "PropertyFiles": [
            {"PropertyFileName": "Report", "OutputName": "report", "FilePath": "report.json"}
        ],
    }
    definition = {"Version": "2020-12-01", "Parameters": [], "Steps": [step]}
    result = executor(tmp_path, definition=definition, mirror=mirror)[0].execute()
    assert (result.status, result.failure) == (
        "Failed",
        "step Preprocess did not write its property file report.json",
    )
    assert [(s.name, s.status) for s in result.steps] == [("Preprocess", "Failed")]


def lambda_only(step: dict[str, Any]) -> dict[str, Any]:
    return DEFINITION | {"Steps": [step]}


@pytest.mark.parametrize(
    ("declared", "returned", "detail", "properties"),
    [
        (["Passed", "Message"], {"Passed": True, "Message": "fits"}, "fits",
         {"OutputParameters['Passed']": True, "OutputParameters['Message']": "fits"}),
        # Without a message, the detail is what the step declared, in its order.
        (["Version", "Uri"], {"Uri": "s3://b/k", "Version": 7, "Extra": 1}, "Version=7, Uri=s3://b/k",
         {"OutputParameters['Version']": 7, "OutputParameters['Uri']": "s3://b/k"}),
        (["Passed"], {"Passed": False, "Message": ""}, "Passed=False",
         {"OutputParameters['Passed']": False}),
        (None, {"Anything": 1}, "", {}),  # a step that declares no outputs
    ],
)  # fmt: skip
def test_a_functions_outputs_are_the_declared_ones_and_its_detail_its_message(
    tmp_path: Path, declared: list[str] | None, returned: dict, detail: str, properties: dict
) -> None:
    got: list[Any] = []
    step: dict[str, Any] = {"Name": "Look", "Type": "Lambda", "FunctionArn": CHECK}
    if declared is not None:
        step["OutputParameters"] = [{"OutputName": name} for name in declared]
    lines: list[str] = []
    run, _ = executor(
        tmp_path,
        definition=lambda_only(step),
        functions={CHECK: lambda arguments: got.append(arguments) or returned},
        log=lines.append,
    )
    result = run.execute()
    assert result.status == "Succeeded"
    assert got == [{}]  # a step without arguments: the function gets an empty event
    assert [(s.name, s.detail) for s in result.steps] == [("Look", detail)]
    assert run.scope.properties["Look"] == properties
    assert f"  Look: {detail}" in lines


def test_a_registration_the_service_would_refuse_fails_its_step_and_registers_nothing(
    tmp_path: Path,
) -> None:
    """The request is checked as resolved: a parameter makes a metadata value too long."""
    run, _ = executor(tmp_path, {"Label": "x" * 257})
    result = run.execute()
    assert (result.status, result.registered) == ("Failed", None)
    assert result.failure == (
        "Register: CustomerMetadataProperties['label'] is 257 characters; "
        "the service takes at most 256"
    )
    assert [(s.name, s.status) for s in result.steps][-1] == ("Register", "Failed")
    assert not (tmp_path / "registry.sqlite").exists()


def test_a_registration_with_model_metrics_carries_the_evaluation_they_name(
    tmp_path: Path,
) -> None:
    from tests.unit.test_scoring import reviewed_evaluation
    from training_scripts import contracts

    document = reviewed_evaluation()[0]
    mirror = S3Mirror(tmp_path / "s3")
    evaluation_uri = "s3://bucket/runs/evaluation/evaluation.json"
    contracts.EVALUATION.write(mirror.path(evaluation_uri).parent, document)
    metrics = {
        "ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": evaluation_uri}}
    }
    register = REGISTER | {"Arguments": REGISTER["Arguments"] | {"ModelMetrics": metrics}}
    decide = DEFINITION["Steps"][1]
    with_metrics = DEFINITION | {
        "Steps": [
            DEFINITION["Steps"][0],
            decide | {"Arguments": decide["Arguments"] | {"IfSteps": [register]}},
        ]
    }
    run, _ = executor(tmp_path, definition=with_metrics, mirror=mirror)
    registered = run.execute().registered
    assert registered is not None
    assert registered.evaluation_uri == evaluation_uri
    assert registered.evaluation == contracts.EVALUATION.read(mirror.path(evaluation_uri))
    assert registered.evaluation["models"] == document["models"]
    without, _ = executor(tmp_path / "plain")
    plain = without.execute().registered
    assert plain is not None and (plain.evaluation_uri, plain.evaluation) == (None, None)


@dataclasses.dataclass
class RecordedJobs:
    """The executor's job runner, recorded: which runner each job went to, with what request
    (the jobs themselves are test_local_training_job's and test_local_job_layout's)."""

    ran: list[tuple[str, str, dict[str, Any]]] = dataclasses.field(default_factory=list)
    observer_environment: dict[str, str] = dataclasses.field(default_factory=dict)

    def processing(self, name: str, request: dict[str, Any]) -> JobResult:
        self.ran.append(("processing", name, request))
        return JobResult({"ProcessingJobName": f"{name.lower()}-job"})

    def training(self, name: str, request: dict[str, Any]) -> JobResult:
        self.ran.append(("training", name, request))
        return JobResult({"TrainingJobName": f"{name.lower()}-job"})


@dataclasses.dataclass
class RecordedCache:
    """A step cache that answers `hit` and records each lookup and store."""

    hit: CacheHit | None = None
    calls: list[tuple] = dataclasses.field(default_factory=list)

    def lookup(self, step: str, key: str, expire_after: str) -> CacheHit | None:
        self.calls.append(("lookup", step, key, expire_after))
        return self.hit

    def store(self, step: str, key: str, execution_id: str, properties: dict) -> None:
        self.calls.append(("store", step, key, execution_id, properties))


def job_step(kind: str, **extra: Any) -> dict[str, Any]:
    """A job step whose request the service takes; a parameter in its hyperparameters (a
    training job) or its environment (a processing job)."""
    field = "HyperParameters" if kind == "Training" else "Environment"
    resources = (
        {"ResourceConfig": CLUSTER["ProcessingResources"]["ClusterConfig"]}
        if kind == "Training"
        else CLUSTER
    )
    arguments = {field: {"rank": {"Get": "Parameters.LoraRank"}}} | resources
    return {"Name": "Job", "Type": kind, "Arguments": arguments} | extra


def with_recorded_jobs(run: LocalExecutor) -> RecordedJobs:
    run.jobs = RecordedJobs()  # type: ignore[assignment]
    return run.jobs  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("kind", "runner"), [("Processing", "processing"), ("Training", "training")]
)
def test_each_job_runs_on_its_kinds_runner_with_its_request_resolved(
    tmp_path: Path, kind: str, runner: str
) -> None:
    run, _ = executor(tmp_path, {"LoraRank": "8"}, definition=lambda_only(job_step(kind)))
    jobs = with_recorded_jobs(run)
    result = run.execute(observer_environment={"MLFLOW_TRACKING_URI": "sqlite:///t.db"})
    assert result.status == "Succeeded", result.failure
    field = "HyperParameters" if kind == "Training" else "Environment"
    assert [(r, name, request[field]) for r, name, request in jobs.ran] == [
        (runner, "Job", {"rank": 8})
    ]
    assert run.scope.properties["Job"] == {f"{kind}JobName": "job-job"}
    # The runner's own environment for every job, set once per execution.
    assert run.jobs.observer_environment == {"MLFLOW_TRACKING_URI": "sqlite:///t.db"}


@pytest.mark.parametrize(
    ("kind", "failure"),
    [
        ("Training", "Job: HyperParameters['rank'] is 2501 characters; the service takes at most 2500"),
        ("Processing", "Job: Environment['rank'] is 257 characters; the service takes at most 256"),
    ],
)  # fmt: skip
def test_a_job_request_the_service_would_refuse_fails_before_the_job_or_the_cache(
    tmp_path: Path, kind: str, failure: str
) -> None:
    cache = RecordedCache()
    too_long = "8" * (2501 if kind == "Training" else 257)
    step = job_step(kind, CacheConfig={"Enabled": True})
    field = "HyperParameters" if kind == "Training" else "Environment"
    step["Arguments"] = step["Arguments"] | {field: {"rank": too_long}}
    run, _ = executor(tmp_path, definition=lambda_only(step), cache=cache)
    jobs = with_recorded_jobs(run)
    result = run.execute()
    assert (result.status, result.failure) == ("Failed", failure)
    assert (jobs.ran, cache.calls) == ([], [])


@pytest.mark.parametrize(
    ("caching", "expiry"),
    [({"Enabled": True, "ExpireAfter": "P7D"}, "P7D"), ({"Enabled": True}, "P30D")],
)
def test_a_cached_step_looks_up_within_its_expiry_then_stores_its_job(
    tmp_path: Path, caching: dict, expiry: str
) -> None:
    from pipelines.local.step_cache import cache_key

    cache = RecordedCache()
    step = job_step("Training", CacheConfig=caching)
    run, _ = executor(tmp_path, definition=lambda_only(step), cache=cache)
    jobs = with_recorded_jobs(run)
    assert run.execute().status == "Succeeded"
    key = cache_key("Training", run.scope.resolve(step["Arguments"]))
    assert cache.calls == [
        ("lookup", "Job", key, expiry),
        ("store", "Job", key, run.execution_id, {"TrainingJobName": "job-job"}),
    ]
    assert len(jobs.ran) == 1


@pytest.mark.parametrize(
    ("caching", "cache"),
    [
        (None, RecordedCache(hit=CacheHit("local-old", {"TrainingJobName": "old"}))),
        ({"Enabled": False}, RecordedCache(hit=CacheHit("local-old", {"TrainingJobName": "old"}))),
        ({"Enabled": True}, None),  # a run without a cache (--no-cache)
    ],
)
def test_a_step_without_caching_or_a_run_without_a_cache_always_runs_its_job(
    tmp_path: Path, caching: dict | None, cache: RecordedCache | None
) -> None:
    step = job_step("Training", **({"CacheConfig": caching} if caching is not None else {}))
    run, _ = executor(tmp_path, definition=lambda_only(step), cache=cache)
    jobs = with_recorded_jobs(run)
    assert run.execute().status == "Succeeded"
    assert len(jobs.ran) == 1
    assert cache is None or cache.calls == []


def test_a_cache_hit_reuses_the_earlier_jobs_properties_and_runs_nothing(tmp_path: Path) -> None:
    earlier = {
        "TrainingJobName": "job-of-monday",
        "ModelArtifacts.S3ModelArtifacts": "s3://b/m.tar.gz",
    }
    cache = RecordedCache(hit=CacheHit("local-monday", earlier))
    lines: list[str] = []
    step = job_step("Training", CacheConfig={"Enabled": True})
    run, _ = executor(tmp_path, definition=lambda_only(step), cache=cache, log=lines.append)
    jobs = with_recorded_jobs(run)
    result = run.execute()
    assert jobs.ran == []
    assert [c[0] for c in cache.calls] == ["lookup"]
    assert result.steps[0].detail == "cache hit: the job of local-monday"
    assert "  Job: cache hit: the job of local-monday" in lines
    assert run.scope.properties["Job"] == earlier


@pytest.mark.parametrize(
    ("rank", "lines", "outcome"),
    [
        (8, ["  Check: fits", "  Decide: true -> ['Register']"], True),
        (64, ["  Check: too large", "  Decide: false -> ['Refuse']",
              "  Refuse: rank 64 refused: too large strict false"], False),
    ],
)  # fmt: skip
def test_a_conditions_outcome_is_its_property_and_its_branch_is_logged(
    tmp_path: Path, rank: int, lines: list[str], outcome: bool
) -> None:
    logged: list[str] = []
    run, _ = executor(tmp_path, {"LoraRank": rank}, log=logged.append)
    run.execute()
    assert run.scope.properties["Decide"] == {"Outcome": outcome}
    assert [line for line in logged if line.startswith("  ") and "done in" not in line] == lines


def test_an_empty_branch_logs_nothing_to_run_and_a_fail_step_without_a_message_fails_bare(
    tmp_path: Path,
) -> None:
    decide = DEFINITION["Steps"][1]
    arguments = decide["Arguments"] | {
        "IfSteps": [],
        "ElseSteps": [{"Name": "Stop", "Type": "Fail", "Arguments": {}}],
    }
    definition = DEFINITION | {"Steps": [DEFINITION["Steps"][0], decide | {"Arguments": arguments}]}
    for rank, line, status, failure in (
        (8, "  Decide: true -> nothing", "Succeeded", ""),
        (64, "  Decide: false -> ['Stop']", "Failed", "Stop: "),
    ):
        logged: list[str] = []
        run, _ = executor(tmp_path, {"LoraRank": rank}, definition=definition, log=logged.append)
        result = run.execute()
        assert line in logged
        assert (result.status, result.failure) == (status, failure)
    assert "  Stop: " in logged


def registering(arguments: dict[str, Any]) -> dict[str, Any]:
    """The definition with its RegisterModel step's arguments replaced."""
    decide = DEFINITION["Steps"][1]
    register = REGISTER | {"Arguments": arguments}
    branches = decide["Arguments"] | {"IfSteps": [register]}
    return DEFINITION | {"Steps": [DEFINITION["Steps"][0], decide | {"Arguments": branches}]}


CARD = {"ModelCardContent": '{"model_overview": {}}', "ModelCardStatus": "Draft"}


@pytest.mark.parametrize(
    ("extra", "removed", "registered"),
    [
        ({"ModelCard": CARD, "ModelApprovalStatus": "Approved"}, (),
         {"status": "Approved", "model_card": {"model_overview": {}}, "description": "rank 16",
          "metadata": {"lora_r": "16", "label": "weekly"}}),
        # What the request leaves out, the service's defaults.
        ({}, ("ModelApprovalStatus", "ModelPackageDescription", "CustomerMetadataProperties"),
         {"status": "PendingManualApproval", "model_card": None, "description": "",
          "metadata": {}}),
    ],
)  # fmt: skip
def test_a_registration_records_what_its_request_says_and_the_services_defaults(
    tmp_path: Path, extra: dict, removed: tuple[str, ...], registered: dict
) -> None:
    import json
    import sqlite3

    arguments = {k: v for k, v in REGISTER["Arguments"].items() if k not in removed} | extra
    run, _ = executor(tmp_path, definition=registering(arguments))
    version = run.execute().registered
    assert version is not None
    assert {k: getattr(version, k) for k in registered} == registered
    with sqlite3.connect(tmp_path / "registry.sqlite") as db:
        (stored,) = db.execute("SELECT inference_specification FROM model_versions").fetchone()
    assert json.loads(stored) == REGISTER["Arguments"]["InferenceSpecification"]


def test_a_run_stops_at_its_fail_step_and_logs_each_steps_time_only_when_it_succeeded(
    tmp_path: Path,
) -> None:
    refuse = {"Name": "Refuse", "Type": "Fail", "Arguments": {"ErrorMessage": "no"}}
    check = DEFINITION["Steps"][0]
    logged: list[str] = []
    run, calls = executor(
        tmp_path, definition=DEFINITION | {"Steps": [check, refuse, check | {"Name": "Again"}]},
        log=logged.append,
    )  # fmt: skip
    result = run.execute()
    assert len(calls) == 1  # the step after the Fail step never ran
    assert [s.name for s in result.steps] == ["Check", "Refuse"]
    assert [line.split(" in ")[0] for line in logged if " done in " in line] == ["  Check: done"]
    assert all(0 <= s.seconds < 60 for s in result.steps)


def test_a_definition_without_parameters_or_a_pipeline_name_runs(tmp_path: Path) -> None:
    check = DEFINITION["Steps"][0]
    bare = {"Version": "2020-12-01", "Steps": [check | {"Arguments": {"Rank": 4}}]}
    run = LocalExecutor(
        bare,
        mirror=S3Mirror(tmp_path / "s3"),
        jobs_root=tmp_path / "jobs",
        registry=LocalRegistry(tmp_path / "registry.sqlite", "adapters"),
        functions={CHECK: lambda arguments: {"Passed": True, "Message": "fits"}},
        log=lambda line: None,
    )
    assert run.execute().status == "Succeeded"
    assert run.scope.execution["PipelineName"] == "local-pipeline"


def test_a_jobs_command_and_its_noteworthy_lines_reach_the_runs_log(tmp_path: Path) -> None:
    from tests.unit.test_local_job_layout import PROCESS, processing_request, stages_processing

    mirror = S3Mirror(tmp_path / "s3")
    stages_processing(mirror, PROCESS)
    step = {"Name": "Preprocess", "Type": "Processing", "Arguments": processing_request() | CLUSTER}
    logged: list[str] = []
    run, _ = executor(
        tmp_path, definition={"Version": "2020-12-01", "Steps": [step]}, mirror=mirror,
        log=logged.append, worth_showing=lambda line: "worth" in line,
    )  # fmt: skip
    assert run.execute().status == "Succeeded"
    assert any(line.startswith("  $ ") and "job_process job.py" in line for line in logged)
    assert "  [Preprocess] worth it: 50%" in logged
    assert "  [Preprocess] progress line" not in logged
