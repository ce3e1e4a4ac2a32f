"""What every peftops command shares: the one error path (commands raise, the root prints one
line and exits), option types, `--param` parsing, and the console."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:
    from training_scripts.tasks import TaskSpec

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
    from training_scripts.tasks import TaskSpecError

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
        TaskSpecError,
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
    typer.Option(
        help="A task the project ships, by name (e.g. dialogue-summary); see --task-spec."
    ),
]
TaskSpecOption = Annotated[
    Path | None,
    typer.Option(
        help="Your task's spec (JSON: name, format, template, metric...; README, \"Your own "
        'task"). Its name is the Task parameter.'
    ),
]


def chosen_task(task: str | None, task_spec: Path | None) -> TaskSpec:
    """The task a command runs: a spec file, or a shipped task by name (the default task when
    neither is given)."""
    from training_scripts import tasks

    if task and task_spec:
        raise CommandError("pass --task (a shipped task) or --task-spec (your own), not both")
    return tasks.resolve_task_spec(task_spec or task or tasks.DEFAULT_TASK)


JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
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


def open_registry(spec: str, region: str | None = None) -> Any:
    """The registry a --registry names; a SageMaker one in the region --region or the AWS
    configuration names (said on stderr)."""
    from pipelines.registry import local_registry_location
    from pipelines.registry import open_registry as open_spec

    if local_registry_location(spec) is None and spec.removeprefix("sagemaker:"):
        from pipelines.cli.aws import cloud_region

        region = cloud_region(region)
    return open_spec(spec, region=region)
