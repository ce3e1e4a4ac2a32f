"""`make mutation`'s runner: mutmut run on exactly the mutants the patterns name that no test
has detected yet (never tested, survived, no tests), so a rerun after a new test costs the
survivors, not the module. mutmut itself reruns every mutant its command line names, killed ones
too, and keeps a verdict until the function's code changes.

Before that, it copies again the source folders' other files (templates, task specs) that changed
since mutmut copied them: mutmut copies those once, and its mutants would run against stale ones.

It refuses to start while /opt/ml exists: the training scripts take that folder to mean "inside a
SageMaker job", so every test of them would run against it. (A mutant of the local runner's path
mapping can write there; the suite's conftest fails the test that did and removes the folder.)

    .venv/bin/python -m tools.mutation_run 'pipelines.registry.*'
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

from mutmut.stats import status_by_exit_code

from tools.mutation_score import DETECTED

MUTANTS = Path("mutants")
SOURCE_PATHS = ("training_scripts", "pipelines")  # pyproject.toml's [tool.mutmut] source_paths
CONTAINER_ROOT = Path("/opt/ml")


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


def undetected(verdicts: dict[str, int | None], patterns: Iterable[str]) -> list[str]:
    """The mutants of `verdicts` (mutmut's exit codes by mutant) that `patterns` name and no
    test has detected: never tested (None), survived, or without tests."""
    patterns = list(patterns)
    return [
        name
        for name, code in verdicts.items()
        if (code is None or status_by_exit_code[code] not in DETECTED)
        and any(fnmatch.fnmatchcase(name, p) for p in patterns)
    ]


def recorded_verdicts(mutants: Path) -> dict[str, int | None]:
    """Every mutant's verdict in mutmut's meta files under `mutants`."""
    verdicts: dict[str, int | None] = {}
    for meta in sorted(mutants.rglob("*.py.meta")):
        verdicts |= json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
    return verdicts


def generate_mutants() -> None:
    """mutmut's own first steps of `run`: the mutants of every changed source file, their
    verdicts kept where the function's code is unchanged."""
    import mutmut.__main__ as mutmut_main

    mutmut_main.set_mutant_under_test("mutant_generation")
    mutmut_main.copy_src_dir()
    mutmut_main.copy_also_copy_files()
    mutmut_main.setup_source_paths()
    mutmut_main.store_lines_covered_by_tests()
    mutmut_main.create_mutants(os.cpu_count() or 1)


def run_mutants(names: list[str]) -> None:
    import mutmut.__main__ as mutmut_main

    mutmut_main._run(names, None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("patterns", nargs="+", help="mutant name globs, as `mutmut run` takes")
    args = parser.parse_args(argv)
    if CONTAINER_ROOT.exists():
        print(
            f"mutation: {CONTAINER_ROOT} exists, so the training scripts would run as if inside "
            f"a SageMaker job: remove it (rm -rf {CONTAINER_ROOT}) and run again",
            file=sys.stderr,
        )
        return 2
    if MUTANTS.is_dir():
        for path in refreshed_data_files(Path(), MUTANTS, SOURCE_PATHS):
            print(f"mutation: {path} changed since mutmut copied it: copied again")
    generate_mutants()
    names = undetected(recorded_verdicts(MUTANTS), args.patterns)
    print(f"mutation: {len(names)} mutants no test has detected yet: testing them")
    if not names:
        return 0
    run_mutants(names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
