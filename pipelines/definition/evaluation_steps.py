"""The evaluation and gate steps: Evaluate (base, adapter and baseline side by side) and the
quality gate's condition on its evaluation.json, one factory per baseline source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sagemaker.core.shapes import ProcessingInput
from sagemaker.core.workflow import (
    Condition,
    ConditionEquals,
    ConditionGreaterThanOrEqualTo,
    ConditionLessThanOrEqualTo,
    ConditionNot,
    ConditionOr,
    Join,
    JsonGet,
    PropertyFile,
)
from sagemaker.mlops.workflow import (
    ConditionStep,
    FailStep,
    LambdaStep,
    ProcessingStep,
    TrainingStep,
)

from pipelines.definition.config import (
    EVALUATIONS,
    JobKind,
)
from pipelines.definition.containers import (
    PROCESSING,
)
from training_scripts import contracts
from training_scripts.contracts import GateThresholds

# The SDK's condition classes for the comparisons the gate rule uses.
GATE_CONDITION_TYPES: dict[str, type[Condition]] = {
    "LessThanOrEqualTo": ConditionLessThanOrEqualTo,
    "GreaterThanOrEqualTo": ConditionGreaterThanOrEqualTo,
}


class EvaluationSteps:
    """Mixed into the pipeline builder (builder.py), whose settings and helpers it uses."""

    def evaluate(
        self,
        suffix: str,
        inputs_step: LambdaStep,
        preprocess: ProcessingStep,
        adapter: TrainingStep,
        baseline: TrainingStep | None,
    ) -> tuple[ProcessingStep, PropertyFile]:
        name = f"Evaluate{suffix}"
        inputs, arguments = self.evaluation_job_inputs(inputs_step, preprocess, adapter, baseline)
        report = PropertyFile(
            name=f"EvaluationReport{suffix}",
            output_name="evaluation",
            path=contracts.EVALUATION.file_name,
        )
        card = PropertyFile(
            name=f"ModelCard{suffix}", output_name="evaluation", path=contracts.MODEL_CARD_SAGEMAKER
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

    def evaluation_job_inputs(
        self,
        inputs_step: LambdaStep,
        preprocess: ProcessingStep,
        adapter: TrainingStep,
        baseline: TrainingStep | None,
    ) -> tuple[list[ProcessingInput], list[Any]]:
        """What the evaluation job reads (base model, test split, adapter, and the baseline to
        evaluate or the stored evaluation to reuse) and its arguments."""
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
            "--metric-tolerance", str(self.config.metric_tolerance),
            "--min-metric-gain", str(self.config.min_metric_gain),
        ]  # fmt: skip
        if self.config.own_gates:
            # One short argument per task: a container argument holds at most 256 characters.
            arguments += [
                "--task-gate",
                *(
                    f"{task}={gate.metric_tolerance},{gate.min_metric_gain}"
                    for task, gate in self.config.own_gates.items()
                ),
            ]
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
                    inputs_step.properties.Outputs["BaselineEvaluationUri"],
                    f"{PROCESSING}/input/stored-baseline",
                )
            )
            arguments += ["--baseline-evaluation", f"{PROCESSING}/input/stored-baseline"]
        return inputs, arguments

    @staticmethod
    def evaluation_uri(evaluate: ProcessingStep) -> Join:
        return Join(
            on="/",
            values=[
                evaluate.properties.ProcessingOutputConfig.Outputs["evaluation"].S3Output.S3Uri,
                contracts.EVALUATION.file_name,
            ],
        )

    def gate_conditions(self, value: Callable[[str], JsonGet]) -> list[Condition]:
        """Each gate condition against the run's task's thresholds, which are deployment
        settings, literal here: whoever starts a run cannot loosen the gate. The evaluation must
        state the same thresholds, since registration records them from it. A task with its
        own gate has its conditions hold unless the run's Task is another; the stage's gate
        holds unless the run's Task is one of those (ResolveInputs refuses any Task the stage
        does not declare)."""
        task = self.params.task
        own = self.config.own_gates
        groups: list[tuple[GateThresholds, list[Condition]]] = []
        if any(t not in own for t in self.config.run_tasks):
            groups.append(
                (self.config.stage_gate, [ConditionEquals(left=task, right=t) for t in own])
            )
        for name, gate in own.items():
            groups.append((gate, [ConditionNot(expression=ConditionEquals(left=task, right=name))]))
        conditions: list[Condition] = []
        for gate, exempt in groups:
            for c in contracts.GATE_CONDITIONS:
                limit = getattr(gate, c.threshold)
                rules: list[Condition] = [
                    GATE_CONDITION_TYPES[c.comparison](left=value(c.path), right=limit),
                    ConditionEquals(
                        left=value(f"{contracts.GATE_THRESHOLDS}.{c.threshold}"), right=limit
                    ),
                ]
                if exempt:
                    rules = [ConditionOr(conditions=[*exempt, rule]) for rule in rules]
                conditions += rules
        return conditions

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

        conditions = self.gate_conditions(value)
        failed = FailStep(
            name=f"GateFailed{suffix}",
            error_message=Join(
                on="",
                values=[
                    "Quality gate failed on the task's metric, ", value(contracts.GATE_METRIC),
                    ": at the ends of their 95% intervals the adapter may trail the full "
                    "fine-tune by ", value(contracts.SHORTFALL_VS_FULL_FINETUNE),
                    " (allowed ", value(f"{contracts.GATE_THRESHOLDS}.metric_tolerance"),
                    ") and gains at least ", value(contracts.GAIN_VS_BASE), " over the base "
                    "(required ", value(f"{contracts.GATE_THRESHOLDS}.min_metric_gain"), ").",
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
