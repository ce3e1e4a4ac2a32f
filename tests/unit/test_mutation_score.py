"""make mutation's verdict: killed / total per module after recorded equivalents, the results
file that accounts for every product module, a named function that no mutant matches (renamed
or moved) failing the run, and make mutation-changed's choice of functions."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO
from tools import mutation_changed, mutation_score
from tools.mutation_modules import product_modules

RESULTS = """\
    training_scripts.contracts.x_gate_verdict__mutmut_1: killed
    training_scripts.contracts.x_gate_verdict__mutmut_2: survived
    training_scripts.contracts.x_gate_margins__mutmut_1: killed
"""


@pytest.fixture
def mutmut(tmp_path: Path) -> str:
    """A stand-in for `mutmut results --all true`, printing RESULTS."""
    script = tmp_path / "mutmut"
    script.write_text(f"#!/bin/sh\ncat <<'END'\n{RESULTS}END\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_a_pattern_that_names_no_mutant_fails(mutmut: str, capsys) -> None:
    code = mutation_score.main(
        [
            "training_scripts.contracts.x_gate_*",
            "pipelines.registry.decisions.x_gate_verdict__*",
            "--mutmut",
            mutmut,
        ]
    )
    assert code == 1
    assert (
        "no mutants for pipelines.registry.decisions.x_gate_verdict__*" in capsys.readouterr().err
    )


@pytest.mark.parametrize(("min_killed", "code"), [(0.6, 0), (0.7, 1)])
def test_the_share_killed_decides(
    mutmut: str, min_killed: float, code: int, tmp_path: Path, capsys
) -> None:
    """An accepted survivor is explained but counts against the module's share."""
    results = tmp_path / "mutation.json"
    accepted = {"training_scripts.contracts.x_gate_verdict__mutmut_2": "a log line's wording"}
    results.write_text(
        json.dumps(
            {"pending": [], "modules": {"training_scripts.contracts": {"accepted": accepted}}}
        )
    )
    argv = ["training_scripts.contracts.x_gate_*", "--min-killed", str(min_killed)]
    assert mutation_score.main([*argv, "--mutmut", mutmut, "--results", str(results)]) == code
    out = capsys.readouterr().out
    assert "training_scripts.contracts" in out and "66.7%" in out


def test_survivors_recorded_as_equivalent_count_apart_and_others_fail(
    mutmut: str, tmp_path: Path, capsys
) -> None:
    """A survivor with a recorded reason is out of the denominator; one without fails the
    module whatever the share, and --record lists it and keeps the reasons."""
    results = tmp_path / "mutation.json"
    survivor = "training_scripts.contracts.x_gate_verdict__mutmut_2"
    argv = ["training_scripts.contracts.x_gate_*", "--mutmut", mutmut, "--results", str(results)]
    assert mutation_score.main([*argv, "--min-killed", "0.5", "--record"]) == 1
    assert f"{survivor} (survived)" in capsys.readouterr().out
    written = json.loads(results.read_text())
    # Below the bar: kept apart from the measured modules, with what is left to kill.
    assert "training_scripts.contracts" not in written["modules"]
    assert written["unfinished"]["training_scripts.contracts"]["survived"] == [
        f"{survivor} (survived)"
    ]
    assert "training_scripts.contracts" not in written["pending"]
    assert "pipelines.registry.decisions" in written["pending"]

    # A module in a recorded scope with no mutant at all is measured: it holds nothing to mutate.
    mutation_score.main(
        ["training_scripts.*", "--mutmut", mutmut, "--results", str(results), "--record"]
    )
    written = json.loads(results.read_text())
    assert written["modules"]["training_scripts.enums"]["mutants"] == 0
    assert not any(m.startswith("training_scripts.") for m in written["pending"])
    assert "pipelines.registry.decisions" in written["pending"]

    written["unfinished"]["training_scripts.contracts"]["equivalent"] = {
        survivor: "the two branches return the same verdict"
    }
    results.write_text(json.dumps(written))
    assert mutation_score.main([*argv, "--record"]) == 0
    assert "100.0%" in capsys.readouterr().out
    kept = json.loads(results.read_text())["modules"]["training_scripts.contracts"]
    assert "training_scripts.contracts" not in json.loads(results.read_text())["unfinished"]
    assert kept["equivalent"] == {survivor: "the two branches return the same verdict"}
    assert (kept["mutants"], kept["killed"], kept["survived"], kept["accepted"]) == (3, 2, [], {})


def test_every_product_module_is_measured_or_listed_as_pending() -> None:
    """docs/mutation.json accounts for every product module: measured at a commit at the bar
    (90% of the killable mutants killed, every survivor explained in one line), measured and
    unfinished (its survivors listed), or pending."""
    results = json.loads((REPO / "docs" / "mutation.json").read_text())
    measured, pending = set(results["modules"]), set(results["pending"])
    unfinished = set(results["unfinished"])
    assert not measured & pending and not measured & unfinished and not pending & unfinished
    assert sorted(measured | pending | unfinished) == product_modules(REPO)
    for module, entry in results["modules"].items():
        killable = entry["mutants"] - len(entry["equivalent"])
        assert entry["killed"] >= 0.9 * killable, module
        assert entry["survived"] == [], module
        explained = {**entry["equivalent"], **entry["accepted"]}
        assert entry["killed"] + len(explained) == entry["mutants"], module
        for name, reason in explained.items():
            assert name.startswith(f"{module}.") and reason.strip() and "\n" not in reason


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def test_mutation_changed_names_exactly_the_changed_functions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "pipelines" / "registry" / "rules.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        "def kept(x):\n    return x + 1\n\n\n"
        "def edited(x):\n    return x * 2\n\n\n"
        "class Rule:\n    def check(self, x):\n        return x > 0\n\n"
        "    def other(self):\n        return 1\n"
    )
    (tmp_path / "pipelines" / "fixtures").mkdir()
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "base")
    module.write_text(module.read_text().replace("x * 2", "x * 3").replace("x > 0", "x >= 0"))
    (tmp_path / "pipelines" / "fixtures" / "data.py").write_text("def made():\n    return 1\n")
    (tmp_path / "training_scripts").mkdir()
    (tmp_path / "training_scripts" / "new.py").write_text("def fresh():\n    return 2\n")
    monkeypatch.chdir(tmp_path)
    assert mutation_changed.changed_mutant_globs("HEAD") == [
        "pipelines.registry.rules.x_edited__mutmut_*",
        "pipelines.registry.rules.xǁRuleǁcheck__mutmut_*",
        "training_scripts.new.x_fresh__mutmut_*",
    ]


def test_a_run_tests_exactly_the_named_mutants_no_test_has_detected(tmp_path: Path) -> None:
    """Never tested (None), survived (0) or without tests (33), and named by a pattern: tested.
    Killed (1) and timed out (36) keep their verdict, and so does every mutant no pattern names:
    mutmut itself would rerun every mutant its command line names."""
    from tools import mutation_run

    lifecycle = {
        "pipelines.registry.lifecycle.x_archived__mutmut_1": 1,
        "pipelines.registry.lifecycle.x_archived__mutmut_2": 0,
        "pipelines.registry.lifecycle.x_archived__mutmut_3": 33,
        "pipelines.registry.lifecycle.x_archived__mutmut_4": 36,
        "pipelines.registry.lifecycle.x_archived__mutmut_5": None,
        "pipelines.registry.lifecycle.xǁStageǁnext__mutmut_1": None,
    }
    versions = {
        "pipelines.registry.versions.x_parse__mutmut_1": 0,
        "pipelines.registry.versions.x_parse__mutmut_2": None,
    }
    for name, verdicts in (("lifecycle", lifecycle), ("versions", versions)):
        meta = tmp_path / "pipelines" / "registry" / f"{name}.py.meta"
        meta.parent.mkdir(parents=True, exist_ok=True)
        meta.write_text(json.dumps({"exit_code_by_key": verdicts, "hash_by_function_name": {}}))
    recorded = mutation_run.recorded_verdicts(tmp_path)
    assert recorded == lifecycle | versions
    assert mutation_run.undetected(recorded, ["pipelines.registry.lifecycle.x_archived*"]) == [
        "pipelines.registry.lifecycle.x_archived__mutmut_2",
        "pipelines.registry.lifecycle.x_archived__mutmut_3",
        "pipelines.registry.lifecycle.x_archived__mutmut_5",
    ]
    assert mutation_run.undetected(
        recorded, ["pipelines.registry.lifecycle.xǁStage*", "pipelines.registry.versions.*"]
    ) == [
        "pipelines.registry.lifecycle.xǁStageǁnext__mutmut_1",
        "pipelines.registry.versions.x_parse__mutmut_1",
        "pipelines.registry.versions.x_parse__mutmut_2",
    ]
    assert mutation_run.undetected(recorded, ["training_scripts.*"]) == []


def test_a_run_refuses_to_start_beside_a_container_root_and_tests_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tools import mutation_run

    monkeypatch.setattr(mutation_run, "CONTAINER_ROOT", tmp_path)
    started = []
    monkeypatch.setattr(mutation_run, "generate_mutants", lambda: started.append("generate"))
    monkeypatch.setattr(mutation_run, "run_mutants", started.append)
    assert mutation_run.main(["pipelines.*"]) == 2
    assert started == []
    assert f"{tmp_path} exists" in capsys.readouterr().err


def test_a_run_with_every_named_mutant_detected_starts_no_mutmut_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tools import mutation_run

    meta = tmp_path / "mutants" / "pipelines" / "a.py.meta"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"exit_code_by_key": {"pipelines.a.x_f__mutmut_1": 1}}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(mutation_run, "CONTAINER_ROOT", tmp_path / "opt-ml")
    runs = []
    monkeypatch.setattr(mutation_run, "generate_mutants", lambda: None)
    monkeypatch.setattr(mutation_run, "run_mutants", runs.append)
    assert mutation_run.main(["pipelines.*"]) == 0
    meta.write_text(json.dumps({"exit_code_by_key": {"pipelines.a.x_f__mutmut_1": 0}}))
    assert mutation_run.main(["pipelines.*"]) == 0
    assert runs == [["pipelines.a.x_f__mutmut_1"]]
    assert "0 mutants no test has detected yet" in capsys.readouterr().out


def test_a_changed_template_or_spec_is_copied_again_and_python_sources_are_left_to_mutmut(
    tmp_path: Path,
) -> None:
    from tools import mutation_run

    sources, mutants = tmp_path / "repo", tmp_path / "repo" / "mutants"
    files = {
        "training_scripts/templates/card.j2": ("new card", "old card"),  # changed: copied
        "training_scripts/task_specs/a.json": ("{}", "{}"),  # unchanged: left
        "pipelines/fixtures/phrases.json": ("[1]", None),  # new: copied
        "pipelines/module.py": ("x = 1", "mutated"),  # mutmut's: left
    }
    for name, (source, copy) in files.items():
        (sources / name).parent.mkdir(parents=True, exist_ok=True)
        (sources / name).write_text(source)
        if copy is not None:
            (mutants / name).parent.mkdir(parents=True, exist_ok=True)
            (mutants / name).write_text(copy)
    copied = mutation_run.refreshed_data_files(sources, mutants, mutation_run.SOURCE_PATHS)
    assert sorted(copied) == [
        Path("pipelines/fixtures/phrases.json"),
        Path("training_scripts/templates/card.j2"),
    ]
    assert {name: (mutants / name).read_text() for name in files} == {
        "training_scripts/templates/card.j2": "new card",
        "training_scripts/task_specs/a.json": "{}",
        "pipelines/fixtures/phrases.json": "[1]",
        "pipelines/module.py": "mutated",
    }


def test_the_refreshed_folders_are_mutmuts_source_paths() -> None:
    import tomllib

    from tools import mutation_run

    config = tomllib.loads(Path("pyproject.toml").read_text(encoding="utf-8"))
    assert tuple(config["tool"]["mutmut"]["source_paths"]) == mutation_run.SOURCE_PATHS
