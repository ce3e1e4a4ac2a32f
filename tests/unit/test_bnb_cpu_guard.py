"""bitsandbytes 0.50 on CPU repacks 4-bit weights on an eval-mode forward without grad, after
which gradients through them are garbage. Evaluation must go through model_loading.evaluation_mode,
and training must refuse a repacked model. Checked against a dequantized fp32 reference."""

from __future__ import annotations

from pathlib import Path

import bitsandbytes as bnb
import pytest
import torch
from peft import LoraConfig, get_peft_model

from training_scripts.model_loading import (
    assert_4bit_weights_trainable,
    evaluation_mode,
    load_model,
    load_tokenizer,
)

LORA = dict(
    r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", init_lora_weights=False
)


def qlora_and_reference(model_dir: Path):
    torch.manual_seed(0)
    quantized = get_peft_model(
        load_model(str(model_dir), quantize_4bit=True, dtype=torch.float32), LoraConfig(**LORA)
    )
    reference = get_peft_model(
        load_model(str(model_dir), quantize_4bit=False, dtype=torch.float32), LoraConfig(**LORA)
    )
    # The reference holds exactly the weights the 4-bit model computes with.
    reference_modules = dict(reference.named_modules())
    for name, module in quantized.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            dequantized = bnb.functional.dequantize_4bit(
                module.weight.data, module.weight.quant_state
            ).float()
            reference_modules[name].weight.data.copy_(dequantized)
    reference.load_state_dict(
        {k: v for k, v in quantized.state_dict().items() if "lora_" in k}, strict=False
    )
    return quantized, reference


def lora_gradients(model, batch) -> dict[str, torch.Tensor]:
    model.train()
    model.zero_grad()
    model(**batch, labels=batch["input_ids"]).loss.backward()
    return {
        n: p.grad.detach().flatten().clone() for n, p in model.named_parameters() if "lora_" in n
    }


def min_cosine(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return min(float(torch.nn.functional.cosine_similarity(a[n], b[n], dim=0)) for n in a)


REPACKED = (
    "a 4-bit layer was repacked for CPU inference by an eval-mode forward; training it now "
    "would use wrong gradients (bitsandbytes 0.50 CPU). Evaluate inside "
    "model_loading.evaluation_mode(model), or reload the model before training."
)


@pytest.fixture
def batch(tiny_causal: Path) -> dict[str, torch.Tensor]:
    tokenizer = load_tokenizer(str(tiny_causal))
    return dict(
        tokenizer(
            [
                "#Person1#: I need a ticket to Boston on Friday.",
                "#Person2#: Your card is blocked now.",
            ],
            return_tensors="pt",
            padding=True,
        )
    )


def test_evaluation_mode_keeps_qlora_gradients_correct(tiny_causal: Path, batch) -> None:
    quantized, reference = qlora_and_reference(tiny_causal)
    expected = lora_gradients(reference, batch)
    assert min_cosine(lora_gradients(quantized, batch), expected) > 0.99

    with evaluation_mode(quantized):
        quantized(**batch)
    assert_4bit_weights_trainable(quantized)  # nothing was repacked
    assert min_cosine(lora_gradients(quantized, batch), expected) > 0.99


def test_plain_eval_forward_is_caught_before_training(tiny_causal: Path, batch) -> None:
    quantized, _ = qlora_and_reference(tiny_causal)
    layer = next(m for m in quantized.modules() if isinstance(m, bnb.nn.Linear4bit))
    if not getattr(layer, "support_avx512bf16_for_cpu", False):
        pytest.skip("this CPU has no AVX512-BF16: bitsandbytes never repacks here")
    quantized.eval()
    with torch.no_grad():
        quantized(**batch)
    with pytest.raises(RuntimeError) as refused:
        assert_4bit_weights_trainable(quantized)
    assert str(refused.value) == REPACKED


def test_a_layer_marked_repacked_is_refused_on_any_cpu(tiny_causal: Path) -> None:
    """What bitsandbytes leaves on a 4-bit layer it repacked for CPU inference (only CPUs with
    AVX512-BF16 repack, so the mark is set here by hand): any one such layer is refused."""
    quantized, _ = qlora_and_reference(tiny_causal)
    layers = [m for m in quantized.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) > 1
    assert_4bit_weights_trainable(quantized)
    layers[-1].weight.quant_state.packing_format_for_cpu = True
    with pytest.raises(RuntimeError) as refused:
        assert_4bit_weights_trainable(quantized)
    assert str(refused.value) == REPACKED
    layers[-1].weight.quant_state.packing_format_for_cpu = False
    assert_4bit_weights_trainable(quantized)
