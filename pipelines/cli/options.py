"""What every peftops command shares: the one-line error exit, option types, `--param`
parsing, and opening a registry with its errors turned into one line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

DEFAULT_REGISTRY = "local:runs/registry.sqlite"


def fail(message: str, code: int = 2) -> typer.Exit:
    """One line on stderr and a non-zero exit: no traceback for a user's mistake."""
    typer.echo(f"peftops: error: {message}", err=True)
    return typer.Exit(code)


RegistryOption = Annotated[
    str, typer.Option("--registry", help="local:PATH[#GROUP], PATH[#GROUP] or sagemaker:GROUP.")
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
            raise fail(f"--param {value!r}: use Name=Value, e.g. --param LoraRank=8")
        parsed[name] = setting
    return parsed


def guarded(action: Callable[[], Any]) -> Any:
    """Run a registry or AWS request; its errors become one line."""
    from botocore.exceptions import BotoCoreError, ClientError

    from pipelines.registry import RegistryError
    from training_scripts.contracts import ContractError

    try:
        return action()
    except (RegistryError, ContractError) as err:
        raise fail(str(err)) from err
    except (ClientError, BotoCoreError) as err:
        raise fail(f"AWS: {err}") from err


def open_registry(spec: str) -> Any:
    from pipelines.registry import open_registry as open_spec

    return guarded(lambda: open_spec(spec))
