"""evaluate.py's main, run in this process on tiny models: a base, a LoRA adapter with random
(non-zero) weights and a differently seeded "full fine-tune", so the three answer differently.
Every figure is checked against what it must come from, worked out here on its own: each
model's answers generated one prompt at a time, ROUGE from rouge_score, the entries' figures
from the files and counts they report."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from pipelines.fixtures.models import build_tiny_causal
from training_scripts import contracts, evaluate, generation, tasks, tracking

MAX_NEW_TOKENS = 6
BATCH_SIZE = 3  # 8 test examples: batches of 3, 3 and 2, sorted by length
MODEL_NAMES = ("base", "adapter", "full_finetune")

ADAPTER_TRAINING = {
    "method": "lora",
    "trainable_params": 1234,
    "total_params": 99999,
    "train_runtime_s": 12.5,
    "global_step": 7,
    "peak_memory_bytes": 4242,
    "learning_rate": 0.0002,
    "dataset_version": "week-1",
    "model_kind": "causal",
    "loss_curve": [{"step": 1, "loss": 2.5}, {"step": 7, "loss": 1.5}],
    "tracking_run_id": "adapter-run",
    "not_a_summary_key": "left out",
}
BASELINE_TRAINING = {
    "method": "full",
    "trainable_params": 777,
    "total_params": 888,
    "train_runtime_s": 30.0,
    "global_step": 9,
    "peak_memory_bytes": 8484,
    "tracking_run_id": "baseline-run",
}


@dataclass(frozen=True)
class Models:
    base: Path
    adapter: Path
    baseline: Path


@pytest.fixture(scope="module")
def models(tiny_causal: Path, tmp_path_factory: pytest.TempPathFactory) -> Models:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("evaluate-models")
    torch.manual_seed(0)
    lora = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_causal),
        LoraConfig(r=4, lora_alpha=32, target_modules="all-linear", init_lora_weights=False),
    )
    lora.save_pretrained(root / "adapter")
    contracts.TRAINING_METRICS.write(root / "adapter", ADAPTER_TRAINING)
    baseline = build_tiny_causal(root / "baseline", seed=1)
    contracts.TRAINING_METRICS.write(baseline, BASELINE_TRAINING)
    return Models(tiny_causal, root / "adapter", baseline)


def arguments(models: Models, test: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--base-model", str(models.base),
        "--adapter-dir", str(models.adapter),
        "--test-dir", str(test),
        "--output-dir", str(out),
        "--max-new-tokens", str(MAX_NEW_TOKENS),
        "--batch-size", str(BATCH_SIZE),
        "--precision", "fp32",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def evaluated(models: Models, splits: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("evaluation")
    task = tasks.split_task(splits / "test").name
    extra = ["--baseline-dir", str(models.baseline)]
    gates = ["--task-gate", "another-task=0.5,0.5", "--task-gate", f"{task}=0.05,0.03"]
    assert evaluate.main(arguments(models, splits / "test", out, *extra, *gates)) == 0
    return out


def rows_of(splits: Path) -> list[dict[str, Any]]:
    return contracts.read_split_rows(splits / "test" / "data.jsonl")


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def predictions(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def answers_one_at_a_time(models: Models, splits: Path) -> dict[str, list[str]]:
    """Each model's greedy answer to each test prompt, generated alone (no batch, no padding);
    the adapter unmerged, on its base."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models.base)
    task = tasks.split_task(splits / "test")
    inputs = [row[contracts.INPUT_KEY] for row in rows_of(splits)]
    prompt_ids, _ = generation.prompt_token_ids(
        tokenizer,
        task,
        inputs,
        seq2seq=False,
        max_tokens=tasks.MAX_CONTEXT_TOKENS - MAX_NEW_TOKENS,
    )
    loaded = {
        "base": AutoModelForCausalLM.from_pretrained(models.base),
        "adapter": PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(models.base), str(models.adapter)
        ),
        "full_finetune": AutoModelForCausalLM.from_pretrained(models.baseline),
    }
    answers: dict[str, list[str]] = {}
    for name, model in loaded.items():
        model.eval()
        answers[name] = []
        for ids in prompt_ids:
            with torch.no_grad():
                out = model.generate(
                    input_ids=torch.tensor([ids]),
                    max_new_tokens=MAX_NEW_TOKENS,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                )
            new = tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)
            answers[name].append(new.strip())
    return answers


@pytest.fixture(scope="module")
def alone(models: Models, splits: Path) -> dict[str, list[str]]:
    return answers_one_at_a_time(models, splits)


def test_the_three_models_answer_differently(alone: dict[str, list[str]]) -> None:
    """What the checks below rest on: a mix-up of two models' answers shows."""
    assert len({tuple(answers) for answers in alone.values()}) == 3


def test_each_example_gets_each_models_own_answer_to_its_own_prompt(
    evaluated: Path, splits: Path, alone: dict[str, list[str]]
) -> None:
    rows = rows_of(splits)
    written = predictions(evaluated)
    assert [(p["id"], p["input"], p["reference"]) for p in written] == [
        (r["id"], r[contracts.INPUT_KEY], r[contracts.TARGET_KEY]) for r in rows
    ]
    for name in MODEL_NAMES:
        assert [p[name] for p in written] == alone[name], name


def test_each_score_is_rouge_of_that_examples_answer_against_its_own_reference(
    evaluated: Path, splits: Path, alone: dict[str, list[str]]
) -> None:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(contracts.ROUGE_KEYS), use_stemmer=True)
    references = [r[contracts.TARGET_KEY] for r in rows_of(splits)]
    evaluation = read_json(evaluated / "evaluation.json")
    for name in MODEL_NAMES:
        entry = evaluation["models"][name]
        for key in contracts.ROUGE_KEYS:
            expected = [
                scorer.score(reference, answer)[key].fmeasure
                for reference, answer in zip(references, alone[name], strict=True)
            ]
            assert entry["per_example"][key] == pytest.approx(expected), (name, key)
            assert entry[key] == pytest.approx(sum(expected) / len(expected)), (name, key)


def test_comparisons_and_gate_are_the_paired_differences_in_the_tasks_metric(
    evaluated: Path, splits: Path
) -> None:
    evaluation = read_json(evaluated / "evaluation.json")
    models, metric = evaluation["models"], tasks.split_task(splits / "test").metric
    for comparison, (a, b) in contracts.COMPARISONS.items():
        for key in contracts.ROUGE_KEYS:
            figures = evaluation["comparisons"][comparison][key]
            assert figures["difference"] == pytest.approx(models[a][key] - models[b][key])
            assert figures["low"] <= figures["difference"] <= figures["high"]
    gate = evaluation["gate"]
    assert gate["metric"] == metric
    assert gate["shortfall_vs_full_finetune_upper95"] == pytest.approx(
        -evaluation["comparisons"]["adapter_vs_full_finetune"][metric]["low"]
    )
    assert gate["gain_vs_base_lower95"] == pytest.approx(
        evaluation["comparisons"]["adapter_vs_base"][metric]["low"]
    )


def file_bytes(folder: Path, *names: str) -> int:
    return sum((folder / name).stat().st_size for name in names)


def parameters_of(folder: Path) -> int:
    from transformers import AutoModelForCausalLM

    return sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(folder).parameters())


def test_each_models_entry_reports_its_own_artifact_parameters_and_training(
    evaluated: Path, models: Models
) -> None:
    entries = read_json(evaluated / "evaluation.json")["models"]
    summary = {
        key: ADAPTER_TRAINING[key]
        for key in (
            "method",
            "model_kind",
            "learning_rate",
            "global_step",
            "loss_curve",
            "dataset_version",
            "tracking_run_id",
        )
    }
    weights = ("config.json", "model.safetensors")
    expected = {
        "base": {
            "trainable_params": 0,
            "total_params": parameters_of(models.base),
            "artifact_bytes": file_bytes(models.base, *weights),
            "train_runtime_s": None,
            "trainable_percent": 0.0,
        },
        "adapter": {
            "method": "lora",
            "base_quantized_4bit": False,
            "trainable_params": 1234,
            "total_params": 99999,
            "artifact_bytes": file_bytes(
                models.adapter, "adapter_config.json", "adapter_model.safetensors"
            ),
            "train_runtime_s": 12.5,
            "peak_memory_bytes": 4242,
            "training": summary,
            "trainable_percent": pytest.approx(100 * 1234 / 99999),
        },
        "full_finetune": {
            "trainable_params": 777,
            "total_params": parameters_of(models.baseline),
            "artifact_bytes": file_bytes(models.baseline, *weights),
            "train_runtime_s": 30.0,
            "peak_memory_bytes": 8484,
            "training": {"method": "full", "global_step": 9, "tracking_run_id": "baseline-run"},
            "trainable_percent": pytest.approx(100 * 777 / parameters_of(models.baseline)),
        },
    }
    for name, figures in expected.items():
        entry = entries[name]
        assert {k: entry.get(k) for k in figures} == figures, name
        assert entry["cut_prompts"] == 0
        assert entry["generated_tokens"] > 0
        assert entry["generated_tokens_per_second"] == pytest.approx(
            entry["generated_tokens"] / entry["generation_seconds"]
        )


def test_the_document_says_what_was_scored_and_how(
    evaluated: Path, models: Models, splits: Path
) -> None:
    rows = rows_of(splits)
    task = tasks.split_task(splits / "test")
    evaluation = read_json(evaluated / "evaluation.json")
    digest = hashlib.sha256(
        json.dumps([[r[contracts.INPUT_KEY], r[contracts.TARGET_KEY]] for r in rows]).encode()
    ).hexdigest()
    assert {
        "test_examples": evaluation["test_examples"],
        "example_ids": evaluation["example_ids"],
        "test_set_sha256": evaluation["test_set_sha256"],
        "task": (evaluation["task"]["name"], evaluation["task"]["sha256"]),
        "spec": evaluation["task"]["spec"],
        "baseline_source": evaluation["baseline_source"],
        "base_model": evaluation["base_model"],
        "dataset_version": evaluation["dataset_version"],
        "generation": evaluation["generation"],
        "gate_thresholds": evaluation["gate_thresholds"],
        "tracking": evaluation["tracking"],
    } == {
        "test_examples": len(rows),
        "example_ids": [r["id"] for r in rows],
        "test_set_sha256": digest,
        "task": (task.name, task.sha256),
        "spec": task.document(),
        "baseline_source": {"kind": "trained", "test_set_matches": True},
        "base_model": str(models.base),
        "dataset_version": "week-1",  # the adapter's training data, none being given
        "generation": {
            "decoding": "greedy",
            "max_new_tokens": MAX_NEW_TOKENS,
            "precision": "float32",
            "device": "cpu",
        },
        "gate_thresholds": {"metric_tolerance": 0.05, "min_metric_gain": 0.03},
        "tracking": {
            "evaluation_run_id": tracking.UNTRACKED,
            "experiment": None,
            "link": None,
            "training_run_ids": {"adapter": "adapter-run", "full_finetune": "baseline-run"},
        },
    }
    smoke = evaluation["task"]["smoke_request"]
    assert smoke == tasks.chat_request(task, rows[0][contracts.INPUT_KEY], 16)


def test_the_report_and_model_cards_are_written_beside_it(evaluated: Path) -> None:
    evaluation = read_json(evaluated / "evaluation.json")
    report = (evaluated / "report.html").read_text(encoding="utf-8")
    assert report.startswith("<!doctype html>") or report.lower().startswith("<!doctype html>")
    assert evaluation["test_set_sha256"][:12] in report
    card = (evaluated / contracts.MODEL_CARD_MARKDOWN).read_text(encoding="utf-8")
    assert evaluation["task"]["name"] in card
    content = json.loads(read_json(evaluated / contracts.MODEL_CARD_SAGEMAKER)["content"])
    assert isinstance(content, dict) and content


@pytest.fixture(scope="module")
def reused(
    evaluated: Path, models: Models, splits: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("reused")
    extra = ["--baseline-evaluation", str(evaluated / "evaluation.json")]
    assert (
        evaluate.main(arguments(models, splits / "test", out, *extra, "--dataset-version", "w2"))
        == 0
    )
    return out


def test_a_reused_baseline_is_the_stored_entry_paired_with_this_runs_scores(
    evaluated: Path, reused: Path
) -> None:
    stored, again = (read_json(folder / "evaluation.json") for folder in (evaluated, reused))
    assert again["models"]["full_finetune"] == stored["models"]["full_finetune"] | {
        "reused_from": str(evaluated / "evaluation.json")
    }
    assert again["baseline_source"] == {
        "kind": "reused",
        "evaluation": str(evaluated / "evaluation.json"),
        "test_set_matches": True,
    }
    for name in ("base", "adapter"):
        assert again["models"][name]["per_example"] == stored["models"][name]["per_example"]
    assert again["comparisons"] == stored["comparisons"]
    assert again["dataset_version"] == "w2"
    # No --task-gate: the stage-wide thresholds.
    assert again["gate_thresholds"] == {"metric_tolerance": 0.02, "min_metric_gain": 0.01}
    # Its answers are not this run's: predictions.jsonl holds the models that answered.
    assert {name for p in predictions(reused) for name in p} == {
        "id",
        "input",
        "reference",
        "base",
        "adapter",
    }


def stored_with(evaluated: Path, folder: Path, **changes: Any) -> Path:
    stored = read_json(evaluated / "evaluation.json")
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        target = stored
        for key in parents:
            target = target[key]
        target[last] = value
    folder.mkdir()
    (folder / "evaluation.json").write_text(json.dumps(stored), encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("test_set_sha256", "scored on another test set"),
        ("task__sha256", "answered another task spec's prompts"),
        ("max_examples", "scored on another test set"),
        ("missing_adapter", "no such model folder"),
        ("empty_test_split", "the test split is empty"),
        ("both_baselines", "pass exactly one of --baseline-dir"),
    ],
)
def test_a_run_that_cannot_be_scored_fails_with_its_reason_and_writes_nothing(
    case: str,
    words: str,
    evaluated: Path,
    models: Models,
    splits: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    test, out, adapter = splits / "test", tmp_path / "out", models.adapter
    extra = ["--baseline-evaluation", str(evaluated / "evaluation.json")]
    if case in ("test_set_sha256", "task__sha256"):
        extra = [
            "--baseline-evaluation",
            str(stored_with(evaluated, tmp_path / "s", **{case: "0"})),
        ]
    elif case == "max_examples":
        extra += ["--max-examples", "4"]
    elif case == "missing_adapter":
        adapter = tmp_path / "no-adapter"
    elif case == "empty_test_split":
        (tmp_path / "empty").mkdir()
        test = tmp_path / "empty" / "data.jsonl"
        test.write_text("\n", encoding="utf-8")
    elif case == "both_baselines":
        extra += ["--baseline-dir", str(models.baseline)]
    argv = arguments(Models(models.base, adapter, models.baseline), test, out, *extra)
    assert evaluate.main(argv) == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("evaluate: error: ") and words in error
    assert not (out / "evaluation.json").exists()


def test_max_examples_scores_the_first_examples_only(
    models: Models, splits: Path, alone: dict[str, list[str]], tmp_path: Path
) -> None:
    extra = ["--baseline-dir", str(models.baseline), "--max-examples", "3"]
    assert evaluate.main(arguments(models, splits / "test", tmp_path, *extra)) == 0
    evaluation = read_json(tmp_path / "evaluation.json")
    assert evaluation["example_ids"] == [r["id"] for r in rows_of(splits)[:3]]
    assert [p["adapter"] for p in predictions(tmp_path)] == alone["adapter"][:3]
