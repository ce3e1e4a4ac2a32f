"""The adapter's model card, from one template: the adapter's README.md (written by train.py,
replacing peft's empty template) and the evaluated card (written by evaluate.py, with scores
and intervals) that registration attaches to the model package as its SageMaker model card.

It states the base model, the data version and hash, the method and hyperparameters, the
scores with their 95% intervals, the exact prompt format the adapter was trained on, and its
intended use and limits.
"""

from __future__ import annotations

from typing import Any

if __package__:
    from . import contracts, prompts, tasks
else:  # a sibling module inside the SageMaker job
    import contracts
    import prompts
    import tasks

# How each metric scores an answer against its reference, in a card's words.
METRIC_WORDS = {
    tasks.Metric.ROUGE_L: "ROUGE F1 with stemming (word overlap with the reference)",
    tasks.Metric.EXACT_MATCH: "exact match after normalizing case and spaces",
    tasks.Metric.TOKEN_F1: "word-overlap F1 (SQuAD's)",
    tasks.Metric.CHRF: "chrF (character n-gram F-score)",
    tasks.Metric.LABEL_ACCURACY: "label accuracy (the answer is the reference label)",
}


def intended_use(task: tasks.TaskSpec) -> str:
    about = f" ({task.description.rstrip('.')})" if task.description else ""
    return (
        f"The `{task.name}` task{about}: inputs like those of its training data, answered in the "
        "style of its references, served on its base model with the prompt format below."
    )


def limits(task: tasks.TaskSpec) -> str:
    return (
        f"Scores are {METRIC_WORDS[task.metric]} against one reference per example: they measure "
        "agreement with the references, not factual accuracy. An answer can omit or misstate "
        "facts; review outputs before acting on them. Inputs unlike the training data (other "
        "languages, domains, much longer inputs) were not evaluated. The adapter inherits the "
        "base model's biases and knowledge limits."
    )


def scored_by(task: tasks.TaskSpec) -> str:
    """What the evaluation shows: the task's metric, and ROUGE beside any other."""
    words = METRIC_WORDS[task.metric]
    return words if task.metric is tasks.Metric.ROUGE_L else f"{words}, and ROUGE F1 beside it"


def slots(task: tasks.TaskSpec) -> list[str]:
    """Where the input goes in the prompt format: `{field}` per field, `{user}` for a turn."""
    placeholder = task.placeholder_input()
    if isinstance(placeholder, list):
        return [turn["content"] for turn in placeholder]
    return list(placeholder.values())


def prompt_format(tokenizer: Any, task: tasks.TaskSpec, *, seq2seq: bool = False) -> str:
    """The exact text the model reads before its answer, with {field} where each of the task
    input's texts goes."""
    return prompts.render_prompt(
        tokenizer, task.messages(task.placeholder_input()), seq2seq=seq2seq, cue=task.answer_cue
    )


def score_keys(evaluation: dict[str, Any] | None) -> list[str]:
    """The scores a card shows: the gate's metric first, then ROUGE."""
    if not evaluation:
        return list(contracts.ROUGE_KEYS)
    return list(dict.fromkeys([evaluation["gate"]["metric"], *contracts.ROUGE_KEYS]))


def _environment() -> Any:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    if __package__:
        from .report import TEMPLATES
    else:
        from report import TEMPLATES
    # Markdown, not HTML: no autoescaping; values are shown in code spans and blocks.
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def hyperparameters(training: dict[str, Any]) -> list[tuple[str, Any]]:
    lineage = training.get("adapter") or {}
    rows = [
        ("method", training.get("method")),
        ("LoRA rank", lineage.get("r")),
        ("LoRA alpha", lineage.get("lora_alpha")),
        ("LoRA dropout", lineage.get("lora_dropout")),
        ("target modules", ", ".join(lineage.get("target_modules", [])) or None),
        ("virtual tokens", lineage.get("num_virtual_tokens")),
        ("learning rate", training.get("learning_rate")),
        ("optimizer", training.get("optimizer")),
        ("epochs", training.get("epochs")),
        ("optimizer steps", training.get("global_step")),
        ("examples per device and step", training.get("per_device_batch_size")),
        ("gradient accumulation steps", training.get("gradient_accumulation_steps")),
        ("precision", training.get("precision")),
        ("seed", training.get("seed")),
    ]
    return [(name, value) for name, value in rows if value is not None]


def _render(
    training: dict[str, Any],
    prompt: str,
    task: tasks.TaskSpec,
    evaluation: dict[str, Any] | None,
    thresholds: contracts.GateThresholds | None,
) -> str:
    verdict = contracts.gate_verdict(evaluation, thresholds) if evaluation and thresholds else None
    return (
        _environment()
        .get_template("model_card.md.j2")
        .render(
            training=training,
            base_model=(evaluation or {}).get("base_model") or training.get("base_model"),
            hyperparameters=hyperparameters(training),
            prompt=prompt,
            task=task,
            slots=slots(task),
            scored_by=scored_by(task),
            evaluation=evaluation,
            verdict=verdict,
            keys=score_keys(evaluation),
            intended_use=intended_use(task),
            limits=limits(task),
        )
    )


def adapter_readme(training: dict[str, Any], prompt: str, task: tasks.TaskSpec) -> str:
    """The adapter's README.md at training time: everything but the scores."""
    return _render(training, prompt, task, None, None)


def markdown(
    evaluation: dict[str, Any],
    thresholds: contracts.GateThresholds,
    prompt: str,
    task: tasks.TaskSpec,
) -> str:
    """The evaluated model card."""
    return _render(
        evaluation["models"]["adapter"].get("training", {}), prompt, task, evaluation, thresholds
    )


def sagemaker_content(
    evaluation: dict[str, Any], prompt: str, task: tasks.TaskSpec
) -> dict[str, Any]:
    """The same card as SageMaker model package model card content (the "model package model
    card schema": model_overview holds only the creator and artifact there)."""
    training = evaluation["models"]["adapter"].get("training", {})
    comparisons = evaluation["comparisons"]
    metric_groups = []
    for model in contracts.MODEL_NAMES:
        interval = evaluation["intervals"]["models"][model]
        metric_groups.append(
            {
                "name": f"Scores: {model}",
                "metric_data": [
                    {
                        "name": key,
                        "type": "number",
                        "value": evaluation["models"][model][key],
                        "notes": f"95% interval [{interval[key]['low']:.4f}, {interval[key]['high']:.4f}]",
                    }
                    for key in score_keys(evaluation)
                ],
            }
        )
    for name, per_metric in comparisons.items():
        metric_groups.append(
            {
                "name": f"Difference: {name}"[:63],
                "metric_data": [
                    {
                        "name": key,
                        "type": "number",
                        "value": figures["difference"],
                        "notes": f"paired bootstrap 95% interval [{figures['low']:.4f}, {figures['high']:.4f}]; "
                        f"smallest resolvable difference {figures['min_detectable_difference']:.4f}",
                    }
                    for key, figures in per_metric.items()
                ],
            }
        )
    curve = training.get("loss_curve") or []
    return {
        "model_overview": {"model_creator": "peftops"},
        "intended_uses": {
            "purpose_of_model": f"The `{task.name}` task with a parameter-efficient adapter.",
            "intended_uses": intended_use(task),
            "factors_affecting_model_efficiency": "Inputs longer than the training data's; "
            "other languages or domains; decoding settings other than greedy.",
        },
        "training_details": {
            "training_observations": (
                "Objective: cross-entropy on the answer tokens, minimized. Validation loss "
                f"{training.get('eval_loss_before', float('nan')):.4f} before and "
                f"{training.get('eval_loss_after', float('nan')):.4f} after training."
            ),
            "training_job_details": {
                "hyper_parameters": [
                    {"name": name, "value": str(value)[:255]}
                    for name, value in hyperparameters(training)
                ],
                "training_metrics": [
                    {"name": "train_loss", "value": point["loss"], "notes": f"step {point['step']}"}
                    for point in curve[-20:]
                ],
            },
        },
        "evaluation_details": [
            {
                "name": "Scores on the held-out test split",
                "evaluation_observation": (
                    f"{evaluation['test_examples']} test examples, greedy decoding, scored by "
                    f"{scored_by(task)}; 95% intervals from a paired bootstrap over examples."
                ),
                "datasets": [str(evaluation.get("dataset_version") or "unversioned")],
                "metadata": {
                    "test_set_sha256": evaluation[contracts.TEST_SET_SHA256],
                    "base_model": str(evaluation["base_model"]),
                },
                "metric_groups": metric_groups,
            }
        ],
        "additional_information": {
            "caveats_and_recommendations": limits(task),
            "custom_details": {
                "prompt_format": prompt[:1024],
                "dataset_version": str(evaluation.get("dataset_version") or ""),
                "train_data_sha256": str(training.get("train_data_sha256") or ""),
            },
        },
    }
