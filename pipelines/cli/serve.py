"""`peftops serve`: every adapter deployed to a stage of a local registry on one base model,
behind an HTTP endpoint on this machine; `peftops invoke`: ask it (or a stage's SageMaker
endpoint) for one task's answer."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from pipelines.cli.aws import RegionOption, cloud_region
from pipelines.cli.options import DEFAULT_REGISTRY, CommandError, RegistryOption, open_registry

StageOption = Annotated[str, typer.Option(help="The stage whose deployed versions serve.")]


def serve_command(
    registry: RegistryOption = DEFAULT_REGISTRY,
    stage: StageOption = "staging",
    host: Annotated[str, typer.Option(help="Address to listen on (this machine only).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8080,
    max_queue: Annotated[
        int,
        typer.Option(
            min=1, max=10_000, help="Requests waiting for a batch at most; past it, a 429."
        ),
    ] = 64,  # server.MAX_QUEUE; a test keeps the two equal
    request_timeout: Annotated[
        float,
        typer.Option(
            min=1, max=3600, help="Seconds a request may wait for its answer; past it, a 503."
        ),
    ] = 60.0,  # server.REQUEST_TIMEOUT_S, the same
) -> None:
    """Serve the versions deployed to --stage: one base model, one adapter per task."""
    import uvicorn

    from pipelines.registry.lifecycle import PROMOTION_STAGES
    from pipelines.serving.adapters import AdapterModel, unpack_adapter
    from pipelines.serving.catalog import artifact_path, in_stage
    from pipelines.serving.server import create_app

    if stage not in PROMOTION_STAGES:
        raise CommandError(f"--stage {stage!r}: use one of {', '.join(PROMOTION_STAGES)}")
    check_listenable(host, port)  # before a model loads for minutes, only to fail here
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
        app = create_app(
            model,
            stage=stage,
            versions=versions,
            max_queue=max_queue,
            request_timeout_s=request_timeout,
        )
        uvicorn.run(app, host=host, port=port, log_level="warning")


def check_listenable(host: str, port: int) -> None:
    """That this process can listen on host:port now (the address resolves, the port is free)."""
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.create_server((host, port), family=family):
            pass
    except OSError as err:
        raise CommandError(
            f"cannot listen on {host}:{port}: {err.strerror or err}; pick another --port or --host"
        ) from None


def invoke_command(
    text: Annotated[
        str | None,
        typer.Argument(help="The input: the task's one field, its prompt, or the user's turn."),
    ] = None,
    task: Annotated[str, typer.Option(help="The task whose adapter answers ('base': none).")] = "",
    messages: Annotated[
        Path | None,
        typer.Option(
            help="A JSON file with the task input instead of TEXT: a list of turns, or "
            "an object of the template's fields."
        ),
    ] = None,
    task_spec: Annotated[
        Path | None,
        typer.Option(
            help="The task's spec; by default the endpoint's (peftops serve) or the "
            "shipped task of that name."
        ),
    ] = None,
    endpoint: Annotated[
        str, typer.Option(help="http://HOST:PORT (peftops serve) or sagemaker:ENDPOINT.")
    ] = "http://127.0.0.1:8080",
    max_new_tokens: Annotated[
        int, typer.Option(min=0, max=512, help="Answer tokens at most; 0: the task spec's.")
    ] = 0,
    region: RegionOption = None,
) -> None:
    """Ask a served task for its answer, in the prompt its adapter was trained on."""
    from botocore.exceptions import BotoCoreError, ClientError

    from pipelines.serving.client import InvokeError, invoke
    from training_scripts import tasks

    if not task:
        raise CommandError("--task: name the task to ask ('base' for the base model)")
    if not tasks.TASK_NAME.fullmatch(task):
        # A task names a header value and an inference component: never sent as given.
        raise CommandError(
            f"--task {task!a}: a task name is lower-case letters, digits and single "
            "hyphens ('base' for the base model)"
        )
    if (text is None) == (messages is None):
        raise CommandError("give the input as TEXT or as --messages FILE, one of them")
    spec = invoked_task(task, task_spec, endpoint)
    if messages is not None:
        try:
            task_input = json.loads(messages.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise CommandError(f"--messages {messages}: not a readable JSON file ({err})") from None
    else:
        task_input = tasks.task_input_from_text(spec, text or "")
    body = tasks.chat_request(spec, task_input, max_new_tokens)
    region = cloud_region(region) if endpoint.startswith("sagemaker:") else None
    try:
        typer.echo(invoke(endpoint, task, body, region=region))
    except InvokeError as err:
        raise CommandError(str(err), code=1) from err
    except (ClientError, BotoCoreError) as err:
        raise CommandError(f"AWS: {err}", code=1) from err


def invoked_task(task: str, task_spec: Path | None, endpoint: str) -> Any:
    """The spec a request to `task` is built from: --task-spec, the one the local endpoint
    serves the task with, or the shipped task of that name ('base' reads as the default task)."""
    from pipelines.serving.client import InvokeError, served_task_specs
    from training_scripts import tasks

    if task_spec is not None:
        spec = tasks.load_task_spec(task_spec)
        if task not in (spec.name, "base"):
            raise CommandError(f"--task-spec {task_spec} is task {spec.name!r}, not {task!r}")
        return spec
    if endpoint.startswith(("http://", "https://")) and task != "base":
        try:
            served = served_task_specs(endpoint)
        except InvokeError as err:
            raise CommandError(str(err), code=1) from err
        if task in served:
            return tasks.parse_task_spec(served[task], f"{endpoint}/tasks {task}")
    if task == "base":
        return tasks.resolve_task_spec(tasks.DEFAULT_TASK)
    if task in tasks.shipped_tasks():
        return tasks.resolve_task_spec(task)
    raise CommandError(
        f"no spec for task {task!r}: the endpoint does not serve it and no shipped task has that "
        "name; pass --task-spec"
    )
