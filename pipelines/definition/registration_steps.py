"""The registration steps: Servable -> CheckRegistered -> NewAdapter -> RegisterAdapter, with
the version's lineage, metrics, model card and MLflow runs.
"""

from __future__ import annotations

import logging

from sagemaker.core.model_metrics import MetricsSource, ModelMetrics
from sagemaker.core.shapes import (
    ModelPackageModelCard,
)
from sagemaker.core.workflow import (
    ConditionEquals,
    ConditionIn,
    Join,
    JsonGet,
)
from sagemaker.mlops.workflow import (
    ConditionStep,
    FailStep,
    LambdaOutput,
    LambdaStep,
    ModelStep,
    ProcessingStep,
    TrainingStep,
)
from sagemaker.mlops.workflow.lambda_step import LambdaOutputTypeEnum
from sagemaker.serve.model_builder import ModelBuilder

from pipelines.definition.config import (
    CHECK_REGISTERED,
)
from pipelines.definition.images import lora_serving_environment, serving_image
from pipelines.functions.registered_adapter import (
    EVALUATION_DIGEST,
    SERVABLE_METHODS,
    SMOKE_TEST,
    TASK,
)
from training_scripts import contracts

REGISTERED_STATUS = "PendingManualApproval"
# Registration metadata read from evaluation.json: the MLflow runs behind the version, the
# digest of the task spec it was trained and evaluated with, and the gate's thresholds for its
# task (which the gate required to be the deployment's), so approval can check the gate again.
EVALUATION_METADATA = {
    "mlflow_run_id": contracts.EVALUATION_RUN_ID,
    "mlflow_training_run_id": contracts.ADAPTER_TRAINING_RUN_ID,
    "task_spec_sha256": contracts.TASK_SPEC_SHA256,
    "metric_tolerance": f"{contracts.GATE_THRESHOLDS}.metric_tolerance",
    "min_metric_gain": f"{contracts.GATE_THRESHOLDS}.min_metric_gain",
}
# What the serving container loads (SERVABLE_METHODS): LMI (vLLM) serves LoRA adapters on the
# base model; it has no prompt-tuning support, so such adapters are evaluated but not registered.


class RegistrationSteps:
    """Mixed into the pipeline builder (builder.py), whose settings and helpers it uses."""

    def served_adapter(self, adapter: TrainingStep) -> ModelBuilder:
        """What a stage's deployer deploys: this artifact as an adapter inference component on
        the endpoint's base component, which runs this image with these settings."""
        return ModelBuilder(
            s3_model_data_url=adapter.properties.ModelArtifacts.S3ModelArtifacts,
            image_uri=serving_image(self.config, self.deployment.region),
            role_arn=self.deployment.role_arn,
            sagemaker_session=self.session,
            env_vars=lora_serving_environment(self.params.base_model),
            log_level=logging.WARNING,  # its default, DEBUG, logs every request it builds
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
        builder = self.served_adapter(adapter)
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
        }
        if self.config.smoke_test:
            lineage[SMOKE_TEST] = "true"
        # The MLflow runs behind this version, its evaluation's and its adapter's training's
        # ("none" where the jobs were not tracked), its task spec's digest and gate.
        for key, path in EVALUATION_METADATA.items():
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
                    json_path=contracts.MODEL_CARD_CONTENT_PATH,
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
