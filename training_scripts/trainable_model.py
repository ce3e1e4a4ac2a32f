"""The model a method trains: the base (4-bit NF4 for QLoRA), the PEFT adapter or prompt on it,
what the adapter's configuration records, the artifacts a run writes (the adapter alone or the
full model, tokenizer, model card, metrics), and the adapter merged into an unquantized base."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__:  # imported as part of the training_scripts package (pipeline, tests, benchmarks)
    from . import contracts, enums, model_card, model_loading, tasks
else:  # run as a file in the SageMaker job: sibling modules are top-level
    import contracts
    import enums
    import model_card
    import model_loading
    import tasks

import torch

if TYPE_CHECKING:
    from transformers import Trainer

    from .train import TrainArguments


def build_model(args: TrainArguments, dtype: torch.dtype):
    from peft import (
        LoraConfig,
        PromptTuningConfig,
        PromptTuningInit,
        TaskType,
        get_peft_model,
        prepare_model_for_kbit_training,
    )

    quantize = args.method is enums.PeftMethod.QLORA
    # Full fine-tuning keeps fp32 master weights (mixed precision runs through autocast);
    # adapters train on a base stored in the compute dtype.
    model = model_loading.load_model(
        args.model_name_or_path,
        quantize_4bit=quantize,
        dtype=dtype if args.method.is_adapter else torch.float32,
    )
    model.config.use_cache = False
    seq2seq = model_loading.is_seq2seq(model.config)
    task_type = TaskType.SEQ_2_SEQ_LM if seq2seq else TaskType.CAUSAL_LM
    if quantize:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=args.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    if args.method.is_lora:
        modules = (
            args.target_modules
            if args.target_modules == "all-linear"
            else [m.strip() for m in args.target_modules.split(",") if m.strip()]
        )
        config = LoraConfig(
            r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            target_modules=modules,
            bias="none",
            task_type=task_type,
        )
        return get_peft_model(model, config), seq2seq
    if args.method is enums.PeftMethod.PROMPT_TUNING:
        config = PromptTuningConfig(
            task_type=task_type,
            prompt_tuning_init=PromptTuningInit.TEXT,
            prompt_tuning_init_text=args.prompt_tuning_init_text,
            num_virtual_tokens=args.num_virtual_tokens,
            tokenizer_name_or_path=args.model_name_or_path,
        )
        return get_peft_model(model, config), seq2seq
    return model, seq2seq


def lora_lineage(model: Any) -> dict[str, Any]:
    config = getattr(model, "peft_config", {}).get("default")
    if config is None:
        return {}
    lineage: dict[str, Any] = {
        "peft_type": str(
            config.peft_type.value if hasattr(config.peft_type, "value") else config.peft_type
        )
    }
    if hasattr(config, "r"):
        lineage.update(
            r=config.r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=sorted(config.target_modules),
        )
    if hasattr(config, "num_virtual_tokens"):
        lineage.update(num_virtual_tokens=config.num_virtual_tokens)
    return lineage


def merge_adapter(args: TrainArguments, adapter_dir: Path) -> Path:
    """Merge into a freshly loaded unquantized base: merging into the 4-bit base would
    re-quantize the sum and change the model's outputs."""
    dtype = (
        model_loading.resolve_dtype(args.precision) if torch.cuda.is_available() else torch.float32
    )
    merged = model_loading.load_peft_model(
        args.model_name_or_path, str(adapter_dir), quantize_4bit=False, dtype=dtype
    ).merge_and_unload()
    target = adapter_dir / "merged"
    merged.save_pretrained(target)
    model_loading.load_tokenizer(args.model_name_or_path).save_pretrained(target)
    return target


def save_outputs(
    args: TrainArguments,
    trainer: Trainer,
    tokenizer: Any,
    task: tasks.TaskSpec,
    metrics: dict[str, Any],
) -> None:
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.method.is_adapter:
        trainer.model.save_pretrained(out)  # adapter_config.json + adapter_model.safetensors only
    else:
        trainer.save_model(str(out))
    tokenizer.save_pretrained(out)
    # The task travels with the model: whoever serves it renders the prompts it learned.
    contracts.write_json_atomic(out / tasks.TASK_SPEC_FILE, task.document())
    if args.method.is_adapter:
        # peft writes an empty model card template; this one says what the adapter is.
        (out / "README.md").write_text(
            model_card.adapter_readme(
                metrics,
                model_card.prompt_format(
                    tokenizer, task, seq2seq=metrics["model_kind"] == "seq2seq"
                ),
                task,
            ),
            encoding="utf-8",
        )
    if args.merge:
        metrics["merged_dir"] = str(merge_adapter(args, out))
    contracts.TRAINING_METRICS.write(out, metrics)
    contracts.TRAINING_METRICS.write(args.output_data_dir, metrics)
