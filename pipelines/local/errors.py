"""How a local run fails: bad input to the run, a construct the runner does not implement, a
missing input, or a job that exited non-zero."""


class LocalRunError(Exception):
    """Bad input to a local run; the message names the problem."""


class UnsupportedConstructError(Exception):
    """The definition uses something the local runner does not implement."""


class MissingInputError(Exception):
    """A job's S3 input does not exist."""


class StepFailedError(Exception):
    """A step's job failed; the message carries the job's own last error line and its log."""
