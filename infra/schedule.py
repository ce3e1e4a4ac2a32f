"""The EventBridge Scheduler schedules that start the pipeline, one per task of the stage (each
passes its Task), with retries and one encrypted DLQ."""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_scheduler as scheduler
from constructs import Construct

from infra.queues import dead_letter_queue
from pipelines.definition.stages import ScheduleSettings


class Schedule(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: ScheduleSettings,
        tasks: tuple[str, ...],
        pipeline_arn: str,
        key: kms.IKey,
        role_factory,
    ) -> None:
        super().__init__(scope, construct_id)
        self.dead_letters = dead_letter_queue(self, "DeadLetters", key, holds="the schedule's")
        role: iam.IRole = role_factory(self.dead_letters.queue_arn)
        self.schedules = {
            task: self._schedule(task, settings, pipeline_arn, role.role_arn) for task in tasks
        }

    def _schedule(
        self, task: str, settings: ScheduleSettings, pipeline_arn: str, role_arn: str
    ) -> scheduler.CfnSchedule:
        parameters = {**settings.parameters, "Task": task}
        return scheduler.CfnSchedule(
            self,
            f"Schedule-{task}",
            description=f"Retrain the peftops adapter of task {task}",
            schedule_expression=settings.expression,
            schedule_expression_timezone="UTC",
            state="ENABLED" if settings.enabled else "DISABLED",
            flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(mode="OFF"),
            target=scheduler.CfnSchedule.TargetProperty(
                arn=pipeline_arn,
                role_arn=role_arn,
                retry_policy=scheduler.CfnSchedule.RetryPolicyProperty(
                    maximum_event_age_in_seconds=3600, maximum_retry_attempts=3
                ),
                dead_letter_config=scheduler.CfnSchedule.DeadLetterConfigProperty(
                    arn=self.dead_letters.queue_arn
                ),
                sage_maker_pipeline_parameters=scheduler.CfnSchedule.SageMakerPipelineParametersProperty(
                    pipeline_parameter_list=[
                        scheduler.CfnSchedule.SageMakerPipelineParameterProperty(
                            name=name, value=value
                        )
                        for name, value in sorted(parameters.items())
                    ]
                ),
            ),
        )
