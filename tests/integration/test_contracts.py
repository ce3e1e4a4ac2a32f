"""The files between scripts and pipeline have one definition: evaluate.py's real output, read
through the pipeline definition's own gate conditions (JsonGet paths) and through the registry's
approval check, gives the same verdict at every threshold, boundaries included."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from pipelines.definition import definition_json
from pipelines.definition.config import PipelineConfig
from pipelines.functions.registered_adapter import EVALUATION_DIGEST, evaluation_digest
from pipelines.local.expressions import Scope
from pipelines.local.presets import LOCAL_DEPLOYMENT
from pipelines.registry import LocalRegistry, Registration, RegistryError, decide
from training_scripts import contracts


def find_step(steps: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for step in steps:
        if step["Name"] == name:
            return step
        nested = step.get("Arguments", {})
        for branch in ("IfSteps", "ElseSteps"):
            if isinstance(nested, dict) and branch in nested:
                try:
                    return find_step(nested[branch], name)
                except KeyError:
                    pass
    raise KeyError(name)


def approval_passes(
    registry: LocalRegistry, evaluation: dict, tolerance: float, gain: float
) -> bool:
    """`peftops models approve` without --force: refused unless the stored gate passes."""
    version = registry.register(
        Registration(
            group=registry.group,
            model_data_url="s3://b/model.tar.gz",
            status="PendingManualApproval",
            metadata={
                "metric_tolerance": str(tolerance),
                "min_metric_gain": str(gain),
                EVALUATION_DIGEST: evaluation_digest(json.dumps(evaluation).encode()),
            },
            evaluation_uri="s3://b/evaluation.json",
            evaluation=evaluation,
            description="",
        )
    )
    try:
        decide(registry, version.version, "Approved", who="test", why="contract", force=False)
    except RegistryError:
        return False
    return True


def test_pipeline_gate_and_approval_agree_on_evaluate_output(tiny_run, tmp_path: Path) -> None:
    root, done = tiny_run
    assert done.returncode == 0, done.stderr[-3000:]
    evaluation = contracts.EVALUATION.read(root / "run")  # what evaluate.py wrote, checked
    definition = json.loads(definition_json(PipelineConfig(), LOCAL_DEPLOYMENT)[0])
    gate = find_step(definition["Steps"], "QualityGate")
    report, _card = find_step(definition["Steps"], "Evaluate")["PropertyFiles"]
    assert report["FilePath"] == contracts.EVALUATION.file_name
    declared = {p["Name"]: p.get("DefaultValue") for p in definition["Parameters"]}
    # The thresholds are literals of the deployment, which the evaluation must also state:
    # try the gate's own conditions at others, as a deployment with those would write them.
    conditions = gate["Arguments"]["Conditions"]
    path_of = [c["LeftValue"]["Std:JsonGet"]["Path"] for c in conditions]
    threshold_of = {
        contracts.SHORTFALL_VS_FULL_FINETUNE: "metric_tolerance",
        f"{contracts.GATE_THRESHOLDS}.metric_tolerance": "metric_tolerance",
        contracts.GAIN_VS_BASE: "min_metric_gain",
        f"{contracts.GATE_THRESHOLDS}.min_metric_gain": "min_metric_gain",
    }
    assert sorted(path_of) == sorted(threshold_of)
    config = PipelineConfig()
    assert [c["RightValue"] for c in conditions] == [
        getattr(config, threshold_of[path]) for path in path_of
    ]

    shortfall = contracts.value_at(evaluation, contracts.SHORTFALL_VS_FULL_FINETUNE)
    gain = contracts.value_at(evaluation, contracts.GAIN_VS_BASE)
    registry = LocalRegistry(tmp_path / "registry.sqlite", "contract")
    verdicts = []
    # Below, exactly at, and above each measured margin: the boundaries are where a rule drifts.
    for tolerance, min_gain in itertools.product(
        (shortfall - 0.01, shortfall, shortfall + 0.01), (gain - 0.01, gain, gain + 0.01)
    ):
        limits = {"metric_tolerance": tolerance, "min_metric_gain": min_gain}
        stated = {**evaluation, contracts.GATE_THRESHOLDS: limits}
        scope = Scope(
            parameters=declared,
            execution={},
            property_files={f"Evaluate.{report['PropertyFileName']}": stated},
        )
        deployed = [
            {**condition, "RightValue": limits[threshold_of[path]]}
            for condition, path in zip(conditions, path_of, strict=True)
        ]
        in_pipeline = scope.all_hold(deployed)
        # Another deployment's thresholds stated in the evaluation never pass the gate.
        assert not scope.all_hold(conditions) or limits == {k: getattr(config, k) for k in limits}
        at_approval = approval_passes(registry, stated, tolerance, min_gain)
        assert in_pipeline == at_approval, (tolerance, min_gain)
        verdicts.append(in_pipeline)
    # shortfall <= tolerance and gain >= min_gain: 2 x 2 of the 3 x 3 pass.
    assert verdicts.count(True) == 4


def test_writer_refuses_a_document_without_a_key_the_pipeline_reads(tmp_path: Path) -> None:
    from tests.evaluations import evaluation

    document = evaluation(adapter=0.5, full_finetune=0.5, base=0.4)
    del document["schema_version"]
    gate = document.pop("gate")
    document["gate"] = {"rougeL_shortfall": 0.0, **gate}  # a renamed key
    del document["gate"]["shortfall_vs_full_finetune_upper95"]
    with pytest.raises(contracts.ContractError, match=r"no value at .gate\.shortfall_vs"):
        contracts.EVALUATION.write(tmp_path, document)
    assert not (tmp_path / contracts.EVALUATION.file_name).exists()


@pytest.mark.parametrize(
    "contract", [contracts.EVALUATION, contracts.TRAINING_METRICS, contracts.MANIFEST]
)
def test_reader_names_the_file_and_fix_for_another_schema_version(
    tmp_path: Path, contract: contracts.FileContract
) -> None:
    (tmp_path / contract.file_name).write_text(json.dumps({"schema_version": 0}))
    with pytest.raises(contracts.ContractError) as raised:
        contract.read(tmp_path)
    message = str(raised.value)
    assert str(tmp_path / contract.file_name) in message
    assert f"schema version 0, expected {contract.version}" in message
    assert contract.writer in message and "\n" not in message


def test_every_script_output_carries_its_schema_version(tiny_run) -> None:
    root, _ = tiny_run
    (jobs,) = (root / "run" / "jobs").iterdir()  # the one execution's job folders
    manifest = contracts.MANIFEST.read(
        jobs / "Preprocess" / "container" / "opt" / "ml" / "processing" / "output"
    )
    metrics = contracts.TRAINING_METRICS.read(
        jobs / "TrainAdapter" / "container" / "opt" / "ml" / "model"
    )
    assert manifest["schema_version"] == contracts.MANIFEST.version
    assert metrics["method"] == "qlora" and metrics["global_step"] > 0
