"""The data steps: ResolveInputs (which dataset version a run trains on) and Preprocess (its
splits), as the pipeline builder adds them.
"""

from __future__ import annotations

from sagemaker.core.workflow import (
    ExecutionVariables,
    Join,
)
from sagemaker.mlops.workflow import (
    LambdaOutput,
    LambdaStep,
    ProcessingStep,
)
from sagemaker.mlops.workflow.lambda_step import LambdaOutputTypeEnum

from pipelines.definition.config import (
    PREPROCESS_OUTPUTS,
    RESOLVE_INPUTS,
    JobKind,
)
from pipelines.definition.containers import (
    PROCESSING,
)


class DataSteps:
    """Mixed into the pipeline builder (builder.py), whose settings and helpers it uses."""

    def resolve_inputs(self) -> LambdaStep:
        p = self.params
        return LambdaStep(
            name="ResolveInputs",
            lambda_func=self.function(RESOLVE_INPUTS),
            inputs={
                "Bucket": self.deployment.bucket,
                "Task": p.task,
                "StageTasks": ",".join(self.config.run_tasks),
                "DatasetVersion": p.dataset_version,
                "BaselineMode": p.baseline_mode,
                "BaselineEvaluationUri": p.baseline_evaluation_uri,
            },
            outputs=[
                LambdaOutput("DatasetVersion", LambdaOutputTypeEnum.String),
                LambdaOutput("DatasetUri", LambdaOutputTypeEnum.String),
                LambdaOutput("BaselineEvaluationUri", LambdaOutputTypeEnum.String),
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
                "--task-name", self.params.task,
            ],
        )  # fmt: skip
        return ProcessingStep(
            name="Preprocess",
            step_args=step_args,
            cache_config=self.cache,
            retry_policies=self.job_retries(),
        )
