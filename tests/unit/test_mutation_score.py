"""make mutation's verdict: killed / total per module, and a named function that no mutant
matches (renamed or moved) fails the run instead of going unmutated."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tools import mutation_score

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
def test_the_share_killed_decides(mutmut: str, min_killed: float, code: int, capsys) -> None:
    argv = ["training_scripts.contracts.x_gate_*", "--min-killed", str(min_killed)]
    assert mutation_score.main([*argv, "--mutmut", mutmut]) == code
    out = capsys.readouterr().out
    assert "training_scripts.contracts" in out and "66.7%" in out
