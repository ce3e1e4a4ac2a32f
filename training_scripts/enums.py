"""The typed choices every part of the project names: the PEFT method a job trains and the
numeric precision it computes in. Host code (the pipeline config, the CLI) imports these too.
"""

from __future__ import annotations

import enum


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
