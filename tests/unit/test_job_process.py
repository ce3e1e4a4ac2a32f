"""The process a local job's script runs in (pipelines/local/job_process.py), in this process:
the script runs as `python SCRIPT ARGS` would run it, and the job ends with exit 143 once its
stdin (the runner's pipe) reaches end of file. test_local_jobs.py runs the real subprocess."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from pipelines.local import job_process


@pytest.fixture
def interpreter_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """sys.argv and sys.path as they were, whatever main sets."""
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.fixture
def watchers(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, bool | None]]:
    """The threads main starts, recorded, not run: the real watcher would end this process
    once this process's stdin reached its end."""
    started: list[tuple[object, bool | None]] = []

    class Watcher:
        def __init__(self, target: object, daemon: bool | None = None) -> None:
            self.started = (target, daemon)

        def start(self) -> None:
            started.append(self.started)

    monkeypatch.setattr(job_process.threading, "Thread", Watcher)
    return started


def test_the_script_runs_as_main_with_its_own_argv_and_folder_first_on_the_path(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    interpreter_state: None,
    watchers: list[tuple[object, bool | None]],
) -> None:
    folder = tmp_path / "code"
    folder.mkdir()
    seen = tmp_path / "seen.json"
    (folder / "job.py").write_text(
        "import json, sys\n"
        f"json.dump({{'name': __name__, 'argv': sys.argv, 'path0': sys.path[0]}}, "
        f"open({str(seen)!r}, 'w'))\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    job_process.main(["code/job.py", "--epochs", "2"])  # runpy sets argv[0] to the script
    script = str(folder / "job.py")
    assert json.loads(seen.read_text()) == {
        "name": "__main__",
        "argv": [script, "--epochs", "2"],
        "path0": str(folder),
    }
    # The watcher started beside the script, as a daemon: the job's process ends when its
    # script does, not when the runner closes its stdin.
    assert watchers == [(job_process.end_when_runner_is_gone, True)]


@pytest.mark.parametrize(("argv", "code"), [([], 2), (["-h"], 0), (["--help"], 0)])
def test_without_a_script_it_shows_its_usage(
    argv: list[str],
    code: int,
    capsys: pytest.CaptureFixture[str],
    watchers: list[tuple[object, bool | None]],
) -> None:
    with pytest.raises(SystemExit) as exited:
        job_process.main(argv)
    assert exited.value.code == code
    assert capsys.readouterr().out == job_process.__doc__.strip() + "\n"
    assert watchers == []  # nothing runs


def test_the_job_ends_with_143_once_its_stdin_reaches_end_of_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chunks = [b"keep", b"going", b""]
    reads: list[tuple[int, int]] = []

    def read(fd: int, size: int) -> bytes:
        reads.append((fd, size))
        return chunks.pop(0)

    class EndedError(Exception):
        pass

    def exit_now(code: int) -> None:
        raise EndedError(code)

    monkeypatch.setattr(os, "read", read)
    monkeypatch.setattr(os, "_exit", exit_now)
    with pytest.raises(EndedError) as ended:
        job_process.end_when_runner_is_gone()
    assert ended.value.args == (143,)
    assert reads == [(0, 65536)] * 3  # stdin's descriptor, until it is drained
