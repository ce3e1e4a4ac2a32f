"""The one logging setup of the jobs and the peftops CLI: `<logger>: <message>` on stderr, the
project's loggers at INFO, other libraries only from WARNING up unless verbose.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

# Loggers of the project's own code; everything else (transformers, the SageMaker SDK, boto)
# logs at WARNING unless asked to be verbose.
PROJECT_LOGGERS = ("peftops", "preprocess", "train", "evaluate")


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record is emitted (a test runner or a
    redirection may replace it after logging was set up)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


# The SageMaker SDK warns about every field it leaves out of a pipeline definition, which is
# what building one offline means: only its errors are shown unless verbose.
QUIET_LIBRARIES = ("sagemaker",)


def _not_the_optional_hub_kernel(record: logging.LogRecord) -> bool:
    """bitsandbytes, on CPUs with AVX512-BF16, tries at import to fetch an optional CPU kernel
    from the Hugging Face Hub through the `kernels` package and warns on every import when it
    cannot. Nothing here installs that package (isolated jobs could not download the kernel
    anyway): bitsandbytes then uses its own CPU path, the one these scripts are tested with."""
    return "kernels-community" not in record.getMessage()


# A filter on the logger itself: it holds before logging is set up, for any handler.
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_not_the_optional_hub_kernel)


def _project_or_warning(record: logging.LogRecord) -> bool:
    # Libraries set their own loggers to INFO or DEBUG, so the root level alone does not keep
    # their chatter out.
    top = record.name.split(".")[0]
    if top in PROJECT_LOGGERS:
        return True
    return record.levelno >= (logging.ERROR if top in QUIET_LIBRARIES else logging.WARNING)


def setup_logging(*, verbose: bool = False) -> None:
    """The one logging setup of the scripts and the CLI: `<logger>: <message>` on stderr; other
    libraries' records only from WARNING up, unless verbose."""
    handler = _CurrentStderr()
    if not verbose:
        handler.addFilter(_project_or_warning)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(name)s: %(message)s",
        handlers=[handler],
        force=True,
    )
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
