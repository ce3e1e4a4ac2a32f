"""How many optimizer steps a training takes: --epochs on the data, raised to --min-steps, or
--max-steps as given; a warning whenever a run trains fewer steps than its floor; and every
preset, on any size of data, trains at least its floor without a warning."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.local.presets import PRESETS
from tests.unit.test_pipeline_definition import build, job_arguments
from training_scripts.guarded_trainer import FEW_STEPS, StepPlan, plan_steps


@given(
    epochs=st.floats(0.01, 5.0),
    max_steps=st.integers(-1, 200),
    min_steps=st.integers(0, 200),
    micro_batches=st.integers(1, 2000),
    world_size=st.integers(1, 16),
    accumulation=st.integers(1, 8),
)
def test_the_plan_is_the_trainers_epoch_count_raised_to_the_floor(
    epochs: float,
    max_steps: int,
    min_steps: int,
    micro_batches: int,
    world_size: int,
    accumulation: int,
) -> None:
    plan = plan_steps(
        epochs=epochs,
        max_steps=max_steps,
        min_steps=min_steps,
        micro_batches=micro_batches,
        world_size=world_size,
        accumulation=accumulation,
    )
    per_epoch = max(1, math.ceil(math.ceil(micro_batches / world_size) / accumulation))
    assert plan.steps_per_epoch == per_epoch
    if max_steps > 0:
        assert (plan.steps, plan.by_epochs) == (max_steps, None)
        assert "(--max-steps)" in plan.describe()
    else:
        assert plan.by_epochs == math.ceil(epochs * per_epoch)
        assert plan.steps == max(plan.by_epochs, min_steps)
        assert plan.raised_to_floor == (plan.by_epochs < min_steps)
        why = (
            f"--epochs gives {plan.by_epochs}, raised to --min-steps {min_steps}"
            if plan.raised_to_floor
            else "--epochs"
        )
        assert plan.describe().endswith(f"({why})")
    assert plan.describe().startswith(f"{plan.steps} optimizer steps, ")
    # Said whenever the run trains fewer steps than its floor or than a gate can judge.
    assert (plan.warning() is not None) == (plan.steps < max(min_steps, FEW_STEPS))


@pytest.mark.parametrize(
    ("plan", "warning", "fix"),
    [
        (StepPlan(12, 40, 12, 0), "only 12 optimizer steps: a model trained under 20", "MinSteps"),
        (StepPlan(5, 40, None, 0), "only 5 optimizer steps: a model trained under 20", "drop it"),
        (StepPlan(30, 40, None, 38), "30 optimizer steps, fewer than --min-steps 38", "MinSteps"),
        (StepPlan(38, 40, 12, 38), None, None),
        (StepPlan(20, 40, 20, 0), None, None),
    ],
)
def test_the_warning_names_the_shortfall_and_the_fix(
    plan: StepPlan, warning: str | None, fix: str | None
) -> None:
    said = plan.warning()
    if warning is None:
        assert said is None
    else:
        assert said is not None and said.startswith(warning) and fix in said, said


def preset_training_arguments(name: str) -> dict[str, Any]:
    """The two trainings' parsed arguments as the preset runs them: its definition with its
    parameter values."""
    preset = PRESETS[name]
    definition, _ = build(preset.config)
    for parameter in definition["Parameters"]:
        if parameter["Name"] in preset.parameters:
            parameter["DefaultValue"] = preset.parameters[parameter["Name"]]
    parsed = job_arguments(definition)
    return {step: parsed[step] for step in ("TrainAdapter", "TrainBaseline")}


# Train splits from a few records to many: the preset's rule must hold on all of them.
TRAIN_EXAMPLES = [1, 8, 40, 160, 507, 5000]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_trains_its_floor_on_any_data_without_a_warning(preset: str) -> None:
    """A preset is a recipe for anyone's data: on a small split it trains its floor (more than
    one pass), never a handful of steps; both trainings follow the same rule."""
    trainings = preset_training_arguments(preset)
    floors = {args.min_steps for args in trainings.values()}
    assert len(floors) == 1 and floors.pop() >= FEW_STEPS
    for examples in TRAIN_EXAMPLES:
        plans = {}
        for step, args in trainings.items():
            # The fewest micro-batches the split can make: each holds at most this many.
            micro_batches = math.ceil(examples / args.per_device_batch_size)
            plans[step] = plan = plan_steps(
                epochs=args.epochs,
                max_steps=args.max_steps,
                min_steps=args.min_steps,
                micro_batches=micro_batches,
                world_size=1,
                accumulation=args.gradient_accumulation_steps,
            )
            assert plan.steps >= args.min_steps, (preset, step, examples, plan)
            assert plan.warning() is None, (preset, step, examples, plan.warning())
        assert plans["TrainAdapter"] == plans["TrainBaseline"], (preset, examples)


def test_the_readme_states_what_each_preset_trains() -> None:
    """README "What the presets train" lists every preset with its micro-batch and its rule for
    the length of training, as the presets define them."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### What the presets train", 1)[1].split("\n#", 1)[0]
    rows = {
        match[1]: match[0]
        for match in re.finditer(r"^\| `(\w+)` \|.*$", section, flags=re.MULTILINE)
    }
    assert set(rows) == set(PRESETS)
    for name, preset in PRESETS.items():
        parameters = {"MinSteps": preset.config.min_steps, **preset.parameters}
        cells = [cell.strip() for cell in rows[name].strip("|").split("|")]
        assert cells[1] == f"up to {preset.config.per_device_batch_size} examples", name
        assert cells[2] == f"`Epochs={parameters['Epochs']}`, `MinSteps={parameters['MinSteps']}`"
