"""`make mutation`'s verdict: mutmut's results for the mutants named, per module killed / total
after the mutants recorded as equivalent, and the survivors by name (`mutmut show NAME` prints
one). docs/mutation.json explains each survivor in one line: `equivalent` (no test could tell
it from the code: out of the count) or `accepted` (a test could, and the reason it is not
written: counted as not killed). Exits 1 when a module kills fewer than --min-killed, when a
survivor is not explained, or when a pattern names no mutant. --record writes the measured
modules into the results file.

    .venv/bin/python -m tools.mutation_score 'pipelines.registry.*' --record
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.mutation_modules import product_modules

# A mutant that makes the tests hang is caught too: the run stops it at its timeout.
DETECTED = {"killed", "timeout"}
RESULTS = Path("docs/mutation.json")


@dataclass
class ModuleScore:
    mutants: int = 0
    killed: int = 0
    equivalent: dict[str, str] = field(default_factory=dict)  # survivor -> why no test can kill it
    accepted: dict[str, str] = field(default_factory=dict)  # survivor -> why no test kills it
    unexplained: list[str] = field(default_factory=list)  # survivors with no reason

    @property
    def share(self) -> float:
        """Killed among the mutants a test could kill (all but the equivalent ones)."""
        killable = self.mutants - len(self.equivalent)
        return self.killed / killable if killable else 1.0


def mutant_statuses(mutmut: str) -> dict[str, str]:
    listing = subprocess.run(
        [mutmut, "results", "--all", "true"], capture_output=True, text=True, check=True
    ).stdout
    return dict(re.findall(r"^\s*(\S+__mutmut_\d+): (.+?)\s*$", listing, re.MULTILINE))


def module_of(mutant: str) -> str:
    return mutant.split(".x_")[0].split(".xǁ")[0]


def load_results(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"pending": [], "unfinished": {}, "modules": {}}
    return json.loads(path.read_text(encoding="utf-8"))


def scores(statuses: dict[str, str], results: dict[str, Any]) -> dict[str, ModuleScore]:
    """Each module's counts, its survivors split into explained (recorded as equivalent, with
    the reason) and unexplained."""
    by_module: dict[str, ModuleScore] = defaultdict(ModuleScore)
    for name, status in sorted(statuses.items()):
        module = module_of(name)
        score = by_module[module]
        score.mutants += 1
        if status in DETECTED:
            score.killed += 1
            continue
        entry = results["modules"].get(module) or results.get("unfinished", {}).get(module, {})
        if entry.get("equivalent", {}).get(name):
            score.equivalent[name] = entry["equivalent"][name]
        elif entry.get("accepted", {}).get(name):
            score.accepted[name] = entry["accepted"][name]
        else:
            score.unexplained.append(f"{name} ({status})")
    return dict(by_module)


def record(
    results: dict[str, Any],
    measured: dict[str, ModuleScore],
    commit: str,
    modules: list[str],
    min_killed: float,
) -> dict[str, Any]:
    """The results file with the measured modules' figures at `commit`: a module at the bar
    under `modules`, one below it or with survivors not explained under `unfinished` (with
    its survivors, for whoever kills them next), and every product module not measured yet
    under `pending`."""
    done = {m: e for m, e in results["modules"].items() if m not in measured}
    unfinished = {m: e for m, e in results.get("unfinished", {}).items() if m not in measured}
    for module, score in measured.items():
        entry = {
            "commit": commit,
            "mutants": score.mutants,
            "killed": score.killed,
            "equivalent": score.equivalent,
            "accepted": score.accepted,
            "survived": sorted(score.unexplained),
        }
        at_bar = score.share >= min_killed and not score.unexplained
        (done if at_bar else unfinished)[module] = entry
    return {
        "pending": [m for m in modules if m not in done and m not in unfinished],
        "unfinished": dict(sorted(unfinished.items())),
        "modules": dict(sorted(done.items())),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("patterns", nargs="+", help="mutant name globs, as `mutmut run` takes")
    parser.add_argument("--min-killed", type=float, default=0.9)
    parser.add_argument("--mutmut", default=str(Path(sys.executable).with_name("mutmut")))
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--record", action="store_true", help="write the results file")
    parser.add_argument(
        "--allow-unmatched", action="store_true", help="a pattern may name no mutant"
    )
    args = parser.parse_args(argv)

    statuses = {
        name: status
        for name, status in mutant_statuses(args.mutmut).items()
        if any(fnmatch.fnmatchcase(name, p) for p in args.patterns)
    }
    if not statuses:
        print("mutation: no results for these mutants; run `mutmut run` first", file=sys.stderr)
        return 1
    results = load_results(args.results)
    measured = scores(statuses, results)
    failing = []
    print(f"{'module':44}{'killed':>8}{'total':>7}{'equiv.':>8}{'share':>8}")
    for module, score in sorted(measured.items()):
        print(
            f"{module:44}{score.killed:>8}{score.mutants:>7}{len(score.equivalent):>8}"
            f"{score.share:>8.1%}"
        )
        if score.share < args.min_killed or score.unexplained:
            failing.append(module)
    for module, score in sorted(measured.items()):
        if score.unexplained:
            print(f"\n{module}: not killed, no reason recorded")
            for name in score.unexplained:
                print(f"  {name}")
    if args.record:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        modules = product_modules(Path.cwd())
        # A module in scope with no mutant holds no code to mutate (constants, re-exports).
        empty = {
            m: ModuleScore()
            for m in modules
            if m not in measured and any(fnmatch.fnmatchcase(f"{m}.x_", p) for p in args.patterns)
        }
        updated = record(results, measured | empty, commit, modules, args.min_killed)
        args.results.write_text(json.dumps(updated, indent=2, ensure_ascii=False) + "\n")
    # A pattern that names no mutant is a function renamed or moved: its code went unmutated.
    unmatched = [p for p in args.patterns if not any(fnmatch.fnmatchcase(n, p) for n in statuses)]
    if unmatched and not args.allow_unmatched:
        print(f"mutation: no mutants for {', '.join(unmatched)}; fix the names", file=sys.stderr)
        return 1
    if failing:
        print(
            f"\nmutation: under {args.min_killed:.0%} killed or survivors without a reason: "
            f"{', '.join(failing)}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
