"""The benchmark harness: its measurements, the naive arm's data layer, and the GPU check
script's dry run (every step that needs no GPU), so neither can rot between GPU sessions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from benchmarks.measure import (
    CurvePoint,
    memory_floor,
    nf4_bytes,
    padding_efficiency,
    time_to_quality,
)
from benchmarks.naive import encode_naive, example_ids, pad_to_max_length
from benchmarks.run import TASK, long_prompt_rows, summarize
from tests.conftest import REPO
from training_scripts.contracts import INPUT_KEY, TARGET_KEY
from training_scripts.model_loading import load_tokenizer

ROWS = [
    {
        INPUT_KEY: "#Person1#: A table for two, please.\n#Person2#: At eight?",
        TARGET_KEY: "Booking.",
    },
    {INPUT_KEY: "#Person1#: My router is slow.", TARGET_KEY: "Router trouble, restart advised."},
]


def test_naive_rows_pad_to_max_length_and_supervise_every_real_token(tiny_causal: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_causal))
    rows = encode_naive(tokenizer, TASK, ROWS, 128)
    for row, source in zip(rows, ROWS, strict=True):
        ids = example_ids(tokenizer, TASK, source)
        assert len(row["input_ids"]) == 128
        assert row["input_ids"][: len(ids)] == ids
        assert row["labels"] == ids + [-100] * (128 - len(ids))  # prompt and EOS included
        assert sum(row["attention_mask"]) == len(ids)
    assert pad_to_max_length([5, 6, 7], 2, 0)["labels"] == [5, 6]  # truncated, as the recipe does


def test_padding_efficiency_counts_real_over_processed_positions() -> None:
    from transformers import default_data_collator

    rows = [pad_to_max_length(list(range(1, n + 1)), 8, 0) for n in (2, 4, 6, 8)]
    assert padding_efficiency(rows, default_data_collator, 2) == pytest.approx(20 / 32)


def test_time_to_quality_interpolates_the_first_crossing() -> None:
    curve = [CurvePoint(0, 0.0, 3.0), CurvePoint(2, 10.0, 2.0), CurvePoint(4, 20.0, 1.0)]
    assert time_to_quality(curve, 2.5) == pytest.approx(5.0)
    assert time_to_quality(curve, 1.0) == pytest.approx(20.0)
    assert time_to_quality(curve, 0.5) is None


def test_ratios_are_medians_of_the_per_repeat_ratios() -> None:
    def arm(examples_per_s: float, eval_loss: float, seconds: float) -> dict:
        curve = [
            {"step": 0, "train_seconds": 0.0, "eval_loss": 3.0},
            {"step": 4, "train_seconds": seconds, "eval_loss": eval_loss},
        ]
        figures = dict.fromkeys(
            (
                "real_tokens_per_s",
                "real_tokens_per_step",
                "padding_efficiency",
                "peak_memory_bytes",
            ),
            1.0,
        )
        return figures | {
            "examples_per_s": examples_per_s,
            "eval_loss": eval_loss,
            "curve": curve,
            "memory_floor_bytes": 1.0,
            "mfu": None,
        }

    pairs = [
        {"ours": arm(4.0, 1.0, 2.0), "naive": arm(1.0, 2.0, 8.0)},
        {"ours": arm(3.0, 1.0, 2.0), "naive": arm(1.0, 2.0, 8.0)},
        {"ours": arm(9.0, 1.0, 2.0), "naive": arm(1.0, 2.0, 8.0)},
    ]
    summary = summarize(pairs)
    assert summary["ratio_ours_over_naive"]["examples_per_s"] == 4.0
    # ours reaches the naive arm's final loss (2.0) halfway through its 2 s: 1 s vs 8 s
    assert summary["ratio_ours_over_naive"]["time_to_quality_s"] == pytest.approx(1 / 8)
    assert summary["ratio_ours_over_naive"]["mfu"] is None
    assert summary["ours_reached_naive_quality"] == 3


def test_memory_floor_counts_weights_gradients_and_adam_state(tiny_causal: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_causal), dtype=torch.float32)
    total = sum(p.numel() for p in model.parameters())
    full = memory_floor(model, "adamw_torch")
    assert (full.weights, full.gradients, full.optimizer_state) == (4 * total, 4 * total, 8 * total)

    lora = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))
    trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    floor = memory_floor(lora, "paged_adamw_8bit")
    assert floor.gradients == 4 * trainable and floor.optimizer_state == 2 * trainable
    assert nf4_bytes(64 * 256) == pytest.approx(64 * 256 / 2 + 256 + 4)


def test_long_prompt_rows_keep_targets_and_lengthen_inputs() -> None:
    rows = [{INPUT_KEY: f"dialogue {i} " * 20, TARGET_KEY: f"summary {i}"} for i in range(50)]
    long_rows = long_prompt_rows(rows, 4, seed=1)
    assert [r[TARGET_KEY] for r in long_rows] == [r[TARGET_KEY] for r in rows]
    assert all(
        long[INPUT_KEY].endswith(r[INPUT_KEY]) for long, r in zip(long_rows, rows, strict=True)
    )
    mean_ratio = (
        sum(len(a[INPUT_KEY]) / len(b[INPUT_KEY]) for a, b in zip(long_rows, rows, strict=True))
        / 50
    )
    assert 2.0 < mean_ratio < 4.0


def test_gpu_check_dry_run(tmp_path: Path) -> None:
    """benchmarks/gpu_check.sh --dry-run: pins, model build, the whole benchmark on a 2-layer
    model on the CPU, JSON out; the GPU-only steps (wheel install, nvidia-smi) are skipped."""
    env = {
        **os.environ,
        "PEFTOPS_GPU_RESULTS": str(tmp_path / "out"),
        "PEFTOPS_GPU_WORKDIR": str(tmp_path / "work"),
        "PYTHON": str(REPO / ".venv/bin/python"),
        "CUDA_VISIBLE_DEVICES": "",
    }
    done = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--dry-run"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "gpu_check: bitsandbytes pinned at 0.50.2" in done.stdout
    results = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    for data in ("bundled", "long_prompt"):
        assert set(results["runs"][data]) == {"qlora", "lora", "full"}
        for entry in results["runs"][data].values():
            summary = entry["summary"]
            ours, strong, naive = summary["ours"], summary["strong"], summary["naive"]
            assert strong["padding_efficiency"] > naive["padding_efficiency"]
            assert ours["padding_efficiency"] > naive["padding_efficiency"]
            # Same examples, one pass: the token budget puts more of them in each step.
            assert ours["real_tokens_per_step"] >= naive["real_tokens_per_step"]
            assert {"ratio_ours_over_strong", "ratio_ours_over_naive"} <= set(summary)
            assert ours["mfu"] > 0 and ours["memory_floor_bytes"] > 0
            arms = entry["repeats"][0]
            assert (arms["ours"]["attention"], arms["strong"]["attention"]) == (
                "packed_sdpa",
                "sdpa",
            )
            assert ours["eval_loss"] < entry["repeats"][0]["ours"]["eval_loss_before"]
        assert results["padding"][data]["ours_padding_free"] == 1.0
        assert results["padding"][data]["ours_length_grouped"] >= 0.95
    assert [p["token_budget"] for p in results["budget_sweep"]] == [512, 1024]
    profile = results["profile"]
    assert 0 < profile["dequantization"] < 1 and 0 < profile["attention"] < 1
    assert profile["attention_implementation"] == "packed_sdpa"
    # The backward kernels count too (they are most of attention's time in training).
    assert any("backward" in op.lower() for op in profile["attention_operators"])
    assert "ours/strong" in done.stdout
    assert "ours/naive" in done.stdout


def test_the_preprocess_benchmark_measures_both_inputs_for_each_arm(tmp_path: Path) -> None:
    from benchmarks import preprocess_scale

    baseline = tmp_path / "baseline"
    shutil.copytree(REPO / "training_scripts", baseline)
    out = tmp_path / "preprocess.json"
    assert preprocess_scale.main(
        ["--records", "300", "--long-mb", "8", "--repeats", "1",
         "--baseline", str(baseline / "preprocess.py"), "--output", str(out)]
    ) == 0  # fmt: skip
    results = json.loads(out.read_text())["results"]
    assert {(r["script"], r["data"], r["records"]) for r in results} == {
        ("ours", "many", 300), ("baseline", "many", 300), ("ours", "long", 11), ("baseline", "long", 11)
    }  # fmt: skip
    # The memory reading is the process's own: holding one 8 MB record costs at least its size
    # over a run of 300 small ones.
    peak = {(r["script"], r["data"]): r["peak_rss_mb"] for r in results}
    for arm in ("ours", "baseline"):
        assert peak[arm, "long"] - peak[arm, "many"] > 8, peak


def test_the_second_quality_dataset_is_read_whole_by_its_own_task(tmp_path: Path) -> None:
    """Every generated article reaches a split under its task spec's field names; the same
    seed writes the same bytes."""
    from benchmarks import articles
    from training_scripts import preprocess, tasks

    data, spec = articles.write(tmp_path / "a", count=300)
    assert articles.write(tmp_path / "b", count=300)[0].read_bytes() == data.read_bytes()
    task = tasks.load_task_spec(spec)
    assert (task.name, task.input_fields, task.target_key) == (
        "article-highlights", ("article",), "highlights"
    )  # fmt: skip
    out = tmp_path / "splits"
    preprocess.run(
        preprocess.PreprocessArguments(input=str(data), output_dir=str(out), task_spec=str(spec))
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["records_out"] == {"train": 240, "validation": 30, "test": 30}, manifest
    assert not any(manifest["dropped"].values()), manifest["dropped"]


def test_the_quality_table_reports_a_run_as_the_run_recorded_it(tiny_run) -> None:
    """The benchmark's figures for one run: its trainings' steps (the tiny preset's 0.1 epoch
    raised to the floor of 20, for both models alike), its scores and intervals, and the
    verdict the run itself reached (it registered, so the gate passed)."""
    from benchmarks import quality
    from training_scripts.guarded_trainer import FEW_STEPS

    root, done = tiny_run
    assert done.returncode == 0, done.stdout + done.stderr
    row = quality.summary("tiny", root / "run")
    evaluation = json.loads((root / "run/evaluation.json").read_text())
    for step in quality.TRAININGS:
        training = row["trainings"][step]
        assert training["global_step"] == training["min_steps"] == FEW_STEPS, (step, training)
        assert training["epochs_trained"] > 0.1
    assert row["scores"] == {m: evaluation["models"][m]["rougeL"] for m in row["scores"]}
    assert row["comparisons"]["adapter_vs_base"] == {
        k: evaluation["comparisons"]["adapter_vs_base"]["rougeL"][k] for k in quality.INTERVAL
    }
    assert row["gate"]["passed"] and "Registered peftops-smoke version" in done.stdout
    assert f"| tiny | {row['train_examples']} / {row['test_examples']} | 20, 20 (" in quality.table(
        [row]
    )
