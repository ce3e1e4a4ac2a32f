"""Which modules are the product's, for mutation testing: every module of training_scripts/ and
pipelines/ but the fixtures (test data generators), by the dotted name mutmut gives them."""

from __future__ import annotations

from pathlib import Path

MUTATED_PACKAGES = ("training_scripts", "pipelines")
NOT_MUTATED = ("pipelines/fixtures/",)


def is_product_module(path: Path) -> bool:
    text = path.as_posix()
    return (
        path.suffix == ".py"
        and text.startswith(tuple(f"{p}/" for p in MUTATED_PACKAGES))
        and not text.startswith(NOT_MUTATED)
    )


def module_name(path: Path) -> str:
    """training_scripts/contracts.py -> training_scripts.contracts (a package's __init__ is the
    package)."""
    parts = path.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def product_modules(root: Path) -> list[str]:
    return sorted(
        module_name(path.relative_to(root))
        for package in MUTATED_PACKAGES
        for path in (root / package).rglob("*.py")
        if is_product_module(path.relative_to(root))
    )
