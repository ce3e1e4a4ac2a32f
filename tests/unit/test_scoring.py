"""Scores and their noise: ROUGE per example, paired bootstrap intervals checked against
closed forms, the one gate rule on the interval bounds, the report and the model card."""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import numpy as np
import pytest

from tests.evaluations import TASK, evaluation, scored
from training_scripts import contracts, model_card, report
from training_scripts.scoring import (
    ROUGE_KEYS,
    Bootstrap,
    paired_intervals,
    rouge_per_example,
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


def test_scores_are_means_of_the_per_example_scores() -> None:
    per_example = rouge_per_example(["a b c d", "x y"], ["a b c d", "p q"])
    assert per_example["rouge1"] == [1.0, 0.0]
    assert rouge_scores(["a b c d", "x y"], ["a b c d", "p q"])["rouge1"] == pytest.approx(0.5)


def test_rouge_lsum_splits_sentences() -> None:
    assert sentences_per_line("One thing. Two things! Three?") == "One thing.\nTwo things!\nThree?"
    # Order of sentences matters for rougeL over the whole text, not for rougeLsum.
    scores = rouge_scores(["B is here. A is there."], ["A is there. B is here."])
    assert scores["rougeLsum"] == pytest.approx(1.0) and scores["rougeL"] < 1.0


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="one prediction per reference"):
        rouge_scores(["a"], ["a", "b"])


# --- intervals ------------------------------------------------------------------------------


def binomial_quantile(n: int, p: float, q: float) -> int:
    """The smallest k with P(Binomial(n, p) <= k) >= q."""
    total = 0.0
    for k in range(n + 1):
        total += math.comb(n, k) * p**k * (1 - p) ** (n - k)
        if total >= q:
            return k
    return n


def intervals_of_differences(differences: list[float], settings: Bootstrap) -> dict:
    """The a - b interval where b scores 0 everywhere: the bootstrap of `differences` itself."""
    result = paired_intervals(
        {"a": {"rougeL": differences}, "b": {"rougeL": [0.0] * len(differences)}},
        {"a_vs_b": ("a", "b")},
        settings,
    )
    return result["comparisons"]["a_vs_b"]["rougeL"]


def test_bootstrap_of_zero_one_differences_is_the_binomial_closed_form() -> None:
    """Resampling n examples of which k differ by 1 (the rest by 0): the resampled mean is
    exactly Binomial(n, k/n) / n, so the percentile bounds are its quantiles."""
    n, k = 50, 20
    settings = Bootstrap(resamples=40_000, seed=3)
    figures = intervals_of_differences([1.0] * k + [0.0] * (n - k), settings)
    p = k / n
    assert figures["difference"] == pytest.approx(p)
    # One lattice step (1/n) of slack: the quantile of 40,000 draws of a discrete distribution.
    assert figures["low"] == pytest.approx(binomial_quantile(n, p, 0.025) / n, abs=1 / n)
    assert figures["high"] == pytest.approx(binomial_quantile(n, p, 0.975) / n, abs=1 / n)
    assert figures["standard_error"] == pytest.approx(math.sqrt(p * (1 - p) / n), rel=0.03)


def test_min_detectable_difference_is_z_sum_times_standard_error() -> None:
    figures = intervals_of_differences([1.0, -1.0] * 200, Bootstrap(resamples=20_000))
    # Population sd of +-1 is 1: the mean's standard error is 1/sqrt(400) = 0.05.
    assert figures["standard_error"] == pytest.approx(0.05, rel=0.03)
    z = NormalDist().inv_cdf(0.975) + NormalDist().inv_cdf(0.80)
    assert figures["min_detectable_difference"] == pytest.approx(z * 0.05, rel=0.03)
    assert figures["low"] == pytest.approx(-1.96 * 0.05, abs=0.006)
    assert figures["high"] == pytest.approx(1.96 * 0.05, abs=0.006)


def test_identical_differences_give_a_zero_width_interval() -> None:
    figures = intervals_of_differences([0.25] * 30, Bootstrap(resamples=2_000))
    assert figures["low"] == pytest.approx(0.25) and figures["high"] == pytest.approx(0.25)


def test_the_bootstrap_is_paired_what_examples_share_cancels() -> None:
    """Per-example difficulty shared by both models does not widen their difference's
    interval: the same resample scores both."""
    rng = np.random.default_rng(0)
    gap = rng.normal(0.02, 0.01, 60)
    difficulty = rng.uniform(0.0, 0.8, 60)
    a, b = list(difficulty + gap), list(difficulty)
    both = paired_intervals(
        {"a": {"rougeL": a}, "b": {"rougeL": b}}, {"d": ("a", "b")}, Bootstrap(resamples=4_000)
    )
    alone = intervals_of_differences(list(gap), Bootstrap(resamples=4_000))
    d = both["comparisons"]["d"]["rougeL"]
    assert d["low"] == pytest.approx(alone["low"], abs=1e-9)
    assert d["high"] == pytest.approx(alone["high"], abs=1e-9)
    assert d["low"] > 0  # a consistent small gain is resolved despite widely spread scores
    # Each model's own interval does carry the difficulty spread.
    assert both["models"]["a"]["rougeL"]["high"] - both["models"]["a"]["rougeL"]["low"] > 10 * (
        d["high"] - d["low"]
    )


def test_the_same_seed_gives_the_same_interval() -> None:
    data = {"a": {"rougeL": [0.1, 0.5, 0.3, 0.9]}, "b": {"rougeL": [0.2, 0.2, 0.4, 0.5]}}
    first = paired_intervals(data, {"d": ("a", "b")})
    assert paired_intervals(data, {"d": ("a", "b")}) == first


def test_models_scored_on_different_examples_are_refused() -> None:
    with pytest.raises(ValueError, match="every test example"):
        paired_intervals({"a": {"rougeL": [0.1, 0.2]}, "b": {"rougeL": [0.1]}}, {"d": ("a", "b")})


# --- the gate rule ----------------------------------------------------------------------------

THRESHOLDS = contracts.GateThresholds(metric_tolerance=0.02, min_metric_gain=0.01)


def test_gate_reads_the_far_bound_of_the_shortfall_not_its_mean() -> None:
    """The adapter trails by 0.01 on average, inside a 0.02 tolerance, but with this much
    spread the interval reaches beyond 0.02: the point estimate would pass, the rule does not."""
    full = [0.5] * 24
    noisy = [0.5 - 0.01 + (0.12 if i % 2 else -0.12) for i in range(24)]
    document = evaluation(adapter=noisy, full_finetune=full, base=0.1)
    shortfall = contracts.value_at(document, contracts.SHORTFALL_VS_FULL_FINETUNE)
    assert document["comparisons"]["adapter_vs_full_finetune"]["rougeL"][
        "difference"
    ] == pytest.approx(-0.01)
    assert shortfall > 0.02
    passed, reason = contracts.gate_verdict(document, THRESHOLDS)
    assert not passed and "upper end of the 95% interval" in reason


def test_gate_reads_the_near_bound_of_the_gain() -> None:
    base = [0.30 + (0.2 if i % 2 else -0.2) for i in range(12)]
    document = evaluation(adapter=[0.32] * 12, full_finetune=[0.32] * 12, base=base)
    assert document["comparisons"]["adapter_vs_base"]["rougeL"]["difference"] > 0.01
    passed, reason = contracts.gate_verdict(document, THRESHOLDS)
    assert not passed and "lower end of the 95% interval" in reason


@pytest.mark.parametrize(
    ("adapter", "passes"), [(0.375, True), (0.37, False)], ids=["at-tolerance", "beyond"]
)
def test_gate_boundary_is_inclusive(adapter: float, passes: bool) -> None:
    # Binary fractions, so that the shortfall equals the tolerance exactly at the boundary.
    document = evaluation(adapter=adapter, full_finetune=0.5, base=0.25)
    thresholds = contracts.GateThresholds(metric_tolerance=0.125, min_metric_gain=0.125)
    assert contracts.gate_verdict(document, thresholds)[0] is passes


def test_a_baseline_scored_on_another_test_set_fails_the_gate_whatever_the_scores() -> None:
    """A reused full fine-tune scored on an older test set does not compare with the adapter's
    scores; an evaluation without the field (written before reuse existed) is read as before."""
    document = evaluation(adapter=0.45, full_finetune=0.45, base=0.2)
    assert contracts.gate_verdict(document, THRESHOLDS) == (True, "gate passed")
    document["baseline_source"] = {"kind": "reused", "test_set_matches": False}
    assert contracts.gate_verdict(document, THRESHOLDS) == (
        False,
        "the full fine-tune figures were scored on another test set",
    )
    del document["baseline_source"]
    assert contracts.gate_verdict(document, THRESHOLDS) == (True, "gate passed")


def test_gate_outcomes_name_each_condition_and_its_rule() -> None:
    document = evaluation(adapter=0.44, full_finetune=0.45, base=0.2)
    outcomes = contracts.gate_outcomes(document, THRESHOLDS)
    assert [o.condition.path for o in outcomes] == [c.path for c in contracts.GATE_CONDITIONS]
    assert all(o.holds for o in outcomes)
    assert "at most 0.02 rougeL" in outcomes[0].statement


# --- the report and the model card ------------------------------------------------------------


def reviewed_evaluation() -> tuple[dict, list[dict], dict[str, list[str]]]:
    rows = [
        {"id": "d1", "input": "<script>alert(1)</script>", "target": "ref one"},
        {"id": "d2", "input": "A: hi\nB: bye", "target": "ref two"},
        {"id": "d3", "input": "C: x", "target": "ref three"},
    ]
    training = {
        "method": "qlora",
        "device": "cpu",
        "adapter": {"r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "v_proj"]},
        "learning_rate": 5e-4,
        "global_step": 19,
        "per_device_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "loss_curve": [{"step": 1, "loss": 2.0}, {"step": 10, "loss": 1.2}],
        "validation_curve": [{"step": 0, "loss": 2.2}, {"step": 19, "loss": 0.9}],
        "dataset_version": "v-20261128",
    }
    document = evaluation(
        adapter=[0.2, 0.9, 0.5],
        full_finetune=[0.3, 0.8, 0.5],
        base=[0.1, 0.2, 0.1],
        base_model="tiny",
        dataset_version="v-20261128",
        intervals_note=None,
    )
    document["models"]["adapter"].update(
        training=training, artifact_bytes=80, peak_memory_bytes=2**30, train_runtime_s=12.5
    )
    document["models"]["full_finetune"].update(training={**training, "method": "full"})
    document["generation"] = {"precision": "float32", "device": "cpu", "max_new_tokens": 8}
    predictions = {
        "base": ["b1", "b2", "b3"],
        "adapter": ["<b>a1</b>", "a2", "a3"],
        "full_finetune": ["f1", "f2", "f3"],
    }
    return document, rows, predictions


def test_report_states_verdict_settings_intervals_curves_and_examples() -> None:
    document, rows, predictions = reviewed_evaluation()
    page = report.render(document, rows, predictions, THRESHOLDS, registered="peftops-adapters v7")
    passed, _ = contracts.gate_verdict(document, THRESHOLDS)
    assert ("Quality gate: passed" in page) is passed
    assert "Quality gate: failed" in page  # three examples cannot resolve a 0.02 tolerance
    assert "&lt;script&gt;" in page and "<script>" not in page and "&lt;b&gt;a1" in page
    assert "peftops-adapters v7" in page and "v-20261128" in page and "16 / 32" in page
    low = document["comparisons"]["adapter_vs_full_finetune"]["rougeL"]["low"]
    assert f"{low:+.3f}" in page
    assert page.count("<polyline") == 4  # training and validation loss, adapter and baseline
    assert "Why QLoRA's memory is not lower here" in page
    worst = page.index("The adapter's worst examples")
    best = page.index("The adapter's best examples")
    assert worst < page.index("Example d1", worst) < best < page.index("Example d2", best)


def test_model_card_markdown_states_scores_with_intervals_and_prompt() -> None:
    document, _, _ = reviewed_evaluation()
    card = model_card.markdown(document, THRESHOLDS, "PROMPT {dialogue}", TASK)
    ci = document["intervals"]["models"]["adapter"]["rougeL"]
    assert f"[{ci['low']:.3f}, {ci['high']:.3f}]" in card
    assert "PROMPT {dialogue}" in card and "v-20261128" in card and "| LoRA rank | `16` |" in card
    assert "Quality gate: failed" in card


def test_scored_entries_carry_per_example_scores() -> None:
    assert scored([0.1, 0.3])["per_example"]["rougeL"] == [0.1, 0.3]


# --- each task metric, per example ---------------------------------------------------------------

LABELS = ("billing", "outage", "account")
PREDICTIONS = [
    "The invoice is wrong.",
    "outage",
    "billing account",
    "resetting my passwords",
    "ACCOUNT",
]
REFERENCES = ["the invoice is wrong", "Outage", "account", "reset password", "account"]


def test_each_metric_scores_each_prediction_against_its_own_reference() -> None:
    """Every metric of tasks.Metric, by its own function, pair by pair; the five disagree on
    these pairs, so no metric can stand in for another."""
    from training_scripts.scoring import chrf, exact_match, label_accuracy, metric_per_example
    from training_scripts.tasks import Metric

    pairs = list(zip(PREDICTIONS, REFERENCES, strict=True))
    expected = {
        Metric.ROUGE_L: rouge_per_example(PREDICTIONS, REFERENCES)["rougeL"],
        Metric.EXACT_MATCH: [exact_match(p, r) for p, r in pairs],
        Metric.TOKEN_F1: [pytest.approx(f) for f in (1.0, 1.0, 2 / 3, 0.0, 1.0)],  # unstemmed
        Metric.CHRF: [chrf(p, r) for p, r in pairs],
        Metric.LABEL_ACCURACY: [label_accuracy(p, r, LABELS) for p, r in pairs],
    }
    assert set(expected) == set(Metric)
    scored = {m: metric_per_example(m, PREDICTIONS, REFERENCES, LABELS) for m in Metric}
    assert scored == expected
    assert expected[Metric.EXACT_MATCH] == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert expected[Metric.LABEL_ACCURACY] == [0.0, 1.0, 0.0, 0.0, 1.0]
    assert expected[Metric.ROUGE_L] == pytest.approx([1.0, 1.0, 2 / 3, 0.8, 1.0])  # stemmed
    assert len({tuple(map(float, s)) for s in scored.values()}) == len(Metric)
    # Reversed references: each prediction is scored against its own, not a neighbour's.
    flipped = metric_per_example(Metric.EXACT_MATCH, PREDICTIONS, REFERENCES[::-1], LABELS)
    assert flipped == [0.0, 0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("predictions", "references"), [([], []), (["a"], []), (["a", "b"], ["a"])]
)
def test_a_metric_needs_one_prediction_per_reference_and_at_least_one(
    predictions: list[str], references: list[str]
) -> None:
    from training_scripts.scoring import metric_per_example

    with pytest.raises(ValueError) as refused:
        metric_per_example("exact_match", predictions, references)
    assert str(refused.value) == "a metric needs one prediction per reference and at least one pair"


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("billing", "billing"),
        ("  Billing. ", "billing"),
        ("BILLING.", "billing"),
        (".outage.", "outage"),
        ("bill", "(other)"),
        ("billing issue", "(other)"),
        ("ACCOUNT X", "(other)"),  # only spaces and full stops are stripped, no letter
        ("", "(other)"),
    ],
)
def test_an_answer_names_a_label_case_spaces_and_full_stops_aside_or_none(
    answer: str, label: str
) -> None:
    from training_scripts.scoring import OTHER_LABEL, as_label

    assert OTHER_LABEL == "(other)"
    assert as_label(answer, LABELS) == label


def test_a_prediction_outside_the_labels_is_wrong_even_against_a_reference_outside_them() -> None:
    from training_scripts.scoring import label_accuracy

    assert label_accuracy("maybe", "unsure", LABELS) == 0.0
    assert label_accuracy("Outage.", "outage", LABELS) == 1.0


def test_the_confusion_table_counts_each_reference_labels_predictions() -> None:
    from training_scripts.scoring import confusion

    table = confusion(
        ["billing", "Outage", "no idea", "billing", "account", "BILLING"],
        ["billing", "billing", "billing", "outage", "not a label", "billing"],
        LABELS,
    )
    assert table == {
        "billing": {"billing": 2, "outage": 1, "account": 0, "(other)": 1},
        "outage": {"billing": 1, "outage": 0, "account": 0, "(other)": 0},
        "account": {"billing": 0, "outage": 0, "account": 0, "(other)": 0},
    }
    with pytest.raises(ValueError):  # a prediction without its reference: never a short table
        confusion(["billing", "outage"], ["billing"], LABELS)


def test_a_report_rendered_again_from_its_folder_is_the_report_of_its_files(tmp_path) -> None:
    """What a local run renders once the adapter is registered: evaluation.json and each
    example's predictions, read back in order, make the same page."""
    document, rows, predictions = reviewed_evaluation()
    contracts.EVALUATION.write(tmp_path, document)
    lines = [
        json.dumps(
            {"id": row["id"], "input": row["input"], "reference": row["target"]}
            | {model: predictions[model][i] for model in contracts.MODEL_NAMES}
        )
        for i, row in enumerate(rows)
    ]
    (tmp_path / "predictions.jsonl").write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    thresholds = contracts.GateThresholds(**document["gate_thresholds"])
    page = report.render_folder(tmp_path, registered="peftops-adapters version 7")
    written = contracts.EVALUATION.read(tmp_path)
    assert page == report.render(
        written, rows, predictions, thresholds, registered="peftops-adapters version 7"
    )
    assert "peftops-adapters version 7" in page


@pytest.mark.parametrize(
    ("text", "drop_articles", "normalized"),
    [
        ("The Cat, a dog.", True, "cat dog"),
        ("The Cat, a dog.", False, "the cat a dog"),
        ("an apple", True, "apple"),
        ("  Spaced\tout!  ", True, "spaced out"),
    ],
)
def test_answers_are_normalized_as_squad_normalizes_them(
    text: str, drop_articles: bool, normalized: str
) -> None:
    from training_scripts.scoring import normalize_answer

    assert normalize_answer(text, drop_articles=drop_articles) == normalized


@pytest.mark.parametrize(
    ("prediction", "reference", "f1"),
    [
        ("red box", "red car", 0.5),  # precision 1/2, recall 1/2
        ("cat dog bird", "cat", 0.5),  # precision 1/3, recall 1: 2/4
        ("cat", "cat dog bird", 0.5),
        ("", "cat", 0.0),  # one side empty: no match
        ("cat", "", 0.0),
        ("", "", 1.0),  # both empty: a match
        ("dog", "cat", 0.0),
    ],
)
def test_token_f1_is_squads_harmonic_mean_of_word_precision_and_recall(
    prediction: str, reference: str, f1: float
) -> None:
    from training_scripts.scoring import token_f1

    assert token_f1(prediction, reference) == pytest.approx(f1)


@pytest.mark.parametrize(
    ("prediction", "reference", "score"),
    [
        ("the invoice is wrong", "the invoice is wrong", 1.0),
        ("", "the invoice is wrong", 0.0),  # nothing said where something was asked
        ("the invoice is wrong", " ", 0.0),
        (" ", "", 1.0),  # nothing asked, nothing said
    ],
)
def test_chrf_is_sacrebleus_sentence_score_on_a_zero_to_one_scale(
    prediction: str, reference: str, score: float
) -> None:
    from sacrebleu.metrics import CHRF

    from training_scripts.scoring import chrf

    assert chrf(prediction, reference) == pytest.approx(score)
    partial = chrf("the invoice was wrong", "the invoice is wrong")
    assert partial == pytest.approx(
        CHRF().sentence_score("the invoice was wrong", ["the invoice is wrong"]).score / 100
    )
    assert 0 < partial < 1


@pytest.mark.parametrize(("predictions", "references"), [(["a"], []), ([], [])])
def test_rouge_refuses_unpaired_or_empty_lists_in_its_words(
    predictions: list[str], references: list[str]
) -> None:
    from training_scripts.scoring import rouge_per_example

    with pytest.raises(ValueError) as refused:
        rouge_per_example(predictions, references)
    assert str(refused.value) == "rouge needs one prediction per reference and at least one pair"
