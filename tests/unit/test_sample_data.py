"""The bundled dataset: reproducible from its generator, varied, and a real summarization task."""

from __future__ import annotations

import json
import statistics

from pipelines.fixtures import sample_data


def test_committed_sample_is_exactly_the_generator_output() -> None:
    expected = sample_data.to_jsonl(
        sample_data.generate(sample_data.DEFAULT_COUNT, sample_data.DEFAULT_SEED)
    )
    assert sample_data.SAMPLE_PATH.read_text(encoding="utf-8") == expected


def test_generator_is_seeded() -> None:
    assert sample_data.generate(50, seed=3) == sample_data.generate(50, seed=3)
    assert sample_data.generate(50, seed=3) != sample_data.generate(50, seed=4)


def test_sample_is_varied_and_needs_compression() -> None:
    rows = [json.loads(line) for line in sample_data.SAMPLE_PATH.read_text().splitlines()]
    assert len(rows) >= 360
    assert len({r["topic"] for r in rows}) >= 8
    assert len({r["dialogue"] for r in rows}) == len(rows)
    assert len({r["summary"] for r in rows}) > 0.8 * len(rows)
    openings = {r["dialogue"].splitlines()[1] for r in rows}
    assert len(openings) > 100  # wording varies, not one template per scenario
    ratios = [len(r["dialogue"].split()) / len(r["summary"].split()) for r in rows]
    assert statistics.mean(ratios) > 2.5
    assert all(r["dialogue"].startswith("#Person") for r in rows)
