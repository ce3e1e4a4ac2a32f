"""Scores and how far to trust them: ROUGE and the task's metric per example, and paired
bootstrap intervals.

Three models scored on the same few dozen (or few thousand) test examples differ by amounts
that are partly noise. Each comparison is therefore a *paired* bootstrap over examples: one
resample of the test set draws example indices with replacement, and every model and metric
is scored on that same resample, so what the examples share (an easy dialogue is easy for all
three models) cancels out of the differences. The 95% interval is the 2.5th and 97.5th
percentiles of the resampled mean differences (Efron & Tibshirani, An Introduction to the
Bootstrap, ch. 13; Koehn, "Statistical Significance Tests for Machine Translation
Evaluation", EMNLP 2004, for the paired form used in NLP).

The smallest difference the test set can resolve is stated as the minimum detectable
difference: (z_{1-alpha/2} + z_{power}) times the bootstrap standard error, the true gap this
many examples detect with 80% power at the 95% level. A gap well below it is noise here.

Pure functions over numpy arrays; the resampling is seeded, so a rerun gives the same interval.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

if __package__:  # imported as part of the training_scripts package
    from . import tasks
else:  # run as a file in a SageMaker job: sibling modules are top-level
    import tasks

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

# Resamples drawn per block: bounds memory at ~8 bytes x block x examples.
_BLOCK = 500


def sentences_per_line(text: str) -> str:
    """rougeLsum scores summary-level LCS over newline-separated sentences."""
    return "\n".join(s for s in _SENTENCE_END.split(text.strip()) if s)


def rouge_per_example(
    predictions: Sequence[str], references: Sequence[str]
) -> dict[str, list[float]]:
    """ROUGE-1/2/L/Lsum F1 of each prediction against its reference (rouge_score, stemming on)."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references) or not predictions:
        raise ValueError("rouge needs one prediction per reference and at least one pair")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    scores: dict[str, list[float]] = {key: [] for key in ROUGE_KEYS}
    for prediction, reference in zip(predictions, references, strict=True):
        result = scorer.score(sentences_per_line(reference), sentences_per_line(prediction))
        for key in ROUGE_KEYS:
            scores[key].append(result[key].fmeasure)
    return scores


def means(per_example: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """The corpus score of each metric: the mean F1 over examples."""
    return {key: float(np.mean(values)) for key, values in per_example.items()}


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    return means(rouge_per_example(predictions, references))


@dataclass(frozen=True)
class Bootstrap:
    """How intervals are drawn. 10,000 resamples put the Monte Carlo error of a 95% bound
    well below the third decimal of ROUGE."""

    resamples: int = 10_000
    confidence: float = 0.95
    power: float = 0.80  # for the minimum detectable difference
    seed: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "method": "paired bootstrap over test examples, percentile intervals",
            "resamples": self.resamples,
            "confidence": self.confidence,
            "power_of_min_detectable_difference": self.power,
            "seed": self.seed,
        }

    @property
    def detectable_multiplier(self) -> float:
        normal = NormalDist()
        return normal.inv_cdf(1 - (1 - self.confidence) / 2) + normal.inv_cdf(self.power)


def resampled_means(values: np.ndarray, settings: Bootstrap) -> np.ndarray:
    """Means of `values` (series x examples) over `settings.resamples` resamples of the
    examples, the same resamples for every series: shape (resamples, series).

    A resample is a multinomial count per example; its mean is counts @ values / n, which
    keeps memory at one block of counts rather than every drawn index."""
    series, n = values.shape
    rng = np.random.default_rng(settings.seed)
    out = np.empty((settings.resamples, series))
    uniform = np.full(n, 1.0 / n)
    for start in range(0, settings.resamples, _BLOCK):
        size = min(_BLOCK, settings.resamples - start)
        counts = rng.multinomial(n, uniform, size=size)
        out[start : start + size] = counts @ values.T / n
    return out


def interval(samples: np.ndarray, settings: Bootstrap) -> tuple[float, float]:
    tail = (1 - settings.confidence) / 2
    low, high = np.quantile(samples, [tail, 1 - tail])
    return float(low), float(high)


def paired_intervals(
    scores: Mapping[str, Mapping[str, Sequence[float]]],
    comparisons: Mapping[str, tuple[str, str]],
    settings: Bootstrap = Bootstrap(),
) -> dict[str, Any]:
    """Intervals for each model's scores and for each comparison `name: (a, b)` (a - b), every
    metric, from one set of resamples.

    `scores[model][metric]` holds one score per test example, in the same example order for
    every model."""
    models = list(scores)
    metrics = list(next(iter(scores.values())))
    lengths = {len(scores[m][k]) for m in models for k in metrics}
    if len(lengths) != 1:
        raise ValueError(f"every model needs a score for every test example; lengths {lengths}")
    series = [(m, k) for m in models for k in metrics]
    values = np.array([scores[m][k] for m, k in series], dtype=float)
    resampled = resampled_means(values, settings)
    column = {key: i for i, key in enumerate(series)}
    model_intervals = {
        m: {
            k: dict(
                zip(("low", "high"), interval(resampled[:, column[m, k]], settings), strict=True)
            )
            for k in metrics
        }
        for m in models
    }
    compared: dict[str, dict[str, dict[str, float]]] = {}
    for name, (a, b) in comparisons.items():
        compared[name] = {}
        for k in metrics:
            differences = resampled[:, column[a, k]] - resampled[:, column[b, k]]
            low, high = interval(differences, settings)
            standard_error = float(np.std(differences, ddof=1))
            compared[name][k] = {
                "difference": float(np.mean(values[column[a, k]] - values[column[b, k]])),
                "low": low,
                "high": high,
                "standard_error": standard_error,
                "min_detectable_difference": settings.detectable_multiplier * standard_error,
            }
    return {"settings": settings.describe(), "models": model_intervals, "comparisons": compared}


# --- task metrics (tasks.Metric): one score per example in [0, 1] --------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = re.compile(r"[^\w\s]")


def normalize_answer(text: str, *, drop_articles: bool = True) -> str:
    """SQuAD's answer normalization: lower case, no punctuation, articles or extra spaces."""
    text = _PUNCTUATION.sub(" ", text.casefold())
    return " ".join((_ARTICLES.sub(" ", text) if drop_articles else text).split())


def _normalized_pair(prediction: str, reference: str) -> tuple[str, str]:
    """Both answers normalized; the articles kept where dropping them leaves the reference
    empty (an answer "A" or "The" is no article to drop)."""
    keep = not normalize_answer(reference)
    return (
        normalize_answer(prediction, drop_articles=not keep),
        normalize_answer(reference, drop_articles=not keep),
    )


def exact_match(prediction: str, reference: str) -> float:
    predicted, expected = _normalized_pair(prediction, reference)
    return float(predicted == expected)


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD's F1 over the normalized words both answers share (with multiplicity)."""
    predicted, expected = (text.split() for text in _normalized_pair(prediction, reference))
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def chrf(prediction: str, reference: str) -> float:
    """sacrebleu's sentence chrF (character n-gram F-score, beta 2), scaled to 0..1."""
    from sacrebleu.metrics import CHRF

    if not prediction.strip() and not reference.strip():
        return 1.0  # nothing asked, nothing said: a match, as exact_match and token_f1 score it
    return CHRF().sentence_score(prediction, [reference]).score / 100


OTHER_LABEL = tasks.OTHER_LABEL  # an answer outside the task's labels


def as_label(answer: str, labels: Sequence[str]) -> str:
    """The label an answer names (case and surrounding spaces and full stops aside), or
    OTHER_LABEL: an answer outside the labels counts wrong, never as the nearest label."""
    wanted = answer.strip().strip(".").strip().casefold()
    return next((label for label in labels if label.casefold() == wanted), OTHER_LABEL)


def label_accuracy(prediction: str, reference: str, labels: Sequence[str]) -> float:
    return float(as_label(prediction, labels) == as_label(reference, labels) != OTHER_LABEL)


def confusion(
    predictions: Sequence[str], references: Sequence[str], labels: Sequence[str]
) -> dict[str, dict[str, int]]:
    """Counts per reference label of each predicted label (OTHER_LABEL: outside the labels)."""
    table = {r: dict.fromkeys([*labels, OTHER_LABEL], 0) for r in labels}
    for prediction, reference in zip(predictions, references, strict=True):
        expected = as_label(reference, labels)
        if expected in table:
            table[expected][as_label(prediction, labels)] += 1
    return table


def metric_per_example(
    metric: str, predictions: Sequence[str], references: Sequence[str], labels: Sequence[str] = ()
) -> list[float]:
    """The task metric (tasks.Metric's values) of each prediction against its reference."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError("a metric needs one prediction per reference and at least one pair")
    pairs = list(zip(predictions, references, strict=True))
    if metric == "rougeL":
        return rouge_per_example(predictions, references)["rougeL"]
    if metric == "label_accuracy":
        return [label_accuracy(p, r, labels) for p, r in pairs]
    score = {"exact_match": exact_match, "token_f1": token_f1, "chrf": chrf}[metric]
    return [score(p, r) for p, r in pairs]
