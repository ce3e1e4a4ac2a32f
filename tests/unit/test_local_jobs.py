"""A local job's process ends with the runner that started it, however the runner ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

# A runner that starts one job whose script sleeps (as a long training would) after writing
# its process id, then waits for it.
RUNNER = """
import signal
import sys
from pathlib import Path

# Ctrl-C as in a terminal: a suite started as a background job (`make test &`) passes SIGINT
# down ignored, and a Python started that way keeps ignoring it.
signal.signal(signal.SIGINT, signal.default_int_handler)
from pipelines.local.jobs import JobRunner, job_command
from pipelines.local.s3_mirror import S3Mirror

folder = Path(sys.argv[1])
runner = JobRunner(S3Mirror(folder), folder, "test", show=print)
runner.run_command("Sleep", job_command(str(folder / "job.py"), [str(folder / "pid")]),
                   cwd=folder, env={}, log=folder / "job.log")
"""
JOB = """
import os, sys, time
from pathlib import Path
Path(sys.argv[1]).write_text(str(os.getpid()))
time.sleep(120)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose; on Linux, /proc says which it is.
    status = Path(f"/proc/{pid}/status")
    return not (status.is_file() and "\nState:\tZ" in status.read_text())


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_the_job_ends_when_its_runner_is_killed(tmp_path: Path, how: signal.Signals) -> None:
    (tmp_path / "job.py").write_text(JOB)
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pid_file = tmp_path / "pid"
    assert wait_for(lambda: pid_file.is_file() and pid_file.read_text(), 60), "job never started"
    job = int(pid_file.read_text())
    assert alive(job)
    runner.send_signal(how)
    runner.wait(timeout=30)
    assert wait_for(lambda: not alive(job), 10), f"job {job} outlived its runner ({how.name})"


def test_the_job_runs_its_script_as_python_would(tmp_path: Path) -> None:
    (tmp_path / "helper.py").write_text("VALUE = 'from the script folder'\n")
    (tmp_path / "job.py").write_text(
        "import sys\nimport helper\nprint(__name__, sys.argv[1:], helper.VALUE)\n"
    )
    job = subprocess.Popen(
        [sys.executable, "-m", "pipelines.local.job_process", str(tmp_path / "job.py"), "a", "b"],
        cwd=tmp_path,
        stdin=subprocess.PIPE,  # held open, as the runner does while the job runs
        stdout=subprocess.PIPE,
        text=True,
    )
    assert job.stdout is not None and job.stdin is not None
    printed = job.stdout.read()
    assert job.wait(timeout=60) == 0
    job.stdin.close()
    assert printed.strip() == "__main__ ['a', 'b'] from the script folder"
