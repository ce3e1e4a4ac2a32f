"""The report's tables: each example's row (scores in the gate's metric, the adapter against
the full fine-tune, the input as a reader sees it) and the settings rows."""

from __future__ import annotations

import copy
import re

import pytest

from training_scripts import contracts, report


@pytest.mark.parametrize(
    ("task_input", "shown"),
    [
        ("#Person1#: Hi.", "#Person1#: Hi."),
        ({"question": "Où est-il ?", "context": "À Paris."},
         '{\n "question": "Où est-il ?",\n "context": "À Paris."\n}'),
        ([{"role": "user", "content": "Grüß dich"}],
         '[\n {\n  "role": "user",\n  "content": "Grüß dich"\n }\n]'),
    ],
)  # fmt: skip
def test_an_input_is_shown_as_its_text_or_as_readable_json(task_input: object, shown: str) -> None:
    assert report.shown_input(task_input) == shown


def scored(metric: str) -> dict:
    """Per-example scores in the gate's metric (and other, wrong ones in ROUGE-L)."""
    per_example = {
        "base": [0.1, 0.0, 0.2],
        "adapter": [0.7, 0.3, 0.9],
        "full_finetune": [0.5, 0.6, 0.4],
    }
    return {
        "gate": {"metric": metric},
        "models": {
            model: {"per_example": {metric: scores, "rougeL": [9.0, 9.0, 9.0]}}
            for model, scores in per_example.items()
        },
    }


def test_each_examples_row_is_its_scores_from_the_adapters_worst_to_its_best() -> None:
    rows = [
        {"id": "a", "input": "first", "target": "one"},
        {"input": {"question": "q"}, "target": "two"},  # no id: its place in the test split
        {"id": "c", "input": "third", "target": "three"},
    ]
    predictions = {"adapter": ["A1", "A2", "A3"], "base": ["B1", "B2", "B3"]}
    table = report.per_example_rows(scored("accuracy"), rows, predictions)
    assert [
        (r["id"], r["scores"], r["versus_full_finetune"], r["input"], r["reference"], r["outputs"])
        for r in table
    ] == [
        (1, {"base": 0.0, "adapter": 0.3, "full_finetune": 0.6}, pytest.approx(-0.3),
         '{\n "question": "q"\n}', "two", {"base": "B2", "adapter": "A2"}),
        ("a", {"base": 0.1, "adapter": 0.7, "full_finetune": 0.5}, pytest.approx(0.2),
         "first", "one", {"base": "B1", "adapter": "A1"}),
        ("c", {"base": 0.2, "adapter": 0.9, "full_finetune": 0.4}, pytest.approx(0.5),
         "third", "three", {"base": "B3", "adapter": "A3"}),
    ]  # fmt: skip


def settings_of(evaluation: dict) -> dict:
    return dict(report.settings(evaluation, None, passed=True))


def test_the_settings_show_each_models_own_training_figures() -> None:
    from tests.unit.test_scoring import reviewed_evaluation

    evaluation = reviewed_evaluation()[0]
    baseline = evaluation["models"]["full_finetune"]["training"]
    baseline.update(learning_rate=2e-5, global_step=40)
    shown = settings_of(evaluation)
    assert shown["Learning rate (adapter / full fine-tune)"] == "0.0005 / 2e-05"
    assert shown["Optimizer steps (adapter / full fine-tune)"] == "19 / 40"
    assert shown["LoRA rank / alpha"] == "16 / 32"
    assert shown["Target modules"] == "q_proj, v_proj"


def test_a_model_without_its_training_summary_shows_none_for_its_figures() -> None:
    """A reused baseline, or an adapter evaluated from a folder without one: no figure is
    made up and nothing fails."""
    from tests.unit.test_scoring import reviewed_evaluation

    evaluation = copy.deepcopy(reviewed_evaluation()[0])
    del evaluation["models"]["adapter"]["training"]
    del evaluation["models"]["full_finetune"]["training"]
    shown = settings_of(evaluation)
    assert shown["Learning rate (adapter / full fine-tune)"] == "None / None"
    assert shown["LoRA rank / alpha"] is None
    assert shown["Target modules"] is None
    assert shown["Examples per step"] is None
    prompt_tuned = copy.deepcopy(reviewed_evaluation()[0])
    del prompt_tuned["models"]["adapter"]["training"]["adapter"]  # no LoRA lineage
    assert settings_of(prompt_tuned)["LoRA rank / alpha"] is None


def test_the_settings_rows_word_for_word() -> None:
    """Every row a reviewer reads, from an evaluation whose every figure is distinct."""
    from tests.unit.test_scoring import reviewed_evaluation

    evaluation = copy.deepcopy(reviewed_evaluation()[0])
    evaluation["task"] = {"name": "support-routing", "sha256": "5e7c"}
    evaluation["gate"]["metric"] = "accuracy"
    evaluation["dataset_version"] = "v-20261205"
    evaluation["test_examples"] = 42
    evaluation[contracts.TEST_SET_SHA256] = "9f9f"
    evaluation["tracking"] = {
        "evaluation_run_id": "run-9",
        "experiment": "peftops-dev",
        "link": "http://127.0.0.1:5000/#/experiments/1/runs/run-9",
    }
    adapter = evaluation["models"]["adapter"]
    adapter.update(method="lora", base_quantized_4bit=False)
    adapter["training"].update(
        method="qlora", train_data_sha256="ab12", world_size=2, gradient_accumulation_steps=3
    )
    evaluation["models"]["full_finetune"]["training"].update(learning_rate=2e-5, global_step=40)
    assert report.settings(evaluation, "peftops-adapters version 3", passed=True) == [
        ("Task", "support-routing (spec sha256 5e7c)"),
        ("Gate metric", "accuracy"),
        ("Method", "lora"),  # what was evaluated, over what its training said
        ("Base model", "tiny"),
        ("Adapter scored on", "the unquantized base, as served"),
        ("LoRA rank / alpha", "16 / 32"),
        ("Target modules", "q_proj, v_proj"),
        ("Learning rate (adapter / full fine-tune)", "0.0005 / 2e-05"),
        ("Optimizer steps (adapter / full fine-tune)", "19 / 40"),
        ("Examples per step", 4 * 3 * 2),
        ("Dataset version", "v-20261205"),
        ("Training data sha256", "ab12"),
        ("Test examples", 42),
        ("Test set sha256", "9f9f"),
        ("Full fine-tune", "trained in this run"),
        ("Registered as", "peftops-adapters version 3"),
        ("Tracking run (MLflow)", "run-9"),
        ("MLflow experiment", "peftops-dev"),
        ("MLflow run page (with `mlflow ui` running)", "http://127.0.0.1:5000/#/experiments/1/runs/run-9"),
    ]  # fmt: skip
    del adapter["method"]
    adapter["base_quantized_4bit"] = True
    shown = settings_of(evaluation)
    assert (shown["Method"], shown["Adapter scored on"]) == (
        "qlora",
        "the 4-bit base it trained on",
    )


@pytest.mark.parametrize(
    ("tracked", "rows"),
    [
        ({}, [("Tracking run (MLflow)", None)]),
        ({"evaluation_run_id": "r1", "experiment": ""}, [("Tracking run (MLflow)", "r1")]),
        ({"evaluation_run_id": "r1", "experiment": "peftops-dev"},
         [("Tracking run (MLflow)", "r1"), ("MLflow experiment", "peftops-dev")]),
        ({"evaluation_run_id": "r1", "link": "http://127.0.0.1:5000/#/r1"},
         [("Tracking run (MLflow)", "r1"),
          ("MLflow run page (with `mlflow ui` running)", "http://127.0.0.1:5000/#/r1")]),
    ],
)  # fmt: skip
def test_the_tracking_rows_name_only_what_the_run_was_tracked_with(
    tracked: dict, rows: list
) -> None:
    assert report.tracking_settings(tracked) == rows


@pytest.mark.parametrize(
    ("training", "examples"),
    [
        ({"per_device_batch_size": 4, "gradient_accumulation_steps": 3}, 12),  # one process
        ({"per_device_batch_size": 4, "gradient_accumulation_steps": 3, "world_size": 8}, 96),
        ({"per_device_batch_size": 4}, None),
        ({}, None),
    ],
)
def test_examples_per_step_count_every_rank_and_micro_batch(
    training: dict, examples: int | None
) -> None:
    assert report._examples_per_step(training) == examples


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        ({"kind": "trained", "test_set_matches": True}, "trained in this run"),
        ({"kind": "reused", "evaluation": "s3://b/runs/7/evaluation.json", "test_set_matches": True},
         "reused from s3://b/runs/7/evaluation.json (same test set: True)"),
        ({"kind": "reused", "evaluation": "s3://b/e.json", "test_set_matches": False},
         "reused from s3://b/e.json (same test set: False)"),
    ],
)  # fmt: skip
def test_the_baseline_row_says_where_its_figures_come_from(source: dict, shown: str) -> None:
    assert report._baseline_source({"baseline_source": source}) == shown


@pytest.mark.parametrize(
    ("quantized", "shown"),
    [
        (True, "the 4-bit base it trained on"),
        (False, "the unquantized base, as served"),
        (None, None),  # a method without a quantized base
    ],
)
def test_the_base_an_adapter_was_scored_on(quantized: bool | None, shown: str | None) -> None:
    assert report._scored_on(quantized) == shown


def rendered(evaluation: dict, thresholds: contracts.GateThresholds) -> str:
    from tests.unit.test_scoring import reviewed_evaluation

    _, rows, predictions = reviewed_evaluation()
    return report.render(evaluation, rows, predictions, thresholds)


LOOSE = contracts.GateThresholds(metric_tolerance=1.0, min_metric_gain=-1.0)
STRICT = contracts.GateThresholds(metric_tolerance=0.0, min_metric_gain=0.5)


def test_a_failed_gate_states_its_reason_and_a_passed_one_none() -> None:
    from tests.unit.test_scoring import reviewed_evaluation

    evaluation = reviewed_evaluation()[0]
    passed, reason = contracts.gate_verdict(evaluation, STRICT)
    assert not passed
    failed_page = rendered(evaluation, STRICT)
    assert '<div class="verdict fail">' in failed_page
    assert f"<strong>Quality gate: failed.</strong>\n{reason}.  <ul>" in failed_page
    assert contracts.gate_verdict(evaluation, LOOSE) == (True, "gate passed")
    passed_page = rendered(evaluation, LOOSE)
    assert '<div class="verdict pass">' in passed_page
    assert "<strong>Quality gate: passed.</strong>\n  <ul>" in passed_page
    assert reason not in passed_page
    assert "pending: the pipeline registers the adapter after this report" in passed_page
    assert "no: the gate failed, so the pipeline registers nothing" in failed_page


def test_the_best_examples_are_the_adapters_best_first_and_the_worst_its_worst_first() -> None:
    """The adapter's scores of d1, d2, d3 are 0.2, 0.9, 0.5."""
    from tests.unit.test_scoring import reviewed_evaluation

    page = rendered(reviewed_evaluation()[0], LOOSE)
    worst = page.index("The adapter's worst examples")
    best = page.index("The adapter's best examples")

    def order(section: str) -> list[str]:
        return [e for e in re.findall(r"Example (d\d)", section)]

    assert order(page[worst:best]) == ["d1", "d3", "d2"]
    assert order(page[best:])[:3] == ["d2", "d3", "d1"]


def test_a_label_task_shows_each_models_answers_per_reference_label() -> None:
    from tests.unit.test_scoring import reviewed_evaluation

    evaluation = copy.deepcopy(reviewed_evaluation()[0])
    for i, model in enumerate(contracts.MODEL_NAMES):
        evaluation["models"][model]["confusion"] = {
            "billing": {"billing": 10 + i, "outage": 20 + i, "(other)": 30 + i},
            "outage": {"billing": 40 + i, "outage": 50 + i, "(other)": 60 + i},
        }
    page = rendered(evaluation, LOOSE)
    assert "Labels: what each model answered, per reference label" in page
    for i, model in enumerate(contracts.MODEL_NAMES):
        table = page.index(f"<h3>{report.LABELS[model]}</h3>")
        assert page.index(
            f"<tr><th>outage</th><td>{40 + i}</td><td>{50 + i}</td><td>{60 + i}</td></tr>", table
        ) < page.index("</table>", table)
    assert "Labels: what each model answered" not in rendered(reviewed_evaluation()[0], LOOSE)


@pytest.mark.parametrize(
    ("training", "noted"),
    [
        ({"method": "qlora", "device": "cpu"}, True),
        ({"method": "qlora", "device": "cuda"}, False),
        ({"method": "lora", "device": "cpu"}, False),
        (None, False),  # no training summary: no claim about its memory
    ],
)
def test_the_qlora_memory_note_shows_only_for_qlora_trained_on_a_cpu(
    training: dict | None, noted: bool
) -> None:
    from tests.unit.test_scoring import reviewed_evaluation

    evaluation = copy.deepcopy(reviewed_evaluation()[0])
    if training is None:
        del evaluation["models"]["adapter"]["training"]
    else:
        evaluation["models"]["adapter"]["training"].update(training)
    page = rendered(evaluation, LOOSE)
    assert ("Why QLoRA's memory is not lower here" in page) is noted


def test_an_evaluation_without_a_task_or_tracking_record_shows_none_for_them() -> None:
    from tests.unit.test_scoring import reviewed_evaluation

    evaluation = copy.deepcopy(reviewed_evaluation()[0])
    del evaluation["task"], evaluation["tracking"]
    shown = settings_of(evaluation)
    assert shown["Task"] == "None (spec sha256 None)"
    assert shown["Tracking run (MLflow)"] is None
