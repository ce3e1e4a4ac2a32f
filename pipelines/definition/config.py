"""The one typed configuration of the pipeline: what is fixed when it is deployed
(`PipelineConfig`, from CDK context per stage), where it is deployed (`Deployment`: role,
bucket, key, region), and the defaults of the parameters a run can override.

Parameters are for what a scheduled run or an operator may change per execution. Some knobs
cannot be runtime parameters because SageMaker rejects a request whose shape they change:
managed spot needs `MaxWaitTimeInSeconds`, which CreateTrainingJob refuses without spot, so
spot is fixed per deployment (sagemaker-python-sdk issue #4140), like network isolation and
the VPC, which change the job's channels and network.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass
from typing import Any

from pipelines.functions.registered_adapter import BASE_COMPONENT
from training_scripts.contracts import GateThresholds
from training_scripts.enums import PeftMethod, Precision
from training_scripts.tasks import TASK_NAME

# The methods train.py trains as adapters; the full fine-tune is the baseline, not a choice.
ADAPTER_METHODS = tuple(m.value for m in PeftMethod if m.is_adapter)


class BaselineMode(enum.StrEnum):
    TRAIN = "train"  # train the full fine-tune baseline in this run (step caching reuses an unchanged one)
    REUSE = "reuse"  # take the baseline's figures from a stored evaluation.json instead


class JobKind(enum.StrEnum):
    """The pipeline's kinds of job, each run under its own role (`Deployment.job_role`)."""

    PREPROCESS = "preprocess"
    TRAINING = "training"
    EVALUATION = "evaluation"


# Where each kind of job writes, as folders under the pipeline's prefix (pipelines/<name>/):
# the builder's output locations and, in the stack, the only prefixes its role may write.
PREPROCESS_OUTPUTS = "preprocess"
CHECKPOINTS = "checkpoints"
MODELS = "models"
EVALUATIONS = "evaluation"
JOB_WRITES: dict[JobKind, tuple[str, ...]] = {
    JobKind.PREPROCESS: (PREPROCESS_OUTPUTS,),
    JobKind.TRAINING: (CHECKPOINTS, MODELS),
    JobKind.EVALUATION: (EVALUATIONS,),
}

# The kinds of job that log MLflow runs (training_scripts/tracking.py); preprocessing logs none.
TRACKED_JOBS = (JobKind.TRAINING, JobKind.EVALUATION)

_ROLE_ARN = r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+"


@dataclass(frozen=True)
class Deployment:
    """Where the pipeline runs; from CDK (or the CLI), never hard-coded in library code.

    `role_arn` is the pipeline's own role (it starts jobs and registers adapters); each kind of
    job runs under its role in `job_role_arns`, which the stack makes with write access to that
    kind's prefixes only and no registry access. A kind with no role there runs under
    `role_arn` (a hand-made deployment with one role)."""

    region: str
    role_arn: str
    bucket: str
    kms_key_arn: str
    job_role_arns: tuple[tuple[JobKind, str], ...] = ()

    def __post_init__(self) -> None:
        named = [("role_arn", self.role_arn)]
        named += [(f"the {kind} jobs' role", arn) for kind, arn in self.job_role_arns]
        for name, arn in named:
            if not re.fullmatch(_ROLE_ARN, arn):
                raise ValueError(f"{name} {arn!r} is not an IAM role ARN")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", self.bucket):
            raise ValueError(f"bucket {self.bucket!r} is not a valid S3 bucket name")
        if not re.fullmatch(
            r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key|alias)/[\w/-]+", self.kms_key_arn
        ):
            raise ValueError(f"kms_key_arn {self.kms_key_arn!r} is not a KMS key ARN")

    @property
    def root(self) -> str:
        return f"s3://{self.bucket}"

    def job_role(self, kind: JobKind) -> str:
        return dict(self.job_role_arns).get(kind, self.role_arn)

    def function_arn(self, name: str) -> str:
        """A Lambda function of this deployment's account and region."""
        partition, account = self.role_arn.split(":")[1], self.role_arn.split(":")[4]
        return f"arn:{partition}:lambda:{self.region}:{account}:function:{name}"


@dataclass(frozen=True)
class Vpc:
    subnet_ids: tuple[str, ...]
    security_group_ids: tuple[str, ...]


@dataclass(frozen=True)
class PipelineConfig:
    name: str = "peftops-adapter"
    model_package_group: str = "peftops-adapters"

    # Containers: the versions of the pinned training images (pipelines/definition/images.py),
    # which the jobs' requirements lock holds torch and Python to.
    transformers_version: str = "5.3.0"
    pytorch_version: str = "2.9.0"
    python_version: str = "py312"

    # An image that already holds training_scripts/requirements.lock (training_scripts/
    # Dockerfile builds one; a stage's "build_job_image" has cdk deploy build it); required with
    # network isolation, where jobs cannot pip install. Empty: the Hugging Face image above.
    image_uri: str = ""
    # The serving image (LMI) a registered version names and a stage's endpoint runs. Empty:
    # the pinned LMI image.
    serving_image_uri: str = ""

    # Gated base models (Llama, Gemma, Mistral): a Secrets Manager secret holding a Hugging Face
    # token, by its full ARN. Jobs get the ARN and read the token at start; the role may read
    # this one secret. Empty: no token (public models).
    hf_token_secret_arn: str = ""

    # Experiment tracking (MLflow): where training and evaluation jobs log their runs. The ARN
    # of a SageMaker managed MLflow tracking server in the cloud (a stage's "mlflow" setting has
    # cdk deploy create one), an sqlite:/// store in a local run; empty: no tracking.
    mlflow_tracking_uri: str = ""

    # A smoke test's deployment (the tiny local preset: a random model that checks the plumbing):
    # its versions are marked so that approval refuses them unless forced.
    smoke_test: bool = False

    # The quality gate, fixed per deployment: whoever may start a run cannot loosen it. In the
    # task's metric: the adapter may trail the full fine-tune by at most `metric_tolerance` and
    # must beat the base model by at least `min_metric_gain`; `task_gates` holds the tasks
    # whose own thresholds differ from these two.
    metric_tolerance: float = 0.02
    min_metric_gain: float = 0.01
    task_gates: tuple[tuple[str, GateThresholds], ...] = ()

    # Fixed per deployment (see the module docstring).
    use_spot: bool = True  # managed spot: up to ~70% cheaper, resumes from checkpoints
    network_isolation: bool = False  # no network in jobs: the base model comes in as an S3 channel
    vpc: Vpc | None = None
    max_runtime_s: int = 6 * 3600
    max_wait_s: int = 12 * 3600  # spot: time waiting for capacity plus running
    train_volume_gb: int = 100
    processing_instance_type: str = "ml.m5.xlarge"
    evaluation_instance_type: str = "ml.g5.2xlarge"
    cache_expiry: str = "P30D"  # an unchanged step within 30 days is not run again
    retry_attempts: int = 3

    # Defaults of the runtime parameters.
    # The task the adapter is for: one registry holds several tasks' adapters for one base
    # model, and each stage's endpoint serves one version per task (inference component
    # `<endpoint>-<task>`).
    task: str = "dialogue-summary"
    # Every task a run may name (the Task parameter's allowed values): a stage's `tasks` in
    # cdk.json, which share this pipeline; empty: `task` alone.
    tasks: tuple[str, ...] = ()
    dataset_version: str = "latest"  # a published version (peftops data publish), or the newest
    # A hub id; with network isolation an s3://.../ prefix or a prefix in the project's bucket
    # (base-models/<model>/<revision>/): a copy of one revision's files, which pins it.
    base_model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    peft_method: str = "qlora"
    lora_r: int = 16
    lora_alpha: int = 32
    # Dropout on the LoRA input, fixed per deployment: regularizes long runs; on a CPU it costs
    # about a quarter of a step's time, which a run of a few dozen steps does not earn back.
    lora_dropout: float = 0.05
    epochs: float = 1.0
    # At least this many optimizer steps per training whatever Epochs gives on the data (both
    # trainings alike): a small dataset trains more than one pass, not a handful of steps.
    min_steps: int = 20
    learning_rate: float = 2e-4
    baseline_learning_rate: float = 2e-5
    per_device_batch_size: int = 8  # at most this many examples per device per micro-batch
    # Tokens per device per micro-batch (train.py --token-budget); 0 = train.py's measured
    # default for the device.
    token_budget: int = 0
    gradient_checkpointing: bool = True  # less GPU memory for ~30% more compute
    # Arithmetic of training and evaluation (train.py/evaluate.py --precision): auto = bf16 where
    # the hardware computes it natively, else fp32. A CPU run fixes it so that its figures and
    # verdict do not depend on which CPU ran it.
    precision: str = Precision.AUTO.value
    validation_max_examples: int = 0  # validation loss before/after training; 0 = the whole split
    # The validation loss also every N optimizer steps (the validation curve); 0 = only before
    # and after training. The training loss every `logging_steps` (the loss curve).
    validation_steps: int = 50
    logging_steps: int = 10
    evaluation_max_examples: int = 0  # 0 = the whole test split
    evaluation_batch_size: int = 16  # prompts per generation batch
    max_new_tokens: int = 0  # answer tokens evaluation generates at most; 0: the task spec's
    train_instance_type: str = "ml.g5.2xlarge"
    train_instance_count: int = 1
    baseline_mode: BaselineMode = BaselineMode.TRAIN
    # Reuse mode's stored baseline; empty: the run's task's (s3://<bucket>/baselines/<task>/).
    baseline_evaluation_uri: str = ""

    def __post_init__(self) -> None:
        if self.use_spot and self.max_wait_s < self.max_runtime_s:
            raise ValueError("max_wait_s must be >= max_runtime_s for managed spot training")
        if self.network_isolation and not self.image_uri:
            raise ValueError(
                "network_isolation needs image_uri (or the stage's build_job_image): an image that "
                "already holds training_scripts/requirements.lock, since isolated jobs cannot pip "
                "install"
            )
        if self.network_isolation and not (
            self.base_model.endswith("/")
            and (self.base_model.startswith("s3://") or "://" not in self.base_model)
            and not self.base_model.startswith("/")
        ):
            raise ValueError(
                f"network_isolation needs base_model as an s3://.../ prefix, or a prefix in the "
                "project's bucket such as base-models/<model>/<revision>/ (ending in /), holding "
                "the model's files (isolated jobs cannot reach the Hugging Face Hub, and the "
                f"registered spec serves it from there), not {self.base_model!r}"
            )
        if self.network_isolation and self.mlflow_tracking_uri:
            raise ValueError(
                "mlflow_tracking_uri needs network access from the jobs, which network_isolation "
                "removes: track a stage without isolation, or drop its tracking server"
            )
        if self.hf_token_secret_arn and not re.fullmatch(
            r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[\w/+=.@-]+-[A-Za-z0-9]{6}",
            self.hf_token_secret_arn,
        ):
            raise ValueError(
                f"hf_token_secret_arn {self.hf_token_secret_arn!r} is not a secret's full ARN "
                "(arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-xxxxxx)"
            )
        for task in (self.task, *self.tasks):
            check_task_name(task)
        if len(set(self.run_tasks)) != len(self.run_tasks):
            raise ValueError(f"tasks {list(self.tasks)} name a task twice")
        if self.task not in self.run_tasks:
            raise ValueError(f"task {self.task!r} is not one of tasks {list(self.tasks)}")
        strays = sorted({task for task, _ in self.task_gates} - set(self.run_tasks))
        if strays:
            raise ValueError(f"task_gates name tasks the pipeline does not run: {strays}")
        if self.baseline_evaluation_uri and len(self.run_tasks) > 1:
            raise ValueError(
                "baseline_evaluation_uri names one baseline, but the pipeline runs several tasks: "
                "drop it, each task's run reads its own (peftops baseline publish)"
            )
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout {self.lora_dropout} must be in [0, 1)")
        if self.precision not in {p.value for p in Precision}:
            raise ValueError(
                f"precision {self.precision!r}: choose one of {[p.value for p in Precision]}"
            )
        if self.peft_method not in ADAPTER_METHODS:
            raise ValueError(f"peft_method must be one of {ADAPTER_METHODS}")
        # At most 47 characters: its Lambda functions are named after it, and CreateFunction
        # takes a name of at most 64.
        if len(self.name) > 47 or not re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*", self.name):
            raise ValueError(
                f"pipeline name {self.name!r} is not valid: letters and digits joined by hyphens, "
                "at most 47 characters"
            )

    @property
    def run_tasks(self) -> tuple[str, ...]:
        return self.tasks or (self.task,)

    @property
    def stage_gate(self) -> GateThresholds:
        """The gate of the tasks without their own, as floats: what evaluate states and the
        definition's conditions compare with (0 and 0.0 are one number to both)."""
        return GateThresholds(float(self.metric_tolerance), float(self.min_metric_gain))

    def gate(self, task: str) -> GateThresholds:
        """The quality gate's thresholds for one task."""
        gate = dict(self.task_gates).get(task, self.stage_gate)
        return GateThresholds(float(gate.metric_tolerance), float(gate.min_metric_gain))

    @property
    def own_gates(self) -> dict[str, GateThresholds]:
        """The tasks whose gate differs from the stage's, in the order they are declared."""
        own = dict(self.task_gates)
        return {task: self.gate(task) for task in self.run_tasks if task in own}


def check_task_name(task: str) -> str:
    if task == BASE_COMPONENT:
        raise ValueError(f"task {task!r} names the base model's component; choose another name")
    if not TASK_NAME.fullmatch(task):
        raise ValueError(
            f"task {task!r}: use lower-case letters, digits and single hyphens, at most 32 "
            "characters (e.g. dialogue-summary)"
        )
    return task


# The pipeline's Lambda functions (pipelines/functions), named after the pipeline; CDK
# deploys them under these names.
RESOLVE_INPUTS = "resolve-inputs"
CHECK_REGISTERED = "check-registered"
FUNCTION_HANDLERS = {
    RESOLVE_INPUTS: "resolve_inputs.handler",
    CHECK_REGISTERED: "registered_adapter.handler",
}


def function_name(config: PipelineConfig, function: str) -> str:
    return f"{config.name}-{function}"


def config_from_dict(values: dict[str, Any], *, source: str = "config") -> PipelineConfig:
    """PipelineConfig from plain settings (a JSON file, or a CDK stage's `pipeline` context)."""
    known = {f.name for f in dataclasses.fields(PipelineConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{source}: unknown settings {unknown}; known: {sorted(known)}")
    values = dict(values)
    if values.get("vpc"):
        values["vpc"] = Vpc(
            tuple(values["vpc"]["subnet_ids"]), tuple(values["vpc"]["security_group_ids"])
        )
    if "baseline_mode" in values:
        values["baseline_mode"] = BaselineMode(values["baseline_mode"])
    if "tasks" in values:
        values["tasks"] = tuple(values["tasks"])
    if "task_gates" in values:
        values["task_gates"] = tuple(
            (task, GateThresholds(**gate)) for task, gate in sorted(values["task_gates"].items())
        )
    return PipelineConfig(**values)
