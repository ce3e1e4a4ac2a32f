"""`make mutation`'s verdict: mutmut's results for the mutants the Makefile names, killed / total
per module, and the survivors by name (`mutmut show NAME` prints one). Exits 1 when a module
kills fewer than --min-killed of its mutants.

    .venv/bin/python -m tools.mutation_score 'training_scripts.contracts.x_gate_*' ...
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

# A mutant that makes the tests hang is caught too: the run stops it at its timeout.
DETECTED = {"killed", "timeout"}


def mutant_statuses(mutmut: str) -> dict[str, str]:
    listing = subprocess.run(
        [mutmut, "results", "--all", "true"], capture_output=True, text=True, check=True
    ).stdout
    return dict(re.findall(r"^\s*(\S+__mutmut_\d+): (.+?)\s*$", listing, re.MULTILINE))


def module_of(mutant: str) -> str:
    return mutant.split(".x_")[0].split(".xǁ")[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("patterns", nargs="+", help="mutant name globs, as `mutmut run` takes")
    parser.add_argument("--min-killed", type=float, default=0.9)
    parser.add_argument("--mutmut", default=str(Path(sys.executable).with_name("mutmut")))
    args = parser.parse_args(argv)

    statuses = {
        name: status
        for name, status in mutant_statuses(args.mutmut).items()
        if any(fnmatch.fnmatchcase(name, p) for p in args.patterns)
    }
    by_module: dict[str, Counter[str]] = defaultdict(Counter)
    survivors: dict[str, list[str]] = defaultdict(list)
    for name, status in sorted(statuses.items()):
        by_module[module_of(name)][status] += 1
        if status not in DETECTED:
            survivors[module_of(name)].append(f"{name} ({status})")

    failing = []
    print(f"{'module':40}{'killed':>8}{'total':>7}{'share':>8}")
    for module, counts in sorted(by_module.items()):
        total = sum(counts.values())
        killed = sum(counts[s] for s in DETECTED)
        print(f"{module:40}{killed:>8}{total:>7}{killed / total:>8.1%}")
        if killed / total < args.min_killed:
            failing.append(module)
    for module, names in sorted(survivors.items()):
        print(f"\n{module}: not killed")
        for name in names:
            print(f"  {name}")
    if not statuses:
        print("mutation: no results for these mutants; run `mutmut run` first", file=sys.stderr)
        return 1
    # A pattern that names no mutant is a function renamed or moved: its code went unmutated.
    unmatched = [p for p in args.patterns if not any(fnmatch.fnmatchcase(n, p) for n in statuses)]
    if unmatched:
        print(f"mutation: no mutants for {', '.join(unmatched)}; fix the names", file=sys.stderr)
        return 1
    if failing:
        print(
            f"\nmutation: under {args.min_killed:.0%} killed: {', '.join(failing)}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
