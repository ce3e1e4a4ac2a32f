"""The process a local job runs in: its entry script, ended as soon as the runner that started
it is gone.

A job's script can run for an hour. If `peftops run-local` is killed (SIGKILL, a closed
terminal, an out-of-memory kill), nothing would stop the script, which would go on using the
CPU and writing into a job folder nobody reads. The runner holds the write end of this
process's stdin; the operating system closes it when the runner exits, however it exits, and
a watcher thread here then ends the job. This works the same on Linux and macOS, unlike
Linux's PR_SET_PDEATHSIG.

    python -m pipelines.local.job_process SCRIPT [ARGUMENT...]
"""

from __future__ import annotations

import os
import runpy
import sys
import threading
from pathlib import Path

RUNNER_GONE_EXIT = 143  # as if terminated by SIGTERM
STDIN = 0


def end_when_runner_is_gone() -> None:
    """Blocks until stdin reaches end of file (the runner closed it or exited), then ends the
    process at once: its output has no reader any more."""
    # The file descriptor, not sys.stdin: a daemon thread blocked inside sys.stdin's buffer
    # holds its lock, and the interpreter aborts when it cannot take it at exit.
    while os.read(STDIN, 1 << 16):
        pass
    os._exit(RUNNER_GONE_EXIT)


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        raise SystemExit(0 if argv else 2)
    script = Path(argv[0]).resolve()
    threading.Thread(target=end_when_runner_is_gone, daemon=True).start()
    # As `python SCRIPT`: the script's folder first on the path, its own argv.
    sys.path.insert(0, str(script.parent))
    sys.argv = [str(script), *argv[1:]]
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
