"""Before `make mutation`: the mutants named that no test detected (survived, no tests) get
their verdict cleared, so the run tests them again. mutmut keeps a verdict until the function's
code changes, and a test written since cannot kill a mutant no one runs again; detected mutants
keep theirs (a test added does not revive one).

    .venv/bin/python -m tools.mutation_retry 'pipelines.registry.*'
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from pathlib import Path

from mutmut.stats import status_by_exit_code

from tools.mutation_score import DETECTED

MUTANTS = Path("mutants")


def retried(verdicts: dict[str, int | None], patterns: list[str]) -> dict[str, int | None]:
    """`verdicts` (mutmut's exit codes by mutant) with those of the undetected mutants
    `patterns` name cleared."""
    return {
        name: None
        if code is not None
        and status_by_exit_code[code] not in DETECTED
        and any(fnmatch.fnmatchcase(name, p) for p in patterns)
        else code
        for name, code in verdicts.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("patterns", nargs="+", help="mutant name globs, as `mutmut run` takes")
    parser.add_argument("--mutants", type=Path, default=MUTANTS)
    args = parser.parse_args(argv)
    cleared = 0
    for meta in sorted(args.mutants.rglob("*.py.meta")):
        data = json.loads(meta.read_text(encoding="utf-8"))
        verdicts = retried(data["exit_code_by_key"], args.patterns)
        changed = sum(verdicts[n] != data["exit_code_by_key"][n] for n in verdicts)
        if changed:
            data["exit_code_by_key"] = verdicts
            meta.write_text(json.dumps(data, indent=4), encoding="utf-8")
            cleared += changed
    print(f"mutation: {cleared} undetected mutants to test again")
    return 0


if __name__ == "__main__":
    sys.exit(main())
