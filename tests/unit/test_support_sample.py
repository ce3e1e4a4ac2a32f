"""The bundled support-routing sample: the generator's output, byte for byte, and a dataset the
shipped task reads without a bad record, every team present in every split."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.fixtures import support_data
from training_scripts import preprocess


def test_the_committed_sample_is_the_generators_output(tmp_path: Path) -> None:
    regenerated = support_data.write(tmp_path / "support-routing.jsonl")
    assert regenerated.read_bytes() == support_data.SAMPLE_PATH.read_bytes()


def test_the_shipped_task_reads_every_record_and_splits_every_team(tmp_path: Path) -> None:
    manifest = preprocess.run(
        preprocess.PreprocessArguments(
            input=str(support_data.SAMPLE_PATH),
            output_dir=str(tmp_path),
            task_spec="support-routing",
        )
    )
    assert manifest["task"]["name"] == "support-routing"
    assert manifest["records_in"] == support_data.DEFAULT_COUNT
    assert (
        sum(manifest["records_out"].values()) + manifest["dropped"]["duplicate"]
        == (manifest["records_in"])
    )
    for split in ("train", "test"):
        rows = [json.loads(line) for line in (tmp_path / split / "data.jsonl").open()]
        assert {r["target"] for r in rows} == set(support_data.TEAMS), split
        assert all(r["input"][-1]["role"] == "user" for r in rows)
