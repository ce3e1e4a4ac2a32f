"""The one logging setup of the jobs and the CLI (training_scripts/logs.py): which records reach
stderr, as `<logger>: <message>`, with and without verbose, and the bitsandbytes warning that
no run here can act on."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from training_scripts.logs import PROJECT_LOGGERS, setup_logging


@pytest.fixture(autouse=True)
def restored_logging() -> Iterator[None]:
    """setup_logging replaces the root's handlers and sets levels: put them back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in PROJECT_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)


# (logger, level, shown by default, shown when verbose)
RECORDS = [
    ("peftops", logging.INFO, True, True),
    ("peftops.cli", logging.DEBUG, False, True),
    ("train", logging.INFO, True, True),
    ("preprocess.readers", logging.INFO, True, True),
    ("evaluate", logging.INFO, True, True),
    ("a_library.module", logging.INFO, False, True),
    ("a_library.module", logging.WARNING, True, True),
    ("botocore.credentials", logging.WARNING, True, True),
    ("sagemaker.core.workflow", logging.WARNING, False, True),  # a definition built offline
    ("sagemaker.core.workflow", logging.ERROR, True, True),
    ("trainers", logging.INFO, False, True),  # a name that only starts like a project logger
]


@pytest.mark.parametrize("verbose", [False, True])
def test_the_project_logs_at_info_and_libraries_from_warning_unless_verbose(
    capsys: pytest.CaptureFixture[str], verbose: bool
) -> None:
    if verbose:
        setup_logging(verbose=True)
    else:
        setup_logging()  # quiet unless asked
    for number, (name, level, _, _) in enumerate(RECORDS):
        logging.getLogger(name).log(level, "record %d", number)
    shown = capsys.readouterr().err.splitlines()
    expected = [
        f"{name}: record {number}"
        for number, (name, _, by_default, when_verbose) in enumerate(RECORDS)
        if (when_verbose if verbose else by_default)
    ]
    assert shown == expected


@pytest.mark.parametrize("verbose", [False, True])
def test_the_bitsandbytes_hub_kernel_warning_is_dropped_and_its_other_warnings_kept(
    capsys: pytest.CaptureFixture[str], verbose: bool
) -> None:
    setup_logging(verbose=verbose)
    cpu_ops = logging.getLogger("bitsandbytes.backends.cpu.ops")
    cpu_ops.warning("Failed to load CPU gemm_4bit_forward from kernels-community: no package")
    cpu_ops.warning("another warning")
    assert capsys.readouterr().err == "bitsandbytes.backends.cpu.ops: another warning\n"
