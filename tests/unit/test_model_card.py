"""The adapter's model card (training_scripts/model_card.py) for the task it was trained on: the
SageMaker model card content, every figure read from its own place in evaluation.json (each
score, interval and difference here is distinct, so a figure read from another model, metric or
comparison shows), and the Markdown card in the task's own words, never another task's."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from training_scripts import contracts, model_card, tasks

SUMMARY = tasks.resolve_task_spec("dialogue-summary")
ROUTING = tasks.resolve_task_spec("support-routing")
KEYS = ("label_accuracy", *contracts.ROUGE_KEYS)
PROMPT = "<|im_start|>user\n{user}<|im_end|>\n"


def figure(model: int, key: int) -> float:
    return round(0.1 * (model + 1) + 0.01 * key, 4)


def training(curve_points: int = 25) -> dict[str, Any]:
    return {
        "method": "qlora",
        "adapter": {
            "r": 16,
            "lora_alpha": 32,
            "lora_dropout": 0.05,
            # 40 names: their list is over the 255 characters a card's value may hold.
            "target_modules": [f"layers.{i}.mlp.gate_proj" for i in range(40)],
            "num_virtual_tokens": 20,  # a prompt-tuning setting: every row the card knows
        },
        "learning_rate": 0.0002,
        "optimizer": "paged_adamw_8bit",
        "epochs": 3,
        "global_step": 57,
        "per_device_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "precision": "bf16",
        "seed": 7,
        "eval_loss_before": 2.25,
        "eval_loss_after": 1.125,
        "train_data_sha256": "ab" * 32,
        "loss_curve": [{"step": s, "loss": 3.0 - s / 10} for s in range(1, curve_points + 1)],
    }


def evaluation(task: tasks.TaskSpec, **changes: Any) -> dict[str, Any]:
    keys = model_card.score_keys({"gate": {"metric": task.metric.value}})
    models = {
        model: {key: figure(m, k) for k, key in enumerate(KEYS)}
        for m, model in enumerate(contracts.MODEL_NAMES)
    }
    models["adapter"]["training"] = training()
    intervals = {
        model: {key: {"low": figure(m, k) - 0.05, "high": figure(m, k) + 0.07} for k, key in
                enumerate(KEYS)}
        for m, model in enumerate(contracts.MODEL_NAMES)
    }  # fmt: skip
    comparisons = {
        name: {
            key: {
                "difference": 0.001 * (c + 1) + 0.0001 * k,
                "low": -0.2 - 0.01 * k,
                "high": 0.3 + 0.01 * k,
                "min_detectable_difference": 0.04 + 0.001 * k,
            }
            for k, key in enumerate(KEYS)
            if key in keys
        }
        for c, name in enumerate(contracts.COMPARISONS)
    }
    return {
        "models": models,
        "intervals": {"models": intervals},
        "comparisons": comparisons,
        "gate": {
            "metric": task.metric.value,
            "shortfall_vs_full_finetune_upper95": 0.01,
            "gain_vs_base_lower95": 0.1,
        },
        "test_examples": 40,
        "test_set_sha256": "cd" * 32,
        "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "dataset_version": "v-20261207",
        **changes,
    }


def scores(model: int, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    return [
        {
            "name": key,
            "type": "number",
            "value": figure(model, KEYS.index(key)),
            "notes": f"95% interval [{figure(model, KEYS.index(key)) - 0.05:.4f}, "
            f"{figure(model, KEYS.index(key)) + 0.07:.4f}]",
        }
        for key in keys
    ]


def differences(comparison: int, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = []
    for key in keys:
        k = KEYS.index(key)
        rows.append(
            {
                "name": key,
                "type": "number",
                "value": 0.001 * (comparison + 1) + 0.0001 * k,
                "notes": f"paired bootstrap 95% interval [{-0.2 - 0.01 * k:.4f}, "
                f"{0.3 + 0.01 * k:.4f}]; smallest resolvable difference {0.04 + 0.001 * k:.4f}",
            }
        )
    return rows


def test_the_sagemaker_card_reads_each_figure_from_its_own_place() -> None:
    document = evaluation(ROUTING)
    content = model_card.sagemaker_content(document, PROMPT * 200, ROUTING)
    keys = KEYS  # the gate's metric first, then ROUGE
    modules = ", ".join(f"layers.{i}.mlp.gate_proj" for i in range(40))
    assert content == {
        "model_overview": {"model_creator": "peftops"},
        "intended_uses": {
            "purpose_of_model": "The `support-routing` task with a parameter-efficient adapter.",
            "intended_uses": model_card.intended_use(ROUTING),
            "factors_affecting_model_efficiency": "Inputs longer than the training data's; "
            "other languages or domains; decoding settings other than greedy.",
        },
        "training_details": {
            "training_observations": "Objective: cross-entropy on the answer tokens, minimized. "
            "Validation loss 2.2500 before and 1.1250 after training.",
            "training_job_details": {
                "hyper_parameters": [
                    {"name": "method", "value": "qlora"},
                    {"name": "LoRA rank", "value": "16"},
                    {"name": "LoRA alpha", "value": "32"},
                    {"name": "LoRA dropout", "value": "0.05"},
                    {"name": "target modules", "value": modules[:255]},
                    {"name": "virtual tokens", "value": "20"},
                    {"name": "learning rate", "value": "0.0002"},
                    {"name": "optimizer", "value": "paged_adamw_8bit"},
                    {"name": "epochs", "value": "3"},
                    {"name": "optimizer steps", "value": "57"},
                    {"name": "examples per device and step", "value": "4"},
                    {"name": "gradient accumulation steps", "value": "2"},
                    {"name": "precision", "value": "bf16"},
                    {"name": "seed", "value": "7"},
                ],
                # The last 20 points of the loss curve.
                "training_metrics": [
                    {"name": "train_loss", "value": 3.0 - s / 10, "notes": f"step {s}"}
                    for s in range(6, 26)
                ],
            },
        },
        "evaluation_details": [
            {
                "name": "Scores on the held-out test split",
                "evaluation_observation": "40 test examples, greedy decoding, scored by label "
                "accuracy (the answer is the reference label), and ROUGE F1 beside it; 95% "
                "intervals from a paired bootstrap over examples.",
                "datasets": ["v-20261207"],
                "metadata": {
                    "test_set_sha256": "cd" * 32,
                    "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
                },
                "metric_groups": [
                    {"name": "Scores: base", "metric_data": scores(0, keys)},
                    {"name": "Scores: adapter", "metric_data": scores(1, keys)},
                    {"name": "Scores: full_finetune", "metric_data": scores(2, keys)},
                    {
                        "name": "Difference: adapter_vs_full_finetune",
                        "metric_data": differences(0, keys),
                    },
                    {"name": "Difference: adapter_vs_base", "metric_data": differences(1, keys)},
                ],
            }
        ],
        "additional_information": {
            "caveats_and_recommendations": model_card.limits(ROUTING),
            "custom_details": {
                "prompt_format": (PROMPT * 200)[:1024],
                "dataset_version": "v-20261207",
                "train_data_sha256": "ab" * 32,
            },
        },
    }
    assert len(modules) > 255 and len(PROMPT * 200) > 1024


def test_a_card_without_versions_or_losses_says_so() -> None:
    document = evaluation(SUMMARY, dataset_version=None)
    document["models"]["adapter"]["training"] = {"method": "lora"}
    content = model_card.sagemaker_content(document, PROMPT, SUMMARY)
    details = content["evaluation_details"][0]
    assert details["datasets"] == ["unversioned"]
    assert [g["metric_data"][0]["name"] for g in details["metric_groups"]] == ["rougeL"] * 3 + [
        "rouge1"
    ] * 2
    assert details["evaluation_observation"].startswith(
        "40 test examples, greedy decoding, scored by ROUGE F1 with stemming (word overlap with "
        "the reference); 95%"
    )
    assert content["additional_information"]["custom_details"] == {
        "prompt_format": PROMPT,
        "dataset_version": "",
        "train_data_sha256": "",
    }
    assert content["training_details"]["training_observations"].endswith(
        "Validation loss nan before and nan after training."
    )
    assert content["training_details"]["training_job_details"] == {
        "hyper_parameters": [{"name": "method", "value": "lora"}],
        "training_metrics": [],
    }
    del document["models"]["adapter"]["training"]  # an evaluation of an adapter without them
    untrained = model_card.sagemaker_content(document, PROMPT, SUMMARY)["training_details"]
    assert untrained["training_job_details"] == {"hyper_parameters": [], "training_metrics": []}


def test_a_markdown_card_of_an_adapter_evaluated_without_training_figures_says_so() -> None:
    document = evaluation(SUMMARY)
    del document["models"]["adapter"]["training"]
    thresholds = contracts.GateThresholds(metric_tolerance=0.02, min_metric_gain=0.01)
    card = model_card.markdown(document, thresholds, PROMPT, SUMMARY)
    assert "- Training split sha256: `not recorded`" in card
    assert "Validation loss: n/a before training,\nn/a after." in card


def test_the_card_is_valid_sagemaker_model_card_content_key_for_key() -> None:
    from sagemaker.core.shapes.model_card_shapes import ModelCardContent

    content = model_card.sagemaker_content(evaluation(ROUTING), PROMPT, ROUTING)
    validated = ModelCardContent.model_validate_json(json.dumps(content))
    # The SDK's models ignore keys they do not know, which the service refuses: every key of
    # the card must survive the round trip.
    assert validated.model_dump(mode="json", exclude_unset=True) == content


@pytest.mark.parametrize(
    ("task", "own_words", "other_words"),
    [
        (ROUTING, ["support-routing", "label accuracy", "Route a customer's support message"],
         ["dialogue", "summar"]),
        (SUMMARY, ["dialogue-summary", "ROUGE F1 with stemming", "Summarize a dialogue"],
         ["routing", "label accuracy"]),
    ],
)  # fmt: skip
def test_each_card_speaks_of_its_own_task_and_metric(
    task: tasks.TaskSpec, own_words: list[str], other_words: list[str]
) -> None:
    thresholds = contracts.GateThresholds(metric_tolerance=0.02, min_metric_gain=0.01)
    readme = model_card.adapter_readme(training(), PROMPT, task)
    card = model_card.markdown(evaluation(task), thresholds, PROMPT, task)
    content = json.dumps(model_card.sagemaker_content(evaluation(task), PROMPT, task))
    for text in (readme, card, content):
        for words in own_words:
            assert words in text
        for words in other_words:
            assert words not in text.lower()
    slot = "`{user}`" if task is ROUTING else "`{dialogue}`"  # a messages task's turn; a field
    assert f"with the input in\nplace of {slot}:" in card
    assert f"- {task.name}\n" in readme.split("---")[1]  # the hub's tags


def test_a_fields_tasks_card_names_each_of_its_input_slots() -> None:
    spec = tasks.parse_task_spec(
        {
            "name": "qa",
            "format": "fields",
            "template": "Question: {question}\nContext: {context}",
            "target_field": "answer",
            "metric": "token_f1",
        },
        "qa.json",
    )
    assert model_card.slots(spec) == ["{question}", "{context}"]
    readme = model_card.adapter_readme(training(), "Question: {question}", spec)
    assert "place of `{question}`, `{context}`:" in readme
    assert model_card.scored_by(spec) == "word-overlap F1 (SQuAD's), and ROUGE F1 beside it"
    assert "`qa` task." in readme  # no description: nothing after the name


def test_the_prompt_format_is_what_the_model_reads_with_a_slot_for_each_input(
    tiny_causal: Path, tiny_seq2seq: Path
) -> None:
    """The text training rendered, with `{field}` where the input goes, and the task's own
    answer cue; a seq2seq model reads no chat turns."""
    from training_scripts import model_loading, prompts

    causal = model_loading.load_tokenizer(str(tiny_causal))
    seq2seq = model_loading.load_tokenizer(str(tiny_seq2seq))
    for task in (SUMMARY, ROUTING):
        for tokenizer, is_seq2seq in ((causal, False), (seq2seq, True)):
            shown = model_card.prompt_format(tokenizer, task, seq2seq=is_seq2seq)
            assert shown == prompts.render_prompt(
                tokenizer,
                task.messages(task.placeholder_input()),
                seq2seq=is_seq2seq,
                cue=task.answer_cue,
            )
            assert all(slot in shown for slot in model_card.slots(task))
        assert model_card.prompt_format(causal, task) == model_card.prompt_format(
            causal, task, seq2seq=False
        )
    assert SUMMARY.answer_cue in model_card.prompt_format(causal, SUMMARY)
    # An instruct model's chat template writes the turns: the format shows its markers.
    causal.chat_template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
    assert model_card.prompt_format(causal, ROUTING).startswith("<|system|>You route")
    assert model_card.prompt_format(causal, SUMMARY) != model_card.prompt_format(
        causal, SUMMARY, seq2seq=True
    )


SNAPSHOTS = Path(__file__).parent / "snapshots"


def test_the_cards_read_as_written_word_for_word() -> None:
    """The Markdown cards of tests/unit/snapshots, reviewed as a reader sees them: the evaluated
    card of a routing adapter, and a summary adapter's README at training time (its base
    model named by training, since no evaluation names one yet)."""
    thresholds = contracts.GateThresholds(metric_tolerance=0.02, min_metric_gain=0.01)
    document = evaluation(ROUTING)
    document["models"]["adapter"]["training"]["base_model"] = "/opt/ml/input/data/model"
    card = model_card.markdown(document, thresholds, PROMPT, ROUTING)
    readme = model_card.adapter_readme(
        {**training(), "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct"},
        "Summarize:\n{dialogue}\nSummary:",
        SUMMARY,
    )
    assert card == (SNAPSHOTS / "model_card_support_routing.md").read_text(encoding="utf-8")
    assert readme == (SNAPSHOTS / "adapter_readme_dialogue_summary.md").read_text(encoding="utf-8")


def test_a_cards_use_and_limits_name_the_task_and_how_it_is_scored() -> None:
    assert model_card.intended_use(ROUTING) == (
        "The `support-routing` task (Route a customer's support message to the team that "
        "handles it): inputs like those of its training data, answered in the style of its "
        "references, served on its base model with the prompt format below."
    )
    bare = tasks.parse_task_spec(
        {"name": "qa", "format": "prompt_completion", "metric": "exact_match"}, "qa.json"
    )
    assert model_card.intended_use(bare).startswith("The `qa` task: inputs like")
    product = dataclasses.replace(bare, description="Answer questions about product X.")
    assert model_card.intended_use(product).startswith(
        "The `qa` task (Answer questions about product X): inputs like"
    )
    assert model_card.limits(bare) == (
        "Scores are exact match after normalizing case and spaces against one reference per "
        "example: they measure agreement with the references, not factual accuracy. An answer "
        "can omit or misstate facts; review outputs before acting on them. Inputs unlike the "
        "training data (other languages, domains, much longer inputs) were not evaluated. The "
        "adapter inherits the base model's biases and knowledge limits."
    )
    assert set(model_card.METRIC_WORDS) == set(tasks.Metric)
