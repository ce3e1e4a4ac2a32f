"""How the jobs load what they train and score (training_scripts/model_loading.py), on tiny
random-weight models: a base in full precision or 4-bit NF4 with double quantization, an adapter
on its base, trainable and total parameters as peft counts them, a seq2seq model's decoder
start, and a model that is neither a folder nor reachable named with the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training_scripts import model_loading


def test_a_base_model_loads_in_full_precision_or_as_4bit_nf4_with_double_quantization(
    tiny_causal: Path,
) -> None:
    import bitsandbytes as bnb

    full = model_loading.load_model(str(tiny_causal), quantize_4bit=False, dtype=torch.float32)
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in full.modules())
    assert {p.dtype for p in full.parameters()} == {torch.float32}
    quantized = model_loading.load_model(str(tiny_causal), quantize_4bit=True, dtype=torch.bfloat16)
    layers = [m for m in quantized.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers
    state = layers[0].weight.quant_state
    assert (state.quant_type, state.nested, layers[0].compute_dtype) == (
        "nf4",
        True,
        torch.bfloat16,
    )


def test_a_seq2seq_model_without_a_decoder_start_starts_at_its_pad_token(
    tiny_seq2seq: Path, tmp_path: Path
) -> None:
    import json
    import shutil

    folder = shutil.copytree(tiny_seq2seq, tmp_path / "t5")
    config = json.loads((folder / "config.json").read_text())
    config["decoder_start_token_id"] = None
    config["pad_token_id"] = 3
    (folder / "config.json").write_text(json.dumps(config))
    model = model_loading.load_model(str(folder), quantize_4bit=False, dtype=torch.float32)
    assert model_loading.is_seq2seq(model.config)
    assert model.config.decoder_start_token_id == 3


def test_an_adapter_loads_on_its_base_and_counts_only_its_own_parameters(
    tiny_causal: Path, tmp_path: Path
) -> None:
    from peft import LoraConfig, get_peft_model

    base = model_loading.load_model(str(tiny_causal), quantize_4bit=False, dtype=torch.float32)
    total = sum(p.numel() for p in base.parameters())
    assert model_loading.count_parameters(base) == (total, total)  # everything trains
    torch.manual_seed(0)
    trained = get_peft_model(
        base, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False)
    )
    lora = sum(p.numel() for n, p in trained.named_parameters() if "lora_" in n)
    assert model_loading.count_parameters(trained) == (lora, total + lora)
    trained.save_pretrained(tmp_path / "adapter")
    loaded = model_loading.load_peft_model(
        str(tiny_causal), str(tmp_path / "adapter"), quantize_4bit=False, dtype=torch.float32
    )
    saved = {n: p for n, p in trained.named_parameters() if "lora_" in n}
    assert {n: p for n, p in loaded.named_parameters() if "lora_" in n}.keys() == saved.keys()
    assert all(torch.equal(p, saved[n]) for n, p in loaded.named_parameters() if "lora_" in n)
    assert model_loading.count_parameters(loaded) == (0, total + lora)  # loaded frozen
    # A 4-bit weight counts the parameters it packs, not its bytes.
    import bitsandbytes as bnb

    quantized = model_loading.load_peft_model(
        str(tiny_causal), str(tmp_path / "adapter"), quantize_4bit=True, dtype=torch.float32
    )
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in quantized.modules())
    assert model_loading.count_parameters(quantized) == (0, total + lora)
    half = model_loading.load_peft_model(
        str(tiny_causal), str(tmp_path / "adapter"), quantize_4bit=False, dtype=torch.bfloat16
    )
    assert half.get_base_model().model.embed_tokens.weight.dtype == torch.bfloat16


OFF = "the Hugging Face Hub is off (HF_HUB_OFFLINE=1, which the Makefile sets)"
ON = "the Hugging Face Hub did not serve it (404 Client Error)"


@pytest.mark.parametrize(
    ("offline", "why"),
    [("1", OFF), ("true", OFF), ("TRUE", OFF), ("yes", OFF), ("Yes", OFF),
     ("0", ON), ("false", ON), ("", ON), (None, ON)],
)  # fmt: skip
def test_a_model_neither_here_nor_on_the_hub_is_one_line_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, offline: str | None, why: str
) -> None:
    if offline is None:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    error = model_loading.unreachable_model("org/model", OSError("404 Client Error\nmore"))
    assert str(error) == (
        f"org/model: no such model folder, and {why}; pass a local model folder, or a hub id "
        "with network access (and a token for gated models)"
    )


def test_a_folders_own_broken_file_is_its_own_error_not_the_hubs(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(OSError) as broken:
        model_loading.load_model(str(tmp_path), quantize_4bit=False, dtype=torch.float32)
    assert not isinstance(broken.value, model_loading.ModelNotFoundError)
    assert "is not a valid JSON file" in str(broken.value)


def test_bf16_is_used_on_a_cpu_only_where_it_computes_natively(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert model_loading.cpu_computes_bf16() is bool(native)

    def missing() -> bool:
        raise RuntimeError("no mkldnn")

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", missing)
    assert model_loading.cpu_computes_bf16() is False


@pytest.mark.parametrize("native", [True, False])
def test_bf16_follows_what_onednn_says_of_this_cpu(
    monkeypatch: pytest.MonkeyPatch, native: bool
) -> None:
    """Both answers, whatever this machine's CPU: a CPU with AMX and one without."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    assert model_loading.cpu_computes_bf16() is native


@pytest.mark.parametrize(
    ("precision", "cuda", "cuda_bf16", "cpu_bf16", "dtype"),
    [
        ("bf16", False, False, False, torch.bfloat16),
        ("fp32", True, True, True, torch.float32),
        ("auto", True, True, False, torch.bfloat16),  # asked of the device: H100 too
        ("auto", True, False, True, torch.float32),
        ("auto", False, True, True, torch.bfloat16),  # a CPU with bf16 units
        ("auto", False, True, False, torch.float32),
    ],
)
def test_auto_precision_is_bf16_where_the_device_computes_it(
    monkeypatch: pytest.MonkeyPatch,
    precision: str,
    cuda: bool,
    cuda_bf16: bool,
    cpu_bf16: bool,
    dtype: torch.dtype,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: cuda_bf16)
    monkeypatch.setattr(model_loading, "cpu_computes_bf16", lambda: cpu_bf16)
    assert model_loading.resolve_dtype(precision) == dtype


@pytest.mark.parametrize(
    ("cuda", "environ", "expected"),
    [
        (True, {"LOCAL_RANK": "3"}, {"": 3}),  # torchrun's fourth process: the fourth GPU
        (True, {}, {"": 0}),  # a single-process job: the first GPU
        (False, {"LOCAL_RANK": "3"}, None),  # a CPU: loaded where read
        (False, {}, None),
    ],
)
def test_weights_load_onto_the_processs_own_gpu_and_stay_put_on_a_cpu(
    cuda: bool, environ: dict[str, str], expected: dict[str, int] | None
) -> None:
    assert model_loading.default_device_map(cuda, environ) == expected


def test_a_tokenizer_without_a_pad_token_pads_with_its_end_of_text(
    tiny_causal: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    shipped = AutoTokenizer.from_pretrained(tiny_causal)
    assert shipped.eos_token and shipped.eos_token != shipped.pad_token
    own_pad = model_loading.load_tokenizer(str(tiny_causal))
    assert own_pad.pad_token == shipped.pad_token  # a pad token of its own is kept
    shipped.pad_token = None
    shipped.save_pretrained(tmp_path)
    padless = model_loading.load_tokenizer(str(tmp_path))
    assert (padless.pad_token, padless.pad_token_id) == (shipped.eos_token, shipped.eos_token_id)


def test_the_hubs_own_words_say_why_a_model_could_not_be_fetched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")

    def refuse(model_path: str) -> None:
        raise OSError(f"{model_path} is not a valid model identifier\nsecond line")

    with pytest.raises(model_loading.ModelNotFoundError) as raised:
        model_loading.from_folder_or_hub(refuse, "org/missing")
    assert str(raised.value) == (
        "org/missing: no such model folder, and the Hugging Face Hub did not serve it "
        "(org/missing is not a valid model identifier); pass a local model folder, or a hub id "
        "with network access (and a token for gated models)"
    )
