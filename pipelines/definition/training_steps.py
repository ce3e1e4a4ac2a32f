"""The training steps: TrainAdapter and TrainBaseline, one training job factory with the
hyperparameters both share, per-run checkpoints and the job's metric definitions.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

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
    Join,
)
from sagemaker.mlops.workflow import (
    ProcessingStep,
    TrainingStep,
)
from sagemaker.train import ModelTrainer
from sagemaker.train.distributed import Torchrun

from pipelines.definition.config import (
    CHECKPOINTS,
    MODELS,
    JobKind,
)
from pipelines.definition.containers import (
    CONTAINER_CODE_DIR,
)
from pipelines.definition.service_rules import volume_kms_key

# What the training job's console charts, read from its log: the Trainer's loss records
# ({'loss': '1.52', 'grad_norm': ...}) and train.py's validation lines.
TRAINING_METRIC_DEFINITIONS = [
    MetricDefinition(name="train:loss", regex=r"'loss': '?([0-9.eE+-]+)"),
    MetricDefinition(name="train:learning_rate", regex=r"'learning_rate': '?([0-9.eE+-]+)"),
    MetricDefinition(name="validation:loss", regex=r"validation loss ([0-9.eE+-]+)"),
]


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


class TrainingSteps:
    """Mixed into the pipeline builder (builder.py), whose settings and helpers it uses."""

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
            environment=self.environment_variables(JobKind.TRAINING),
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
            "min-steps": self.params.min_steps.to_string(),
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
            [
                p.peft_method,
                p.lora_r,
                p.lora_alpha,
                p.epochs,
                p.min_steps,
                p.learning_rate,
                p.token_budget,
            ],
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
            ["full", self.params.epochs, self.params.min_steps, self.params.token_budget],
        )
