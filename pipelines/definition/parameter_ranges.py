"""The values each numeric run parameter may take, checked where a run starts (`run-local`,
`pipeline start`) before any job runs. Kept apart from the builder: checking a value must not
import the SageMaker SDK, which needs a region to import."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from training_scripts.tasks import MAX_CONTEXT_TOKENS


@dataclass(frozen=True)
class Range:
    """The values a numeric run parameter may take."""

    low: float
    high: float
    low_included: bool = True
    whole: bool = False  # an Integer parameter
    or_zero: bool = False  # 0 also, meaning "the default"

    def holds(self, value: float) -> bool:
        if not math.isfinite(value) or (self.whole and not value.is_integer()):
            return False
        if self.or_zero and value == 0:
            return True
        above = value >= self.low if self.low_included else value > self.low
        return above and value <= self.high

    def __str__(self) -> str:
        bounds = f"{'[' if self.low_included else '('}{self.low:g}, {self.high:g}]"
        kind = "a whole number in " if self.whole else "in "
        return f"{'0 or ' if self.or_zero else ''}{kind}{bounds}"


# A value the jobs would refuse, or one that would run for ever (Epochs=1e308), fails in one
# line naming the parameter, not minutes later in a job.
PARAMETER_RANGES: dict[str, Range] = {
    "LoraRank": Range(1, 1024, whole=True),
    "LoraAlpha": Range(1, 4096, whole=True),
    "Epochs": Range(0, 1000, low_included=False),
    "MinSteps": Range(0, 1_000_000, whole=True),
    "LearningRate": Range(0, 1),  # 0: the method's default
    "TrainInstanceCount": Range(1, 100, whole=True),
    # 0: the device's default; else a micro-batch holds at least one whole example.
    "TokenBudget": Range(MAX_CONTEXT_TOKENS, 1_048_576, whole=True, or_zero=True),
}


def parameter_range_error(name: str, value: Any) -> str | None:
    """Why a run parameter's value is refused, or None when it may run."""
    allowed = PARAMETER_RANGES.get(name)
    if allowed is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not allowed.holds(number):
        return f"parameter {name} must be {allowed}, got {value!r}"
    return None
