"""Before `make mutation`: the mutants named that no test detected (survived, no tests) get
their verdict cleared, so the run tests them again. mutmut keeps a verdict until the function's
code changes, and a test written since cannot kill a mutant no one runs again; detected mutants
keep theirs (a test added does not revive one).

It also copies again the source folders' other files (templates, task specs) that changed since
mutmut copied them: mutmut copies those once, and its mutants would run against stale ones.

    .venv/bin/python -m tools.mutation_retry 'pipelines.registry.*'
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shutil
import sys
from pathlib import Path

from mutmut.stats import status_by_exit_code

from tools.mutation_score import DETECTED

MUTANTS = Path("mutants")
SOURCE_PATHS = ("training_scripts", "pipelines")  # pyproject.toml's [tool.mutmut] source_paths


def refreshed_data_files(sources: Path, mutants: Path, folders: tuple[str, ...]) -> list[Path]:
    """Copies each file of `folders` but Python sources (mutmut writes those) whose copy under
    `mutants` differs from it; returns the files copied, relative to `sources`."""
    copied = []
    for folder in folders:
        for source in sorted((sources / folder).rglob("*")):
            if not source.is_file() or source.suffix in (".py", ".pyc"):
                continue
            target = mutants / source.relative_to(sources)
            if target.is_file() and target.read_bytes() == source.read_bytes():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
            copied.append(source.relative_to(sources))
    return copied


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
    if args.mutants.is_dir():
        for path in refreshed_data_files(Path(), args.mutants, SOURCE_PATHS):
            print(f"mutation: {path} changed since mutmut copied it: copied again")
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
