"""evaluate.py's pure parts: ROUGE, comparisons and the report."""

from __future__ import annotations

import pytest

from training_scripts.evaluate import (
    ROUGE_KEYS,
    bar_chart_svg,
    compare,
    render_report,
    rouge_scores,
    sentences_per_line,
)


def test_identical_summaries_score_one_and_disjoint_zero() -> None:
    assert rouge_scores(["Tom books a table."], ["Tom books a table."]) == dict.fromkeys(
        ROUGE_KEYS, 1.0
    )
    assert rouge_scores(["cats purr"], ["dogs bark loudly"]) == dict.fromkeys(ROUGE_KEYS, 0.0)


def test_stemming_is_on() -> None:
    assert rouge_scores(["the clerk books tables"], ["the clerk booked table"])[
        "rouge1"
    ] == pytest.approx(1.0)


def test_scores_are_means_over_examples() -> None:
    scores = rouge_scores(["a b c d", "x y"], ["a b c d", "p q"])
    assert scores["rouge1"] == pytest.approx(0.5)


def test_rouge_lsum_splits_sentences() -> None:
    assert sentences_per_line("One thing. Two things! Three?") == "One thing.\nTwo things!\nThree?"
    # Order of sentences matters for rougeL over the whole text, not for rougeLsum.
    scores = rouge_scores(["B is here. A is there."], ["A is there. B is here."])
    assert scores["rougeLsum"] == pytest.approx(1.0) and scores["rougeL"] < 1.0


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="one prediction per reference"):
        rouge_scores(["a"], ["a", "b"])


def test_compare_is_a_delta_per_metric() -> None:
    a = dict.fromkeys(ROUGE_KEYS, 0.5)
    b = dict.fromkeys(ROUGE_KEYS, 0.25)
    assert compare(a, b) == dict.fromkeys(ROUGE_KEYS, 0.25)


def test_report_has_a_chart_table_and_escaped_samples() -> None:
    models = {
        "base": {
            **dict.fromkeys(ROUGE_KEYS, 0.2),
            "trainable_params": 0,
            "total_params": 100,
            "artifact_bytes": 4000,
            "train_runtime_s": None,
        },
        "adapter": {
            **dict.fromkeys(ROUGE_KEYS, 0.4),
            "trainable_params": 2,
            "total_params": 100,
            "artifact_bytes": 80,
            "train_runtime_s": 12.5,
            "peak_memory_bytes": 2**30,
        },
        "full_finetune": {
            **dict.fromkeys(ROUGE_KEYS, 0.45),
            "trainable_params": 100,
            "total_params": 100,
            "artifact_bytes": 4000,
            "train_runtime_s": 30.0,
        },
    }
    evaluation = {
        "models": models,
        "comparisons": {
            "adapter_vs_full_finetune": compare(models["adapter"], models["full_finetune"]),
            "adapter_vs_base": compare(models["adapter"], models["base"]),
        },
        "test_examples": 1,
        "baseline_source": {"kind": "trained", "test_set_matches": True},
        "base_model": "tiny",
    }
    rows = [{"id": "x", "input": "<script>alert(1)</script>", "target": "ref"}]
    page = render_report(
        evaluation, rows, {"base": ["b"], "adapter": ["a"], "full_finetune": ["f"]}
    )
    assert "<svg" in page and page.count("<rect") >= 12
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert "-0.0500" in page and "+0.2000" in page
    assert "1.0 GB" in page
    assert bar_chart_svg(models).count("<rect") == 12 + 3  # bars + legend
