"""Per-stage settings from cdk.json context (`stages.<name>`), typed once: what `cdk deploy`
deploys and what `peftops pipeline cost` prices."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pipelines.definition.config import PipelineConfig, config_from_dict
from pipelines.functions.registered_adapter import MAX_ENDPOINT_NAME
from training_scripts import tasks
from training_scripts.contracts import GateThresholds


@dataclass(frozen=True)
class ScheduleSettings:
    expression: str = "cron(0 3 ? * MON *)"  # EventBridge Scheduler syntax, UTC
    enabled: bool = False
    parameters: dict[str, str] = field(default_factory=dict)  # pipeline parameter overrides


SERVING_STAGES = ("staging", "production")
# The LoRA ranks vLLM (the LMI endpoint's engine) takes as max_lora_rank (vllm/config/lora.py).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class ServingSettings:
    """A stage's endpoint (optional, off by default: an endpoint costs money every hour it
    runs): one base-model inference component and, added by the stage's deployer, one adapter
    component per task whose version is promoted to `lifecycle_stage`."""

    lifecycle_stage: str = "staging"  # which versions it serves: staging or production
    instance_type: str = "ml.g5.2xlarge"
    instance_count: int = 1
    accelerators: int = 1  # GPUs the base component takes
    memory_mb: int = 16384  # memory the base component takes
    max_loras: int = 8  # distinct adapters in one batch (OPTION_MAX_LORAS)
    max_lora_rank: int = 64  # the largest adapter rank it loads (OPTION_MAX_LORA_RANK)

    def __post_init__(self) -> None:
        if self.lifecycle_stage not in SERVING_STAGES:
            raise ValueError(
                f"serving.lifecycle_stage must be one of {SERVING_STAGES}, not {self.lifecycle_stage!r}"
            )
        if not self.instance_type.startswith("ml."):
            raise ValueError(f"serving.instance_type {self.instance_type!r} is not an ml.* type")
        if min(self.instance_count, self.accelerators, self.max_loras) < 1:
            raise ValueError("serving counts and max_loras must be at least 1")
        if self.max_lora_rank not in VLLM_LORA_RANKS:
            raise ValueError(
                f"serving.max_lora_rank {self.max_lora_rank}: vLLM takes one of {VLLM_LORA_RANKS}"
            )


def endpoint_name(pipeline: PipelineConfig, serving: ServingSettings) -> str:
    """A stage's endpoint: `<pipeline>-<lifecycle stage>`, short enough that the adapter
    components named after it (`<endpoint>-<task>-<version>`) fit SageMaker's 63 characters."""
    name = f"{pipeline.name}-{serving.lifecycle_stage}"
    if name != name.lower():
        raise ValueError(
            f"serving: the endpoint {name!r} has capitals, which SageMaker writes in lower case "
            "in its ARNs while IAM matches them as written: use a lower-case pipeline.name"
        )
    if len(name) > MAX_ENDPOINT_NAME:
        raise ValueError(
            f"serving: the endpoint {name!r} is {len(name)} characters; its adapter components' "
            f"names need it at most {MAX_ENDPOINT_NAME}: shorten pipeline.name to at most "
            f"{MAX_ENDPOINT_NAME - len(serving.lifecycle_stage) - 1} characters"
        )
    return name


@dataclass(frozen=True)
class StageTask:
    """One task of a stage: its spec (checked when the app synthesizes) and, where it differs
    from the stage's, its own quality gate in its metric."""

    spec: tasks.TaskSpec
    gate: GateThresholds | None = None


def parse_stage_tasks(stage: str, entries: Any) -> list[StageTask]:
    """A stage's `tasks`: each a shipped task's name or a spec file relative to the project,
    or {"spec": that, "metric_tolerance": x, "min_metric_gain": y} for a task whose gate
    differs from the stage's."""
    if not isinstance(entries, list) or not entries:
        raise ValueError(
            f'stages.{stage}.tasks: list the stage\'s tasks, e.g. "tasks": ["{tasks.DEFAULT_TASK}"]'
        )
    parsed: list[StageTask] = []
    for index, entry in enumerate(entries):
        where = f"stages.{stage}.tasks[{index}]"
        options = dict(entry) if isinstance(entry, dict) else {"spec": entry}
        reference = options.pop("spec", None)
        gate_keys = {"metric_tolerance", "min_metric_gain"}
        unknown = sorted(set(options) - gate_keys)
        if not isinstance(reference, str) or unknown:
            raise ValueError(
                f'{where}: a task\'s name or spec file, or an object with "spec" and optionally '
                f"{sorted(gate_keys)}" + (f"; unknown keys {unknown}" if unknown else "")
            )
        try:
            spec = tasks.resolve_task_spec(reference)
        except tasks.TaskSpecError as err:
            raise ValueError(f"{where}: {err}") from None
        if any(spec.name == seen.spec.name for seen in parsed):
            raise ValueError(f"{where}: task {spec.name} is listed twice")
        gate = None
        if options:
            if set(options) != gate_keys or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in options.values()
            ):
                raise ValueError(
                    f"{where}: a task's own gate sets both {sorted(gate_keys)} as numbers"
                )
            gate = GateThresholds(**options)
        parsed.append(StageTask(spec, gate))
    return parsed


@dataclass(frozen=True)
class StageSettings:
    name: str
    region: str
    pipeline: PipelineConfig
    schedule: ScheduleSettings
    checkpoint_expiry_days: int = 14
    noncurrent_version_expiry_days: int = 30
    access_log_expiry_days: int = 365
    notification_emails: tuple[str, ...] = ()
    promotion_account_ids: tuple[str, ...] = ()  # may read and register into the model group
    # cdk deploy builds the jobs' image from training_scripts/Dockerfile (the stage's training
    # image with requirements.lock installed) and the pipeline runs every job on it.
    build_job_image: bool = False
    # cdk deploy creates a SageMaker managed MLflow tracking server of this size (Small, Medium
    # or Large) that the training and evaluation jobs log to; empty: none.
    mlflow_tracking_server: str = ""
    # cdk deploy creates the stage's endpoint and its deployer; None: no endpoint.
    serving: ServingSettings | None = None
    # The tasks the stage's pipeline trains (`tasks` in cdk.json), each on its own schedule
    # target: the first is the Task parameter's default.
    tasks: tuple[StageTask, ...] = field(
        default_factory=lambda: (StageTask(tasks.resolve_task_spec(tasks.DEFAULT_TASK)),)
    )


def deployment_region(settings: StageSettings, cli_region: str | None) -> tuple[str, str]:
    """Where the stage deploys: its `region` in cdk.json, always. The CDK CLI's region (from
    the credentials' profile, CDK_DEFAULT_REGION) is only the default of the shell it runs in;
    a stage's images, ECR accounts and quotas are chosen for its own region, so a different
    profile region must not move it. Returns the region and a note when the two differ."""
    if cli_region and cli_region != settings.region:
        return settings.region, (
            f"peftops: stage {settings.name} deploys to {settings.region} (cdk.json), not to the "
            f"profile's {cli_region}; change stages.{settings.name}.region to move it"
        )
    return settings.region, ""


# The pipeline's image_uri of a stage with build_job_image, until the stack names the image it
# builds (Fn::Sub in the definition, the asset's repository in the job roles).
BUILT_JOB_IMAGE = "000000000000.dkr.ecr.us-east-1.amazonaws.com/peftops-built-job-image:latest"


# The pipeline's mlflow_tracking_uri of a stage with a tracking server, until the stack names
# the server it creates (Fn::Sub in the definition).
BUILT_TRACKING_SERVER = (
    "arn:aws:sagemaker:us-east-1:000000000000:mlflow-tracking-server/peftops-placeholder-tracking"
)
TRACKING_SERVER_SIZES = ("Small", "Medium", "Large")


def stage_settings(stages: dict[str, Any] | None, name: str) -> StageSettings:
    if not stages or name not in stages:
        raise ValueError(
            f"cdk.json context has no stage {name!r}; known stages: {sorted(stages or {})}"
        )
    raw = dict(stages[name])
    pipeline = dict(raw.pop("pipeline", {}))
    if raw.get("build_job_image"):
        if pipeline.get("image_uri"):
            raise ValueError(
                f"stages.{name}: set either build_job_image or pipeline.image_uri, not both"
            )
        pipeline["image_uri"] = BUILT_JOB_IMAGE
    size = raw.get("mlflow_tracking_server")
    if size:
        if size not in TRACKING_SERVER_SIZES:
            raise ValueError(
                f"stages.{name}.mlflow_tracking_server must be one of {TRACKING_SERVER_SIZES} "
                f"(or absent for none), not {size!r}"
            )
        if pipeline.get("mlflow_tracking_uri"):
            raise ValueError(
                f"stages.{name}: set either mlflow_tracking_server or "
                "pipeline.mlflow_tracking_uri, not both"
            )
        pipeline["mlflow_tracking_uri"] = BUILT_TRACKING_SERVER
    serving = raw.pop("serving", None)
    if "task" in raw:
        raise ValueError(
            f'stages.{name}.task: list the stage\'s tasks as "tasks": [{json.dumps(raw["task"])}]'
        )
    stage_tasks = parse_stage_tasks(name, raw.pop("tasks", [tasks.DEFAULT_TASK]))
    for key in ("task", "tasks", "task_gates"):
        if key in pipeline:
            raise ValueError(
                f"stages.{name}: pipeline.{key} is set by the stage's tasks; drop it and list the "
                f'tasks as "tasks": [...]'
            )
    if "Task" in raw.get("schedule", {}).get("parameters", {}):
        raise ValueError(
            f"stages.{name}.schedule.parameters.Task: each of the stage's tasks has its own "
            'schedule target, which names it; list the tasks in "tasks"'
        )
    names = [t.spec.name for t in stage_tasks]
    pipeline["task"], pipeline["tasks"] = names[0], names
    pipeline["task_gates"] = {t.spec.name: vars(t.gate) for t in stage_tasks if t.gate}
    try:
        settings = StageSettings(
            name=name,
            region=raw.pop("region"),
            pipeline=config_from_dict(pipeline, source=f"stages.{name}.pipeline"),
            schedule=ScheduleSettings(**raw.pop("schedule", {})),
            notification_emails=tuple(raw.pop("notification_emails", ())),
            promotion_account_ids=tuple(raw.pop("promotion_account_ids", ())),
            serving=ServingSettings(**serving) if serving else None,
            tasks=tuple(stage_tasks),
            **raw,
        )
    except TypeError as err:
        raise ValueError(f"stages.{name}: {err}") from err
    if settings.serving is not None:
        try:
            endpoint_name(settings.pipeline, settings.serving)
        except ValueError as err:
            raise ValueError(f"stages.{name}.{err}") from None
        if settings.pipeline.lora_r > settings.serving.max_lora_rank:
            raise ValueError(
                f"stages.{name}: pipeline.lora_r {settings.pipeline.lora_r} is above "
                f"serving.max_lora_rank {settings.serving.max_lora_rank}: the endpoint would "
                "refuse every adapter the stage trains; raise max_lora_rank or lower lora_r"
            )
    return settings
