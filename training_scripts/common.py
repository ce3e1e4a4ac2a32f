"""What preprocess.py, train.py and evaluate.py share: SageMaker paths, logging, the PEFT
method enum, model and tokenizer loading, the prompt format, and the bitsandbytes CPU guard.

This folder is uploaded as the SageMaker code channel and run as `python train.py ...`, where
its modules import each other as top-level modules; the project (pipeline, tests, benchmarks)
imports it as the `training_scripts` package. It depends only on what requirements.lock installs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import logging
import os
import resource
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Fields of the preprocessed splits that train.py and evaluate.py read.
INPUT_KEY = "input"
TARGET_KEY = "target"
SPLITS = ("train", "validation", "test")
SPLIT_FILE = "data.jsonl"

INSTRUCTION = "Summarize the following dialogue in one or two sentences."
SEQ2SEQ_PREFIX = "summarize: "


# Loggers of the project's own code; everything else (transformers, the SageMaker SDK, boto)
# logs at WARNING unless asked to be verbose.
PROJECT_LOGGERS = ("peftops", "preprocess", "train", "evaluate")


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record is emitted (a test runner or a
    redirection may replace it after logging was set up)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


# The SageMaker SDK warns about every field it leaves out of a pipeline definition, which is
# what building one offline means: only its errors are shown unless verbose.
QUIET_LIBRARIES = ("sagemaker",)


def _not_the_optional_hub_kernel(record: logging.LogRecord) -> bool:
    """bitsandbytes, on CPUs with AVX512-BF16, tries at import to fetch an optional CPU kernel
    from the Hugging Face Hub through the `kernels` package and warns on every import when it
    cannot. Nothing here installs that package (isolated jobs could not download the kernel
    anyway): bitsandbytes then uses its own CPU path, the one these scripts are tested with."""
    return "kernels-community" not in record.getMessage()


# A filter on the logger itself: it holds before logging is set up, for any handler.
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_not_the_optional_hub_kernel)


def _project_or_warning(record: logging.LogRecord) -> bool:
    # Libraries set their own loggers to INFO or DEBUG, so the root level alone does not keep
    # their chatter out.
    top = record.name.split(".")[0]
    if top in PROJECT_LOGGERS:
        return True
    return record.levelno >= (logging.ERROR if top in QUIET_LIBRARIES else logging.WARNING)


def setup_logging(*, verbose: bool = False) -> None:
    """The one logging setup of the scripts and the CLI: `<logger>: <message>` on stderr; other
    libraries' records only from WARNING up, unless verbose."""
    handler = _CurrentStderr()
    if not verbose:
        handler.addFilter(_project_or_warning)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(name)s: %(message)s",
        handlers=[handler],
        force=True,
    )
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)


# Set on jobs of a deployment with a gated base model: the ARN of the secret, never the token.
HUB_TOKEN_SECRET_VARIABLE = "HF_TOKEN_SECRET_ARN"


class HubTokenError(ValueError):
    """The Hugging Face token secret cannot be read; the message names the secret and fix."""


def use_hub_token_from_secrets_manager() -> bool:
    """Gated base models (Llama, Gemma, Mistral) need a Hugging Face token. A job is given the
    ARN of a Secrets Manager secret holding it; the token is read here, at start, into this
    process's HF_TOKEN (which the Hub client reads) and is never logged or written. The secret
    holds the token, or a JSON object with an `HF_TOKEN` key. Returns whether it was set."""
    arn = os.environ.get(HUB_TOKEN_SECRET_VARIABLE, "")
    if not arn or os.environ.get("HF_TOKEN"):
        return False
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    region = arn.split(":")[3] if arn.count(":") >= 6 else None
    try:
        value = boto3.client("secretsmanager", region_name=region).get_secret_value(SecretId=arn)
    except (BotoCoreError, ClientError) as err:
        raise HubTokenError(
            f"cannot read the Hugging Face token secret {arn} ({type(err).__name__}); check that "
            "it exists and that the stage's hf_token_secret_arn names it"
        ) from None
    secret = value.get("SecretString", "").strip()
    if secret.startswith("{"):
        secret = str(json.loads(secret).get("HF_TOKEN", "")).strip()
    if not secret:
        raise HubTokenError(f"the secret {arn} holds no Hugging Face token (or no HF_TOKEN key)")
    os.environ["HF_TOKEN"] = secret
    return True


class PeftMethod(enum.StrEnum):
    QLORA = "qlora"  # LoRA on a 4-bit NF4 base: least memory
    LORA = "lora"  # LoRA on an unquantized base
    PROMPT_TUNING = "prompt_tuning"  # trainable virtual tokens only: smallest adapter
    FULL = "full"  # every weight trains: the baseline the adapters are judged against

    @property
    def is_adapter(self) -> bool:
        return self is not PeftMethod.FULL

    @property
    def is_lora(self) -> bool:
        return self in (PeftMethod.QLORA, PeftMethod.LORA)


class Precision(enum.StrEnum):
    AUTO = "auto"  # bf16 where the hardware computes it natively, else fp32
    BF16 = "bf16"
    FP32 = "fp32"


def sagemaker_path(env_var: str | None, container_path: str, local_path: str) -> str:
    """SageMaker's environment variable if set, the container path inside a SageMaker job,
    else a local folder, so the same script runs in a container and on a laptop."""
    if env_var and os.environ.get(env_var):
        return os.environ[env_var]
    if Path("/opt/ml").is_dir():
        return container_path
    return local_path


def sagemaker_path_field(
    container_path: str, local_path: str, help: str, *, env_var: str | None = None
) -> Any:
    """A path argument whose default is `sagemaker_path(...)`, resolved when parsed."""
    return dataclasses.field(
        default_factory=lambda: sagemaker_path(env_var, container_path, local_path),
        metadata={"help": help},
    )


def resolve_dtype(precision: Precision | str):
    import torch

    precision = Precision(precision)
    if precision is Precision.BF16:
        return torch.bfloat16
    if precision is Precision.FP32:
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


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def split_file(directory: str | Path) -> Path:
    """The JSONL file of a split folder (a SageMaker channel holds one)."""
    directory = Path(directory)
    if directory.is_file():
        return directory
    candidate = directory / SPLIT_FILE
    if candidate.is_file():
        return candidate
    files = sorted(directory.glob("*.jsonl"))
    if len(files) != 1:
        raise FileNotFoundError(
            f"{directory}: expected one preprocessed split file ({SPLIT_FILE}); found "
            f"{[f.name for f in files] or 'none'}. Run preprocess.py and point at its output."
        )
    return files[0]


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
    if device_map is None and torch.cuda.is_available():
        device_map = {"": int(os.environ.get("LOCAL_RANK", "0"))}
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


# --- prompt format -------------------------------------------------------------------------


def render_prompt(tokenizer: Any, dialogue: str, *, seq2seq: bool) -> str:
    """The text a model sees before its summary; train and evaluate must agree on it."""
    if seq2seq:
        return SEQ2SEQ_PREFIX + dialogue
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": f"{INSTRUCTION}\n\n{dialogue}"}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return f"{INSTRUCTION}\n\n{dialogue}\n\nSummary:"


_SLOT = "\x00dialogue\x00"  # where the dialogue goes in a rendered prompt


def control_tokens(tokenizer: Any) -> tuple[str, ...]:
    """The strings a tokenizer turns into control tokens (`<|im_start|>`, `</s>`, ...)."""
    return tuple(t for t in tokenizer.all_special_tokens if t)


def holds_control_tokens(tokenizer: Any, text: str) -> bool:
    return any(token in text for token in control_tokens(tokenizer))


def plain_text_ids(tokenizer: Any, text: str) -> list[int]:
    """Data as text only: a `<|im_end|>` typed into a record stays characters and never
    becomes a control token that ends the turn or starts another (prompt injection)."""
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def prompt_ids(tokenizer: Any, dialogue: str) -> list[int]:
    # A chat template writes its own special tokens; a plain prompt gets the tokenizer's BOS.
    add_special = not getattr(tokenizer, "chat_template", None)
    if not holds_control_tokens(tokenizer, dialogue):
        text = render_prompt(tokenizer, dialogue, seq2seq=False)
        return tokenizer(text, add_special_tokens=add_special)["input_ids"]
    # The template's tokens from the template, the dialogue's from the dialogue as text.
    before, _, after = render_prompt(tokenizer, _SLOT, seq2seq=False).partition(_SLOT)
    return [
        *tokenizer(before, add_special_tokens=add_special)["input_ids"],
        *plain_text_ids(tokenizer, dialogue),
        *tokenizer(after, add_special_tokens=False)["input_ids"],
    ]


def target_ids(tokenizer: Any, summary: str, *, chat: bool) -> list[int]:
    text = summary if chat else " " + summary
    return [*plain_text_ids(tokenizer, text), tokenizer.eos_token_id]


def truncate_words_to_tokens(tokenizer: Any, text: str, max_tokens: int) -> str:
    """`text` cut at a token boundary so that it encodes to at most `max_tokens` tokens."""
    encoding = tokenizer(
        text, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True
    )
    offsets = encoding["offset_mapping"]
    if len(offsets) <= max_tokens:
        return text
    if max_tokens <= 0:
        return ""
    return text[: offsets[max_tokens - 1][1]]


# --- bitsandbytes on CPU -------------------------------------------------------------------
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
                "common.evaluation_mode(model), or reload the model before training."
            )


# --- measurements --------------------------------------------------------------------------


def peak_memory() -> dict[str, Any]:
    import torch

    if torch.cuda.is_available():
        return {
            "peak_memory_bytes": int(torch.cuda.max_memory_allocated()),
            "peak_memory_kind": "cuda_max_allocated",
        }
    # ru_maxrss is KiB on Linux, bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024
    return {"peak_memory_bytes": int(rss * scale), "peak_memory_kind": "cpu_peak_rss"}


def directory_size(path: str | Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters."""
    if hasattr(model, "get_nb_trainable_parameters"):
        # peft counts a packed 4-bit weight as the parameters it stores, not its bytes.
        return model.get_nb_trainable_parameters()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def format_bytes(value: float | None) -> str:
    """1536 -> '1.5 KB'; None -> 'n/a'."""
    if value is None:
        return "n/a"
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def progress(done: int, total: int, elapsed_s: float, *, since: int = 0) -> str:
    """'8/13 (62%), 24s elapsed, about 15s left': a long step's progress line, the time left
    extrapolated from the pace of the items done since `since` (a resumed run's own steps)."""
    ran = done - since
    share = done / total if total else 1.0
    estimate = (
        f"about {elapsed_s / ran * (total - done):.0f}s left"
        if ran > 0
        else "time left not known yet"
    )
    return f"{done}/{total} ({share:.0%}), {elapsed_s:.0f}s elapsed, {estimate}"
