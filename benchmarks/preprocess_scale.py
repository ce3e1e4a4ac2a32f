"""Benchmark: preprocess.py at scale, as its job runs it (a process per run), side by side with
a baseline copy of the script.

    .venv/bin/python -m benchmarks.preprocess_scale                  # make bench-preprocess
    .venv/bin/python -m benchmarks.preprocess_scale --baseline old/preprocess.py

Two inputs, generated the same way every time: 200,000 dialogue records in one JSONL file
(throughput), and one 50 MB record among ten small ones (memory per record). Each script runs
on each input `--repeats` times, alternating ours and the baseline's; the table and the JSON
give per arm the median wall time (process start to exit), records per second and the peak
resident memory of the process (its own high-water mark, read as it exits).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

OURS = Path(__file__).resolve().parents[1] / "training_scripts" / "preprocess.py"
RECORDS = 200_000
LONG_RECORD_BYTES = 50 * 2**20


@dataclass(frozen=True)
class Measurement:
    script: str
    data: str
    records: int
    wall_s: float
    records_per_s: float
    peak_rss_mb: float


def write_many(path: Path, count: int) -> None:
    rng = random.Random(0)
    names = ["Anna", "Ben", "Chen", "Dara", "Eli", "Farah"]
    with path.open("w", encoding="utf-8") as out:
        for i in range(count):
            a, b = rng.sample(names, 2)
            turns = "\n".join(
                f"#Person{1 + t % 2}#: {a if t % 2 else b}, about order {i}: item {rng.randint(1, 999)}?"
                for t in range(rng.randint(2, 6))
            )
            out.write(json.dumps({"dialogue": turns, "summary": f"{a} asks {b} about order {i}."}))
            out.write("\n")


def write_long(path: Path, size: int = LONG_RECORD_BYTES) -> None:
    words = size // len("word ")
    with path.open("w", encoding="utf-8") as out:
        out.write(json.dumps({"dialogue": "word " * words, "summary": "A long one."}) + "\n")
        for i in range(10):
            out.write(json.dumps({"dialogue": f"#Person1#: Hi {i}.", "summary": f"Hi {i}."}) + "\n")


# Runs a script as `python SCRIPT ...` would and, as it exits, writes the process's peak
# resident memory in MB. Measured inside the process: a child's ru_maxrss counts the pages it
# shared with its parent at fork, which a large parent (a test runner holding torch) inflates.
MEASURED = """
import atexit, os, resource, runpy, sys

def report():
    try:
        with open("/proc/self/status") as status:  # Linux: this program's own high-water mark
            kb = int(next(line for line in status if line.startswith("VmHWM")).split()[1])
    except OSError:  # macOS: ru_maxrss, in bytes there
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open(os.environ["PEFTOPS_PEAK_FILE"], "w") as out:
        out.write(str(kb / 1024))

atexit.register(report)
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(script))
runpy.run_path(script, run_name="__main__")
"""


def run_once(script: Path, data: Path, out: Path) -> tuple[float, float]:
    shutil.rmtree(out, ignore_errors=True)
    peak_file = out.with_suffix(".peak")
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            MEASURED,
            str(script),
            "--input",
            str(data),
            "--output-dir",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PEFTOPS_PEAK_FILE": str(peak_file)},
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{script} on {data} failed: {done.stderr.decode().strip()[-500:]}")
    return wall, float(peak_file.read_text())


def measure(
    arms: dict[str, Path], data: dict[str, Path], repeats: int, work: Path
) -> list[Measurement]:
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(repeats):
        for data_name, path in data.items():
            for arm, script in arms.items():  # alternating: drift hits both arms alike
                samples.setdefault((arm, data_name), []).append(
                    run_once(script, path, work / f"out-{arm}-{data_name}")
                )
    results = []
    for (arm, data_name), runs in samples.items():
        manifest = json.loads((work / f"out-{arm}-{data_name}" / "manifest.json").read_text())
        wall = statistics.median(w for w, _ in runs)
        results.append(
            Measurement(
                script=arm,
                data=data_name,
                records=manifest["records_in"],
                wall_s=round(wall, 3),
                records_per_s=round(manifest["records_in"] / wall),
                peak_rss_mb=round(max(m for _, m in runs), 1),
            )
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="Another preprocess.py to run beside ours.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--records", type=int, default=RECORDS)
    parser.add_argument(
        "--long-mb", type=int, default=LONG_RECORD_BYTES // 2**20, help="Size of the long record."
    )
    parser.add_argument("--output", type=Path, default=Path("runs/bench/preprocess.json"))
    args = parser.parse_args(argv)

    arms = {"ours": OURS}
    if args.baseline:
        arms["baseline"] = args.baseline.resolve()
    with tempfile.TemporaryDirectory(prefix="peftops-bench-") as tmp:
        work = Path(tmp)
        data = {"many": work / "many.jsonl", "long": work / "long.jsonl"}
        write_many(data["many"], args.records)
        write_long(data["long"], args.long_mb * 2**20)
        results = measure(arms, data, args.repeats, work)

    print(f"{'arm':<9} {'data':<5} {'records':>8} {'wall s':>7} {'records/s':>10} {'peak MB':>8}")
    for r in results:
        print(
            f"{r.script:<9} {r.data:<5} {r.records:>8} {r.wall_s:>7.2f} {r.records_per_s:>10,} "
            f"{r.peak_rss_mb:>8.1f}"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                "python": platform.python_version(),
                "repeats": args.repeats,
                "results": [asdict(r) for r in results],
            },
            indent=2,
        )
    )
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
