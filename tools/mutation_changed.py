"""`make mutation-changed BASE=<commit>`: the mutants of the product functions changed since
BASE, one `mutmut run` name glob per function (top-level functions and methods, the units
mutmut mutates), printed one per line.

    .venv/bin/python -m tools.mutation_changed origin/main

A function counts as changed when a line inside it was added, changed or removed, in a tracked
file or a new one. infra/ has no mutants: its modules are checked by invariant tests over the
synthesized templates (tests/unit/test_infra.py), each of whose runs costs a CDK synth.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tools.mutation_modules import is_product_module, module_name


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def changed_lines(base: str) -> dict[Path, set[int]]:
    """Lines of the working tree added or changed since `base`, and for a removal the lines
    around it, per product file; a new file's every line."""
    changed: dict[Path, set[int]] = {}
    path: Path | None = None
    for line in git("diff", "-U0", "--no-color", base, "--", "*.py").splitlines():
        if line.startswith("+++ "):
            name = line[4:].removeprefix("b/")
            path = Path(name) if name != "/dev/null" and is_product_module(Path(name)) else None
        elif line.startswith("@@") and path is not None:
            start, _, count = re.match(r"@@ -\S+ \+(\d+)(,(\d+))? @@", line).groups()
            first, size = int(start), int(count) if count is not None else 1
            lines = range(first, first + size) if size else range(first, first + 2)
            changed.setdefault(path, set()).update(lines)
    for name in git("ls-files", "--others", "--exclude-standard", "--", "*.py").splitlines():
        if is_product_module(Path(name)):
            changed[Path(name)] = set(range(1, len(Path(name).read_text().splitlines()) + 1))
    return changed


def mutated_units(source: str) -> Iterator[tuple[str, int, int]]:
    """(mutmut's mangled name, first line, last line) of each function and method."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield f"x_{node.name}", node.lineno, node.end_lineno or node.lineno
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    last = item.end_lineno or item.lineno
                    yield f"xǁ{node.name}ǁ{item.name}", item.lineno, last


def changed_mutant_globs(base: str) -> list[str]:
    globs = []
    for path, lines in sorted(changed_lines(base).items()):
        for mangled, first, last in mutated_units(path.read_text(encoding="utf-8")):
            if any(first <= line <= last for line in lines):
                globs.append(f"{module_name(path)}.{mangled}__mutmut_*")
    return globs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="the commit to compare with, e.g. origin/main")
    args = parser.parse_args(argv)
    try:
        globs = changed_mutant_globs(args.base)
    except subprocess.CalledProcessError as err:
        print(f"mutation-changed: git: {err.stderr.strip()}", file=sys.stderr)
        return 2
    if not globs:
        print(f"mutation-changed: no product function changed since {args.base}", file=sys.stderr)
        return 1
    print("\n".join(globs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
