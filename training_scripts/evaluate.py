"""Evaluate the base model, the adapter on the base, and the full fine-tune baseline side by side.

    python training_scripts/evaluate.py --base-model runs/smollm2 --adapter-dir runs/adapter \
        --baseline-dir runs/full --test-dir runs/prep/test --output-dir runs/eval

Batched greedy generation on the test split; ROUGE-1/2/L/Lsum (rouge_score, stemming on,
mean F1 over examples). A pipeline that reuses a stored baseline passes
`--baseline-evaluation <evaluation.json>` instead of `--baseline-dir`.

Writes to --output-dir:
- evaluation.json: {"models": {"base", "adapter", "full_finetune"}, "comparisons":
  {"adapter_vs_full_finetune", "adapter_vs_base"}, ...}, each model with rouge1/2/L/Lsum (0..1),
  trainable_params, total_params, artifact_bytes and, where trained, train_runtime_s;
- predictions.jsonl: input, reference and each model's output, one line per test example;
- report.html: the three models compared in a chart and a table, with sample outputs.

Model folders may hold SageMaker's model.tar.gz instead of the files: it is unpacked first.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import math
import re
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import HfArgumentParser

if __package__:  # imported as part of the training_scripts package (pipeline, tests, benchmarks)
    from . import common, contracts
else:  # run as `python evaluate.py`, as in the SageMaker job: sibling modules are top-level
    import common
    import contracts


ROUGE_KEYS = contracts.ROUGE_KEYS
MODEL_NAMES = contracts.MODEL_NAMES
logger = logging.getLogger("evaluate")


@dataclass
class EvaluateArguments:
    base_model: str = common.sagemaker_path_field(
        "/opt/ml/processing/input/model", "", "Base model: hub id or folder."
    )
    adapter_dir: str = common.sagemaker_path_field(
        "/opt/ml/processing/input/adapter",
        "runs/local/model",
        "train.py's output for the adapter (folder or model.tar.gz).",
    )
    baseline_dir: str = field(
        default="", metadata={"help": "train.py --method full output (folder or model.tar.gz)."}
    )
    baseline_evaluation: str = field(
        default="",
        metadata={
            "help": "A stored evaluation.json whose full_finetune entry is reused instead of --baseline-dir."
        },
    )
    test_dir: str = common.sagemaker_path_field(
        "/opt/ml/processing/input/test", "runs/local/preprocess/test", "Preprocessed test split."
    )
    output_dir: str = common.sagemaker_path_field(
        "/opt/ml/processing/output/evaluation",
        "runs/local/evaluation",
        "Where evaluation.json, predictions.jsonl and report.html go.",
    )
    max_new_tokens: int = field(default=96, metadata={"help": "Generated summary tokens at most."})
    max_input_tokens: int = field(
        default=1024, metadata={"help": "Prompt tokens at most (longer prompts keep their end)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Prompts per generation batch."})
    max_examples: int = field(
        default=0, metadata={"help": "Evaluate the first N test examples; 0 = all."}
    )
    adapter_quantization: str = field(
        default="auto",
        metadata={
            "help": "auto (as trained: 4-bit for qlora) | 4bit | none: the base under the adapter."
        },
    )
    precision: common.Precision = field(
        default=common.Precision.AUTO, metadata={"help": "auto | bf16 | fp32."}
    )

    def __post_init__(self) -> None:
        self.precision = common.Precision(self.precision)
        if not self.base_model:
            raise ValueError("--base-model is required (a hub id or a model folder)")
        if bool(self.baseline_dir) == bool(self.baseline_evaluation):
            raise ValueError(
                "pass exactly one of --baseline-dir (evaluate a full fine-tune) or --baseline-evaluation (reuse one)"
            )
        if self.adapter_quantization not in {"auto", "4bit", "none"}:
            raise ValueError("--adapter-quantization must be auto, 4bit or none")


# --- scoring (pure) ------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentences_per_line(text: str) -> str:
    """rougeLsum scores summary-level LCS over newline-separated sentences."""
    return "\n".join(s for s in _SENTENCE_END.split(text.strip()) if s)


def rouge_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    from rouge_score import rouge_scorer

    if len(predictions) != len(references) or not predictions:
        raise ValueError("rouge needs one prediction per reference and at least one pair")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_KEYS, 0.0)
    for prediction, reference in zip(predictions, references, strict=True):
        scores = scorer.score(sentences_per_line(reference), sentences_per_line(prediction))
        for key in ROUGE_KEYS:
            totals[key] += scores[key].fmeasure
    return {key: totals[key] / len(predictions) for key in ROUGE_KEYS}


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    return {key: a[key] - b[key] for key in ROUGE_KEYS}


# --- artifacts -----------------------------------------------------------------------------


def unpack_if_archive(path: str, scratch: Path) -> Path:
    """A folder of model files; SageMaker's model.tar.gz (or a folder holding one) is unpacked
    into `scratch`, which the caller removes."""
    candidate = Path(path)
    archive = candidate / "model.tar.gz" if candidate.is_dir() else candidate
    if archive.is_file() and archive.name.endswith(".tar.gz"):
        target = Path(tempfile.mkdtemp(prefix="model-", dir=scratch))
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
        return target
    if not candidate.is_dir():
        raise FileNotFoundError(f"{path}: no such model folder or model.tar.gz")
    return candidate


def artifact_bytes(model_dir: Path, *, adapter: bool) -> int:
    """Bytes a deployment must ship for this model: weights and config, not the tokenizer."""
    if adapter:
        files = [model_dir / "adapter_config.json", *model_dir.glob("adapter_model.*")]
    else:
        files = [
            model_dir / "config.json",
            *model_dir.glob("*.safetensors"),
            *model_dir.glob("*.bin"),
        ]
    return sum(common.directory_size(f) for f in files if f.is_file())


def adapter_parameter_count(adapter_dir: Path) -> int:
    """Parameters stored in the adapter file: what trained (a loaded adapter is frozen)."""
    from safetensors import safe_open

    with safe_open(str(adapter_dir / "adapter_model.safetensors"), framework="pt") as handle:
        return sum(math.prod(handle.get_slice(key).get_shape()) for key in handle.keys())  # noqa: SIM118


def read_training_metrics(model_dir: Path) -> dict[str, Any]:
    """train.py's metrics beside the model; a model trained elsewhere has none."""
    path = contracts.TRAINING_METRICS.path(model_dir)
    return contracts.TRAINING_METRICS.read(path) if path.is_file() else {}


# --- generation ----------------------------------------------------------------------------


def prompt_ids(tokenizer: Any, dialogue: str, *, seq2seq: bool) -> list[int]:
    """What the model reads, as train.py encodes it: the data's control-token strings as text."""
    if not seq2seq:
        return common.prompt_ids(tokenizer, dialogue)
    text = common.render_prompt(tokenizer, dialogue, seq2seq=True)
    return tokenizer(text, split_special_tokens=True)["input_ids"]


def generate_summaries(
    model: Any, tokenizer: Any, dialogues: list[str], args: EvaluateArguments
) -> list[str]:
    """Greedy decoding in batches of similar length (less padding), returned in input order."""
    seq2seq = common.is_seq2seq(model.config)
    prompts = [prompt_ids(tokenizer, d, seq2seq=seq2seq) for d in dialogues]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    outputs: list[str] = [""] * len(prompts)
    device = next(p.device for p in model.parameters())
    tokenizer.padding_side = (
        "right" if seq2seq else "left"
    )  # causal LMs continue from the last token
    model.eval()
    for start in range(0, len(order), args.batch_size):
        indices = order[start : start + args.batch_size]
        # Longer prompts keep their end: the instruction to answer is there.
        batch = tokenizer.pad(
            {"input_ids": [prompts[i][-args.max_input_tokens :] for i in indices]},
            padding=True,
            return_tensors="pt",
        ).to(device)
        with torch.no_grad():
            generated = model.generate(
                **batch,
                max_new_tokens=args.max_new_tokens,
                do_sample=False,
                num_beams=1,
                pad_token_id=tokenizer.pad_token_id,
            )
        new_tokens = generated if seq2seq else generated[:, batch["input_ids"].shape[1] :]
        for i, text in zip(
            indices, tokenizer.batch_decode(new_tokens, skip_special_tokens=True), strict=True
        ):
            outputs[i] = text.strip()
    return outputs


def total_parameters(model: Any) -> int:
    return common.count_parameters(model)[1]


def evaluate_model(
    name: str, model: Any, tokenizer: Any, rows: list[dict[str, Any]], args: EvaluateArguments
) -> tuple[dict[str, Any], list[str]]:
    started = time.perf_counter()
    predictions = generate_summaries(model, tokenizer, [r[common.INPUT_KEY] for r in rows], args)
    seconds = time.perf_counter() - started
    entry: dict[str, Any] = {
        **rouge_scores(predictions, [r[common.TARGET_KEY] for r in rows]),
        "generation_seconds": seconds,
    }
    logger.info(
        "%s: %s (%.1fs)", name, " ".join(f"{k}={entry[k]:.4f}" for k in ROUGE_KEYS), seconds
    )
    return entry, predictions


def adapter_quantized(args: EvaluateArguments, training: dict[str, Any]) -> bool:
    if args.adapter_quantization == "auto":
        return training.get("method") == common.PeftMethod.QLORA.value
    return args.adapter_quantization == "4bit"


def stored_baseline(location: str, test_sha256: str) -> dict[str, Any]:
    """A stored evaluation whose full fine-tune figures this run may compare with: scored on
    this very test set, or refused before any model is loaded (ROUGE on other examples says
    nothing about this adapter)."""
    path = contracts.EVALUATION.path(location)
    stored = contracts.EVALUATION.read(path)
    if stored[contracts.TEST_SET_SHA256] != test_sha256:
        raise ValueError(
            f"{path}: the stored baseline was scored on another test set (a new dataset version, "
            "or other evaluation settings); run once with BaselineMode=train on this data, then "
            "store its evaluation: peftops baseline publish --evaluation <its evaluation.json> "
            "--bucket <the stack's bucket>"
        )
    return stored


def run(args: EvaluateArguments) -> dict[str, Any]:
    """Evaluate, with unpacked model archives (a full model is hundreds of MB) removed after,
    whether the run succeeds or not."""
    with tempfile.TemporaryDirectory(prefix="peftops-evaluate-") as scratch:
        return evaluate_all(args, Path(scratch))


def evaluate_all(args: EvaluateArguments, scratch: Path) -> dict[str, Any]:
    from peft import PeftModel

    if not torch.cuda.is_available():
        torch.set_flush_denormal(True)
    dtype = common.resolve_dtype(args.precision)
    test_path = common.split_file(args.test_dir)
    rows = common.read_jsonl(test_path)
    if args.max_examples > 0:
        rows = rows[: args.max_examples]
    if not rows:
        raise ValueError(f"{test_path}: the test split is empty")
    test_sha256 = hashlib.sha256(
        json.dumps([[r[common.INPUT_KEY], r[common.TARGET_KEY]] for r in rows]).encode()
    ).hexdigest()
    stored = (
        stored_baseline(args.baseline_evaluation, test_sha256) if args.baseline_evaluation else None
    )
    base_dir = (
        unpack_if_archive(args.base_model, scratch) if Path(args.base_model).exists() else None
    )
    base_ref = str(base_dir) if base_dir else args.base_model  # a hub id otherwise
    tokenizer = common.load_tokenizer(base_ref)
    models: dict[str, dict[str, Any]] = {}
    predictions: dict[str, list[str]] = {}

    base = common.load_model(base_ref, quantize_4bit=False, dtype=dtype)
    total_base = total_parameters(base)
    models["base"], predictions["base"] = evaluate_model("base", base, tokenizer, rows, args)
    models["base"].update(
        trainable_params=0,
        total_params=total_base,
        artifact_bytes=artifact_bytes(base_dir, adapter=False) if base_dir else None,
        train_runtime_s=None,
    )
    del base

    adapter_dir = unpack_if_archive(args.adapter_dir, scratch)
    training = read_training_metrics(adapter_dir)
    quantized = adapter_quantized(args, training)
    adapter_model = PeftModel.from_pretrained(
        common.load_model(base_ref, quantize_4bit=quantized, dtype=dtype), str(adapter_dir)
    )
    trainable = training.get("trainable_params") or adapter_parameter_count(adapter_dir)
    models["adapter"], predictions["adapter"] = evaluate_model(
        "adapter", adapter_model, tokenizer, rows, args
    )
    models["adapter"].update(
        method=training.get("method"),
        base_quantized_4bit=quantized,
        trainable_params=trainable,
        total_params=training.get("total_params", total_base),
        artifact_bytes=artifact_bytes(adapter_dir, adapter=True),
        train_runtime_s=training.get("train_runtime_s"),
        peak_memory_bytes=training.get("peak_memory_bytes"),
    )
    del adapter_model

    baseline_source: dict[str, Any]
    if args.baseline_dir:
        baseline_dir = unpack_if_archive(args.baseline_dir, scratch)
        baseline_training = read_training_metrics(baseline_dir)
        baseline = common.load_model(str(baseline_dir), quantize_4bit=False, dtype=dtype)
        models["full_finetune"], predictions["full_finetune"] = evaluate_model(
            "full_finetune", baseline, tokenizer, rows, args
        )
        models["full_finetune"].update(
            trainable_params=baseline_training.get("trainable_params", total_parameters(baseline)),
            total_params=total_parameters(baseline),
            artifact_bytes=artifact_bytes(baseline_dir, adapter=False),
            train_runtime_s=baseline_training.get("train_runtime_s"),
            peak_memory_bytes=baseline_training.get("peak_memory_bytes"),
        )
        baseline_source = {"kind": "trained", "test_set_matches": True}
        del baseline
    else:
        assert stored is not None
        stored_path = contracts.EVALUATION.path(args.baseline_evaluation)
        models["full_finetune"] = {
            **stored["models"]["full_finetune"],
            "reused_from": str(stored_path),
        }
        baseline_source = {
            "kind": "reused",
            "evaluation": str(stored_path),
            "test_set_matches": stored[contracts.TEST_SET_SHA256] == test_sha256,
        }

    for entry in models.values():
        total = entry.get("total_params")
        entry.setdefault(
            "trainable_percent", 100.0 * entry["trainable_params"] / total if total else None
        )
    evaluation = {
        "models": models,
        "comparisons": {
            "adapter_vs_full_finetune": compare(models["adapter"], models["full_finetune"]),
            "adapter_vs_base": compare(models["adapter"], models["base"]),
        },
        # What the pipeline's quality gate compares with its thresholds (no arithmetic there).
        "gate": contracts.gate_margins(models),
        "test_examples": len(rows),
        contracts.TEST_SET_SHA256: test_sha256,
        "baseline_source": baseline_source,
        "base_model": args.base_model,
        "rouge": {
            "implementation": "rouge_score",
            "use_stemmer": True,
            "aggregation": "mean F1 over examples",
        },
        "generation": {
            "decoding": "greedy",
            "max_new_tokens": args.max_new_tokens,
            "precision": str(dtype).removeprefix("torch."),
        },
    }
    out = Path(args.output_dir)
    evaluation = contracts.EVALUATION.write(out, evaluation)
    with (out / "predictions.jsonl").open("w", encoding="utf-8") as handle:
        for i, row in enumerate(rows):
            record = {
                "id": row.get("id"),
                "input": row[common.INPUT_KEY],
                "reference": row[common.TARGET_KEY],
            }
            record.update({name: outputs[i] for name, outputs in predictions.items()})
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    (out / "report.html").write_text(render_report(evaluation, rows, predictions), encoding="utf-8")
    return evaluation


# --- report --------------------------------------------------------------------------------

COLORS = {"base": "#9aa5b1", "adapter": "#2f80ed", "full_finetune": "#f2994a"}
LABELS = {"base": "Base model", "adapter": "Adapter", "full_finetune": "Full fine-tune"}


def bar_chart_svg(models: dict[str, dict[str, Any]]) -> str:
    """Grouped bars of ROUGE per model, as inline SVG (no plotting dependency)."""
    width, height, left, bottom, top = 640, 300, 48, 40, 20
    plot_h = height - bottom - top
    group_w = (width - left - 20) / len(ROUGE_KEYS)
    bar_w = group_w / (len(MODEL_NAMES) + 1)
    peak = max(0.1, *(models[m][k] for m in MODEL_NAMES for k in ROUGE_KEYS))
    scale = plot_h / (min(1.0, peak * 1.15))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="ROUGE by model">'
    ]
    for tick in range(0, 11):
        value = tick / 10
        if value * scale > plot_h:
            break
        y = height - bottom - value * scale
        parts.append(
            f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/><text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{value:.1f}</text>'
        )
    for g, key in enumerate(ROUGE_KEYS):
        x0 = left + g * group_w + bar_w / 2
        for b, name in enumerate(MODEL_NAMES):
            value = models[name][key]
            x, h = x0 + b * bar_w, value * scale
            parts.append(
                f'<rect x="{x:.1f}" y="{height - bottom - h:.1f}" width="{bar_w - 4:.1f}" height="{h:.1f}" fill="{COLORS[name]}"><title>{LABELS[name]} {key}: {value:.4f}</title></rect>'
            )
            parts.append(
                f'<text x="{x + (bar_w - 4) / 2:.1f}" y="{height - bottom - h - 4:.1f}" font-size="10" text-anchor="middle">{value:.2f}</text>'
            )
        parts.append(
            f'<text x="{x0 + 1.5 * bar_w:.1f}" y="{height - bottom + 18}" font-size="12" text-anchor="middle">{key}</text>'
        )
    for i, name in enumerate(MODEL_NAMES):
        parts.append(
            f'<rect x="{left + 10 + i * 150}" y="4" width="12" height="12" fill="{COLORS[name]}"/><text x="{left + 27 + i * 150}" y="14" font-size="12">{LABELS[name]}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def render_report(
    evaluation: dict[str, Any], rows: list[dict[str, Any]], predictions: dict[str, list[str]]
) -> str:
    models = evaluation["models"]
    header = "".join(
        f"<th>{k}</th>"
        for k in (
            *ROUGE_KEYS,
            "trainable params",
            "total params",
            "trainable %",
            "artifact",
            "train time",
            "peak memory",
        )
    )
    body = []
    for name in MODEL_NAMES:
        m = models[name]
        share = 100 * m["trainable_params"] / m["total_params"] if m.get("total_params") else None
        runtime = m.get("train_runtime_s")
        cells = [f"{m[k]:.4f}" for k in ROUGE_KEYS] + [
            f"{m['trainable_params']:,}",
            _fmt(m.get("total_params"), ","),
            _fmt(share, ".2f"),
            common.format_bytes(m.get("artifact_bytes")),
            "n/a" if runtime is None else f"{runtime:.1f} s",
            common.format_bytes(m.get("peak_memory_bytes")),
        ]
        body.append(
            f"<tr><th>{LABELS[name]}</th>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
        )
    deltas = "".join(
        f"<tr><th>{html.escape(name.replace('_', ' '))}</th>"
        + "".join(f"<td>{v:+.4f}</td>" for v in evaluation["comparisons"][name].values())
        + "</tr>"
        for name in evaluation["comparisons"]
    )
    samples = []
    for i, row in enumerate(rows[:5]):
        outputs = "".join(
            f"<dt>{LABELS[n]}</dt><dd>{html.escape(predictions[n][i])}</dd>"
            for n in MODEL_NAMES
            if n in predictions
        )
        samples.append(
            f"<details{' open' if i == 0 else ''}><summary>Example {html.escape(str(row.get('id')))}</summary>"
            f"<pre>{html.escape(row[common.INPUT_KEY])}</pre><dl><dt>Reference</dt><dd>{html.escape(row[common.TARGET_KEY])}</dd>{outputs}</dl></details>"
        )
    reuse = evaluation["baseline_source"]
    reuse_note = (
        ""
        if reuse["kind"] == "trained"
        else f"<p>Full fine-tune figures reused from {html.escape(reuse['evaluation'])} (same test set: {reuse['test_set_matches']}).</p>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Adapter evaluation</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem;color:#222}}table{{border-collapse:collapse;margin:1rem 0}}
th,td{{border:1px solid #ddd;padding:.35rem .6rem;text-align:right}}th:first-child{{text-align:left}}pre{{white-space:pre-wrap;background:#f7f7f7;padding:.6rem}}dt{{font-weight:600}}</style></head>
<body><h1>Adapter evaluation</h1>
<p>Base model <code>{html.escape(str(evaluation["base_model"]))}</code>, {evaluation["test_examples"]} test dialogues, greedy decoding,
ROUGE F1 with stemming (mean over examples).</p>
{bar_chart_svg(models)}
<table><tr><th>model</th>{header}</tr>{"".join(body)}</table>
<h2>Differences</h2><table><tr><th></th>{"".join(f"<th>{k}</th>" for k in ROUGE_KEYS)}</tr>{deltas}</table>
{reuse_note}
<h2>Sample outputs</h2>{"".join(samples)}
</body></html>
"""


def main(argv: list[str] | None = None) -> int:
    common.setup_logging()
    try:
        (args,) = HfArgumentParser(EvaluateArguments).parse_args_into_dataclasses(args=argv)
        common.use_hub_token_from_secrets_manager()
        evaluation = run(args)
    except (ValueError, FileNotFoundError, KeyError) as err:
        logger.error("error: %s", err)
        return 2
    deltas = evaluation["comparisons"]
    logger.info(
        "adapter vs base rougeL %+.4f, adapter vs full fine-tune rougeL %+.4f; wrote %s",
        deltas["adapter_vs_base"]["rougeL"],
        deltas["adapter_vs_full_finetune"]["rougeL"],
        args.output_dir,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
