"""The root of the `peftops` command: its nouns (pipeline, models, data, baseline, run-local,
serve, invoke)
and the options every command shares (`--verbose`)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from pipelines.cli.models import models_app
from pipelines.cli.options import OneLineErrors
from pipelines.cli.pipeline import pipeline_app
from pipelines.cli.publish import baseline_app, data_app
from pipelines.cli.run_local import run_local_command
from pipelines.cli.serve import invoke_command, serve_command
from training_scripts.logs import setup_logging

app = typer.Typer(
    cls=OneLineErrors,
    help="PEFT fine-tuning pipelines on Amazon SageMaker.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")
app.add_typer(baseline_app, name="baseline")
app.command("run-local")(run_local_command)
app.command("serve")(serve_command)
app.command("invoke")(invoke_command)


def print_version(requested: bool) -> None:
    if requested:
        from importlib.metadata import version

        typer.echo(f"peftops {version('peftops')}")
        raise typer.Exit()


@app.callback()
def configure(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Debug logs, the SageMaker SDK's and other libraries' too."
        ),
    ] = False,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    setup_logging(verbose=verbose)


def main() -> None:
    app(prog_name="peftops")


if __name__ == "__main__":
    sys.exit(main())
