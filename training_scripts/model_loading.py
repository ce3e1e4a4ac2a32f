"""Model and tokenizer loading (a folder or a hub id, 4-bit NF4 for QLoRA), the compute dtype
for a precision on this device, parameter counts, and the bitsandbytes CPU guard.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

if __package__:  # imported as part of the training_scripts package
    from . import enums
else:  # run as a file in a SageMaker job: sibling modules are top-level
    import enums


def resolve_dtype(precision: enums.Precision | str):
    import torch

    precision = enums.Precision(precision)
    if precision is enums.Precision.BF16:
        return torch.bfloat16
    if precision is enums.Precision.FP32:
        return torch.float32
    # Ask the device, not the compute capability: capability()[0] == 8 turns bf16 off on H100.
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_computes_bf16() else torch.float32


def cpu_computes_bf16() -> bool:
    """True on CPUs with native bf16 matrix units (AVX512-BF16, AMX), where bf16 matmuls run
    faster than fp32; elsewhere bf16 is emulated and slower."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def is_seq2seq(config: Any) -> bool:
    return bool(getattr(config, "is_encoder_decoder", False))


class ModelNotFoundError(ValueError):
    """A model that is neither a folder here nor reachable on the Hugging Face Hub."""


def unreachable_model(model_path: str, err: OSError) -> ModelNotFoundError:
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}
    why = (
        "the Hugging Face Hub is off (HF_HUB_OFFLINE=1, which the Makefile sets)"
        if offline
        else f"the Hugging Face Hub did not serve it ({str(err).splitlines()[0]})"
    )
    return ModelNotFoundError(
        f"{model_path}: no such model folder, and {why}; pass a local model folder, or a hub id "
        "with network access (and a token for gated models)"
    )


def from_folder_or_hub(load: Any, model_path: str) -> Any:
    """`load(model_path)`; a hub id that cannot be fetched is one line naming the fix."""
    try:
        return load(model_path)
    except OSError as err:
        if Path(model_path).is_dir():
            raise  # a folder's own problem (a missing file), which the error names
        raise unreachable_model(model_path, err) from None


def load_tokenizer(model_path: str):
    from transformers import AutoTokenizer

    tokenizer = from_folder_or_hub(AutoTokenizer.from_pretrained, model_path)
    if tokenizer.pad_token_id is None:
        # Causal LMs often ship without a pad token; padding positions are masked anyway.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def default_device_map(cuda: bool, environ: Mapping[str, str]) -> dict[str, int] | None:
    """Where the weights load unless the caller says: on a GPU, the process's own one (torchrun
    starts one process per GPU and names it LOCAL_RANK); on a CPU, where they are read."""
    return {"": int(environ.get("LOCAL_RANK", "0"))} if cuda else None


def load_model(model_path: str, *, quantize_4bit: bool, dtype, device_map: Any = None):
    """The base model, 4-bit NF4 with double quantization when asked (QLoRA)."""
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        BitsAndBytesConfig,
    )

    config = from_folder_or_hub(AutoConfig.from_pretrained, model_path)
    model_class = AutoModelForSeq2SeqLM if is_seq2seq(config) else AutoModelForCausalLM
    kwargs: dict[str, Any] = {"dtype": dtype}
    if quantize_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    if device_map is None:
        device_map = default_device_map(torch.cuda.is_available(), os.environ)
    if device_map is not None:
        kwargs["device_map"] = device_map
    model = model_class.from_pretrained(model_path, **kwargs)
    if is_seq2seq(model.config) and model.config.decoder_start_token_id is None:
        model.config.decoder_start_token_id = model.config.pad_token_id
    return model


def load_peft_model(base_path: str, adapter_path: str, *, quantize_4bit: bool, dtype):
    from peft import PeftModel

    base = load_model(base_path, quantize_4bit=quantize_4bit, dtype=dtype)
    return PeftModel.from_pretrained(base, adapter_path)


# bitsandbytes 0.50 repacks a 4-bit weight for a CPU inference kernel on the first eval-mode
# forward without grad. Training afterwards shows a plausible loss, but gradients through the
# repacked layers are garbage. So evaluation of a model that will train again keeps the 4-bit
# layers in training mode (they hold no dropout, so their output is the same), and training
# refuses to start on a repacked model.


def _linear4bit_modules(model: Any) -> Iterator[Any]:
    try:
        import bitsandbytes as bnb
    except ImportError:  # pragma: no cover - bitsandbytes is a pinned dependency
        return iter(())
    return (m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit))


@contextlib.contextmanager
def evaluation_mode(model: Any) -> Iterator[None]:
    """model.eval() and no_grad, safe for a 4-bit model that trains afterwards."""
    import torch

    was_training = model.training
    model.eval()
    for module in _linear4bit_modules(model):
        module.train()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def assert_4bit_weights_trainable(model: Any) -> None:
    for module in _linear4bit_modules(model):
        quant_state = getattr(module.weight, "quant_state", None)
        if getattr(quant_state, "packing_format_for_cpu", False):
            raise RuntimeError(
                "a 4-bit layer was repacked for CPU inference by an eval-mode forward; training it "
                "now would use wrong gradients (bitsandbytes 0.50 CPU). Evaluate inside "
                "model_loading.evaluation_mode(model), or reload the model before training."
            )


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters."""
    if hasattr(model, "get_nb_trainable_parameters"):
        # peft counts a packed 4-bit weight as the parameters it stores, not its bytes.
        return model.get_nb_trainable_parameters()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
