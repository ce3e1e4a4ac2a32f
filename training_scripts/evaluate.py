"""Evaluate the base model, the adapter on the base, and the full fine-tune baseline side by side.

    python training_scripts/evaluate.py --base-model runs/smollm2 --adapter-dir runs/adapter \
        --baseline-dir runs/full --test-dir runs/prep/test --output-dir runs/eval

The adapter is scored as it is served: on the unquantized base (a QLoRA adapter's 4-bit base
is a training device; `--adapter-quantization 4bit` scores it on one). Batched greedy
generation on the test split; ROUGE-1/2/L/Lsum (rouge_score, stemming on,
mean F1 over examples) with paired bootstrap 95% intervals (scoring.py). A pipeline that
reuses a stored baseline passes `--baseline-evaluation <evaluation.json>` instead of
`--baseline-dir`; its per-example scores pair with this run's, the test set being the same.

Writes to --output-dir:
- evaluation.json: {"models": {"base", "adapter", "full_finetune"}, "comparisons":
  {"adapter_vs_full_finetune", "adapter_vs_base"}, "intervals", "gate", ...}: each model with
  rouge1/2/L/Lsum (0..1), its per-example scores, parameters, artifact size, generation speed
  and, where trained, its training summary and loss curves; each comparison with the mean
  difference, its 95% interval and the smallest difference the test set can resolve;
- predictions.jsonl: input, reference and each model's output, one line per test example;
- report.html: what a reviewer decides from (report.py);
- model_card.md and model_card.json: the adapter's model card (model_card.py), as a README and
  as SageMaker model card content.

Model folders may hold SageMaker's model.tar.gz instead of the files: it is unpacked first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

# isort: off
if __package__:  # imported as part of the training_scripts package (pipeline, tests, benchmarks)
    from . import logs  # first: it quiets bitsandbytes' import-time warning
    from . import (
        artifacts,
        contracts,
        enums,
        generation,
        job_environment,
        model_card,
        model_loading,
        prompts,
        report,
        scoring,
        tasks,
        tracking,
    )
else:  # run as `python evaluate.py`, as in the SageMaker job: sibling modules are top-level
    import logs  # first, as above
    import artifacts
    import contracts
    import enums
    import generation
    import job_environment
    import model_card
    import model_loading
    import prompts
    import report
    import scoring
    import tasks
    import tracking
# isort: on


ROUGE_KEYS = contracts.ROUGE_KEYS
MODEL_NAMES = contracts.MODEL_NAMES
logger = logging.getLogger("evaluate")


@dataclass
class EvaluateArguments:
    base_model: str = job_environment.sagemaker_path_field(
        "/opt/ml/processing/input/model", "", "Base model: hub id or folder."
    )
    adapter_dir: str = job_environment.sagemaker_path_field(
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
    test_dir: str = job_environment.sagemaker_path_field(
        "/opt/ml/processing/input/test", "runs/local/preprocess/test", "Preprocessed test split."
    )
    output_dir: str = job_environment.sagemaker_path_field(
        "/opt/ml/processing/output/evaluation",
        "runs/local/evaluation",
        "Where evaluation.json, predictions.jsonl and report.html go.",
    )
    max_new_tokens: int = field(
        default=0, metadata={"help": "Generated answer tokens at most; 0: the task spec's."}
    )
    max_context_tokens: int = field(
        default=tasks.MAX_CONTEXT_TOKENS,
        metadata={
            "help": "Prompt and answer tokens at most: a longer prompt's longest input text is "
            "cut to fit, as train.py --max-seq-length cuts a training example."
        },
    )
    batch_size: int = field(default=16, metadata={"help": "Prompts per generation batch."})
    max_examples: int = field(
        default=0, metadata={"help": "Evaluate the first N test examples; 0 = all."}
    )
    adapter_quantization: str = field(
        default="none",
        metadata={
            "help": "The base under the adapter. none (as served: the unquantized base the "
            "endpoint and `peftops serve` load) | 4bit | auto (as trained: 4-bit for qlora)."
        },
    )
    precision: enums.Precision = field(
        default=enums.Precision.AUTO, metadata={"help": "auto | bf16 | fp32."}
    )
    dataset_version: str = field(
        default="", metadata={"help": "The dataset version the test split came from (shown)."}
    )
    metric_tolerance: float = field(
        default=0.02,
        metadata={
            "help": "The gate's tolerance: the adapter may trail the full fine-tune by this much "
            "of the task's metric at the upper end of the 95%% interval (the report's verdict)."
        },
    )
    min_metric_gain: float = field(
        default=0.01,
        metadata={
            "help": "The gate's required gain over the base model at the lower end of the 95%% "
            "interval (the report's verdict)."
        },
    )
    task_gate: list[str] = field(
        default_factory=list,
        metadata={
            "help": "TASK=TOLERANCE,GAIN for each task whose gate differs from the two "
            "thresholds above (the evaluated task's applies)."
        },
    )

    def __post_init__(self) -> None:
        self.precision = enums.Precision(self.precision)
        if not self.base_model:
            raise ValueError("--base-model is required (a hub id or a model folder)")
        if bool(self.baseline_dir) == bool(self.baseline_evaluation):
            raise ValueError(
                "pass exactly one of --baseline-dir (evaluate a full fine-tune) or --baseline-evaluation (reuse one)"
            )
        if self.max_context_tokens <= max(self.max_new_tokens, 0):
            raise ValueError(
                f"--max-context-tokens {self.max_context_tokens} leaves no room for a prompt "
                f"beside --max-new-tokens {self.max_new_tokens}; raise it"
            )
        if self.adapter_quantization not in {"auto", "4bit", "none"}:
            raise ValueError("--adapter-quantization must be auto, 4bit or none")
        for entry in self.task_gate:
            if not re.fullmatch(r"[a-z0-9-]+=[-+.0-9e]+,[-+.0-9e]+", entry):
                raise ValueError(f"--task-gate {entry!r}: write TASK=TOLERANCE,GAIN")


# --- artifacts -----------------------------------------------------------------------------


def total_parameters(model: Any) -> int:
    return model_loading.count_parameters(model)[1]


@dataclass(frozen=True)
class TestSet:
    """The test examples scored, their digest and the task they were preprocessed for."""

    rows: list[dict[str, Any]]
    sha256: str
    task: tasks.TaskSpec

    @property
    def inputs(self) -> list[tasks.TaskInput]:
        return [r[contracts.INPUT_KEY] for r in self.rows]

    def prompt_ids(
        self, tokenizer: Any, *, seq2seq: bool, args: EvaluateArguments
    ) -> tuple[list[list[int]], int]:
        """Each test prompt's ids fitted as training fitted its examples (a causal model's to
        the context less the answer's tokens; an encoder's input to the whole context), and
        how many were cut."""
        answer = 0 if seq2seq else self.max_new_tokens(args)
        try:
            return generation.prompt_token_ids(
                tokenizer,
                self.task,
                self.inputs,
                seq2seq=seq2seq,
                max_tokens=args.max_context_tokens - answer,
            )
        except prompts.NoRoomForInputError as err:
            raise ValueError(
                f"{err} (--max-context-tokens {args.max_context_tokens} less {answer} answer "
                "tokens); raise --max-context-tokens or lower --max-new-tokens"
            ) from None

    def max_new_tokens(self, args: EvaluateArguments) -> int:
        return args.max_new_tokens or self.task.max_new_tokens


def score_model(
    name: str, model: Any, tokenizer: Any, test: TestSet, args: EvaluateArguments
) -> tuple[dict[str, Any], list[str]]:
    """One model's entry of evaluation.json (scores, per-example scores, generation speed) and
    its answers."""
    rows = test.rows
    prompt_ids, cut = test.prompt_ids(
        tokenizer, seq2seq=model_loading.is_seq2seq(model.config), args=args
    )
    if cut:
        logger.warning(
            "%s: %d of %d test prompts were longer than --max-context-tokens %d allows with "
            "%d answer tokens: their longest input text was cut, as training cuts its examples",
            name, cut, len(rows), args.max_context_tokens, test.max_new_tokens(args),
        )  # fmt: skip
    generated = generation.generate_answers(
        model,
        tokenizer,
        prompt_ids,
        batch_size=args.batch_size,
        max_new_tokens=test.max_new_tokens(args),
        label=name,
    )
    references = [r[contracts.TARGET_KEY] for r in rows]
    per_example = scoring.rouge_per_example(generated.answers, references)
    task = test.task
    # ROUGE always (it says how close the words came); the gate judges the task's metric.
    if task.metric not in per_example:
        per_example[task.metric] = scoring.metric_per_example(
            task.metric, generated.answers, references, task.labels
        )
    entry: dict[str, Any] = {
        **scoring.means(per_example),
        "per_example": per_example,
        "cut_prompts": cut,
        "generation_seconds": generated.seconds,
        "generated_tokens": generated.new_tokens,
        "generated_tokens_per_second": generated.new_tokens / generated.seconds
        if generated.seconds > 0
        else None,
    }
    if task.metric == tasks.Metric.LABEL_ACCURACY:
        entry["confusion"] = scoring.confusion(generated.answers, references, task.labels)
    logger.info(
        "%s: %s (%.1fs)",
        name,
        " ".join(f"{k}={entry[k]:.4f}" for k in dict.fromkeys([task.metric, *ROUGE_KEYS])),
        generated.seconds,
    )
    return entry, generated.answers


def scored_adapter(base_ref: str, adapter_dir: Path, *, quantized: bool, dtype: Any) -> Any:
    """The adapter on its base, as evaluation generates with it. On an unquantized fp32 base a
    LoRA adapter is merged into it: the function the endpoint serves (outputs agree to float
    rounding) at the base model's generation speed, where unmerged every adapted layer adds
    two matrix products per token. In bf16 it stays unmerged, as served: W + BA rounded to
    bf16 loses a share of a small update."""
    from peft import PeftModel, PeftType

    model = PeftModel.from_pretrained(
        model_loading.load_model(base_ref, quantize_4bit=quantized, dtype=dtype), str(adapter_dir)
    )
    lora = model.peft_config[model.active_adapter].peft_type == PeftType.LORA
    if lora and not quantized and dtype == torch.float32:
        return model.merge_and_unload()
    return model


def adapter_quantized(args: EvaluateArguments, training: dict[str, Any]) -> bool:
    if args.adapter_quantization == "auto":
        return training.get("method") == enums.PeftMethod.QLORA.value
    return args.adapter_quantization == "4bit"


def stored_baseline(location: str, test_sha256: str, task_sha256: str) -> dict[str, Any]:
    """A stored evaluation whose full fine-tune figures this run may compare with: scored on
    this very test set, or refused before any model is loaded (ROUGE on other examples says
    nothing about this adapter, and per-example scores could not be paired)."""
    path = contracts.EVALUATION.path(location)
    stored = contracts.EVALUATION.read(path)
    if stored[contracts.TEST_SET_SHA256] != test_sha256:
        raise ValueError(
            f"{path}: the stored baseline was scored on another test set (a new dataset version, "
            "or other evaluation settings); run once with BaselineMode=train on this data, then "
            "store its evaluation: peftops baseline publish --evaluation <its evaluation.json> "
            "--bucket <the stack's bucket>"
        )
    if contracts.value_at(stored, contracts.TASK_SPEC_SHA256) != task_sha256:
        raise ValueError(
            f"{path}: the stored baseline answered another task spec's prompts; run once with "
            "BaselineMode=train with this spec, then store its evaluation: peftops baseline "
            "publish --evaluation <its evaluation.json> --bucket <the stack's bucket>"
        )
    return stored


def training_summary(training: dict[str, Any]) -> dict[str, Any]:
    """What the report and model card show of a model's training (train.py's metrics)."""
    keys = (
        "method",
        "model_kind",
        "base_model",
        "adapter",
        "learning_rate",
        "global_step",
        "epochs",
        "per_device_batch_size",
        "gradient_accumulation_steps",
        "world_size",
        "precision",
        "optimizer",
        "train_examples",
        "tokens_per_second",
        "eval_loss_before",
        "eval_loss_after",
        "loss_curve",
        "validation_curve",
        "dataset_version",
        "train_data_sha256",
        "device",
        "tracking_run_id",
    )
    return {k: training[k] for k in keys if k in training}


def compared(models: dict[str, dict[str, Any]], metric: str) -> dict[str, Any]:
    """evaluation.json's `comparisons`, `intervals` and `gate` sections, from the models'
    per-example scores (paired: every model scored on the same examples, in one order); the
    gate on the task's metric."""
    bootstrap = scoring.paired_intervals(
        {name: models[name]["per_example"] for name in MODEL_NAMES}, contracts.COMPARISONS
    )
    return {
        "comparisons": bootstrap["comparisons"],
        "intervals": {"settings": bootstrap["settings"], "models": bootstrap["models"]},
        # What the pipeline's quality gate compares with its thresholds (no arithmetic there).
        "gate": contracts.gate_margins(bootstrap["comparisons"], metric),
    }


def run(args: EvaluateArguments, tracked: tracking.Tracked | None = None) -> dict[str, Any]:
    """Evaluate, with unpacked model archives (a full model is hundreds of MB) removed after,
    whether the run succeeds or not."""
    with tempfile.TemporaryDirectory(prefix="peftops-evaluate-") as scratch:
        return evaluate_all(args, Path(scratch), tracked)


def test_set_digest(rows: list[dict[str, Any]]) -> str:
    return hashlib.sha256(
        json.dumps([[r[contracts.INPUT_KEY], r[contracts.TARGET_KEY]] for r in rows]).encode()
    ).hexdigest()


def read_test_set(args: EvaluateArguments) -> TestSet:
    """The test examples scored (the first --max-examples), their digest and their task."""
    test_path = contracts.split_file(args.test_dir)
    rows = contracts.read_split_rows(test_path)
    if args.max_examples > 0:
        rows = rows[: args.max_examples]
    if not rows:
        raise ValueError(f"{test_path}: the test split is empty")
    return TestSet(rows, test_set_digest(rows), tasks.split_task(test_path))


Scored = tuple[dict[str, Any], list[str]]  # a model's evaluation.json entry, its summaries


def score_base(
    base_ref: str,
    base_dir: Path | None,
    tokenizer: Any,
    test: TestSet,
    args: Any,
    dtype: Any,
) -> Scored:
    base = model_loading.load_model(base_ref, quantize_4bit=False, dtype=dtype)
    entry, summaries = score_model("base", base, tokenizer, test, args)
    entry.update(
        trainable_params=0,
        total_params=total_parameters(base),
        artifact_bytes=artifacts.artifact_bytes(base_dir, adapter=False) if base_dir else None,
        train_runtime_s=None,
    )
    return entry, summaries


def trained_model_figures(
    model_dir: Path, training: dict[str, Any], *, adapter: bool
) -> dict[str, Any]:
    """What a trained model's entry reports of its artifact and its training run."""
    return {
        "artifact_bytes": artifacts.artifact_bytes(model_dir, adapter=adapter),
        "train_runtime_s": training.get("train_runtime_s"),
        "peak_memory_bytes": training.get("peak_memory_bytes"),
        "training": training_summary(training),
    }


def score_adapter(
    base_ref: str,
    adapter_dir: Path,
    training: dict[str, Any],
    tokenizer: Any,
    test: TestSet,
    args: EvaluateArguments,
    dtype: Any,
    total_base: int,
) -> Scored:
    quantized = adapter_quantized(args, training)
    adapter_model = scored_adapter(base_ref, adapter_dir, quantized=quantized, dtype=dtype)
    entry, summaries = score_model("adapter", adapter_model, tokenizer, test, args)
    entry.update(
        method=training.get("method"),
        base_quantized_4bit=quantized,
        trainable_params=training.get("trainable_params")
        or artifacts.adapter_parameter_count(adapter_dir),
        total_params=training.get("total_params", total_base),
        **trained_model_figures(adapter_dir, training, adapter=True),
    )
    return entry, summaries


def score_trained_baseline(
    baseline_dir: Path, tokenizer: Any, test: TestSet, args: Any, dtype: Any
) -> Scored:
    training = artifacts.read_training_metrics(baseline_dir)
    baseline = model_loading.load_model(str(baseline_dir), quantize_4bit=False, dtype=dtype)
    entry, summaries = score_model("full_finetune", baseline, tokenizer, test, args)
    entry.update(
        trainable_params=training.get("trainable_params", total_parameters(baseline)),
        total_params=total_parameters(baseline),
        **trained_model_figures(baseline_dir, training, adapter=False),
    )
    return entry, summaries


def reused_baseline(
    args: EvaluateArguments, stored: dict[str, Any], test_sha256: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stored evaluation's full fine-tune entry, and where it came from."""
    stored_path = contracts.EVALUATION.path(args.baseline_evaluation)
    entry = {**stored["models"]["full_finetune"], "reused_from": str(stored_path)}
    source = {
        "kind": "reused",
        "evaluation": str(stored_path),
        "test_set_matches": stored[contracts.TEST_SET_SHA256] == test_sha256,
    }
    return entry, source


def evaluate_all(
    args: EvaluateArguments, scratch: Path, tracked: tracking.Tracked | None = None
) -> dict[str, Any]:
    if not torch.cuda.is_available():
        torch.set_flush_denormal(True)
    dtype = model_loading.resolve_dtype(args.precision)
    test = read_test_set(args)
    rows, test_sha256 = test.rows, test.sha256
    stored = (
        stored_baseline(args.baseline_evaluation, test_sha256, test.task.sha256)
        if args.baseline_evaluation
        else None
    )
    base_dir = (
        artifacts.unpack_if_archive(args.base_model, scratch)
        if Path(args.base_model).exists()
        else None
    )
    base_ref = str(base_dir) if base_dir else args.base_model  # a hub id otherwise
    tokenizer = model_loading.load_tokenizer(base_ref)
    smoke = smoke_request(test, tokenizer, args)  # before any scoring: a refusal costs nothing
    models: dict[str, dict[str, Any]] = {}
    predictions: dict[str, list[str]] = {}

    models["base"], predictions["base"] = score_base(
        base_ref, base_dir, tokenizer, test, args, dtype
    )
    adapter_dir = artifacts.unpack_if_archive(args.adapter_dir, scratch)
    training = artifacts.read_training_metrics(adapter_dir)
    models["adapter"], predictions["adapter"] = score_adapter(
        base_ref,
        adapter_dir,
        training,
        tokenizer,
        test,
        args,
        dtype,
        models["base"]["total_params"],
    )
    if args.baseline_dir:
        baseline_dir = artifacts.unpack_if_archive(args.baseline_dir, scratch)
        models["full_finetune"], predictions["full_finetune"] = score_trained_baseline(
            baseline_dir, tokenizer, test, args, dtype
        )
        baseline_source: dict[str, Any] = {"kind": "trained", "test_set_matches": True}
    else:
        assert stored is not None
        models["full_finetune"], baseline_source = reused_baseline(args, stored, test_sha256)

    for entry in models.values():
        total = entry.get("total_params")
        entry.setdefault(
            "trainable_percent", 100.0 * entry["trainable_params"] / total if total else None
        )
    evaluation = evaluation_document(
        args, models, test, baseline_source, training, dtype, tracked, smoke
    )
    out = Path(args.output_dir)
    evaluation = contracts.EVALUATION.write(out, evaluation)
    write_predictions(out / "predictions.jsonl", rows, predictions)
    write_documents(out, evaluation, test, predictions, tokenizer)
    return evaluation


def evaluation_document(
    args: EvaluateArguments,
    models: dict[str, dict[str, Any]],
    test: TestSet,
    baseline_source: dict[str, Any],
    training: dict[str, Any],
    dtype: Any,
    tracked: tracking.Tracked | None,
    smoke: dict[str, Any],
) -> dict[str, Any]:
    """evaluation.json's content: the models side by side, their comparisons and the gate, and
    what the figures were computed on and how."""
    return {
        "models": models,
        **compared(models, test.task.metric),
        "test_examples": len(test.rows),
        "example_ids": [row.get("id") for row in test.rows],
        contracts.TEST_SET_SHA256: test.sha256,
        # The task the adapter learned, as its spec file holds it: registration, the registry
        # and serving render its prompts from this.
        "task": {
            "name": test.task.name,
            "sha256": test.task.sha256,
            "spec": test.task.document(),
            # What a stage's deployer sends the new version before it serves: a test
            # example's body, built as every client builds one.
            "smoke_request": smoke,
        },
        "baseline_source": baseline_source,
        "base_model": args.base_model,
        "dataset_version": args.dataset_version or training.get("dataset_version"),
        "rouge": {
            "implementation": "rouge_score",
            "use_stemmer": True,
            "aggregation": "mean F1 over examples",
        },
        "generation": {
            "decoding": "greedy",
            "max_new_tokens": test.max_new_tokens(args),
            "precision": str(dtype).removeprefix("torch."),
            "device": "cuda" if torch.cuda.is_available() else "cpu",
        },
        contracts.GATE_THRESHOLDS: vars(task_gate(args, test.task.name)),
        # The experiment-tracking runs behind these figures (MLflow), where tracking is on.
        "tracking": {
            "evaluation_run_id": tracked.run_id if tracked else tracking.UNTRACKED,
            "experiment": tracked.experiment_name if tracked else None,
            # Where a local store's run opens in `mlflow ui`; None for a tracking server.
            "link": tracking.local_ui_link(tracked),
            "training_run_ids": {
                name: models[name].get("training", {}).get("tracking_run_id") or tracking.UNTRACKED
                for name in ("adapter", "full_finetune")
            },
        },
    }


SMOKE_MAX_NEW_TOKENS = 16


def smoke_request(test: TestSet, tokenizer: Any, args: EvaluateArguments) -> dict[str, Any]:
    """The request body of the first test example an endpoint takes: one whose text spells no
    control token, and whose prompt and answer fit the context (an endpoint refuses more)."""
    for row in test.rows:
        try:
            body = tasks.chat_request(test.task, row[contracts.INPUT_KEY], SMOKE_MAX_NEW_TOKENS)
        except tasks.TaskSpecError:
            continue
        cue = test.task.answer_cue
        prompt = prompts.causal_prompt_ids(tokenizer, body["messages"], cue=cue)
        # The endpoint's bound, whatever this evaluation's: LMI reads MAX_CONTEXT_TOKENS.
        if len(prompt) + SMOKE_MAX_NEW_TOKENS <= min(
            args.max_context_tokens, tasks.MAX_CONTEXT_TOKENS
        ):
            return body
    raise ValueError(
        "no test example can be sent to an endpoint: each spells a control token or is longer "
        f"than --max-context-tokens {min(args.max_context_tokens, tasks.MAX_CONTEXT_TOKENS)} "
        "allows"
    )


def write_predictions(
    path: Path, rows: list[dict[str, Any]], predictions: dict[str, list[str]]
) -> None:
    """predictions.jsonl: each test example with its reference and every model's summary."""
    with path.open("w", encoding="utf-8") as handle:
        for i, row in enumerate(rows):
            record = {
                "id": row.get("id"),
                "input": row[contracts.INPUT_KEY],
                "reference": row[contracts.TARGET_KEY],
            }
            record.update({name: outputs[i] for name, outputs in predictions.items()})
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def task_gate(args: EvaluateArguments, task: str) -> contracts.GateThresholds:
    """The gate's thresholds for the test set's task: its own where the stage gives it one."""
    for entry in args.task_gate:
        name, _, limits = entry.partition("=")
        tolerance, _, gain = limits.partition(",")
        if name == task:
            return contracts.GateThresholds(float(tolerance), float(gain))
    return contracts.GateThresholds(float(args.metric_tolerance), float(args.min_metric_gain))


def thresholds_of(evaluation: dict[str, Any]) -> contracts.GateThresholds:
    return contracts.GateThresholds(**evaluation[contracts.GATE_THRESHOLDS])


def write_documents(
    out: Path,
    evaluation: dict[str, Any],
    test: TestSet,
    predictions: dict[str, list[str]],
    tokenizer: Any,
) -> None:
    """The report and the model card, beside evaluation.json."""
    training = evaluation["models"]["adapter"].get("training", {})
    prompt_format = model_card.prompt_format(
        tokenizer, test.task, seq2seq=training.get("model_kind") == "seq2seq"
    )
    (out / "report.html").write_text(
        report.render(evaluation, test.rows, predictions, thresholds_of(evaluation)),
        encoding="utf-8",
    )
    (out / contracts.MODEL_CARD_MARKDOWN).write_text(
        model_card.markdown(evaluation, thresholds_of(evaluation), prompt_format, test.task),
        encoding="utf-8",
    )
    contracts.write_json_atomic(
        out / contracts.MODEL_CARD_SAGEMAKER,
        {"content": json.dumps(model_card.sagemaker_content(evaluation, prompt_format, test.task))},
    )


def main(argv: list[str] | None = None) -> int:
    logs.setup_logging()
    try:
        args = job_environment.parsed_arguments(EvaluateArguments, argv)
        job_environment.use_hub_token_from_secrets_manager()
        with tracking.run("evaluate", params=tracking.evaluation_params(args)) as tracked:
            evaluation = run(args, tracked)
            tracking.log_evaluation(tracked, evaluation, Path(args.output_dir))
    except (ValueError, FileNotFoundError, KeyError) as err:
        logger.error("error: %s", err)
        return 2
    delta = evaluation["comparisons"]
    vs_base, vs_full = (
        delta["adapter_vs_base"]["rougeL"],
        delta["adapter_vs_full_finetune"]["rougeL"],
    )
    passed, reason = contracts.gate_verdict(evaluation, thresholds_of(evaluation))
    logger.info(
        "adapter vs base rougeL %+.4f [%+.4f, %+.4f], vs full fine-tune %+.4f [%+.4f, %+.4f] "
        "(95%% intervals); gate: %s; wrote %s",
        vs_base["difference"], vs_base["low"], vs_base["high"],
        vs_full["difference"], vs_full["low"], vs_full["high"],
        reason if passed else f"fails: {reason}",
        args.output_dir,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
