"""The pipeline definition: its DAG, parameters, job security and resilience, validity against
the SageMaker API model, and agreement with the scripts' own argument parsers."""

from __future__ import annotations

import copy
import dataclasses
import functools
import io
import itertools
import json
import re
import tarfile
from typing import Any

import botocore.session
import pytest
from botocore.validate import ParamValidator
from transformers import HfArgumentParser

from pipelines.definition import definition_json
from pipelines.definition.config import ADAPTER_METHODS, Deployment, PipelineConfig, Vpc
from training_scripts.contracts import GateThresholds

DEPLOYMENT = Deployment(
    region="eu-west-1",
    role_arn="arn:aws:iam::123456789012:role/peftops-sagemaker",
    bucket="peftops-test-bucket",
    kms_key_arn="arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555",
)
IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/peftops-training:1"
S3_MODEL = "s3://peftops-test-bucket/models/smollm2-135m-instruct/"
EXPECTED_PARAMETERS = {
    "Task": "String",
    "DatasetVersion": "String",
    "BaseModel": "String",
    "PeftMethod": "String",
    "LoraRank": "Integer",
    "LoraAlpha": "Integer",
    "Epochs": "Float",
    "MinSteps": "Integer",
    "LearningRate": "Float",
    "TrainInstanceCount": "Integer",
    "TokenBudget": "Integer",
    "BaselineMode": "String",
    "BaselineEvaluationUri": "String",
}


@functools.cache
def build(config: PipelineConfig = PipelineConfig()) -> tuple[dict[str, Any], dict[str, bytes]]:  # noqa: B008
    body, assets = definition_json(config, DEPLOYMENT)
    return json.loads(body), assets


@pytest.fixture(scope="module")
def built() -> tuple[dict[str, Any], dict[str, bytes]]:
    return build(PipelineConfig())


@pytest.fixture(scope="module")
def definition(built) -> dict[str, Any]:
    return built[0]


def flatten(steps: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for step in steps:
        found[step["Name"]] = step
        if step["Type"] == "Condition":
            found.update(flatten(step["Arguments"]["IfSteps"] + step["Arguments"]["ElseSteps"]))
    return found


def references(node: Any) -> set[str]:
    """Names of the steps whose properties `node` refers to."""
    text = json.dumps(node)
    return set(re.findall(r'"Get": "Steps\.(\w+)\.', text)) | set(
        re.findall(r'"Steps\.(\w+)\.PropertyFiles', text)
    )


def branch(step: dict[str, Any], which: str) -> list[str]:
    return [s["Name"] for s in step["Arguments"][which]]


# --- DAG -----------------------------------------------------------------------------------


def test_dag_shape(definition) -> None:
    assert [(s["Name"], s["Type"]) for s in definition["Steps"]] == [
        ("ResolveInputs", "Lambda"),
        ("Preprocess", "Processing"),
        ("TrainAdapter", "Training"),
        ("CheckBaselineMode", "Condition"),
    ]
    steps = flatten(definition["Steps"])
    check = steps["CheckBaselineMode"]
    assert branch(check, "ElseSteps") == ["TrainBaseline", "Evaluate", "QualityGate"]
    assert branch(check, "IfSteps") == ["EvaluateStoredBaseline", "QualityGateStoredBaseline"]
    assert check["Arguments"]["Conditions"] == [
        {"Type": "Equals", "LeftValue": {"Get": "Parameters.BaselineMode"}, "RightValue": "reuse"}
    ]
    for suffix in ("", "StoredBaseline"):
        gate = steps[f"QualityGate{suffix}"]
        assert branch(gate, "IfSteps") == [f"Servable{suffix}"]
        assert branch(gate, "ElseSteps") == [f"GateFailed{suffix}"]
        servable = steps[f"Servable{suffix}"]
        # LMI serves LoRA adapters only: a prompt-tuning adapter is never registered for it.
        assert servable["Arguments"]["Conditions"] == [
            {
                "Type": "In",
                "QueryValue": {"Get": "Parameters.PeftMethod"},
                "Values": ["lora", "qlora"],
            }
        ]
        assert branch(servable, "IfSteps") == [f"CheckRegistered{suffix}", f"NewAdapter{suffix}"]
        assert branch(servable, "ElseSteps") == [f"NotServable{suffix}"]
        new = steps[f"NewAdapter{suffix}"]
        assert new["Arguments"]["Conditions"] == [
            {
                "Type": "Equals",
                "LeftValue": {
                    "Get": f"Steps.CheckRegistered{suffix}.OutputParameters['Registered']"
                },
                "RightValue": "false",
            }
        ]
        assert branch(new, "IfSteps") == [f"RegisterAdapter{suffix}"]
        assert branch(new, "ElseSteps") == []
        assert steps[f"RegisterAdapter{suffix}"]["Type"] == "RegisterModel"
        assert steps[f"GateFailed{suffix}"]["Type"] == "Fail"
        assert steps[f"NotServable{suffix}"]["Type"] == "Fail"


def test_lambda_steps_call_the_deployments_functions_uncached(definition) -> None:
    steps = flatten(definition["Steps"])
    resolve = steps["ResolveInputs"]
    assert resolve["FunctionArn"] == (
        "arn:aws:lambda:eu-west-1:123456789012:function:peftops-adapter-resolve-inputs"
    )
    assert resolve["Arguments"]["Bucket"] == DEPLOYMENT.bucket
    assert resolve["Arguments"]["DatasetVersion"] == {"Get": "Parameters.DatasetVersion"}
    for name in ("CheckRegistered", "CheckRegisteredStoredBaseline"):
        check = steps[name]
        assert check["FunctionArn"].endswith(":function:peftops-adapter-check-registered")
        assert check["Arguments"]["ModelDataUrl"] == {
            "Get": "Steps.TrainAdapter.ModelArtifacts.S3ModelArtifacts"
        }
        assert "CacheConfig" not in check  # what is in the registry now, not last week
        evaluate = "Evaluate" + name.removeprefix("CheckRegistered")
        assert check["Arguments"]["EvaluationUri"]["Std:Join"]["Values"][0] == {
            "Get": f"Steps.{evaluate}.ProcessingOutputConfig.Outputs['evaluation'].S3Output.S3Uri"
        }
        register = steps["RegisterAdapter" + name.removeprefix("CheckRegistered")]
        assert register["Arguments"]["CustomerMetadataProperties"]["evaluation_sha256"] == {
            "Get": f"Steps.{name}.OutputParameters['EvaluationSha256']"
        }
    assert "CacheConfig" not in resolve


def test_dependencies_flow_through_property_references(definition) -> None:
    steps = flatten(definition["Steps"])
    assert references(steps["Preprocess"]) == {"ResolveInputs"}
    # ResolveInputs: the dataset version, which training and evaluation record.
    assert references(steps["TrainAdapter"]) == {"ResolveInputs", "Preprocess"}
    assert references(steps["TrainBaseline"]) == {"ResolveInputs", "Preprocess"}
    assert references(steps["Evaluate"]) == {
        "ResolveInputs",
        "Preprocess",
        "TrainAdapter",
        "TrainBaseline",
    }
    assert references(steps["EvaluateStoredBaseline"]) == {
        "ResolveInputs",
        "Preprocess",
        "TrainAdapter",
    }
    assert references(steps["QualityGate"]["Arguments"]["Conditions"]) == {"Evaluate"}
    assert references(steps["RegisterAdapter"]) == {
        "ResolveInputs",
        "Preprocess",
        "TrainAdapter",
        "Evaluate",
        "CheckRegistered",  # the digest of the evaluation the gate read
    }
    assert references(steps["GateFailed"]) == {"Evaluate"}
    assert steps["Evaluate"]["PropertyFiles"] == [
        {
            "PropertyFileName": "EvaluationReport",
            "OutputName": "evaluation",
            "FilePath": "evaluation.json",
        },
        {
            "PropertyFileName": "ModelCard",
            "OutputName": "evaluation",
            "FilePath": "model_card.json",
        },
    ]


def report_value(path: str) -> dict[str, Any]:
    return {
        "Std:JsonGet": {
            "PropertyFile": {"Get": "Steps.Evaluate.PropertyFiles.EvaluationReport"},
            "Path": path,
        }
    }


def test_quality_gate_compares_the_evaluation_with_the_thresholds(definition) -> None:
    conditions = flatten(definition["Steps"])["QualityGate"]["Arguments"]["Conditions"]
    assert conditions == [
        {
            "Type": "LessThanOrEqualTo",
            # The far end of the 95% interval of full fine-tune - adapter.
            "LeftValue": report_value("gate.shortfall_vs_full_finetune_upper95"),
            "RightValue": 0.02,  # a deployment setting, not a run parameter
        },
        {
            # The evaluation states the deployment's thresholds (registration records them).
            "Type": "Equals",
            "LeftValue": report_value("gate_thresholds.metric_tolerance"),
            "RightValue": 0.02,
        },
        {
            "Type": "GreaterThanOrEqualTo",
            "LeftValue": report_value("gate.gain_vs_base_lower95"),
            "RightValue": 0.01,
        },
        {
            "Type": "Equals",
            "LeftValue": report_value("gate_thresholds.min_metric_gain"),
            "RightValue": 0.01,
        },
    ]


TWO_TASKS = PipelineConfig(
    tasks=("dialogue-summary", "support-routing", "ticket-reply"),
    task_gates=(("support-routing", GateThresholds(metric_tolerance=0.05, min_metric_gain=0.2)),),
)


def gate_holds(
    definition: dict[str, Any], task: str, shortfall: float, gain: float, stated: GateThresholds
) -> bool:
    """The QualityGate's outcome as the pipeline computes it, for one run's evaluation."""
    from pipelines.local.expressions import Scope

    evaluation = {
        "gate": {"shortfall_vs_full_finetune_upper95": shortfall, "gain_vs_base_lower95": gain},
        "gate_thresholds": vars(stated),
    }
    scope = Scope(
        parameters={"Task": task},
        execution={},
        property_files={"Evaluate.EvaluationReport": evaluation},
    )
    gate = flatten(definition["Steps"])["QualityGate"]["Arguments"]["Conditions"]
    return scope.all_hold(gate)


# A task the stage does not declare never gets past ResolveInputs; were it to, the stage's
# gate would judge it, never a looser one.
@pytest.mark.parametrize("task", [*TWO_TASKS.tasks, "undeclared"])
@pytest.mark.parametrize("shortfall", [-0.1, 0.02, 0.03, 0.05, 0.06])
@pytest.mark.parametrize("gain", [-0.05, 0.01, 0.1, 0.2, 0.3])
def test_each_task_of_a_stage_is_gated_by_its_own_thresholds(
    task: str, shortfall: float, gain: float
) -> None:
    """A stage whose tasks have different gates: the pipeline's condition step decides as the
    one rule does with the run's task's thresholds, and refuses an evaluation that states
    another task's."""
    definition = build(TWO_TASKS)[0]
    gate = TWO_TASKS.gate(task)  # the stage's for a task without its own
    expected = shortfall <= gate.metric_tolerance and gain >= gate.min_metric_gain
    assert gate_holds(definition, task, shortfall, gain, gate) == expected
    for other in {TWO_TASKS.gate(t) for t in TWO_TASKS.tasks} - {gate}:
        assert not gate_holds(definition, task, shortfall, gain, other)


@pytest.mark.parametrize("config", [TWO_TASKS, PipelineConfig()], ids=["three-tasks", "default"])
def test_a_stages_tasks_are_the_runs_choices_and_evaluation_states_their_gates(
    config: PipelineConfig,
) -> None:
    """Evaluate, given the definition's arguments, states each task's gate as the deployment
    sets it: what registration records and the gate requires."""
    from training_scripts.evaluate import task_gate

    definition = build(config)[0]
    declared = {p["Name"]: p for p in definition["Parameters"]}
    assert declared["Task"]["DefaultValue"] == config.run_tasks[0]
    resolve = flatten(definition["Steps"])["ResolveInputs"]["Arguments"]
    assert resolve["StageTasks"] == ",".join(config.run_tasks)
    for name, args in job_arguments(definition).items():
        if name.startswith("Evaluate"):
            for task in config.run_tasks:
                assert task_gate(args, task) == config.gate(task)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"tasks": ("a", "a")}, "name a task twice"),
        ({"task": "b", "tasks": ("a",)}, "is not one of tasks"),
        ({"task_gates": (("b", GateThresholds(0.1, 0.1)),)}, "task_gates name tasks the pipeline does not run"),
        ({"tasks": ("Bad Name",)}, "lower-case letters"),
        ({"tasks": ("a", "b"), "baseline_evaluation_uri": "s3://b/e.json"}, "names one baseline"),
    ],
)  # fmt: skip
def test_a_tasks_setting_that_cannot_run_is_refused(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PipelineConfig(**{"task": "a", **settings})


def test_failed_gate_names_metric_and_values(definition) -> None:
    message = json.dumps(flatten(definition["Steps"])["GateFailed"]["Arguments"]["ErrorMessage"])
    for needle in (
        # The metric the gate judged (the task's), and what it compared: the interval bounds,
        # against the thresholds of the run's task.
        "gate.metric",
        "gate.shortfall_vs_full_finetune_upper95",
        "gate.gain_vs_base_lower95",
        "gate_thresholds.metric_tolerance",
        "gate_thresholds.min_metric_gain",
    ):
        assert needle in message


@pytest.mark.parametrize("parameter", ["RougeLTolerance", "MinRougeLGain", "ApprovalStatus"])
def test_a_run_cannot_loosen_the_gate_or_approve(definition, parameter: str, tmp_path) -> None:
    """Whoever may start an execution (or its schedule) can change neither the gate's
    thresholds nor the approval: neither is a parameter the service would accept."""
    from pipelines.local.errors import UnsupportedConstructError
    from pipelines.local.executor import LocalExecutor
    from pipelines.local.s3_mirror import S3Mirror
    from pipelines.registry import LocalRegistry

    assert parameter not in {p["Name"] for p in definition["Parameters"]}
    with pytest.raises(
        UnsupportedConstructError, match=f"unknown pipeline parameters \\['{parameter}'\\]"
    ):
        LocalExecutor(
            definition,
            mirror=S3Mirror(tmp_path),
            jobs_root=tmp_path,
            registry=LocalRegistry(tmp_path / "r.sqlite", "g"),
            parameters={parameter: "1"},
        )


def test_registration_is_pending_approval_with_metrics_and_lineage(definition) -> None:
    register = flatten(definition["Steps"])["RegisterAdapter"]["Arguments"]
    assert register["ModelPackageGroupName"] == "peftops-adapters"
    # A literal, not a parameter: no run can register an approved model.
    assert register["ModelApprovalStatus"] == "PendingManualApproval"
    statistics = register["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert "Steps.Evaluate.ProcessingOutputConfig" in json.dumps(
        statistics["S3Uri"]
    ) and "evaluation.json" in json.dumps(statistics["S3Uri"])
    lineage = register["CustomerMetadataProperties"]
    assert set(lineage) >= {
        "base_model",
        "peft_method",
        "lora_r",
        "lora_alpha",
        "target_modules",
        "trainable_percent",
        "dataset_uri",
        "dataset_version",
        "manifest_uri",
        "code_uri",
        "training_job",
    }
    assert lineage["code_uri"].startswith(f"s3://{DEPLOYMENT.bucket}/assets/")
    assert register["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == {
        "Get": "Steps.TrainAdapter.ModelArtifacts.S3ModelArtifacts"
    }


# --- parameters ----------------------------------------------------------------------------


def test_parameters(definition) -> None:
    declared = {p["Name"]: p for p in definition["Parameters"]}
    assert {name: p["Type"] for name, p in declared.items()} == EXPECTED_PARAMETERS
    assert declared["PeftMethod"]["EnumValues"] == list(ADAPTER_METHODS)
    assert declared["BaselineMode"]["EnumValues"] == ["train", "reuse"]
    assert declared["DatasetVersion"]["DefaultValue"] == "latest"
    # The run's task's stored baseline, which ResolveInputs names.
    assert declared["BaselineEvaluationUri"]["DefaultValue"] == "task-baseline"
    used = set(re.findall(r'"Get": "Parameters\.(\w+)"', json.dumps(definition["Steps"])))
    assert used == set(declared), "every parameter is used, and only declared ones"


# --- training and processing jobs ----------------------------------------------------------


def training_steps(definition) -> list[dict[str, Any]]:
    return [s for s in flatten(definition["Steps"]).values() if s["Type"] == "Training"]


def processing_steps(definition) -> list[dict[str, Any]]:
    return [s for s in flatten(definition["Steps"]).values() if s["Type"] == "Processing"]


def test_training_jobs_use_spot_checkpoints_kms_retries_and_cache(definition, built) -> None:
    steps = training_steps(definition)
    assert {s["Name"] for s in steps} == {"TrainAdapter", "TrainBaseline"}
    for step in steps:
        args = step["Arguments"]
        assert args["EnableManagedSpotTraining"] is True
        stop = args["StoppingCondition"]
        assert stop["MaxWaitTimeInSeconds"] >= stop["MaxRuntimeInSeconds"] > 0
        checkpoint = args["CheckpointConfig"]
        assert (
            checkpoint["LocalPath"]
            == "/opt/ml/checkpoints"
            == args["HyperParameters"]["checkpoint-dir"]
        )
        # One training run's checkpoints: under the Preprocess job that made its data (so the
        # dataset version and base model) and its arguments, never a prefix shared by runs.
        join = checkpoint["S3Uri"]["Std:Join"]
        assert join["Values"][:3] == [
            f"s3://{DEPLOYMENT.bucket}/pipelines/peftops-adapter/checkpoints/{step['Name']}/",
            {"Get": "Steps.Preprocess.ProcessingJobName"},
            "/",
        ]
        run_key = [v for v in join["Values"][3:] if v != "-"]
        assert all(not isinstance(v, dict) or "Std:Join" not in v for v in run_key)
        expected = (
            [
                "PeftMethod",
                "LoraRank",
                "LoraAlpha",
                "Epochs",
                "MinSteps",
                "LearningRate",
                "TokenBudget",
            ]
            if step["Name"] == "TrainAdapter"
            else ["Epochs", "MinSteps", "TokenBudget"]
        )
        assert [
            v["Get"].removeprefix("Parameters.") for v in run_key if isinstance(v, dict)
        ] == expected
        # ml.g5: local NVMe storage, encrypted by the hardware; the service refuses a volume key.
        assert "VolumeKmsKeyId" not in args["ResourceConfig"]
        assert args["OutputDataConfig"]["KmsKeyId"] == DEPLOYMENT.kms_key_arn
        assert args["EnableInterContainerTrafficEncryption"] is True
        assert args["RoleArn"] == DEPLOYMENT.role_arn
        assert args["ResourceConfig"]["InstanceType"] == PipelineConfig().train_instance_type
        assert args["ResourceConfig"]["InstanceCount"] == {"Get": "Parameters.TrainInstanceCount"}
        retried = {t for policy in step["RetryPolicies"] for t in policy["ExceptionType"]}
        assert retried >= {
            "SageMaker.CAPACITY_ERROR",
            "SageMaker.JOB_INTERNAL_ERROR",
            "Step.THROTTLING",
            "Step.SERVICE_FAULT",
        }
        assert step["CacheConfig"] == {"Enabled": True, "ExpireAfter": "P30D"}
        assert (
            "huggingface-pytorch-training:2.9.0-transformers5.3.0-gpu-py312"
            in args["AlgorithmSpecification"]["TrainingImage"]
        )
    # torchrun launches one process per GPU on every instance.
    launchers = [v.decode() for k, v in built[1].items() if k.endswith("/sm_train.sh")]
    assert launchers and all("distributed_drivers/torchrun_driver.py" in text for text in launchers)


def test_processing_jobs_encrypt_and_retry(definition) -> None:
    steps = processing_steps(definition)
    assert {s["Name"] for s in steps} == {"Preprocess", "Evaluate", "EvaluateStoredBaseline"}
    for step in steps:
        args = step["Arguments"]
        cluster = args["ProcessingResources"]["ClusterConfig"]
        # EBS-backed instances (ml.m5) get the project key; NVMe ones (ml.g5) must not.
        expected_key = (
            None if cluster["InstanceType"].startswith("ml.g5") else DEPLOYMENT.kms_key_arn
        )
        assert cluster.get("VolumeKmsKeyId") == expected_key, step["Name"]
        assert args["ProcessingOutputConfig"]["KmsKeyId"] == DEPLOYMENT.kms_key_arn
        assert args["NetworkConfig"]["EnableInterContainerTrafficEncryption"] is True
        assert {t for p in step["RetryPolicies"] for t in p["ExceptionType"]} >= {
            "SageMaker.CAPACITY_ERROR",
            "Step.THROTTLING",
        }
        assert step["CacheConfig"]["Enabled"] is True
    evaluate = flatten(definition["Steps"])["Evaluate"]["Arguments"]
    assert evaluate["ProcessingResources"]["ClusterConfig"]["InstanceType"].startswith("ml.g")


def test_network_isolation_brings_the_base_model_as_an_s3_channel() -> None:
    definition, _ = build(
        PipelineConfig(
            network_isolation=True,
            base_model=S3_MODEL,
            image_uri=IMAGE,
            vpc=Vpc(("subnet-1", "subnet-2"), ("sg-1",)),
        )
    )
    for step in training_steps(definition):
        args = step["Arguments"]
        assert args["EnableNetworkIsolation"] is True
        assert args["VpcConfig"] == {
            "SecurityGroupIds": ["sg-1"],
            "Subnets": ["subnet-1", "subnet-2"],
        }
        model = next(c for c in args["InputDataConfig"] if c["ChannelName"] == "model")
        assert model["DataSource"]["S3DataSource"]["S3Uri"] == {"Get": "Parameters.BaseModel"}
        assert "model-name-or-path" not in args["HyperParameters"]
    for step in processing_steps(definition):
        args = step["Arguments"]
        assert args["NetworkConfig"]["EnableNetworkIsolation"] is True
        assert args["NetworkConfig"]["VpcConfig"] == {
            "SecurityGroupIds": ["sg-1"],
            "Subnets": ["subnet-1", "subnet-2"],
        }
        assert any(i["InputName"] == "model" for i in args["ProcessingInputs"])
    # The registered container is the one a stage deploys: the adapter as its model data, the
    # base model as LMI downloads it (the parameter's default is the S3 prefix the jobs read).
    for name in ("RegisterAdapter", "RegisterAdapterStoredBaseline"):
        (container,) = flatten(definition["Steps"])[name]["Arguments"]["InferenceSpecification"][
            "Containers"
        ]
        assert container["ModelDataUrl"] == {
            "Get": "Steps.TrainAdapter.ModelArtifacts.S3ModelArtifacts"
        }
        assert "AdditionalModelDataSources" not in container
        assert container["Environment"]["HF_MODEL_ID"] == {"Get": "Parameters.BaseModel"}
    (base_model,) = [p for p in definition["Parameters"] if p["Name"] == "BaseModel"]
    assert base_model["DefaultValue"] == S3_MODEL


def installs(assets: dict[str, bytes]) -> dict[str, list[str]]:
    """What each job launcher (processing runproc.sh, training sm_train.sh) pip installs."""
    found = {}
    for key, body in assets.items():
        if key.endswith(("/runproc.sh", "/sm_train.sh")):
            text = body.decode()
            found[key] = re.findall(r"install_requirements\.py\W+(\S+?)[\s\"]", text)
    return found


def test_jobs_install_the_hash_pinned_lock_or_nothing_on_a_prebuilt_image(built) -> None:
    launchers = installs(built[1])
    assert len(launchers) >= 3  # preprocess, evaluate (runproc.sh) and training (sm_train.sh)
    assert all(files == ["requirements.lock"] for files in launchers.values()), launchers
    # A prebuilt image holds the lock already: an isolated job has no index to install from.
    # (The processor's launcher still installs a requirements.txt if the code had one; the
    # code has none, so it installs nothing.)
    _, prebuilt = build(
        PipelineConfig(network_isolation=True, base_model=S3_MODEL, image_uri=IMAGE)
    )
    launchers = installs(prebuilt)
    (code,) = [body for key, body in prebuilt.items() if key.endswith("/sourcedir.tar.gz")]
    with tarfile.open(fileobj=io.BytesIO(code)) as tar:
        staged = set(tar.getnames())
    assert "requirements.lock" in staged and "requirements.txt" not in staged
    assert len(launchers) >= 3
    assert all(not set(files) & staged for files in launchers.values()), launchers


def test_the_registered_container_serves_the_adapter_on_the_lmi_base_model(definition) -> None:
    from pipelines.definition.images import LMI_VERSION
    from training_scripts.tasks import MAX_CONTEXT_TOKENS

    (container,) = flatten(definition["Steps"])["RegisterAdapter"]["Arguments"][
        "InferenceSpecification"
    ]["Containers"]
    assert container["ModelDataUrl"] == {
        "Get": "Steps.TrainAdapter.ModelArtifacts.S3ModelArtifacts"
    }
    assert container["Image"].endswith(f"/djl-inference:{LMI_VERSION}-lmi28.0.0-cu130")
    environment = container["Environment"]
    assert environment["HF_MODEL_ID"] == {"Get": "Parameters.BaseModel"}
    assert environment["OPTION_ENABLE_LORA"] == "true"
    # The context training and evaluation read at most: LMI refuses a longer request, as the
    # local endpoint does.
    assert environment["OPTION_MAX_MODEL_LEN"] == str(MAX_CONTEXT_TOKENS) == "1024"
    # Not TGI: its LORA_ADAPTERS answers an unknown adapter with the base model.
    assert "LORA_ADAPTERS" not in environment


def test_network_isolation_requires_an_image_with_the_dependencies() -> None:
    with pytest.raises(ValueError, match="network_isolation needs image_uri"):
        PipelineConfig(network_isolation=True)
    needs_prefix = r"network_isolation needs base_model as an s3://\.\.\./ prefix, or a prefix"
    with pytest.raises(ValueError, match=needs_prefix):
        PipelineConfig(network_isolation=True, image_uri=IMAGE)
    for not_a_prefix in (
        S3_MODEL.rstrip("/"),  # a prefix, which S3Prefix data needs
        "https://example.com/model/",
        "/opt/models/smollm2/",
        "base-models/smollm2",
    ):
        with pytest.raises(ValueError, match=needs_prefix):
            PipelineConfig(network_isolation=True, image_uri=IMAGE, base_model=not_a_prefix)
    # A prefix with no scheme is one in the project's bucket.
    in_bucket, _ = build(
        PipelineConfig(network_isolation=True, image_uri=IMAGE, base_model="base-models/m/r1/")
    )
    (base_model,) = [p for p in in_bucket["Parameters"] if p["Name"] == "BaseModel"]
    assert base_model["DefaultValue"] == f"s3://{DEPLOYMENT.bucket}/base-models/m/r1/"
    definition, _ = build(
        PipelineConfig(
            network_isolation=True,
            base_model=S3_MODEL,
            image_uri=IMAGE,
            vpc=Vpc(("subnet-1", "subnet-2"), ("sg-1",)),
        )
    )
    assert all(
        s["Arguments"]["AlgorithmSpecification"]["TrainingImage"] == IMAGE
        for s in training_steps(definition)
    )
    assert all(
        s["Arguments"]["AppSpecification"]["ImageUri"] == IMAGE
        for s in processing_steps(definition)
    )


def test_on_demand_deployment_has_no_spot_wait() -> None:
    definition, _ = build(PipelineConfig(use_spot=False))
    for step in training_steps(definition):
        assert not step["Arguments"].get("EnableManagedSpotTraining")
        assert "MaxWaitTimeInSeconds" not in step["Arguments"]["StoppingCondition"]


def test_spot_wait_shorter_than_runtime_is_refused() -> None:
    with pytest.raises(ValueError, match="max_wait_s must be >= max_runtime_s"):
        PipelineConfig(max_runtime_s=7200, max_wait_s=3600)


# --- validity against the API, and against the scripts ------------------------------------


def resolve(node: Any, defaults: dict[str, Any]) -> Any:
    """Arguments with pipeline variables replaced by values of the right type."""
    if isinstance(node, dict):
        if set(node) == {"Get"}:
            ref = node["Get"]
            if ref.startswith("Parameters."):
                return defaults[ref.removeprefix("Parameters.")]
            if ref.startswith("Execution."):
                return "execution-id"
            return (
                f"s3://{DEPLOYMENT.bucket}/resolved/{ref.split('.')[1]}"
                if "S3" in ref
                else "resolved-" + ref.split(".")[1].lower()
            )
        if set(node) == {"Std:Join"}:
            return node["Std:Join"]["On"].join(
                str(resolve(v, defaults)) for v in node["Std:Join"]["Values"]
            )
        if set(node) == {"Std:JsonGet"}:
            return "0.5"
        return {k: resolve(v, defaults) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(v, defaults) for v in node]
    return node


OPERATIONS = {
    "Training": "CreateTrainingJob",
    "Processing": "CreateProcessingJob",
    "RegisterModel": "CreateModelPackage",
}
# Names the SDK leaves out because the pipeline sets them at run time.
RUNTIME_NAMES = {
    "Training": {"TrainingJobName": "job"},
    "Processing": {"ProcessingJobName": "job"},
    "RegisterModel": {},
}


@pytest.mark.parametrize(
    "config",
    [
        PipelineConfig(),
        PipelineConfig(
            network_isolation=True,
            base_model=S3_MODEL,
            image_uri=IMAGE,
            use_spot=False,
            vpc=Vpc(("subnet-1",), ("sg-1",)),
        ),
    ],
    ids=["default", "isolated-on-demand-vpc"],
)
def test_every_step_validates_against_the_sagemaker_api(config: PipelineConfig) -> None:
    definition, _ = copy.deepcopy(build(config))
    defaults = {p["Name"]: p["DefaultValue"] for p in definition["Parameters"]}
    model = botocore.session.get_session().get_service_model("sagemaker")
    checked = 0
    for step in flatten(definition["Steps"]).values():
        if step["Type"] not in OPERATIONS:
            continue
        request = {
            **resolve(copy.deepcopy(step["Arguments"]), defaults),
            **RUNTIME_NAMES[step["Type"]],
        }
        report = ParamValidator().validate(
            request, model.operation_model(OPERATIONS[step["Type"]]).input_shape
        )
        assert not report.has_errors(), f"{step['Name']}: {report.generate_report()}"
        checked += 1
    assert checked == 7


def cli_args_of(hyperparameters: dict[str, str]) -> list[str]:
    from sagemaker.train.container_drivers.common.utils import hyperparameters_to_cli_args

    return hyperparameters_to_cli_args(hyperparameters)


def test_hyperparameters_are_exactly_what_train_py_accepts(definition) -> None:
    from training_scripts.train import TrainArguments

    defaults = {p["Name"]: p["DefaultValue"] for p in definition["Parameters"]}
    for step in training_steps(definition):
        hyperparameters = resolve(step["Arguments"]["HyperParameters"], defaults)
        assert all(isinstance(v, str) for v in hyperparameters.values()), (
            "CreateTrainingJob needs strings"
        )
        # The container turns hyperparameters into CLI arguments with the SDK's own driver code.
        (args,) = HfArgumentParser(TrainArguments).parse_args_into_dataclasses(
            args=cli_args_of(hyperparameters)
        )
        expected_method = "full" if step["Name"] == "TrainBaseline" else "qlora"
        assert args.method.value == expected_method
        assert args.checkpoint_dir == "/opt/ml/checkpoints"
    adapter = resolve(
        flatten(definition["Steps"])["TrainAdapter"]["Arguments"]["HyperParameters"], defaults
    )
    (args,) = HfArgumentParser(TrainArguments).parse_args_into_dataclasses(
        args=cli_args_of(adapter)
    )
    assert (args.lora_r, args.lora_alpha, args.learning_rate) == (16, 32, 2e-4)


def job_arguments(definition: dict[str, Any]) -> dict[str, Any]:
    """Every training and evaluation job's parsed script arguments, by step name."""
    from training_scripts.evaluate import EvaluateArguments
    from training_scripts.train import TrainArguments

    defaults = {p["Name"]: p["DefaultValue"] for p in definition["Parameters"]}
    parsed: dict[str, Any] = {}
    for name, step in flatten(definition["Steps"]).items():
        if step["Type"] == "Training":
            arguments = cli_args_of(resolve(step["Arguments"]["HyperParameters"], defaults))
            (parsed[name],) = HfArgumentParser(TrainArguments).parse_args_into_dataclasses(
                args=arguments
            )
        elif name.startswith("Evaluate"):
            arguments = resolve(
                step["Arguments"]["AppSpecification"]["ContainerArguments"], defaults
            )
            (parsed[name],) = HfArgumentParser(EvaluateArguments).parse_args_into_dataclasses(
                args=arguments
            )
    return parsed


@pytest.mark.parametrize("precision", ["auto", "bf16", "fp32"])
def test_every_job_that_computes_runs_in_the_deployments_precision(precision: str) -> None:
    """The adapter, the full fine-tune and their evaluation share one arithmetic: a figure
    compared across them must not depend on which job resolved `auto` how."""
    parsed = job_arguments(build(PipelineConfig(precision=precision))[0])
    assert set(parsed) == {"TrainAdapter", "TrainBaseline", "Evaluate", "EvaluateStoredBaseline"}
    assert {name: args.precision.value for name, args in parsed.items()} == dict.fromkeys(
        parsed, precision
    )


def test_the_adapter_trains_with_the_deployments_lora_dropout() -> None:
    parsed = job_arguments(build(PipelineConfig(lora_dropout=0.0))[0])
    assert parsed["TrainAdapter"].lora_dropout == 0.0
    assert job_arguments(build(PipelineConfig())[0])["TrainAdapter"].lora_dropout == 0.05


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"precision": "fp16"}, "precision 'fp16'"),
        ({"lora_dropout": 1.0}, r"lora_dropout 1.0 must be in \[0, 1\)"),
        ({"lora_dropout": -0.1}, r"lora_dropout -0.1 must be in \[0, 1\)"),
    ],
)
def test_a_setting_no_job_could_run_with_is_refused(setting: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PipelineConfig(**setting)


def test_run_local_takes_the_precision_it_is_given(tmp_path) -> None:
    """--precision replaces the preset's, through the same validation as a deployment's."""
    from typer.testing import CliRunner

    from pipelines.cli import app

    refused = CliRunner().invoke(
        app, ["run-local", "--preset", "tiny", "--precision", "fp16", "--out", str(tmp_path)]
    )
    assert refused.exit_code == 2
    assert "precision 'fp16': choose one of ['auto', 'bf16', 'fp32']" in refused.output


@pytest.mark.parametrize(
    ("step_name", "script"),
    [
        ("Preprocess", "preprocess"),
        ("Evaluate", "evaluate"),
        ("EvaluateStoredBaseline", "evaluate"),
    ],
)
def test_processing_arguments_are_exactly_what_the_scripts_accept(
    definition, built, step_name: str, script: str
) -> None:
    from training_scripts import evaluate, preprocess

    defaults = {p["Name"]: p["DefaultValue"] for p in definition["Parameters"]}
    args = flatten(definition["Steps"])[step_name]["Arguments"]
    container_args = resolve(args["AppSpecification"]["ContainerArguments"], defaults)
    dataclass_type = {
        "preprocess": preprocess.PreprocessArguments,
        "evaluate": evaluate.EvaluateArguments,
    }[script]
    HfArgumentParser(dataclass_type).parse_args_into_dataclasses(args=container_args)
    # The entry script (runproc.sh, a staged asset) runs the script the arguments were written for.
    entry = next(
        i["S3Input"]["S3Uri"] for i in args["ProcessingInputs"] if i["InputName"] == "entrypoint"
    )
    runproc = built[1][entry.removeprefix(f"s3://{DEPLOYMENT.bucket}/")].decode()
    assert f"{script}.py" in runproc and "requirements.lock" in runproc
    local_paths = {i["S3Input"]["LocalPath"] for i in args["ProcessingInputs"]}
    for value in container_args:
        if value.startswith("/opt/ml/processing/input/"):
            assert value in local_paths, f"{step_name} reads {value}, which no input mounts"


def test_definition_is_small(definition) -> None:
    size = len(json.dumps(definition).encode())
    assert size < 100_000, size


# --- the service's own rules -----------------------------------------------------------------


def stage_configs() -> dict[str, PipelineConfig]:
    """The pipeline config of every stage in cdk.json, and an isolated one inside a VPC."""
    from pipelines.definition.stages import stage_settings
    from tests.conftest import REPO

    stages = json.loads((REPO / "cdk.json").read_text())["context"]["stages"]
    configs = {name: stage_settings(stages, name).pipeline for name in stages}
    configs["isolated-vpc"] = PipelineConfig(
        network_isolation=True,
        base_model=S3_MODEL,
        image_uri=IMAGE,
        vpc=Vpc(("subnet-1",), ("sg-1",)),
    )
    return configs


@pytest.mark.parametrize("stage", sorted(stage_configs()))
def test_every_stage_definition_keeps_the_service_rules(stage: str) -> None:
    from pipelines.definition.service_rules import definition_violations, has_local_storage

    config = stage_configs()[stage]
    definition, _ = build(config)
    assert definition_violations(definition) == []
    jobs = training_steps(definition) + processing_steps(definition)
    for step in jobs:
        args = step["Arguments"]
        resources = args.get("ResourceConfig") or args["ProcessingResources"]["ClusterConfig"]
        local = has_local_storage(resources["InstanceType"])
        assert ("VolumeKmsKeyId" in resources) is not local, (stage, step["Name"])


def broken_request(step: dict[str, Any]) -> dict[str, Any]:
    """The step's request with two of the service's rules broken."""
    request = copy.deepcopy(step["Arguments"])
    if step["Type"] == "Training":
        request["ResourceConfig"]["VolumeSizeInGB"] = 500  # over ml.g5.2xlarge's store
        request["HyperParameters"]["model-name-or-path"] = "a" * 3000
    elif step["Type"] == "Processing":
        request["AppSpecification"]["ContainerArguments"] = ["--x"] * 101
        request["Environment"] = {"LONG": "a" * 300}
    else:
        request["ModelPackageGroupName"] = "a" * 300
        request["ModelPackageDescription"] = "a" * 2000
    return request


@pytest.mark.parametrize(
    ("step_name", "rules"),
    [
        ("TrainAdapter", "training_job_violations"),
        ("Evaluate", "processing_job_violations"),
        ("RegisterAdapter", "registration_violations"),
    ],
)
def test_a_job_request_is_checked_by_its_step_types_rules_every_violation_in_one_line(
    definition, step_name: str, rules: str
) -> None:
    """What the local runner asks before it runs a job, as the service validates a request."""
    from pipelines.definition import service_rules

    step = flatten(definition["Steps"])[step_name]
    request = broken_request(step)
    found = getattr(service_rules, rules)(step_name, request)
    assert len(found) == 2, found
    with pytest.raises(service_rules.RequestRuleError) as refused:
        service_rules.check_job(step["Type"], step_name, request)
    assert str(refused.value) == "; ".join(found)


def test_a_valid_job_request_and_a_step_type_without_rules_pass_the_check(definition) -> None:
    from pipelines.definition.service_rules import check_job, steps_of

    for step in steps_of(definition["Steps"]):
        check_job(step["Type"], step["Name"], step.get("Arguments", {}))
    check_job("Lambda", "Deploy", {})


def test_a_definition_the_service_would_refuse_is_not_built() -> None:
    # 500 GB does not fit ml.g5.2xlarge's 450 GB instance store.
    with pytest.raises(
        ValueError, match=r"TrainAdapter: VolumeSizeInGB 500 exceeds ml\.g5\.2xlarge"
    ):
        definition_json(PipelineConfig(train_volume_gb=500), DEPLOYMENT)


@pytest.mark.parametrize(
    ("arguments", "refused"),
    [
        (["--x", "a" * 256], None),
        (["--x", "a" * 257], "AppSpecification.ContainerArguments[1] is 257 characters; the service takes at most 256"),
        (["--x", {"Std:Join": {"On": "", "Values": ["a" * 250, {"Get": "Parameters.Task"}]}}], "is 265 characters"),
        (["--x"] * 101, "AppSpecification.ContainerArguments holds 101 items; the service takes 100"),
    ],
)  # fmt: skip
def test_a_request_over_a_documented_maximum_is_refused(
    arguments: list, refused: str | None
) -> None:
    """botocore sends what is longer than the API allows; the service refuses it when the job
    starts. The rules measure every string and list of the request against its shape."""
    from pipelines.definition.service_rules import length_violations

    request = {"AppSpecification": {"ImageUri": "image", "ContainerArguments": arguments}}
    found = length_violations(
        "Evaluate", "CreateProcessingJob", request, {"Task": "support-routing"}
    )
    assert found == ([] if refused is None else [next(v for v in found if refused in v)])


@pytest.mark.parametrize(
    ("instance_type", "key", "size", "refused"),
    [
        ("ml.g5.2xlarge", "arn:key", 100, "VolumeKmsKeyId on ml.g5.2xlarge"),
        ("ml.p4d.24xlarge", "arn:key", 100, "VolumeKmsKeyId on ml.p4d.24xlarge"),
        ("ml.g5.xlarge", None, 251, "VolumeSizeInGB 251 exceeds"),
        ("ml.g5.xlarge", None, 250, None),
        ("ml.m5.xlarge", "arn:key", 2000, None),
        ({"Get": "Parameters.TrainInstanceType"}, None, 100, "not a literal ml.* type"),
    ],
)
def test_resource_rules(instance_type, key, size, refused) -> None:
    from pipelines.definition.service_rules import resource_violations

    found = resource_violations("Job", instance_type, size, key)
    assert found == [] if refused is None else (len(found) == 1 and refused in found[0])


def test_cpu_steps_run_the_cpu_image() -> None:
    steps = flatten(build(PipelineConfig())[0]["Steps"])
    preprocess = steps["Preprocess"]["Arguments"]["AppSpecification"]["ImageUri"]
    evaluate = steps["Evaluate"]["Arguments"]["AppSpecification"]["ImageUri"]
    assert preprocess.endswith("/pytorch-training:2.9.0-cpu-py312-ubuntu22.04-sagemaker")
    assert "huggingface-pytorch-training" in evaluate and "-gpu-" in evaluate


# --- S3 locations and checkpoints from one run to the next -------------------------------------


def test_a_uri_inside_a_key_is_refused() -> None:
    """The old Preprocess output, `<prefix>/preprocess/` + the whole input URI, made keys like
    `.../preprocess/s3://bucket/data/input//train`."""
    from pipelines.definition.service_rules import definition_violations

    definition, _ = build(PipelineConfig())
    planted = copy.deepcopy(definition)
    planted["Parameters"].append(
        {"Name": "InputDataUri", "Type": "String", "DefaultValue": "s3://b/data/input/"}
    )
    preprocess = flatten(planted["Steps"])["Preprocess"]
    preprocess["Arguments"]["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] = {
        "Std:Join": {
            "On": "/",
            "Values": ["s3://b/pipelines/p/preprocess", {"Get": "Parameters.InputDataUri"}],
        }
    }
    assert definition_violations(planted) == [
        "Preprocess: ProcessingOutputConfig.Outputs[0].S3Output.S3Uri "
        "'s3://b/pipelines/p/preprocess/s3://b/data/input/' holds another URI inside its key"
    ]


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("s3://bucket/a/b/", None),
        ("s3://bucket/a//b", "has an empty path segment (//) in its key"),
        ("s3://bucket/p/s3://other/k", "holds another URI inside its key"),
        ("https://bucket/k", "is not an s3:// URI"),
        ("s3:///k", "names no bucket"),
    ],
)
def test_s3_location_rule(uri: str, problem: str | None) -> None:
    from pipelines.definition.service_rules import s3_uri_problem

    assert s3_uri_problem(uri) == problem


def test_checkpoints_move_with_any_training_setting_fixed_at_deployment() -> None:
    """Settings fixed per stage (batch size here) are hyperparameters too: a redeploy that
    changes one must not resume the earlier setting's checkpoints (train.py would refuse)."""

    def checkpoint_key(config: PipelineConfig) -> str:
        steps = flatten(build(config)[0]["Steps"])
        return steps["TrainAdapter"]["Arguments"]["CheckpointConfig"]["S3Uri"]["Std:Join"][
            "Values"
        ][-1]

    assert checkpoint_key(PipelineConfig()) == checkpoint_key(PipelineConfig())
    assert checkpoint_key(PipelineConfig()) != checkpoint_key(
        PipelineConfig(per_device_batch_size=4)
    )


def test_a_pipeline_name_too_long_for_its_functions_is_refused() -> None:
    """Its Lambda functions are `<name>-check-registered`: CreateFunction takes 64 characters."""
    PipelineConfig(name="p" * 47)
    with pytest.raises(ValueError, match="at most 47 characters"):
        PipelineConfig(name="p" * 48)
    with pytest.raises(ValueError, match="at most 47 characters"):
        PipelineConfig(name="a" + "-" * 300 + "b")


# What a run sets for its jobs: the model, the data's version, the method, the baseline to
# compare with. Every other argument a default deployment passes is the job's own default, so
# `train.py --help` and `evaluate.py --help` show what the pipeline runs.
SET_PER_RUN = {
    "model_name_or_path",
    "base_model",
    "dataset_version",
    "method",
    "learning_rate",
    "baseline_dir",
    "baseline_evaluation",
}


def test_a_default_deployment_runs_every_job_on_the_jobs_own_defaults() -> None:
    from training_scripts.train import DEFAULT_LEARNING_RATES

    parsed = job_arguments(build(PipelineConfig())[0])
    assert set(parsed) == {"TrainAdapter", "TrainBaseline", "Evaluate", "EvaluateStoredBaseline"}
    for name, args in parsed.items():
        for field in dataclasses.fields(args):
            if field.name in SET_PER_RUN or field.default is dataclasses.MISSING:
                continue  # set per run, or a path (SageMaker's in a job)
            assert getattr(args, field.name) == field.default, (
                f"{name}: the pipeline passes --{field.name.replace('_', '-')} "
                f"{getattr(args, field.name)!r}, {type(args).__name__} defaults to {field.default!r}"
            )
        if hasattr(args, "resolved_learning_rate"):
            assert args.resolved_learning_rate == DEFAULT_LEARNING_RATES[args.method], name


# --- every wire of the DAG ------------------------------------------------------------------
# Each step's inputs, outputs, arguments and recorded metadata that are not literal, as text:
# references in braces (a parameter by its name, `Step.output.name`, `Step.model`, `Step.job`,
# `Step:PropertyFile:json.path`). One table for the whole definition: a step reading another
# step's output, or an argument fed by another parameter, changes a line of it.


def short(ref: str) -> str:
    """A reference as the table writes it: a parameter by name, a step's output by step."""
    ref = re.sub(r"^Parameters\.", "", ref)
    ref = re.sub(r"^Execution\.", "", ref)
    ref = re.sub(r"^Steps\.(\w+)\.OutputParameters\['(\w+)'\]$", r"\1.\2", ref)
    ref = re.sub(
        r"^Steps\.(\w+)\.ProcessingOutputConfig\.Outputs\['(\w+)'\]\.S3Output\.S3Uri$",
        r"\1.output.\2",
        ref,
    )
    ref = re.sub(r"^Steps\.(\w+)\.ModelArtifacts\.S3ModelArtifacts$", r"\1.model", ref)
    ref = re.sub(r"^Steps\.(\w+)\.(TrainingJobName|ProcessingJobName)$", r"\1.job", ref)
    return ref


def source(node: Any) -> str | None:
    """An expression as text, references in braces; None for a literal."""
    if isinstance(node, dict) and set(node) == {"Get"}:
        return "{" + short(node["Get"]) + "}"
    if isinstance(node, dict) and "Std:JsonGet" in node:
        spec = node["Std:JsonGet"]
        step = re.match(r"Steps\.(\w+)\.PropertyFiles\.(\w+)", spec["PropertyFile"]["Get"])
        return "{" + f"{step[1]}:{step[2]}:{spec['Path']}" + "}"
    if isinstance(node, dict) and "Std:Join" in node:
        join = node["Std:Join"]
        return join["On"].join(source(v) or str(v) for v in join["Values"])
    return None


def wires(steps: list[dict[str, Any]]) -> dict[str, str]:
    found = {}

    def add(step, field, node):
        text = source(node)
        if text is not None:
            found[f"{step} {field}"] = text

    for step in steps:
        name, kind, args = step["Name"], step["Type"], step.get("Arguments", {})
        if kind == "Lambda":
            for k, v in step["Arguments"].items():
                add(name, k, v)
        elif kind == "Processing":
            for i in args.get("ProcessingInputs", []):
                add(name, f"input {i['InputName']}", i["S3Input"]["S3Uri"])
            for o in args["ProcessingOutputConfig"]["Outputs"]:
                add(name, f"output {o['OutputName']}", o["S3Output"]["S3Uri"])
            cargs = args["AppSpecification"].get("ContainerArguments", [])
            for flag, value in itertools.pairwise(cargs):
                if isinstance(flag, str) and flag.startswith("--"):
                    add(name, flag, value)
        elif kind == "Training":
            for k, v in args["HyperParameters"].items():
                add(name, f"--{k}", v)
            for c in args["InputDataConfig"]:
                add(name, f"channel {c['ChannelName']}", c["DataSource"]["S3DataSource"]["S3Uri"])
            add(name, "instance count", args["ResourceConfig"]["InstanceCount"])
            add(name, "checkpoints", args["CheckpointConfig"]["S3Uri"])
            add(name, "output", args["OutputDataConfig"]["S3OutputPath"])
        elif kind == "RegisterModel":
            for k, v in args["CustomerMetadataProperties"].items():
                add(name, f"metadata {k}", v)
            container = args["InferenceSpecification"]["Containers"][0]
            add(name, "model data", container["ModelDataUrl"])
            for k, v in container.get("Environment", {}).items():
                add(name, f"environment {k}", v)
            add(name, "statistics", args["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"])
            add(name, "model card", args["ModelCard"]["ModelCardContent"])
        elif kind == "Condition":
            for i, c in enumerate(args["Conditions"]):
                add(name, f"condition {i} {c['Type']}", c.get("LeftValue"))
        elif kind == "Fail":
            pass
    return found


WIRES = {
    "ResolveInputs Task": "{Task}",
    "ResolveInputs DatasetVersion": "{DatasetVersion}",
    "ResolveInputs BaselineMode": "{BaselineMode}",
    "ResolveInputs BaselineEvaluationUri": "{BaselineEvaluationUri}",
    "Preprocess input data": "{ResolveInputs.DatasetUri}",
    "Preprocess output splits": "s3://peftops-test-bucket/pipelines/peftops-adapter/preprocess/{ResolveInputs.DatasetVersion}/{PipelineExecutionId}",
    "Preprocess --tokenizer": "{BaseModel}",
    "Preprocess --task-name": "{Task}",
    "TrainAdapter --model-name-or-path": "{BaseModel}",
    "TrainAdapter --method": "{PeftMethod}",
    "TrainAdapter --lora-r": "{LoraRank}",
    "TrainAdapter --lora-alpha": "{LoraAlpha}",
    "TrainAdapter --epochs": "{Epochs}",
    "TrainAdapter --learning-rate": "{LearningRate}",
    "TrainAdapter --token-budget": "{TokenBudget}",
    "TrainAdapter --min-steps": "{MinSteps}",
    "TrainAdapter --dataset-version": "{ResolveInputs.DatasetVersion}",
    "TrainAdapter channel train": "{Preprocess.output.splits}/train",
    "TrainAdapter channel validation": "{Preprocess.output.splits}/validation",
    "TrainAdapter instance count": "{TrainInstanceCount}",
    "TrainAdapter checkpoints": "s3://peftops-test-bucket/pipelines/peftops-adapter/checkpoints/TrainAdapter/{Preprocess.job}/{PeftMethod}-{LoraRank}-{LoraAlpha}-{Epochs}-{MinSteps}-{LearningRate}-{TokenBudget}-{settings hash}",
    "CheckBaselineMode condition 0 Equals": "{BaselineMode}",
    "EvaluateStoredBaseline input test": "{Preprocess.output.splits}/test",
    "EvaluateStoredBaseline input adapter": "{TrainAdapter.model}",
    "EvaluateStoredBaseline input stored-baseline": "{ResolveInputs.BaselineEvaluationUri}",
    "EvaluateStoredBaseline output evaluation": "s3://peftops-test-bucket/pipelines/peftops-adapter/evaluation/{TrainAdapter.job}/EvaluateStoredBaseline",
    "EvaluateStoredBaseline --base-model": "{BaseModel}",
    "EvaluateStoredBaseline --dataset-version": "{ResolveInputs.DatasetVersion}",
    "QualityGateStoredBaseline condition 0 LessThanOrEqualTo": "{EvaluateStoredBaseline:EvaluationReportStoredBaseline:gate.shortfall_vs_full_finetune_upper95}",
    "QualityGateStoredBaseline condition 1 Equals": "{EvaluateStoredBaseline:EvaluationReportStoredBaseline:gate_thresholds.metric_tolerance}",
    "QualityGateStoredBaseline condition 2 GreaterThanOrEqualTo": "{EvaluateStoredBaseline:EvaluationReportStoredBaseline:gate.gain_vs_base_lower95}",
    "QualityGateStoredBaseline condition 3 Equals": "{EvaluateStoredBaseline:EvaluationReportStoredBaseline:gate_thresholds.min_metric_gain}",
    "CheckRegisteredStoredBaseline ModelDataUrl": "{TrainAdapter.model}",
    "CheckRegisteredStoredBaseline EvaluationUri": "{EvaluateStoredBaseline.output.evaluation}/evaluation.json",
    "NewAdapterStoredBaseline condition 0 Equals": "{CheckRegisteredStoredBaseline.Registered}",
    "RegisterAdapterStoredBaseline metadata task": "{Task}",
    "RegisterAdapterStoredBaseline metadata base_model": "{BaseModel}",
    "RegisterAdapterStoredBaseline metadata peft_method": "{PeftMethod}",
    "RegisterAdapterStoredBaseline metadata lora_r": "{LoraRank}",
    "RegisterAdapterStoredBaseline metadata lora_alpha": "{LoraAlpha}",
    "RegisterAdapterStoredBaseline metadata trainable_percent": "{EvaluateStoredBaseline:EvaluationReportStoredBaseline:models.adapter.trainable_percent}",
    "RegisterAdapterStoredBaseline metadata dataset_version": "{ResolveInputs.DatasetVersion}",
    "RegisterAdapterStoredBaseline metadata dataset_uri": "{ResolveInputs.DatasetUri}",
    "RegisterAdapterStoredBaseline metadata manifest_uri": "{Preprocess.output.splits}/manifest.json",
    "RegisterAdapterStoredBaseline metadata training_job": "{TrainAdapter.job}",
    "RegisterAdapterStoredBaseline metadata evaluation_sha256": "{CheckRegisteredStoredBaseline.EvaluationSha256}",
    "RegisterAdapterStoredBaseline metadata mlflow_run_id": "{EvaluateStoredBaseline:EvaluationReportStoredBaseline:tracking.evaluation_run_id}",
    "RegisterAdapterStoredBaseline metadata mlflow_training_run_id": "{EvaluateStoredBaseline:EvaluationReportStoredBaseline:tracking.training_run_ids.adapter}",
    "RegisterAdapterStoredBaseline metadata task_spec_sha256": "{EvaluateStoredBaseline:EvaluationReportStoredBaseline:task.sha256}",
    "RegisterAdapterStoredBaseline metadata metric_tolerance": "{EvaluateStoredBaseline:EvaluationReportStoredBaseline:gate_thresholds.metric_tolerance}",
    "RegisterAdapterStoredBaseline metadata min_metric_gain": "{EvaluateStoredBaseline:EvaluationReportStoredBaseline:gate_thresholds.min_metric_gain}",
    "RegisterAdapterStoredBaseline model data": "{TrainAdapter.model}",
    "RegisterAdapterStoredBaseline environment HF_MODEL_ID": "{BaseModel}",
    "RegisterAdapterStoredBaseline statistics": "{EvaluateStoredBaseline.output.evaluation}/evaluation.json",
    "RegisterAdapterStoredBaseline model card": "{EvaluateStoredBaseline:ModelCardStoredBaseline:content}",
    "TrainBaseline --model-name-or-path": "{BaseModel}",
    "TrainBaseline --epochs": "{Epochs}",
    "TrainBaseline --token-budget": "{TokenBudget}",
    "TrainBaseline --min-steps": "{MinSteps}",
    "TrainBaseline --dataset-version": "{ResolveInputs.DatasetVersion}",
    "TrainBaseline channel train": "{Preprocess.output.splits}/train",
    "TrainBaseline channel validation": "{Preprocess.output.splits}/validation",
    "TrainBaseline instance count": "{TrainInstanceCount}",
    "TrainBaseline checkpoints": "s3://peftops-test-bucket/pipelines/peftops-adapter/checkpoints/TrainBaseline/{Preprocess.job}/full-{Epochs}-{MinSteps}-{TokenBudget}-{settings hash}",
    "Evaluate input test": "{Preprocess.output.splits}/test",
    "Evaluate input adapter": "{TrainAdapter.model}",
    "Evaluate input baseline": "{TrainBaseline.model}",
    "Evaluate output evaluation": "s3://peftops-test-bucket/pipelines/peftops-adapter/evaluation/{TrainAdapter.job}/Evaluate",
    "Evaluate --base-model": "{BaseModel}",
    "Evaluate --dataset-version": "{ResolveInputs.DatasetVersion}",
    "QualityGate condition 0 LessThanOrEqualTo": "{Evaluate:EvaluationReport:gate.shortfall_vs_full_finetune_upper95}",
    "QualityGate condition 1 Equals": "{Evaluate:EvaluationReport:gate_thresholds.metric_tolerance}",
    "QualityGate condition 2 GreaterThanOrEqualTo": "{Evaluate:EvaluationReport:gate.gain_vs_base_lower95}",
    "QualityGate condition 3 Equals": "{Evaluate:EvaluationReport:gate_thresholds.min_metric_gain}",
    "CheckRegistered ModelDataUrl": "{TrainAdapter.model}",
    "CheckRegistered EvaluationUri": "{Evaluate.output.evaluation}/evaluation.json",
    "NewAdapter condition 0 Equals": "{CheckRegistered.Registered}",
    "RegisterAdapter metadata task": "{Task}",
    "RegisterAdapter metadata base_model": "{BaseModel}",
    "RegisterAdapter metadata peft_method": "{PeftMethod}",
    "RegisterAdapter metadata lora_r": "{LoraRank}",
    "RegisterAdapter metadata lora_alpha": "{LoraAlpha}",
    "RegisterAdapter metadata trainable_percent": "{Evaluate:EvaluationReport:models.adapter.trainable_percent}",
    "RegisterAdapter metadata dataset_version": "{ResolveInputs.DatasetVersion}",
    "RegisterAdapter metadata dataset_uri": "{ResolveInputs.DatasetUri}",
    "RegisterAdapter metadata manifest_uri": "{Preprocess.output.splits}/manifest.json",
    "RegisterAdapter metadata training_job": "{TrainAdapter.job}",
    "RegisterAdapter metadata evaluation_sha256": "{CheckRegistered.EvaluationSha256}",
    "RegisterAdapter metadata mlflow_run_id": "{Evaluate:EvaluationReport:tracking.evaluation_run_id}",
    "RegisterAdapter metadata mlflow_training_run_id": "{Evaluate:EvaluationReport:tracking.training_run_ids.adapter}",
    "RegisterAdapter metadata task_spec_sha256": "{Evaluate:EvaluationReport:task.sha256}",
    "RegisterAdapter metadata metric_tolerance": "{Evaluate:EvaluationReport:gate_thresholds.metric_tolerance}",
    "RegisterAdapter metadata min_metric_gain": "{Evaluate:EvaluationReport:gate_thresholds.min_metric_gain}",
    "RegisterAdapter model data": "{TrainAdapter.model}",
    "RegisterAdapter environment HF_MODEL_ID": "{BaseModel}",
    "RegisterAdapter statistics": "{Evaluate.output.evaluation}/evaluation.json",
    "RegisterAdapter model card": "{Evaluate:ModelCard:content}",
}


def test_every_wire_of_the_dag_comes_from_where_it_must() -> None:
    from pipelines.definition.service_rules import steps_of

    found = {
        field: re.sub(r"-[0-9a-f]{12}$", "-{settings hash}", source)
        for field, source in wires(steps_of(build()[0]["Steps"])).items()
    }
    assert found == WIRES
