"""The one typed configuration (pipelines/definition/config.py): every setting the pipeline
cannot run with is refused when the config is made, word for word and at its exact boundary;
what a deployment derives (job roles, function ARNs); each task's quality gate; and settings
read from plain JSON as cdk.json holds them."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.definition.config import (
    ADAPTER_METHODS,
    BaselineMode,
    Deployment,
    JobKind,
    PipelineConfig,
    Vpc,
    check_task_name,
    config_from_dict,
    function_name,
)
from training_scripts.contracts import GateThresholds

ROLE = "arn:aws:iam::123456789012:role/peftops-sagemaker"
KEY = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab"
SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:hf-token-AbC123"
ISOLATED = {
    "network_isolation": True,
    "image_uri": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/jobs:1",
}


def refusal(make: Any) -> str:
    with pytest.raises(ValueError) as refused:
        make()
    return str(refused.value)


PIPELINE_REFUSALS = [
    ({"max_wait_s": 3599, "max_runtime_s": 3600},
     "max_wait_s must be >= max_runtime_s for managed spot training"),
    ({"network_isolation": True},
     "network_isolation needs image_uri (or the stage's build_job_image): an image that already "
     "holds training_scripts/requirements.lock, since isolated jobs cannot pip install"),
    ({**ISOLATED, "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct"},
     "network_isolation needs base_model as an s3://.../ prefix, or a prefix in the project's "
     "bucket such as base-models/<model>/<revision>/ (ending in /), holding the model's files "
     "(isolated jobs cannot reach the Hugging Face Hub, and the registered spec serves it from "
     "there), not 'HuggingFaceTB/SmolLM2-135M-Instruct'"),
    ({**ISOLATED, "base_model": "/opt/models/smollm2/"}, "…not '/opt/models/smollm2/'"),
    ({**ISOLATED, "base_model": "https://example.com/models/"}, "…not 'https://example.com/models/'"),
    ({**ISOLATED, "base_model": "s3://bucket/models/smollm2"}, "…not 's3://bucket/models/smollm2'"),
    ({**ISOLATED, "base_model": "s3://b/m/", "mlflow_tracking_uri": "arn:mlflow"},
     "mlflow_tracking_uri needs network access from the jobs, which network_isolation removes: "
     "track a stage without isolation, or drop its tracking server"),
    ({"hf_token_secret_arn": "hf-token"},
     "hf_token_secret_arn 'hf-token' is not a secret's full ARN "
     "(arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-xxxxxx)"),
    ({"hf_token_secret_arn": SECRET.removesuffix("-AbC123")}, "…is not a secret's full ARN"),
    ({"task": "Dialogue"},
     "task 'Dialogue': use lower-case letters, digits and single hyphens, at most 32 characters "
     "(e.g. dialogue-summary)"),
    ({"task": "a", "tasks": ("a", "b--c")}, "…task 'b--c': use lower-case letters"),
    ({"task": "base"}, "task 'base' names the base model's component; choose another name"),
    ({"task": "a", "tasks": ("a", "b", "a")}, "tasks ['a', 'b', 'a'] name a task twice"),
    ({"task": "c", "tasks": ("a", "b")}, "task 'c' is not one of tasks ['a', 'b']"),
    ({"task": "a", "task_gates": (("b", GateThresholds(0.1, 0.0)), ("z", GateThresholds(0.1, 0.0)))},
     "task_gates name tasks the pipeline does not run: ['b', 'z']"),
    ({"task": "a", "tasks": ("a", "b"), "baseline_evaluation_uri": "s3://b/baselines/a.json"},
     "baseline_evaluation_uri names one baseline, but the pipeline runs several tasks: drop it, "
     "each task's run reads its own (peftops baseline publish)"),
    ({"lora_dropout": 1.0}, "lora_dropout 1.0 must be in [0, 1)"),
    ({"lora_dropout": -0.01}, "lora_dropout -0.01 must be in [0, 1)"),
    ({"precision": "fp8"}, "precision 'fp8': choose one of ['auto', 'bf16', 'fp32']"),
    ({"peft_method": "full"}, f"peft_method must be one of {ADAPTER_METHODS}"),
    ({"name": "a" * 48},
     f"pipeline name {'a' * 48!r} is not valid: letters and digits joined by hyphens, at most "
     "47 characters"),
    ({"name": "peftops adapter"}, "…pipeline name 'peftops adapter' is not valid"),
    ({"name": "-peftops"}, "…pipeline name '-peftops' is not valid"),
    ({"name": "peftops-"}, "…pipeline name 'peftops-' is not valid"),
]  # fmt: skip


@pytest.mark.parametrize(("settings", "message"), PIPELINE_REFUSALS)
def test_a_setting_the_pipeline_cannot_run_with_is_refused_saying_why(
    settings: dict[str, Any], message: str
) -> None:
    """A message starting with … is the end of what is said (its start is a row above)."""
    said = refusal(lambda: PipelineConfig(**settings))
    if message.startswith("…"):
        assert message[1:] in said, said
    else:
        assert said == message


ACCEPTED = [
    {"max_wait_s": 3600, "max_runtime_s": 3600},
    {"use_spot": False, "max_wait_s": 60, "max_runtime_s": 3600},  # no wait without spot
    {**ISOLATED, "base_model": "s3://bucket/base-models/smollm2/main/"},
    {**ISOLATED, "base_model": "base-models/smollm2/main/"},
    {"hf_token_secret_arn": SECRET},
    {"hf_token_secret_arn": SECRET.replace("arn:aws:", "arn:aws-cn:")},
    {"task": "a", "tasks": ("b", "a"), "task_gates": (("b", GateThresholds(0.1, 0.0)),)},
    {"baseline_evaluation_uri": "s3://b/baselines/dialogue-summary/evaluation.json"},
    {"lora_dropout": 0.0},
    {"lora_dropout": 0.999},
    {"name": "a" * 47},
    {"name": "A1-b2-C3"},
    {"name": "peftops--adapter"},  # SageMaker's pattern takes runs of hyphens
    *({"precision": p} for p in ("auto", "bf16", "fp32")),
    *({"peft_method": m} for m in ADAPTER_METHODS),
]


@pytest.mark.parametrize("settings", ACCEPTED)
def test_a_setting_at_the_edge_of_what_runs_is_taken(settings: dict[str, Any]) -> None:
    config = PipelineConfig(**settings)
    assert {key: getattr(config, key) for key in settings} == settings


def test_each_task_has_the_stages_gate_unless_it_declares_its_own() -> None:
    own = GateThresholds(0.1, -0.5)
    config = PipelineConfig(
        task="a", tasks=("a", "b", "c"), metric_tolerance=0, min_metric_gain=1,
        task_gates=(("c", own), ("b", GateThresholds(0, 0))),
    )  # fmt: skip
    assert config.run_tasks == ("a", "b", "c")
    assert config.stage_gate == GateThresholds(0.0, 1.0)
    assert isinstance(config.stage_gate.metric_tolerance, float)
    assert [config.gate(t) for t in ("a", "b", "c")] == [
        GateThresholds(0.0, 1.0),
        GateThresholds(0.0, 0.0),
        own,
    ]
    assert all(isinstance(config.gate(t).min_metric_gain, float) for t in "abc")
    assert list(config.own_gates.items()) == [("b", GateThresholds(0.0, 0.0)), ("c", own)]
    assert PipelineConfig().run_tasks == ("dialogue-summary",)


DEPLOYMENT_REFUSALS = [
    ({"role_arn": "peftops-sagemaker"}, "role_arn 'peftops-sagemaker' is not an IAM role ARN"),
    ({"role_arn": "arn:aws:iam::12345678901:role/x"}, "role_arn 'arn:aws:iam::12345678901:role/x' "
     "is not an IAM role ARN"),
    ({"job_role_arns": ((JobKind.TRAINING, "arn:aws:iam::123456789012:user/x"),)},
     "the training jobs' role 'arn:aws:iam::123456789012:user/x' is not an IAM role ARN"),
    ({"bucket": "My_Bucket"}, "bucket 'My_Bucket' is not a valid S3 bucket name"),
    ({"bucket": "ab"}, "bucket 'ab' is not a valid S3 bucket name"),
    ({"bucket": "a" * 64}, f"bucket {'a' * 64!r} is not a valid S3 bucket name"),
    ({"kms_key_arn": "alias/peftops"}, "kms_key_arn 'alias/peftops' is not a KMS key ARN"),
]  # fmt: skip


def deployment(**changes: Any) -> Deployment:
    settings = {"region": "eu-west-1", "role_arn": ROLE, "bucket": "peftops-data",
                "kms_key_arn": KEY} | changes  # fmt: skip
    return Deployment(**settings)


@pytest.mark.parametrize(("changes", "message"), DEPLOYMENT_REFUSALS)
def test_a_deployment_naming_no_real_role_bucket_or_key_is_refused(
    changes: dict[str, Any], message: str
) -> None:
    assert refusal(lambda: deployment(**changes)) == message


def test_a_deployment_runs_each_kind_of_job_under_its_role_and_names_its_functions() -> None:
    trainer = "arn:aws-cn:iam::123456789012:role/peftops-training"
    china = deployment(
        region="cn-north-1",
        role_arn="arn:aws-cn:iam::123456789012:role/peftops-pipeline",
        kms_key_arn="arn:aws-cn:kms:cn-north-1:123456789012:alias/peftops",
        job_role_arns=((JobKind.TRAINING, trainer),),
        bucket="abc",
    )
    assert china.job_role(JobKind.TRAINING) == trainer
    assert china.job_role(JobKind.EVALUATION) == china.role_arn  # no role of its own
    assert china.root == "s3://abc"
    assert china.function_arn("peftops-adapter-resolve-inputs") == (
        "arn:aws-cn:lambda:cn-north-1:123456789012:function:peftops-adapter-resolve-inputs"
    )
    assert function_name(PipelineConfig(name="p"), "check-registered") == "p-check-registered"


def test_settings_read_from_json_become_the_typed_config() -> None:
    config = config_from_dict(
        {
            "vpc": {"subnet_ids": ["subnet-1", "subnet-2"], "security_group_ids": ["sg-1"]},
            "baseline_mode": "reuse",
            "task": "a",
            "tasks": ["a", "b"],
            "task_gates": {"b": {"metric_tolerance": 0.1, "min_metric_gain": 0},
                           "a": {"metric_tolerance": 0.2, "min_metric_gain": 0.5}},
        }
    )  # fmt: skip
    assert config.vpc == Vpc(("subnet-1", "subnet-2"), ("sg-1",))
    assert config.baseline_mode is BaselineMode.REUSE
    assert config.tasks == ("a", "b")
    assert config.task_gates == (
        ("a", GateThresholds(0.2, 0.5)),
        ("b", GateThresholds(0.1, 0)),
    )
    assert config_from_dict({"vpc": None}).vpc is None
    assert config_from_dict({}) == PipelineConfig()


def test_an_unknown_setting_is_refused_naming_the_source_and_the_known_ones() -> None:
    message = refusal(lambda: config_from_dict({"lora_rank": 8, "epoch": 1}, source="cdk.json"))
    assert message.startswith("cdk.json: unknown settings ['epoch', 'lora_rank']; known: [")
    assert "'lora_r'" in message and "'epochs'" in message
    assert refusal(lambda: config_from_dict({"x": 1})).startswith("config: unknown settings")


@pytest.mark.parametrize("task", ["dialogue-summary", "a", "a1-b2", "x" * 32])
def test_a_task_name_is_taken_as_given(task: str) -> None:
    assert check_task_name(task) == task
