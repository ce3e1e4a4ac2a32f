"""What the jobs measure and how they show it: peak memory, sizes on disk, byte counts for
people, and a long step's progress line with the time left.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Any


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


def format_bytes(value: float | None) -> str:
    """1536 -> '1.5 KB'; None -> 'n/a'."""
    if value is None:
        return "n/a"
    if value < 1024:
        return f"{value:.0f} B"
    for unit in ("KB", "MB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} GB"  # and beyond: no unit past GB


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
