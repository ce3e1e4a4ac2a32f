"""The SageMaker Pipeline, built offline and deterministically from `PipelineConfig`.

    ResolveInputs -> Preprocess -> TrainAdapter -> CheckBaselineMode
        train: TrainBaseline -> Evaluate -> QualityGate -> <register> | GateFailed
        reuse: EvaluateStoredBaseline -> QualityGateStoredBaseline -> <register> | GateFailed...
    <register>: Servable -> CheckRegistered -> NewAdapter -> RegisterAdapter | (already there)
                         | NotServable

How a run behaves from one run to the next, under SageMaker's step cache (a step whose key
attributes match an earlier successful run within `cache_expiry` is not run again; Processing
keys on AppSpecification, Environment and ProcessingInputs, Training on AlgorithmSpecification,
CheckpointConfig, Environment, HyperParameters and InputDataConfig: "Default cache key
attributes by pipeline step type", SageMaker Developer Guide):
- ResolveInputs (a Lambda, never cached) names the dataset version: the newest published one
  unless a run pins `DatasetVersion`. Its URI is a Preprocess input, so new data misses the
  cache and the same data hits it.
- Preprocess writes under its execution's prefix (outputs are not in its key); a cache hit
  hands later steps the earlier run's URIs, so training hits the cache too.
- Checkpoints live under the Preprocess job that made the data (data and base model) and the
  training arguments: a run with new data or other arguments starts from step 0, a retried or
  spot-interrupted job of the same run resumes, and an unchanged run keeps a stable cache key.
- CheckRegistered (a Lambda, never cached) stops a cache-hit run from registering the same
  adapter artifact twice.

Both branches are built by one factory (`evaluation_tail`), so they cannot drift. A step
that depends on a skipped branch would not run, hence the tail per branch rather than one
tail after a conditional TrainBaseline.

Every step runs code from `training_scripts/`, staged as one content-hashed
sourcedir.tar.gz; `peftops pipeline definition` writes the JSON. The gate's conditions and
every JsonGet path come from `training_scripts.contracts`, the definition of evaluation.json.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sagemaker.core.lambda_helper import Lambda
from sagemaker.core.model_metrics import MetricsSource, ModelMetrics
from sagemaker.core.network import NetworkConfig
from sagemaker.core.processing import FrameworkProcessor
from sagemaker.core.shapes import (
    ModelPackageModelCard,
    ProcessingInput,
    ProcessingOutput,
    ProcessingS3Input,
    ProcessingS3Output,
)
from sagemaker.core.training.configs import (
    CheckpointConfig,
    Compute,
    InputData,
    MetricDefinition,
    Networking,
    OutputDataConfig,
    SourceCode,
    StoppingCondition,
)
from sagemaker.core.workflow import (
    Condition,
    ConditionEquals,
    ConditionGreaterThanOrEqualTo,
    ConditionIn,
    ConditionLessThanOrEqualTo,
    ExecutionVariables,
    Join,
    JsonGet,
    ParameterFloat,
    ParameterInteger,
    ParameterString,
    PropertyFile,
)
from sagemaker.mlops.workflow import (
    CacheConfig,
    ConditionStep,
    FailStep,
    LambdaOutput,
    LambdaStep,
    ModelStep,
    Pipeline,
    ProcessingStep,
    SageMakerJobExceptionTypeEnum,
    SageMakerJobStepRetryPolicy,
    StepExceptionTypeEnum,
    StepRetryPolicy,
    TrainingStep,
)
from sagemaker.mlops.workflow.lambda_step import LambdaOutputTypeEnum
from sagemaker.serve.model_builder import ModelBuilder
from sagemaker.train import ModelTrainer
from sagemaker.train.distributed import Torchrun

from pipelines.definition.config import (
    ADAPTER_METHODS,
    CHECK_REGISTERED,
    CHECKPOINTS,
    EVALUATIONS,
    MODELS,
    PREPROCESS_OUTPUTS,
    RESOLVE_INPUTS,
    TRACKED_JOBS,
    BaselineMode,
    Deployment,
    JobKind,
    PipelineConfig,
    function_name,
)
from pipelines.definition.images import job_images, lora_serving_environment, serving_image
from pipelines.definition.service_rules import definition_violations, volume_kms_key
from pipelines.definition.staging import ASSET_PREFIX, OfflineSession
from pipelines.functions import layout
from pipelines.functions.registered_adapter import (
    EVALUATION_DIGEST,
    SMOKE_TEST,
    TASK,
)
from training_scripts import contracts, model_card, tracking
from training_scripts.common import HUB_TOKEN_SECRET_VARIABLE

logger = logging.getLogger("peftops")

SCRIPTS_DIR = Path(contracts.__file__).resolve().parent  # training_scripts/
JOB_REQUIREMENTS = "requirements.lock"  # make lock; relative to SCRIPTS_DIR
PROCESSING = "/opt/ml/processing"


def base_model_location(config: PipelineConfig, deployment: Deployment) -> str:
    """The base model as jobs get it: a hub id, an s3:// prefix, or (isolated, a prefix with no
    scheme) that prefix in the project's bucket."""
    if config.network_isolation and not config.base_model.startswith("s3://"):
        return f"{deployment.root}/{config.base_model}"
    return config.base_model


@dataclass(frozen=True)
class Parameters:
    """The runtime knobs of an execution; names are what `peftops pipeline start` overrides."""

    task: ParameterString
    dataset_version: ParameterString
    base_model: ParameterString
    peft_method: ParameterString
    lora_r: ParameterInteger
    lora_alpha: ParameterInteger
    epochs: ParameterFloat
    learning_rate: ParameterFloat
    train_instance_count: ParameterInteger
    token_budget: ParameterInteger
    baseline_mode: ParameterString
    baseline_evaluation_uri: ParameterString

    @classmethod
    def from_config(cls, config: PipelineConfig, deployment: Deployment) -> Parameters:
        return cls(
            task=ParameterString("Task", default_value=config.task),
            dataset_version=ParameterString("DatasetVersion", default_value=config.dataset_version),
            base_model=ParameterString(
                "BaseModel", default_value=base_model_location(config, deployment)
            ),
            peft_method=ParameterString(
                "PeftMethod", default_value=config.peft_method, enum_values=list(ADAPTER_METHODS)
            ),
            lora_r=ParameterInteger("LoraRank", default_value=config.lora_r),
            lora_alpha=ParameterInteger("LoraAlpha", default_value=config.lora_alpha),
            epochs=ParameterFloat("Epochs", default_value=config.epochs),
            learning_rate=ParameterFloat("LearningRate", default_value=config.learning_rate),
            train_instance_count=ParameterInteger(
                "TrainInstanceCount", default_value=config.train_instance_count
            ),
            token_budget=ParameterInteger("TokenBudget", default_value=config.token_budget),
            baseline_mode=ParameterString(
                "BaselineMode",
                default_value=config.baseline_mode.value,
                enum_values=[m.value for m in BaselineMode],
            ),
            baseline_evaluation_uri=ParameterString(
                "BaselineEvaluationUri",
                default_value=config.baseline_evaluation_uri
                or f"{deployment.root}/{layout.BASELINE_EVALUATION}",
            ),
        )

    def all(self) -> list[Any]:
        return list(vars(self).values())


REGISTERED_STATUS = "PendingManualApproval"
# Registration metadata naming the MLflow runs, and where evaluation.json holds their ids.
TRACKING_METADATA = {
    "mlflow_run_id": "tracking.evaluation_run_id",
    "mlflow_training_run_id": "tracking.training_run_ids.adapter",
}
# What the serving container loads: LMI (vLLM) serves LoRA adapters on the base model; it has
# no prompt-tuning support, so such adapters are evaluated but not registered.
SERVABLE_METHODS = ("lora", "qlora")

# What the training job's console charts, read from its log: the Trainer's loss records
# ({'loss': '1.52', 'grad_norm': ...}) and train.py's validation lines.
TRAINING_METRIC_DEFINITIONS = [
    MetricDefinition(name="train:loss", regex=r"'loss': '?([0-9.eE+-]+)"),
    MetricDefinition(name="train:learning_rate", regex=r"'learning_rate': '?([0-9.eE+-]+)"),
    MetricDefinition(name="validation:loss", regex=r"validation loss ([0-9.eE+-]+)"),
]

# The SDK's condition classes for the comparisons the gate rule uses.
GATE_CONDITION_TYPES: dict[str, type[Condition]] = {
    "LessThanOrEqualTo": ConditionLessThanOrEqualTo,
    "GreaterThanOrEqualTo": ConditionGreaterThanOrEqualTo,
}


# Where the training container unpacks the code channel (sm_train.sh: cd, tar -xzf).
CONTAINER_CODE_DIR = "/opt/ml/input/data/code"


class _StagingModelTrainer(ModelTrainer):
    """The base class asks IAM (iam:SimulatePrincipalPolicy) which bucket to stage into."""

    def _resolve_staging_bucket(self) -> tuple[str, None]:
        return self.sagemaker_session.default_bucket(), None

    def _write_source_code_json(self, tmp_dir: Any, source_code: SourceCode) -> None:
        """sm_drivers/sourcecode.json with source_dir as the container sees the code, not its
        S3 URI: the drivers read only entry_script from it, and a bucket name in an uploaded
        file would make its content (and key) differ per deployment, so the CDK stack, which
        builds with a placeholder bucket, would upload that placeholder."""
        located = source_code.model_copy(update={"source_dir": CONTAINER_CODE_DIR})
        super()._write_source_code_json(tmp_dir, located)


class _StableFrameworkProcessor(FrameworkProcessor):
    """The SDK stages its install_requirements.py helper under the job name, which holds a
    timestamp; key it by the helper's content instead."""

    def _resolve_helper_scripts_prefix(self, job_name: str) -> str:
        import sagemaker.core.utils.install_requirements as helper

        digest = hashlib.sha256(Path(helper.__file__).read_bytes()).hexdigest()
        return f"{self._s3_code_prefix()}/helpers/{digest}"


class _Builder:
    def __init__(
        self, config: PipelineConfig, deployment: Deployment, session: OfflineSession
    ) -> None:
        self.config = config
        self.deployment = deployment
        self.session = session
        self.params = Parameters.from_config(config, deployment)
        self.code_uri = session.stage_code(SCRIPTS_DIR)
        self.images = job_images(config, deployment.region)
        self.cache = CacheConfig(enable_caching=True, expire_after=config.cache_expiry)
        self.prefix = f"{deployment.root}/pipelines/{config.name}"

    # --- shared pieces ------------------------------------------------------------------------

    @property
    def requirements(self) -> str | None:
        """What a job installs at start: the hash-pinned lock (pip checks every file it
        downloads), or nothing on a prebuilt image (`image_uri`), which holds that lock already
        and may run without network."""
        return None if self.config.image_uri else JOB_REQUIREMENTS

    def job_environment(self, kind: JobKind) -> dict[str, str]:
        environment = {"HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false"}
        if self.config.hf_token_secret_arn:
            # The secret's ARN, never the token: the jobs read it from Secrets Manager.
            environment[HUB_TOKEN_SECRET_VARIABLE] = self.config.hf_token_secret_arn
        if self.config.mlflow_tracking_uri and kind in TRACKED_JOBS:
            environment[tracking.TRACKING_URI] = self.config.mlflow_tracking_uri
            # One experiment per model group, as a local run keeps it.
            environment[tracking.EXPERIMENT_NAME] = self.config.model_package_group
        return environment

    def job_retries(self) -> list[Any]:
        """Capacity shortages (spot, GPUs), service faults and throttling are worth retrying;
        a failing script is not."""
        return [
            SageMakerJobStepRetryPolicy(
                exception_types=[
                    SageMakerJobExceptionTypeEnum.CAPACITY_ERROR,
                    SageMakerJobExceptionTypeEnum.INTERNAL_ERROR,
                    SageMakerJobExceptionTypeEnum.RESOURCE_LIMIT,
                ],
                interval_seconds=60,
                backoff_rate=2.0,
                max_attempts=self.config.retry_attempts,
            ),
            StepRetryPolicy(
                exception_types=[
                    StepExceptionTypeEnum.SERVICE_FAULT,
                    StepExceptionTypeEnum.THROTTLING,
                ],
                interval_seconds=30,
                backoff_rate=2.0,
                max_attempts=self.config.retry_attempts,
            ),
        ]

    @property
    def model_from_s3(self) -> bool:
        """With network isolation the base model cannot come from the hub: BaseModel is an
        S3 prefix, mounted as the `model` channel / processing input."""
        return self.config.network_isolation

    def processor(
        self, kind: JobKind, instance_type: str, base_job_name: str
    ) -> FrameworkProcessor:
        vpc = self.config.vpc
        return _StableFrameworkProcessor(
            role=self.deployment.job_role(kind),
            image_uri=self.images.for_instance(instance_type),
            command=["python3"],
            instance_count=1,
            instance_type=instance_type,
            volume_size_in_gb=self.config.train_volume_gb,
            volume_kms_key=volume_kms_key(instance_type, self.deployment.kms_key_arn),
            output_kms_key=self.deployment.kms_key_arn,
            max_runtime_in_seconds=self.config.max_runtime_s,
            base_job_name=base_job_name,
            sagemaker_session=self.session,
            code_location=f"{self.deployment.root}/{ASSET_PREFIX}/processing/{base_job_name}",
            env=self.job_environment(kind),
            network_config=NetworkConfig(
                enable_network_isolation=self.config.network_isolation,
                security_group_ids=list(vpc.security_group_ids) if vpc else None,
                subnets=list(vpc.subnet_ids) if vpc else None,
                encrypt_inter_container_traffic=True,
            ),
        )

    def s3_input(self, name: str, uri: Any, local_path: str) -> ProcessingInput:
        return ProcessingInput(
            input_name=name,
            s3_input=ProcessingS3Input(
                s3_uri=uri, local_path=local_path, s3_data_type="S3Prefix", s3_input_mode="File"
            ),
        )

    def s3_output(self, name: str, uri: Any, local_path: str) -> ProcessingOutput:
        return ProcessingOutput(
            output_name=name,
            s3_output=ProcessingS3Output(
                s3_uri=uri, local_path=local_path, s3_upload_mode="EndOfJob"
            ),
        )

    def base_model_processing_input(self) -> tuple[list[ProcessingInput], Any]:
        if self.model_from_s3:
            return [
                self.s3_input("model", self.params.base_model, f"{PROCESSING}/input/model")
            ], f"{PROCESSING}/input/model"
        return [], self.params.base_model

    def function(self, name: str) -> Lambda:
        return Lambda(
            function_arn=self.deployment.function_arn(function_name(self.config, name)),
            session=self.session,
        )

    # --- steps --------------------------------------------------------------------------------

    def resolve_inputs(self) -> LambdaStep:
        p = self.params
        return LambdaStep(
            name="ResolveInputs",
            lambda_func=self.function(RESOLVE_INPUTS),
            inputs={
                "Bucket": self.deployment.bucket,
                "DatasetVersion": p.dataset_version,
                "BaselineMode": p.baseline_mode,
                "BaselineEvaluationUri": p.baseline_evaluation_uri,
            },
            outputs=[
                LambdaOutput("DatasetVersion", LambdaOutputTypeEnum.String),
                LambdaOutput("DatasetUri", LambdaOutputTypeEnum.String),
            ],
        )

    def preprocess(self, inputs: LambdaStep) -> ProcessingStep:
        model_inputs, tokenizer = self.base_model_processing_input()
        dataset_uri = inputs.properties.Outputs["DatasetUri"]
        # Outputs are not part of a processing step's cache key: a cache hit hands later steps
        # the URI of the run that did the work, so this may name the execution.
        output_uri = Join(
            on="/",
            values=[
                f"{self.prefix}/{PREPROCESS_OUTPUTS}",
                inputs.properties.Outputs["DatasetVersion"],
                ExecutionVariables.PIPELINE_EXECUTION_ID,
            ],
        )
        step_args = self.processor(
            JobKind.PREPROCESS, self.config.processing_instance_type, "peftops-preprocess"
        ).run(
            code="preprocess.py",
            source_dir=self.code_uri,
            requirements=self.requirements,
            inputs=[self.s3_input("data", dataset_uri, f"{PROCESSING}/input/data"), *model_inputs],
            outputs=[self.s3_output("splits", output_uri, f"{PROCESSING}/output")],
            arguments=[
                "--input", f"{PROCESSING}/input/data",
                "--output-dir", f"{PROCESSING}/output",
                "--tokenizer", tokenizer,
                "--input-field", self.config.input_field,
                "--target-field", self.config.target_field,
            ],
        )  # fmt: skip
        return ProcessingStep(
            name="Preprocess",
            step_args=step_args,
            cache_config=self.cache,
            retry_policies=self.job_retries(),
        )

    def checkpoint_uri(
        self, name: str, preprocess: ProcessingStep, run_key: list[Any], fixed: dict[str, Any]
    ) -> Join:
        """Checkpoints of one training run: the Preprocess job that made its data (so the
        dataset version and the base model), the run's parameters, and a hash of the settings
        fixed at deployment. SageMaker restores the prefix into /opt/ml/checkpoints at job
        start, so only a job of this same run may find anything there."""
        settings = json.dumps({k: str(v) for k, v in fixed.items()}, sort_keys=True)
        key: list[Any] = []
        for value in [*run_key, hashlib.sha256(settings.encode()).hexdigest()[:12]]:
            key += ["-", value] if key else [value]
        # One flat Join: the service's Std:Join takes values and references, not nested Joins.
        return Join(
            on="",
            values=[
                f"{self.prefix}/{CHECKPOINTS}/{name}/",
                preprocess.properties.ProcessingJobName,
                "/",
                *key,
            ],
        )

    def training_step(
        self,
        name: str,
        preprocess: ProcessingStep,
        hyperparameters: dict[str, Any],
        run_key: list[Any],
    ) -> TrainingStep:
        splits = preprocess.properties.ProcessingOutputConfig.Outputs["splits"].S3Output.S3Uri
        channels = [
            InputData(channel_name="train", data_source=Join(on="/", values=[splits, "train"])),
            InputData(
                channel_name="validation", data_source=Join(on="/", values=[splits, "validation"])
            ),
        ]
        if self.model_from_s3:
            channels.append(InputData(channel_name="model", data_source=self.params.base_model))
        else:
            hyperparameters = {"model-name-or-path": self.params.base_model, **hyperparameters}
        fixed = {
            k: v for k, v in hyperparameters.items() if isinstance(v, str | int | float | bool)
        }
        fixed["image"] = self.images.for_instance(self.config.train_instance_type)
        vpc = self.config.vpc
        trainer = _StagingModelTrainer(
            training_image=self.images.for_instance(self.config.train_instance_type),
            role=self.deployment.job_role(JobKind.TRAINING),
            sagemaker_session=self.session,
            base_job_name=f"peftops-{name.lower()}",
            source_code=SourceCode(
                source_dir=self.code_uri, entry_script="train.py", requirements=self.requirements
            ),
            # torchrun on every job: one process per GPU on each instance, so more GPUs or
            # instances scale out without another definition.
            distributed=Torchrun(),
            compute=Compute(
                # A deployment setting, not a run parameter: the volume rules depend on it.
                instance_type=self.config.train_instance_type,
                instance_count=self.params.train_instance_count,
                volume_size_in_gb=self.config.train_volume_gb,
                volume_kms_key_id=volume_kms_key(
                    self.config.train_instance_type, self.deployment.kms_key_arn
                ),
                enable_managed_spot_training=self.config.use_spot,
            ),
            networking=Networking(
                enable_network_isolation=self.config.network_isolation,
                enable_inter_container_traffic_encryption=True,
                security_group_ids=list(vpc.security_group_ids) if vpc else None,
                subnets=list(vpc.subnet_ids) if vpc else None,
            ),
            stopping_condition=StoppingCondition(
                max_runtime_in_seconds=self.config.max_runtime_s,
                max_wait_time_in_seconds=self.config.max_wait_s if self.config.use_spot else None,
            ),
            # train.py resumes from /opt/ml/checkpoints, which SageMaker syncs with this prefix.
            checkpoint_config=CheckpointConfig(
                s3_uri=self.checkpoint_uri(name, preprocess, run_key, fixed),
                local_path="/opt/ml/checkpoints",
            ),
            output_data_config=OutputDataConfig(
                s3_output_path=f"{self.prefix}/{MODELS}/{name}",
                kms_key_id=self.deployment.kms_key_arn,
            ),
            environment=self.job_environment(JobKind.TRAINING),
            hyperparameters=hyperparameters,
        )
        trainer.with_metric_definitions(TRAINING_METRIC_DEFINITIONS)
        return TrainingStep(
            name=name,
            step_args=trainer.train(input_data_config=channels),
            cache_config=self.cache,
            retry_policies=self.job_retries(),
        )

    def shared_training_hyperparameters(self, dataset_version: Any) -> dict[str, Any]:
        """What the adapter and the full fine-tune train with alike: a fair comparison."""
        return {
            "per-device-batch-size": str(self.config.per_device_batch_size),
            "token-budget": self.params.token_budget.to_string(),
            "precision": self.config.precision,
            "gradient-checkpointing": str(self.config.gradient_checkpointing).lower(),
            "validation-max-examples": str(self.config.validation_max_examples),
            "validation-steps": str(self.config.validation_steps),
            "logging-steps": str(self.config.logging_steps),
            "dataset-version": dataset_version,
            "checkpoint-dir": "/opt/ml/checkpoints",
        }

    def train_adapter(self, preprocess: ProcessingStep, dataset_version: Any) -> TrainingStep:
        p = self.params
        return self.training_step(
            "TrainAdapter",
            preprocess,
            {
                "method": p.peft_method,
                "lora-r": p.lora_r.to_string(),
                "lora-alpha": p.lora_alpha.to_string(),
                "lora-dropout": str(self.config.lora_dropout),
                "epochs": p.epochs.to_string(),
                "learning-rate": p.learning_rate.to_string(),
                **self.shared_training_hyperparameters(dataset_version),
            },
            [p.peft_method, p.lora_r, p.lora_alpha, p.epochs, p.learning_rate, p.token_budget],
        )

    def train_baseline(self, preprocess: ProcessingStep, dataset_version: Any) -> TrainingStep:
        return self.training_step(
            "TrainBaseline",
            preprocess,
            {
                "method": "full",
                "epochs": self.params.epochs.to_string(),
                "learning-rate": str(self.config.baseline_learning_rate),
                **self.shared_training_hyperparameters(dataset_version),
            },
            ["full", self.params.epochs, self.params.token_budget],
        )

    def evaluate(
        self,
        suffix: str,
        inputs_step: LambdaStep,
        preprocess: ProcessingStep,
        adapter: TrainingStep,
        baseline: TrainingStep | None,
    ) -> tuple[ProcessingStep, PropertyFile]:
        name = f"Evaluate{suffix}"
        model_inputs, base_model = self.base_model_processing_input()
        inputs = [
            *model_inputs,
            self.s3_input(
                "test",
                Join(
                    on="/",
                    values=[
                        preprocess.properties.ProcessingOutputConfig.Outputs[
                            "splits"
                        ].S3Output.S3Uri,
                        "test",
                    ],
                ),
                f"{PROCESSING}/input/test",
            ),
            self.s3_input(
                "adapter",
                adapter.properties.ModelArtifacts.S3ModelArtifacts,
                f"{PROCESSING}/input/adapter",
            ),
        ]
        arguments: list[Any] = [
            "--base-model", base_model,
            "--adapter-dir", f"{PROCESSING}/input/adapter",
            "--test-dir", f"{PROCESSING}/input/test",
            "--output-dir", f"{PROCESSING}/output/evaluation",
            "--max-examples", str(self.config.evaluation_max_examples),
            "--max-new-tokens", str(self.config.max_new_tokens),
            "--batch-size", str(self.config.evaluation_batch_size),
            "--precision", self.config.precision,
            "--dataset-version", inputs_step.properties.Outputs["DatasetVersion"],
            # The report states the verdict of the gate this pipeline applies.
            "--rouge-l-tolerance", str(self.config.rouge_l_tolerance),
            "--min-rouge-l-gain", str(self.config.min_rouge_l_gain),
        ]  # fmt: skip
        if baseline is not None:
            inputs.append(
                self.s3_input(
                    "baseline",
                    baseline.properties.ModelArtifacts.S3ModelArtifacts,
                    f"{PROCESSING}/input/baseline",
                )
            )
            arguments += ["--baseline-dir", f"{PROCESSING}/input/baseline"]
        else:
            inputs.append(
                self.s3_input(
                    "stored-baseline",
                    self.params.baseline_evaluation_uri,
                    f"{PROCESSING}/input/stored-baseline",
                )
            )
            arguments += ["--baseline-evaluation", f"{PROCESSING}/input/stored-baseline"]
        report = PropertyFile(
            name=f"EvaluationReport{suffix}",
            output_name="evaluation",
            path=contracts.EVALUATION.file_name,
        )
        card = PropertyFile(
            name=f"ModelCard{suffix}", output_name="evaluation", path=model_card.SAGEMAKER_CONTENT
        )
        # One evaluation folder per adapter training job: deterministic for the step cache,
        # never shared by two different adapters.
        output_uri = Join(
            on="/",
            values=[f"{self.prefix}/{EVALUATIONS}", adapter.properties.TrainingJobName, name],
        )
        step_args = self.processor(
            JobKind.EVALUATION, self.config.evaluation_instance_type, "peftops-evaluate"
        ).run(
            code="evaluate.py",
            source_dir=self.code_uri,
            requirements=self.requirements,
            inputs=inputs,
            outputs=[self.s3_output("evaluation", output_uri, f"{PROCESSING}/output/evaluation")],
            arguments=arguments,
        )
        step = ProcessingStep(
            name=name,
            step_args=step_args,
            property_files=[report, card],
            cache_config=self.cache,
            retry_policies=self.job_retries(),
        )
        return step, report

    @staticmethod
    def evaluation_uri(evaluate: ProcessingStep) -> Join:
        return Join(
            on="/",
            values=[
                evaluate.properties.ProcessingOutputConfig.Outputs["evaluation"].S3Output.S3Uri,
                contracts.EVALUATION.file_name,
            ],
        )

    def register(
        self,
        suffix: str,
        inputs: LambdaStep,
        preprocess: ProcessingStep,
        adapter: TrainingStep,
        evaluate: ProcessingStep,
        check: LambdaStep,
    ) -> ModelStep:
        p = self.params
        evaluation_uri = self.evaluation_uri(evaluate)
        builder = ModelBuilder(
            # What a stage's deployer deploys: this artifact as an adapter inference component
            # on the endpoint's base component, which runs this image with these settings.
            s3_model_data_url=adapter.properties.ModelArtifacts.S3ModelArtifacts,
            image_uri=serving_image(self.deployment.region),
            role_arn=self.deployment.role_arn,
            sagemaker_session=self.session,
            env_vars=lora_serving_environment(p.base_model),
            log_level=logging.WARNING,  # its default, DEBUG, logs every request it builds
        )
        lineage = {
            TASK: p.task,
            "base_model": p.base_model,
            "peft_method": p.peft_method,
            "lora_r": p.lora_r.to_string(),
            "lora_alpha": p.lora_alpha.to_string(),
            "target_modules": "all-linear",
            "trainable_percent": JsonGet(
                step_name=evaluate.name,
                property_file=f"EvaluationReport{suffix}",
                json_path=contracts.ADAPTER_TRAINABLE_PERCENT,
            ).to_string(),
            "dataset_version": inputs.properties.Outputs["DatasetVersion"],
            "dataset_uri": inputs.properties.Outputs["DatasetUri"],
            "manifest_uri": Join(
                on="/",
                values=[
                    preprocess.properties.ProcessingOutputConfig.Outputs["splits"].S3Output.S3Uri,
                    contracts.MANIFEST.file_name,
                ],
            ),
            "code_uri": self.code_uri,
            "training_job": adapter.properties.TrainingJobName,
            # What approval checks the evaluation it re-reads against: jobs may write the
            # evaluation's prefix, but not the registry.
            EVALUATION_DIGEST: check.properties.Outputs["EvaluationSha256"],
            # The gate's thresholds, so approval can check the gate again later.
            "rouge_l_tolerance": str(self.config.rouge_l_tolerance),
            "min_rouge_l_gain": str(self.config.min_rouge_l_gain),
        }
        if self.config.smoke_test:
            lineage[SMOKE_TEST] = "true"
        # The MLflow runs behind this version, its evaluation's and its adapter's training's
        # ("none" where the jobs were not tracked).
        for key, path in TRACKING_METADATA.items():
            lineage[key] = JsonGet(
                step_name=evaluate.name, property_file=f"EvaluationReport{suffix}", json_path=path
            ).to_string()
        step_args = builder.register(
            model_package_group_name=self.config.model_package_group,
            content_types=["application/json"],
            response_types=["application/json"],
            inference_instances=[self.config.evaluation_instance_type],
            transform_instances=[self.config.evaluation_instance_type],
            # Always pending: approval is a reviewer's decision (`peftops models approve`, which
            # checks the gate again), never a run parameter anyone who starts the pipeline sets.
            approval_status=REGISTERED_STATUS,
            model_metrics=ModelMetrics(
                model_statistics=MetricsSource(
                    content_type="application/json", s3_uri=evaluation_uri
                )
            ),
            customer_metadata_properties=lineage,
            description="PEFT adapter for dialogue summarization (peftops)",
            # The evaluated model card (model_card.py), pending review like the version itself.
            model_card=ModelPackageModelCard(
                model_card_content=JsonGet(
                    step_name=evaluate.name,
                    property_file=f"ModelCard{suffix}",
                    json_path=model_card.SAGEMAKER_CONTENT_PATH,
                ),
                model_card_status="PendingReview",
            ),
        )
        return ModelStep(name=f"RegisterAdapter{suffix}", step_args=step_args)

    def registration(
        self,
        suffix: str,
        inputs: LambdaStep,
        preprocess: ProcessingStep,
        adapter: TrainingStep,
        evaluate: ProcessingStep,
    ) -> ConditionStep:
        """Register what passed the gate, once: only adapters the inference spec can serve,
        and not an artifact already in the group (a cache-hit rerun brings the same one)."""
        p = self.params
        check = LambdaStep(
            name=f"CheckRegistered{suffix}",
            lambda_func=self.function(CHECK_REGISTERED),
            inputs={
                "ModelPackageGroupName": self.config.model_package_group,
                "ModelDataUrl": adapter.properties.ModelArtifacts.S3ModelArtifacts,
                "EvaluationUri": self.evaluation_uri(evaluate),
            },
            outputs=[
                LambdaOutput(name, LambdaOutputTypeEnum.String)
                for name in ("Registered", "ModelPackageArn", "Message", "EvaluationSha256")
            ],
        )
        new = ConditionStep(
            name=f"NewAdapter{suffix}",
            conditions=[
                ConditionEquals(left=check.properties.Outputs["Registered"], right="false")
            ],
            if_steps=[self.register(suffix, inputs, preprocess, adapter, evaluate, check)],
            else_steps=[],
        )
        not_servable = FailStep(
            name=f"NotServable{suffix}",
            error_message=Join(
                on="",
                values=[
                    "PeftMethod ",
                    p.peft_method,
                    " adapters are evaluated but not registered: the "
                    "serving container (LMI, vLLM) loads LoRA adapters only. Train with PeftMethod "
                    f"{' or '.join(SERVABLE_METHODS)} to register one.",
                ],
            ),
        )
        return ConditionStep(
            name=f"Servable{suffix}",
            conditions=[ConditionIn(value=p.peft_method, in_values=list(SERVABLE_METHODS))],
            if_steps=[check, new],
            else_steps=[not_servable],
        )

    def evaluation_tail(
        self,
        suffix: str,
        inputs: LambdaStep,
        preprocess: ProcessingStep,
        adapter: TrainingStep,
        baseline: TrainingStep | None,
    ) -> list[Any]:
        """Evaluate -> QualityGate -> RegisterAdapter | GateFailed, for one baseline source."""
        evaluate, report = self.evaluate(suffix, inputs, preprocess, adapter, baseline)

        def value(path: str) -> JsonGet:
            return JsonGet(step_name=evaluate.name, property_file=report, json_path=path)

        def rouge_l(model: str) -> JsonGet:
            return value(contracts.metric_path(model))

        thresholds = {
            # Deployment settings, literal here: a run cannot loosen the gate it must pass.
            "rouge_l_tolerance": self.config.rouge_l_tolerance,
            "min_rouge_l_gain": self.config.min_rouge_l_gain,
        }
        conditions = [
            GATE_CONDITION_TYPES[c.comparison](left=value(c.path), right=thresholds[c.threshold])
            for c in contracts.GATE_CONDITIONS
        ]
        failed = FailStep(
            name=f"GateFailed{suffix}",
            error_message=Join(
                on="",
                values=[
                    "Quality gate failed: adapter rougeL ", rouge_l("adapter"),
                    ", full fine-tune ", rouge_l("full_finetune"), ", base ", rouge_l("base"),
                    "; at the ends of their 95% intervals the adapter may trail the full "
                    "fine-tune by ", value(contracts.SHORTFALL_VS_FULL_FINETUNE),
                    f" (allowed {self.config.rouge_l_tolerance}) and gains at least ",
                    value(contracts.GAIN_VS_BASE), f" over the base (required {self.config.min_rouge_l_gain}).",
                ],
            ),
        )  # fmt: skip
        gate = ConditionStep(
            name=f"QualityGate{suffix}",
            conditions=conditions,
            if_steps=[self.registration(suffix, inputs, preprocess, adapter, evaluate)],
            else_steps=[failed],
        )
        steps: list[Any] = [evaluate, gate]
        return [baseline, *steps] if baseline is not None else steps

    def build(self) -> Pipeline:
        inputs = self.resolve_inputs()
        preprocess = self.preprocess(inputs)
        dataset_version = inputs.properties.Outputs["DatasetVersion"]
        adapter = self.train_adapter(preprocess, dataset_version)
        check = ConditionStep(
            name="CheckBaselineMode",
            conditions=[
                ConditionEquals(left=self.params.baseline_mode, right=BaselineMode.REUSE.value)
            ],
            if_steps=self.evaluation_tail("StoredBaseline", inputs, preprocess, adapter, None),
            else_steps=self.evaluation_tail(
                "", inputs, preprocess, adapter, self.train_baseline(preprocess, dataset_version)
            ),
        )
        return Pipeline(
            name=self.config.name,
            parameters=self.params.all(),
            steps=[inputs, preprocess, adapter, check],
            sagemaker_session=self.session,
        )


def build_pipeline(
    config: PipelineConfig, deployment: Deployment
) -> tuple[Pipeline, OfflineSession]:
    """The pipeline and the session holding the assets its definition refers to."""
    session = OfflineSession(deployment)
    return _Builder(config, deployment, session).build(), session


def definition_json(config: PipelineConfig, deployment: Deployment) -> tuple[str, dict[str, bytes]]:
    """The definition's JSON and the assets (S3 key -> bytes) it refers to.

    The SDK prints while it builds requests and warns that requests are deferred under a
    PipelineSession, which is the point here; its prints go to the debug log (`--verbose`)."""
    printed = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(printed):
        warnings.filterwarnings("ignore", message="Running within a PipelineSession")
        # The functions are CDK's to deploy; the definition only refers to them by ARN.
        warnings.filterwarnings("ignore", message="Lambda function won't be updated")
        pipeline, session = build_pipeline(config, deployment)
        body = pipeline.definition()
    for line in printed.getvalue().splitlines():
        logger.debug("sagemaker: %s", line)
    definition = json.loads(body)
    violations = definition_violations(definition)
    if violations:
        raise ValueError("the service would refuse this definition: " + "; ".join(violations))
    return body, session.assets


__all__ = ["ExecutionVariables", "Parameters", "build_pipeline", "definition_json"]
