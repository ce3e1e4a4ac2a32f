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

The steps come in families, one module each, mixed into `_Builder` (settings, parameters and
the job helpers they share): data_steps.py, training_steps.py, evaluation_steps.py (with the
gate) and registration_steps.py.

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
from sagemaker.core.network import NetworkConfig
from sagemaker.core.processing import FrameworkProcessor
from sagemaker.core.shapes import (
    ProcessingInput,
    ProcessingOutput,
    ProcessingS3Input,
    ProcessingS3Output,
)
from sagemaker.core.workflow import (
    ConditionEquals,
    ExecutionVariables,
    ParameterFloat,
    ParameterInteger,
    ParameterString,
)
from sagemaker.mlops.workflow import (
    CacheConfig,
    ConditionStep,
    Pipeline,
    SageMakerJobExceptionTypeEnum,
    SageMakerJobStepRetryPolicy,
    StepExceptionTypeEnum,
    StepRetryPolicy,
)

from pipelines.definition.config import (
    ADAPTER_METHODS,
    TRACKED_JOBS,
    BaselineMode,
    Deployment,
    JobKind,
    PipelineConfig,
    function_name,
)
from pipelines.definition.containers import (
    JOB_REQUIREMENTS,
    PROCESSING,
    SCRIPTS_DIR,
)
from pipelines.definition.data_steps import DataSteps
from pipelines.definition.evaluation_steps import EvaluationSteps
from pipelines.definition.images import job_images
from pipelines.definition.registration_steps import RegistrationSteps
from pipelines.definition.service_rules import definition_violations, volume_kms_key
from pipelines.definition.staging import ASSET_PREFIX, OfflineSession
from pipelines.definition.training_steps import TrainingSteps
from pipelines.functions import layout
from training_scripts import contracts
from training_scripts.contracts import HUB_TOKEN_SECRET_VARIABLE

logger = logging.getLogger("peftops")


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
    min_steps: ParameterInteger
    learning_rate: ParameterFloat
    train_instance_count: ParameterInteger
    token_budget: ParameterInteger
    baseline_mode: ParameterString
    baseline_evaluation_uri: ParameterString

    @classmethod
    def from_config(cls, config: PipelineConfig, deployment: Deployment) -> Parameters:
        return cls(
            # Not EnumValues (a list of at most 16, by user reports): ResolveInputs refuses a
            # task the stage does not declare, as the run's first step.
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
            min_steps=ParameterInteger("MinSteps", default_value=config.min_steps),
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
                default_value=config.baseline_evaluation_uri or layout.TASK_BASELINE,
            ),
        )

    def all(self) -> list[Any]:
        return list(vars(self).values())


class _StableFrameworkProcessor(FrameworkProcessor):
    """The SDK stages its install_requirements.py helper under the job name, which holds a
    timestamp; key it by the helper's content instead."""

    def _resolve_helper_scripts_prefix(self, job_name: str) -> str:
        import sagemaker.core.utils.install_requirements as helper

        digest = hashlib.sha256(Path(helper.__file__).read_bytes()).hexdigest()
        return f"{self._s3_code_prefix()}/helpers/{digest}"


class _Builder(DataSteps, TrainingSteps, EvaluationSteps, RegistrationSteps):
    """The pipeline's settings, parameters and shared job helpers; the steps come from the
    step families' mixins."""

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

    def environment_variables(self, kind: JobKind) -> dict[str, str]:
        environment = {"HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false"}
        if self.config.hf_token_secret_arn:
            # The secret's ARN, never the token: the jobs read it from Secrets Manager.
            environment[HUB_TOKEN_SECRET_VARIABLE] = self.config.hf_token_secret_arn
        if self.config.mlflow_tracking_uri and kind in TRACKED_JOBS:
            environment[contracts.TRACKING_URI_VARIABLE] = self.config.mlflow_tracking_uri
            # One experiment per model group, as a local run keeps it.
            environment[contracts.EXPERIMENT_NAME_VARIABLE] = self.config.model_package_group
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
            env=self.environment_variables(kind),
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
