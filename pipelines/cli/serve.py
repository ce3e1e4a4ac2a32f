"""`peftops serve`: every adapter deployed to a stage of a local registry on one base model,
behind an HTTP endpoint on this machine; `peftops invoke`: ask it (or a stage's SageMaker
endpoint) for one task's answer."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli.options import DEFAULT_REGISTRY, CommandError, RegistryOption, open_registry

StageOption = Annotated[str, typer.Option(help="The stage whose deployed versions serve.")]


def serve_command(
    registry: RegistryOption = DEFAULT_REGISTRY,
    stage: StageOption = "staging",
    host: Annotated[str, typer.Option(help="Address to listen on (this machine only).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
) -> None:
    """Serve the versions deployed to --stage: one base model, one adapter per task."""
    import uvicorn

    from pipelines.registry.lifecycle import PROMOTION_STAGES
    from pipelines.serving.adapters import AdapterModel, unpack_adapter
    from pipelines.serving.catalog import artifact_path, in_stage
    from pipelines.serving.server import create_app

    if stage not in PROMOTION_STAGES:
        raise CommandError(f"--stage {stage!r}: use one of {', '.join(PROMOTION_STAGES)}")
    store = open_registry(registry)
    served = in_stage(store, stage)
    with tempfile.TemporaryDirectory(prefix="peftops-serve-") as scratch:
        adapters = {
            task: unpack_adapter(artifact_path(v), Path(scratch))
            for task, v in served.versions.items()
        }
        model = AdapterModel(served.base_model, adapters)
        versions = {task: v.version for task, v in served.versions.items()}
        typer.echo(
            f"peftops: serving {stage} on http://{host}:{port}: "
            + ", ".join(f"{t} (version {n})" for t, n in sorted(versions.items()))
            + f" on {served.base_model}",
            err=True,
        )
        app = create_app(model, stage=stage, versions=versions)
        uvicorn.run(app, host=host, port=port, log_level="warning")


def invoke_command(
    text: Annotated[str, typer.Argument(help="The dialogue to summarize.")],
    task: Annotated[str, typer.Option(help="The task whose adapter answers ('base': none).")],
    endpoint: Annotated[
        str, typer.Option(help="http://HOST:PORT (peftops serve) or sagemaker:ENDPOINT.")
    ] = "http://127.0.0.1:8080",
    max_new_tokens: Annotated[int, typer.Option(min=1, max=512)] = 48,
) -> None:
    """Ask a served task for its answer."""
    from botocore.exceptions import BotoCoreError, ClientError

    from pipelines.serving.client import InvokeError, invoke

    try:
        typer.echo(invoke(endpoint, task, text, max_new_tokens))
    except InvokeError as err:
        raise CommandError(str(err), code=1) from err
    except (ClientError, BotoCoreError) as err:
        raise CommandError(f"AWS: {err}", code=1) from err
