"""The layout the README's picture shows: every box names a folder that exists, the picture is
generated from its current source, each module says what it owns, and the layers import only
downwards (scripts know nothing of the pipeline, the pipeline nothing of infra)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import REPO

SOURCE = REPO / "docs" / "architecture.dot"
PICTURE = REPO / "docs" / "architecture.svg"
PACKAGES = ("pipelines", "training_scripts", "infra", "benchmarks")


def nodes() -> dict[str, tuple[list[str], str]]:
    """Node name -> (label lines, attributes) from the dot source."""
    found = {}
    for name, attributes in re.findall(r"^\s*(\w+)\s+\[(label=.*)\];", SOURCE.read_text(), re.M):
        label = re.search(r'label="([^"]*)"', attributes)
        assert label is not None
        found[name] = (label[1].split("\\n"), attributes)
    return found


def project_modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports by absolute name; `from package import name` counts as
    `package.name` too, since the name may be a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_every_box_names_a_folder_that_exists() -> None:
    boxes = {
        name: lines for name, (lines, attributes) in nodes().items() if "ellipse" not in attributes
    }
    assert len(boxes) >= 10
    for name, lines in boxes.items():
        for place in lines[0].split(", "):
            assert (REPO / place).exists(), f"box {name} names {place}, which does not exist"


def test_picture_is_generated_from_the_current_source() -> None:
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", PICTURE.read_text(encoding="utf-8"))
    svg = {t.replace("&amp;", "&").replace("&#45;", "-") for t in texts}
    expected = {line for lines, _ in nodes().values() for line in lines}
    expected |= set(re.findall(r'->\s*\w+\s*\[label="([^"]*)"\]', SOURCE.read_text()))
    assert svg == expected, "docs/architecture.svg is stale: run `make architecture`"


@pytest.mark.parametrize("path", project_modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_module_says_what_it_owns(path: Path) -> None:
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    assert docstring, f"{path.relative_to(REPO)} has no module docstring"


# Which of the project's top-level parts each part may import.
ALLOWED = {
    "training_scripts": set(),
    # Shipped to Lambda as they are: nothing of the project but each other.
    "pipelines.functions": {"pipelines.functions"},
    "pipelines.fixtures": {"pipelines.fixtures"},
    "pipelines.definition": {"pipelines.definition", "pipelines.functions", "training_scripts"},
    "pipelines.registry": {"pipelines.registry", "pipelines.functions", "training_scripts"},
    "pipelines.publishing": {"pipelines.functions", "training_scripts"},
    "pipelines.serving": {
        "pipelines.serving",
        "pipelines.registry",
        "pipelines.functions",
        "training_scripts",
    },
    "pipelines.local": {
        "pipelines.local",
        "pipelines.definition",
        "pipelines.functions",
        "pipelines.publishing",
        "pipelines.registry",
        "pipelines.fixtures",
        "training_scripts",
    },
    "pipelines.cli": {
        "pipelines.cli",
        "pipelines.definition",
        "pipelines.local",
        "pipelines.publishing",
        "pipelines.registry",
        "pipelines.serving",
        "training_scripts",
    },
    "infra": {"infra", "pipelines.definition", "pipelines.functions"},
    "benchmarks": {"benchmarks", "training_scripts", "pipelines.fixtures", "pipelines.serving"},
}
PARTS = sorted(ALLOWED, key=len, reverse=True)


def part_of(module: str) -> str | None:
    return next((p for p in PARTS if module == p or module.startswith(p + ".")), None)


# What host code (app.py, infra/, pipelines/) takes from the jobs' code: the files they hand
# over, the prompt format (the task spec and its rendering), the typed enums and the logging
# setup they share. The container code is no utility library: anything else stays inside the
# jobs, except where one definition on both sides is the point (below, per layer, with why).
HOST_SHARED = frozenset(
    {
        "training_scripts.contracts",
        "training_scripts.prompts",
        "training_scripts.tasks",
        "training_scripts.enums",
        "training_scripts.logs",
    }
)
HOST_EXCEPTIONS = {
    # `data publish` refuses what preprocess.py would refuse, with preprocess.py's own parser.
    "pipelines.publishing": {"training_scripts.preprocess", "training_scripts.readers"},
    # The run's report is rendered again with its registration outcome, by the same template.
    "pipelines.local": {"training_scripts.report"},
    # The local endpoint loads base and adapters as evaluate.py loads what it scores.
    "pipelines.serving": {"training_scripts.model_loading"},
    # The run's table shows sizes and memory as its report does.
    "pipelines.cli": {"training_scripts.measurements"},
}
HOST_FILES = [
    REPO / "app.py",
    *(p for p in project_modules() if p.parts[len(REPO.parts)] in ("pipelines", "infra")),
]


@pytest.mark.parametrize("path", HOST_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_host_code_takes_only_the_shared_modules_from_the_jobs_code(path: Path) -> None:
    relative = path.relative_to(REPO).with_suffix("")
    own = part_of(".".join(relative.parts)) or str(relative)
    allowed = HOST_SHARED | HOST_EXCEPTIONS.get(own, set())
    for module in imported_modules(path):
        if module.startswith("training_scripts.") and module.count(".") == 1:
            assert module in allowed, f"{relative} imports {module}, which is the jobs' own code"


@pytest.mark.parametrize("path", project_modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_layers_import_only_what_they_build_on(path: Path) -> None:
    relative = path.relative_to(REPO).with_suffix("")
    own = part_of(".".join(relative.parts))
    if own is None:
        # Only the package's own __init__ is in no layer; a new module must be placed in one.
        assert relative.parts == ("pipelines", "__init__"), f"{relative} belongs to no layer"
        return
    for module in imported_modules(path):
        used = part_of(module) if module.split(".")[0] in ("pipelines", *PACKAGES) else None
        if module == "pipelines":
            used = "pipelines"
        assert used is None or used in ALLOWED[own], f"{relative} imports {module}"


# The picture's code boxes and the modules each holds (the longest prefix wins). SageMaker holds
# no code (its arrows are what runs there); tests may import anything, but an arrow drawn from
# them must still be an import.
BOX_MODULES = {
    "app": ["app"],
    "infra": ["infra"],
    "cli": ["pipelines.cli"],
    "definition": ["pipelines.definition"],
    "local": ["pipelines.local"],
    "functions": ["pipelines.functions"],
    "publishing": ["pipelines.publishing"],
    "registry": ["pipelines.registry"],
    "serving": ["pipelines.serving"],
    "fixtures": ["pipelines.fixtures"],
    "scripts": ["training_scripts"],
    "shared": [
        f"training_scripts.{name}" for name in ("contracts", "prompts", "tasks", "enums", "logs")
    ],
    "benchmarks": ["benchmarks"],
    "tests": ["tests"],
}
RUNTIME_BOXES = {"sagemaker"}
UNCHECKED_IMPORTERS = {"tests"}
_PREFIXES = sorted(
    ((prefix, box) for box, prefixes in BOX_MODULES.items() for prefix in prefixes),
    key=lambda pair: -len(pair[0]),
)


def box_of(module: str) -> str | None:
    return next((box for p, box in _PREFIXES if module == p or module.startswith(p + ".")), None)


def resolved_imports(path: Path) -> set[str]:
    """Every module `path` imports, relative imports resolved; `from package import name`
    counts as `package.name` too."""
    module = ".".join(path.relative_to(REPO).with_suffix("").parts)
    package = module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = ".".join(package[: len(package) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:
                # A submodule when there is one (`from training_scripts import contracts`),
                # else a name from the module itself.
                submodule = REPO.joinpath(*f"{base}.{alias.name}".split("."))
                is_module = submodule.with_suffix(".py").is_file() or submodule.is_dir()
                names.add(f"{base}.{alias.name}" if is_module else base)
    return names


def imported_arrows() -> dict[tuple[str, str], str]:
    """(box, box) -> one import that makes the arrow, over every module of the picture's boxes."""
    files = [REPO / "app.py", *project_modules(), *sorted((REPO / "tests").rglob("*.py"))]
    arrows: dict[tuple[str, str], str] = {}
    for path in files:
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        source = box_of(module)
        for imported in sorted(resolved_imports(path)):
            target = box_of(imported)
            if source and target and target != source:
                arrows.setdefault((source, target), f"{module} imports {imported}")
    return arrows


def drawn_arrows() -> set[tuple[str, str]]:
    return set(re.findall(r"^\s*(\w+)\s*->\s*(\w+)", SOURCE.read_text(), re.M))


def test_the_picture_draws_every_import_between_its_boxes() -> None:
    drawn = drawn_arrows()
    undrawn = {
        f"{a} -> {b} ({why})"
        for (a, b), why in imported_arrows().items()
        if (a, b) not in drawn and a not in UNCHECKED_IMPORTERS
    }
    assert not undrawn, f"docs/architecture.dot lacks these arrows: {sorted(undrawn)}"


def test_every_arrow_the_picture_draws_between_code_boxes_is_an_import() -> None:
    imported = imported_arrows()
    assert set(BOX_MODULES) | RUNTIME_BOXES == set(nodes()), "a box without its modules"
    lacking = {
        f"{a} -> {b}"
        for a, b in drawn_arrows()
        if not {a, b} & RUNTIME_BOXES and (a, b) not in imported
    }
    assert not lacking, f"docs/architecture.dot draws arrows no import makes: {sorted(lacking)}"
