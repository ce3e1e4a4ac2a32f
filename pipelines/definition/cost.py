"""What one execution can cost at most, and the service quotas it needs, read from a built
definition: every job's instance type, count, spot setting and runtime limit.

The bound is each job running to its `MaxRuntimeInSeconds`; real runs stop far earlier, so
read it as the worst case a budget alarm should cover, not a forecast.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from pipelines.definition.service_rules import steps_of

# SageMaker on-demand prices in US East (N. Virginia), USD per instance-hour, for the types the
# stages use (aws.amazon.com/sagemaker/pricing, training and processing; November 2026).
ON_DEMAND_USD_PER_HOUR = {
    "ml.m5.large": 0.115,
    "ml.m5.xlarge": 0.23,
    "ml.g5.xlarge": 1.408,
    "ml.g5.2xlarge": 1.515,
    "ml.g5.4xlarge": 2.03,
    "ml.g5.12xlarge": 7.09,
    "ml.g5.48xlarge": 20.36,
}
# Real-time inference (an endpoint's instances), USD per instance-hour in US East (N. Virginia)
# (aws.amazon.com/sagemaker/pricing, real-time inference; November 2026). An endpoint is billed
# every hour it exists, whether or not it answers requests.
ENDPOINT_USD_PER_HOUR = {
    "ml.g5.xlarge": 1.408,
    "ml.g5.2xlarge": 1.515,
    "ml.g5.4xlarge": 2.03,
    "ml.g5.12xlarge": 7.09,
    "ml.g6.2xlarge": 1.222,
    "ml.p3.2xlarge": 3.825,
}
HOURS_PER_MONTH = 730


def endpoint_usd_per_hour(instance_type: str, instance_count: int) -> float:
    if instance_type not in ENDPOINT_USD_PER_HOUR:
        raise ValueError(
            f"no endpoint price assumption for {instance_type}; add it to pipelines/definition/cost.py"
        )
    return ENDPOINT_USD_PER_HOUR[instance_type] * instance_count


# Managed spot: an assumption, not a price. Savings vary by type and hour (AWS quotes up to
# 90%); 65% off on-demand is a cautious middle.
SPOT_FRACTION = 0.35


@dataclass(frozen=True)
class JobBound:
    step: str
    kind: str  # training | processing
    instance_type: str
    instances: int
    spot: bool
    max_hours: float

    @property
    def usd(self) -> float:
        price = ON_DEMAND_USD_PER_HOUR[self.instance_type] * (SPOT_FRACTION if self.spot else 1)
        return price * self.instances * self.max_hours

    @property
    def quota(self) -> str:
        """The Service Quotas name of what this job draws on."""
        usage = "spot training job usage" if self.spot else f"{self.kind} job usage"
        return f"{self.instance_type} for {usage}"


def _count(value: Any, defaults: dict[str, Any]) -> int:
    if isinstance(value, dict) and value.get("Get", "").startswith("Parameters."):
        return int(defaults[value["Get"].removeprefix("Parameters.")])
    return int(value)


def job_bounds(definition: dict[str, Any]) -> list[JobBound]:
    """One entry per job step, at the parameters' defaults (what the schedule runs)."""
    defaults = {p["Name"]: p.get("DefaultValue") for p in definition.get("Parameters", [])}
    found = []
    for step in steps_of(definition["Steps"]):
        args = step.get("Arguments", {})
        if step["Type"] == "Training":
            resources = args["ResourceConfig"]
            stop = args["StoppingCondition"]
            found.append(
                JobBound(
                    step["Name"],
                    "training",
                    resources["InstanceType"],
                    _count(resources["InstanceCount"], defaults),
                    bool(args.get("EnableManagedSpotTraining")),
                    stop["MaxRuntimeInSeconds"] / 3600,
                )
            )
        elif step["Type"] == "Processing":
            cluster = args["ProcessingResources"]["ClusterConfig"]
            found.append(
                JobBound(
                    step["Name"],
                    "processing",
                    cluster["InstanceType"],
                    _count(cluster["InstanceCount"], defaults),
                    False,
                    args["StoppingCondition"]["MaxRuntimeInSeconds"] / 3600,
                )
            )
    return found


def run_bound_usd(jobs: list[JobBound], baseline_mode: str) -> float:
    """The most one execution costs: its branch's jobs (train mode trains the baseline and
    evaluates with it; reuse mode evaluates against the stored figures)."""
    skipped = (
        {"EvaluateStoredBaseline"} if baseline_mode == "train" else {"TrainBaseline", "Evaluate"}
    )
    return sum(job.usd for job in jobs if job.step not in skipped)


def quotas(jobs: list[JobBound]) -> dict[str, int]:
    """Instances of each quota one execution may hold at once: both training jobs of a
    train-mode run start together once Preprocess is done."""
    needed: Counter[str] = Counter()
    for job in jobs:
        if job.step != "EvaluateStoredBaseline":  # never in the same run as Evaluate
            needed[job.quota] += job.instances
    return dict(needed)
