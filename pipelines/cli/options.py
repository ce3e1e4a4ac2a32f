"""What every peftops command shares: the one error path (commands raise, the root prints one
line and exits), option types, `--param` parsing, and the console."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from typer.core import TyperGroup

DEFAULT_REGISTRY = "local:runs/registry.sqlite"


class CommandError(Exception):
    """What a command could not do, said in one line. Exit code 2: the request or its inputs
    were wrong; 1: the operation ran and failed."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def user_error(err: BaseException) -> tuple[str, int] | None:
    """The line and exit code for an error that names its cause and fix (the project's own
    errors, and AWS's); None for anything else, a bug whose traceback should show."""
    from botocore.exceptions import BotoCoreError, ClientError

    from pipelines.local.errors import LocalRunError, StepFailedError, UnsupportedConstructError
    from pipelines.publishing import PublishError
    from pipelines.registry import RegistryError
    from pipelines.serving.adapters import ServingError
    from training_scripts.contracts import ContractError

    if isinstance(err, CommandError):
        return str(err), err.code
    if isinstance(err, ClientError | BotoCoreError):
        return f"AWS: {err}", 2
    domain = (
        RegistryError,
        ContractError,
        PublishError,
        ServingError,
        LocalRunError,
        StepFailedError,
        UnsupportedConstructError,
    )
    return (str(err), 2) if isinstance(err, domain) else None


class OneLineErrors(TyperGroup):
    """The root command: any command's user error becomes `peftops: error: <line>` on stderr
    and its exit code, in this one place; no traceback for a user's mistake."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as err:
            said = user_error(err)
            if said is None:
                raise
            typer.echo(f"peftops: error: {said[0]}", err=True)
            raise typer.Exit(said[1]) from err


RegistryOption = Annotated[
    str, typer.Option("--registry", help="local:PATH\\[#GROUP], PATH\\[#GROUP] or sagemaker:GROUP.")
]
TaskOption = Annotated[
    str | None,
    typer.Option(help="The task the adapter is for, e.g. dialogue-summary (the Task parameter)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
# The record fields a dataset's text and reference summary are read from (preprocess's rules).
InputFieldOption = Annotated[str, typer.Option(help="Field with the text to summarize.")]
TargetFieldOption = Annotated[str, typer.Option(help="Field with the reference summary.")]
ParamOption = Annotated[
    list[str] | None, typer.Option(help="Pipeline parameter override Name=Value (repeatable).")
]


# Rich sizes tables to 80 columns when the output is not a terminal and cuts cells short
# ("Pendin…"); a file or a pipe gets this width instead, and only what it needs of it.
PIPED_WIDTH = 200


def console() -> Any:
    """A Rich console for stdout: the terminal's width, or PIPED_WIDTH for a file or a pipe."""
    import sys

    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else PIPED_WIDTH)


def parse_assignments(values: list[str]) -> dict[str, str]:
    parsed = {}
    for value in values:
        name, sep, setting = value.partition("=")
        if not sep or not name:
            raise CommandError(f"--param {value!r}: use Name=Value, e.g. --param LoraRank=8")
        parsed[name] = setting
    return parsed


def open_registry(spec: str) -> Any:
    from pipelines.registry import open_registry as open_spec

    return open_spec(spec)
