"""What the benchmark measures besides time: peak memory, the analytic memory floor, the
eval-loss curve during training, padding efficiency, and the device's matrix-product peak."""

from __future__ import annotations

import contextlib
import ctypes
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

# --- peak memory ---------------------------------------------------------------------------


def release_free_heap() -> None:
    """Give the heap's free pages back to the OS (glibc malloc_trim), so that the resident
    set measured as a baseline holds only live memory and what a run frees is not counted
    against the next one."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _status_bytes(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"/proc/self/status has no {field_name}")


class PeakMemory:
    """Peak memory of a phase, above what the process held at `baseline()`.

    CUDA: the caching allocator's max_memory_allocated. CPU: the kernel's high-water mark of
    the resident set (VmHWM), reset at `start` through /proc/self/clear_refs, so no sampling
    thread competes with training for the cores. It includes allocator slack and the
    interpreter's growth: an upper bound of the live tensors."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._base = 0

    def baseline(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            self._base = torch.cuda.memory_allocated()
        else:
            release_free_heap()
            self._base = _status_bytes("VmRSS")

    def start(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS (Linux >= 4.0)

    def stop(self) -> int:
        """Peak bytes above the baseline since `start`."""
        if self.device == "cuda":
            torch.cuda.synchronize()
            return int(torch.cuda.max_memory_allocated()) - self._base
        return max(0, _status_bytes("VmHWM") - self._base)


# --- the analytic floor --------------------------------------------------------------------

# Optimizer state per trainable parameter, in bytes; None = two moments in the parameter dtype.
OPTIMIZER_STATE_BYTES: dict[str, float | None] = {
    "adamw_torch": None,
    "adamw_torch_fused": None,
    "paged_adamw_8bit": 2.0,  # two 8-bit moments (block-wise scales are <1%)
    "adamw_8bit": 2.0,
}
NF4_BLOCK = 64  # bitsandbytes' 4-bit block size; double quantization groups 256 blocks


def nf4_bytes(numel: int, *, double_quant: bool = True) -> float:
    """A 4-bit NF4 weight: half a byte per value plus one scale per block (8-bit with
    double quantization, plus an fp32 scale per 256 scales; else fp32)."""
    blocks = numel / NF4_BLOCK
    scales = blocks * 1 + blocks / 256 * 4 if double_quant else blocks * 4
    return numel / 2 + scales


@dataclass(frozen=True)
class MemoryFloor:
    weights: float
    gradients: float
    optimizer_state: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer_state


def memory_floor(model: Any, optimizer: str) -> MemoryFloor:
    """Weights at their storage precision, plus a gradient and the optimizer state for each
    trainable parameter; activations excluded (they depend on the batch)."""
    state_bytes = OPTIMIZER_STATE_BYTES.get(optimizer)
    weights = gradients = state = 0.0
    for parameter in model.parameters():
        quant_state = getattr(parameter, "quant_state", None)
        if quant_state is not None:  # bitsandbytes Params4bit: stored packed
            numel = 1
            for size in quant_state.shape:
                numel *= size
            weights += nf4_bytes(numel, double_quant=getattr(quant_state, "nested", False))
            continue
        size = parameter.numel() * parameter.element_size()
        weights += size
        if parameter.requires_grad:
            gradients += size
            state += 2 * size if state_bytes is None else parameter.numel() * state_bytes
    return MemoryFloor(weights=weights, gradients=gradients, optimizer_state=state)


def matmul_parameters(model: Any) -> int:
    """Logical parameters of the model's matrix products (4-bit weights counted unpacked);
    the embedding lookup is not a product, but a tied LM head is."""
    total = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Linear) and weight is not None:
            quant_state = getattr(weight, "quant_state", None)
            if quant_state is not None:
                numel = 1
                for size in quant_state.shape:
                    numel *= size
                total += numel
            else:
                total += weight.numel()
    return total


# --- eval loss during training -------------------------------------------------------------


@dataclass
class CurvePoint:
    step: int
    train_seconds: float
    eval_loss: float


@dataclass
class TrainClock(TrainerCallback):
    """Training wall time with evaluation paused, and an eval-loss point every `every` steps.

    `evaluate` is the recipe's own validation loss (summary tokens of held-out examples), so
    both arms are scored by the same function."""

    evaluate: Callable[[], float]
    every: int
    synchronize: Callable[[], None] = lambda: None
    points: list[CurvePoint] = field(default_factory=list)
    started: float = 0.0
    paused: float = 0.0
    ended: float | None = None

    def now(self) -> float:
        self.synchronize()
        return time.perf_counter()

    @property
    def train_seconds(self) -> float:
        end = self.ended if self.ended is not None else self.now()
        return end - self.started - self.paused

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = self.now()
        self.paused = 0.0
        self.ended = None

    def on_step_end(self, args, state, control, **kwargs):
        if (
            self.every > 0
            and state.global_step % self.every == 0
            and state.global_step < state.max_steps
        ):
            clock = self.train_seconds
            paused_at = self.now()
            self.points.append(CurvePoint(state.global_step, clock, self.evaluate()))
            self.paused += self.now() - paused_at

    def on_train_end(self, args, state, control, **kwargs):
        self.ended = self.now()


def time_to_quality(points: list[CurvePoint], target_loss: float) -> float | None:
    """Training seconds until the eval loss first reaches `target_loss`, interpolated
    linearly between eval points; None if it never does."""
    previous: CurvePoint | None = None
    for point in points:
        if point.eval_loss <= target_loss:
            if previous is None or previous.eval_loss == point.eval_loss:
                return point.train_seconds
            share = (previous.eval_loss - target_loss) / (previous.eval_loss - point.eval_loss)
            return previous.train_seconds + share * (point.train_seconds - previous.train_seconds)
        previous = point
    return None


# --- padding -------------------------------------------------------------------------------


def padding_efficiency(rows: list[dict[str, list[int]]], collator: Any, batch_size: int) -> float:
    """Real tokens / processed positions over the batches `collator` makes of `rows`, in order."""
    real = processed = 0
    for start in range(0, len(rows), batch_size):
        batch = collator(rows[start : start + batch_size])
        ids = batch["input_ids"]
        processed += ids.numel()
        mask = batch.get("attention_mask")
        real += int(mask.sum()) if mask is not None else ids.numel()
    return real / processed if processed else 0.0


# --- the device's peak -----------------------------------------------------------------------


def matmul_peak_flops(device: str, dtype: torch.dtype, *, size: int, repeats: int = 10) -> float:
    """FLOP/s of a square matrix product on random data, the mean of `repeats` after warm-up:
    the achievable peak that MFU is measured against."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * size**3 * repeats / (time.perf_counter() - started)
