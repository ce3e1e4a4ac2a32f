"""`peftops pipeline definition`: offline, credential-free, byte-identical across processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from pipelines.definition.staging import reproducible_tarball, tree_digest


def run_cli(args: list[str], *, isolate_network: bool) -> subprocess.CompletedProcess:
    # No AWS credentials or config of any kind: only what a clean shell has.
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}
    command = [sys.executable, "-m", "pipelines.cli", *args]
    if isolate_network:
        command = ["unshare", "--net", "--map-root-user", *command]
    return subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=Path(__file__).resolve().parents[2],
    )


def can_unshare_network() -> bool:
    if shutil.which("unshare") is None:
        return False
    return (
        subprocess.run(
            ["unshare", "--net", "--map-root-user", "true"], capture_output=True
        ).returncode
        == 0
    )


def test_definition_offline_without_credentials_is_byte_identical(tmp_path: Path) -> None:
    isolate = can_unshare_network()
    outputs = []
    for attempt in range(2):
        out = tmp_path / f"definition-{attempt}.json"
        done = run_cli(
            [
                "pipeline",
                "definition",
                "--out",
                str(out),
                "--assets-dir",
                str(tmp_path / f"assets-{attempt}"),
            ],
            isolate_network=isolate,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        # The SDK's own INFO chatter stays out: stderr is the one line the command writes.
        assert done.stdout == ""
        (line,) = [line for line in done.stderr.splitlines() if line.strip()]
        assert line.startswith(f"wrote {out} ({len(out.read_bytes())} bytes, "), done.stderr[-2000:]
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    definition = json.loads(outputs[0])
    assert definition["Version"] == "2020-12-01"
    # Every asset the definition refers to was written, under its bucket key.
    assets = {
        p.relative_to(tmp_path / "assets-0").as_posix()
        for p in (tmp_path / "assets-0").rglob("*")
        if p.is_file()
    }
    code = next(a for a in assets if a.endswith("sourcedir.tar.gz"))
    assert code in outputs[0].decode()
    with tarfile.open(tmp_path / "assets-0" / code) as tar:
        names = tar.getnames()
    assert {"train.py", "preprocess.py", "evaluate.py", "prompts.py", "requirements.lock"} <= set(
        names
    )
    if not isolate:
        pytest.skip(
            "unshare --net is not permitted here: ran offline-capable build without network isolation"
        )


def test_bad_deployment_values_are_one_line_errors(tmp_path: Path) -> None:
    done = run_cli(
        ["pipeline", "definition", "--out", str(tmp_path / "x.json"), "--role-arn", "not-an-arn"],
        isolate_network=False,
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip().splitlines()[-1]
        == "peftops: error: role_arn 'not-an-arn' is not an IAM role ARN"
    )


def test_each_kind_of_job_runs_under_the_role_it_is_given(tmp_path: Path) -> None:
    """A hand-made deployment may split the roles as the stack does; a kind given no role of
    its own runs under --role-arn."""
    from typer.testing import CliRunner

    from pipelines.cli import app

    out = tmp_path / "definition.json"
    training = "arn:aws:iam::111122223333:role/peftops-training-jobs"
    done = CliRunner().invoke(
        app, ["pipeline", "definition", "--out", str(out), "--training-role-arn", training]
    )
    assert done.exit_code == 0, done.output
    from pipelines.definition.service_rules import steps_of

    roles = {
        step["Name"]: step["Arguments"]["RoleArn"]
        for step in steps_of(json.loads(out.read_text())["Steps"])
        if step["Type"] in ("Training", "Processing")
    }
    default = "arn:aws:iam::111122223333:role/peftops-sagemaker-execution"
    assert roles == {
        "Preprocess": default,
        "TrainAdapter": training,
        "TrainBaseline": training,
        "Evaluate": default,
        "EvaluateStoredBaseline": default,
    }


def test_unknown_config_setting_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "stage.json"
    config.write_text(json.dumps({"use_spot": False, "lora_rank": 8}))
    done = run_cli(
        ["pipeline", "definition", "--out", str(tmp_path / "x.json"), "--config", str(config)],
        isolate_network=False,
    )
    assert done.returncode == 2 and "unknown settings ['lora_rank']" in done.stderr


def test_code_tarball_is_reproducible_and_content_addressed(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "a.py").write_text("print(1)\n")
    (tmp_path / "pkg" / "b.py").write_text("x = 2\n")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"cache")
    first = reproducible_tarball(tmp_path)
    os.utime(tmp_path / "a.py", (1, 1))  # a different mtime must not matter
    assert reproducible_tarball(tmp_path) == first
    (tmp_path / "a.py").write_text("print(2)\n")
    assert reproducible_tarball(tmp_path) != first
    assert tree_digest({"a": b"1"}) != tree_digest({"a": b"2"}) != tree_digest({"b": b"2"})


def test_verbose_shows_the_sdks_logs(tmp_path: Path) -> None:
    quiet = run_cli(
        ["pipeline", "definition", "--out", str(tmp_path / "a.json")], isolate_network=False
    )
    verbose = run_cli(
        ["--verbose", "pipeline", "definition", "--out", str(tmp_path / "b.json")],
        isolate_network=False,
    )
    assert quiet.returncode == verbose.returncode == 0, verbose.stderr[-2000:]
    assert "sagemaker" not in quiet.stderr
    assert any(line.startswith("sagemaker") for line in verbose.stderr.splitlines())
