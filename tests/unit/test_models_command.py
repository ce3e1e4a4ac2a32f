"""`peftops models` in this process (typer's runner) on a local registry: what each command
prints, as text and as JSON, and what each decision records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.registry import LocalRegistry
from tests.unit.test_registry import GROUP, PASSING, TRAILING, register

WHO = "dana"


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalRegistry:
    """Version 1 passes its gate, version 2 trails the full fine-tune, version 3 has no
    evaluation; decisions default to WHO."""
    import getpass

    monkeypatch.setattr(getpass, "getuser", lambda: WHO)
    registry = LocalRegistry(tmp_path / "registry.sqlite", GROUP)
    for evaluation in (PASSING, TRAILING, None):
        register(registry, evaluation)
    return registry


def peftops(local: LocalRegistry, *argv: str) -> tuple[int, str, str]:
    done = CliRunner().invoke(app, [*argv, "--registry", f"local:{local.path}"])
    return done.exit_code, done.stdout, done.stderr


def test_list_shows_each_versions_rouge_l_and_a_dash_without_an_evaluation(
    local: LocalRegistry,
) -> None:
    code, out, _ = peftops(local, "models", "list")
    assert code == 0
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if "│" in line[:3]}
    assert " 0.4400 " in rows["1"] and " 0.4000 " in rows["2"]
    assert [cell.strip() for cell in rows["3"].split("│")][7] == "-"


def test_list_and_show_as_json_are_the_versions_own_documents(local: LocalRegistry) -> None:
    code, out, _ = peftops(local, "models", "list", "--json")
    assert (code, out) == (0, json.dumps([v.to_json() for v in local.list()], indent=2) + "\n")
    code, out, _ = peftops(local, "models", "show", "2", "--json")
    assert (code, out) == (0, json.dumps(local.get(2).to_json(), indent=2) + "\n")


@pytest.mark.parametrize(
    ("argv", "status", "action", "line"),
    [
        (
            ("approve", "1", "-d", "good summaries"),
            "Approved",
            "approve",
            "version 1 (dialogue-summary): Approved (dana: good summaries)",
        ),
        (
            ("reject", "1", "-d", "too short"),
            "Rejected",
            "reject",
            "version 1 (dialogue-summary): Rejected (dana: too short)",
        ),
        (
            ("approve", "2", "-d", "trailing, but wanted", "--force"),
            "Approved",
            "force-approve",
            "version 2 (dialogue-summary): Approved (dana: trailing, but wanted [forced: its rougeL may "
            "trail the full fine-tune by up to 0.0500 (upper end of the 95% interval; tolerance "
            "0.02)])",
        ),
    ],
)
def test_a_decision_prints_its_version_and_state_and_records_who_and_why(
    local: LocalRegistry, argv: tuple[str, ...], status: str, action: str, line: str
) -> None:
    code, out, _ = peftops(local, "models", *argv)
    assert (code, out) == (0, f"{GROUP} {line}\n")
    decided = local.get(int(argv[1]))
    assert decided.status == status
    [decision] = decided.history
    assert (decision.who, decision.action) == (WHO, action)
    assert decided.approval_description == f"{WHO}: {decision.why}"
    assert decision.why.startswith(argv[3])


def test_a_decision_as_json_is_the_decided_versions_document(local: LocalRegistry) -> None:
    code, out, _ = peftops(
        local, "models", "reject", "2", "-d", "trails", "--who", "ops-bot", "--json"
    )
    assert code == 0
    assert out == json.dumps(local.get(2).to_json(), indent=2) + "\n"
    assert json.loads(out)["status"] == "Rejected"
    assert local.get(2).history[0].who == "ops-bot"


def test_a_failed_gate_is_not_approved_without_force(local: LocalRegistry) -> None:
    code, out, err = peftops(local, "models", "approve", "2", "-d", "looks fine")
    assert (code, out) == (2, "")
    assert err.startswith("peftops: error: ") and err.count("\n") == 1 and "--force" in err
    assert local.get(2).status == "PendingManualApproval"


def test_archive_prints_the_stage_it_leaves_the_version_in(local: LocalRegistry) -> None:
    code, out, _ = peftops(local, "models", "archive", "3", "-d", "never evaluated")
    assert code == 0
    archived = local.get(3)
    assert out == f"{GROUP} version 3 (dialogue-summary): {archived.lifecycle}\n"
    assert [(d.who, d.why) for d in archived.history] == [(WHO, "never evaluated")]
