"""What one execution can cost at most, read from a definition (pipelines/definition/cost.py):
each job's bound from its instances, spot setting and runtime limit, the branch a baseline
mode runs, the quotas a run holds at once, and an endpoint's hourly price. The definition here
is written by hand, in the shape SageMaker's ListPipelineDefinition returns, so each figure can
be worked out on paper; test_first_cloud_run checks the built definitions' tables."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.definition import cost


def training(name: str, instances: Any, *, spot: bool, seconds: int) -> dict[str, Any]:
    return {
        "Name": name,
        "Type": "Training",
        "Arguments": {
            "ResourceConfig": {"InstanceType": "ml.g5.2xlarge", "InstanceCount": instances},
            "StoppingCondition": {"MaxRuntimeInSeconds": seconds},
            "EnableManagedSpotTraining": spot,
        },
    }


def processing(name: str, instances: Any, seconds: int) -> dict[str, Any]:
    return {
        "Name": name,
        "Type": "Processing",
        "Arguments": {
            "ProcessingResources": {
                "ClusterConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": instances}
            },
            "StoppingCondition": {"MaxRuntimeInSeconds": seconds},
        },
    }


DEFINITION = {
    "Parameters": [{"Name": "TrainingInstanceCount", "Type": "Integer", "DefaultValue": 2},
                   {"Name": "PreprocessInstances", "Type": "Integer", "DefaultValue": 3}],
    "Steps": [
        processing("Preprocess", {"Get": "Parameters.PreprocessInstances"}, 1800),
        training("TrainAdapter", {"Get": "Parameters.TrainingInstanceCount"}, spot=True, seconds=7200),
        training("TrainBaseline", 1, spot=False, seconds=3600),
        {
            "Name": "BaselineMode",
            "Type": "Condition",
            "Arguments": {
                "IfSteps": [processing("Evaluate", 1, 3600)],
                "ElseSteps": [processing("EvaluateStoredBaseline", 1, 3600)],
            },
        },
        {"Name": "Stop", "Type": "Fail"},  # no arguments: not a job
    ],
}  # fmt: skip
G5, M5 = cost.ON_DEMAND_USD_PER_HOUR["ml.g5.2xlarge"], cost.ON_DEMAND_USD_PER_HOUR["ml.m5.xlarge"]


def test_each_job_is_bounded_at_its_instances_spot_setting_and_runtime_limit() -> None:
    jobs = cost.job_bounds(DEFINITION)
    assert [(j.step, j.kind, j.instance_type, j.instances, j.spot, j.max_hours) for j in jobs] == [
        ("Preprocess", "processing", "ml.m5.xlarge", 3, False, 0.5),  # the parameter's default
        ("TrainAdapter", "training", "ml.g5.2xlarge", 2, True, 2.0),  # the parameter's default
        ("TrainBaseline", "training", "ml.g5.2xlarge", 1, False, 1.0),
        ("Evaluate", "processing", "ml.m5.xlarge", 1, False, 1.0),
        ("EvaluateStoredBaseline", "processing", "ml.m5.xlarge", 1, False, 1.0),
    ]
    assert [round(j.usd, 6) for j in jobs] == [
        round(M5 * 3 * 0.5, 6),
        round(G5 * cost.SPOT_FRACTION * 2 * 2.0, 6),
        round(G5, 6),
        round(M5, 6),
        round(M5, 6),
    ]


def test_a_definition_without_parameters_reads_its_literal_counts() -> None:
    definition = {"Steps": [training("Train", 3, spot=False, seconds=3600)]}
    assert [j.instances for j in cost.job_bounds(definition)] == [3]


def test_a_run_is_bounded_by_the_jobs_of_its_baseline_modes_branch() -> None:
    jobs = cost.job_bounds(DEFINITION)
    usd = {j.step: j.usd for j in jobs}
    assert cost.run_bound_usd(jobs, "train") == pytest.approx(
        usd["Preprocess"] + usd["TrainAdapter"] + usd["TrainBaseline"] + usd["Evaluate"]
    )
    assert cost.run_bound_usd(jobs, "reuse") == pytest.approx(
        usd["Preprocess"] + usd["TrainAdapter"] + usd["EvaluateStoredBaseline"]
    )


def test_a_runs_quotas_count_the_instances_it_may_hold_at_once_per_quota() -> None:
    assert cost.quotas(cost.job_bounds(DEFINITION)) == {
        "ml.m5.xlarge for processing job usage": 4,  # Preprocess, Evaluate (never the stored one)
        "ml.g5.2xlarge for spot training job usage": 2,
        "ml.g5.2xlarge for training job usage": 1,
    }


@pytest.mark.parametrize(("instance_type", "count"), [("ml.g5.2xlarge", 1), ("ml.g6.2xlarge", 3)])
def test_an_endpoint_costs_its_instances_hourly_price(instance_type: str, count: int) -> None:
    price = cost.ENDPOINT_USD_PER_HOUR[instance_type]
    assert cost.endpoint_usd_per_hour(instance_type, count) == pytest.approx(price * count)


def test_an_endpoint_type_without_a_price_is_refused_naming_where_to_add_it() -> None:
    with pytest.raises(ValueError) as refused:
        cost.endpoint_usd_per_hour("ml.x9.huge", 1)
    assert str(refused.value) == (
        "no endpoint price assumption for ml.x9.huge; add it to pipelines/definition/cost.py"
    )
