"""`peftops serve`'s wiring (pipelines/cli/serve.py): the versions deployed to the stage
unpacked onto one base model, the server made with the stage's versions and the options'
limits, and the address checked before any model loads. Serving itself is
test_server_requests.py's; the process is recorded here, not started."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.serving import adapters, catalog, server


def serve(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> tuple[Any, dict[str, Any]]:
    """`peftops serve ARGV` over a registry whose staging holds two tasks' versions; what
    each part was given."""
    seen: dict[str, Any] = {"unpacked": []}
    versions = {
        "b-task": SimpleNamespace(version=3, artifact="/s3/b/model.tar.gz"),
        "a-task": SimpleNamespace(version=1, artifact="/s3/a/model.tar.gz"),
    }

    def in_stage(registry: Any, stage: str) -> catalog.Served:
        seen["stage"], seen["registry"] = stage, registry
        return catalog.Served("tiny-base", versions)  # type: ignore[arg-type]

    def unpack_adapter(archive: Path, scratch: Path) -> Path:
        seen["unpacked"].append(archive)
        seen["scratch"] = scratch.name
        return scratch / archive.parent.name

    class RecordedModel:
        def __init__(self, base_model: str, adapter_dirs: dict[str, Path]) -> None:
            seen["model"] = (base_model, {t: p.name for t, p in adapter_dirs.items()})

    def create_app(model: Any, **settings: Any) -> str:
        assert isinstance(model, RecordedModel)
        seen["app"] = settings
        return "the app"

    def run(app_: Any, **settings: Any) -> None:
        seen["run"] = (app_, settings)

    monkeypatch.setattr(catalog, "in_stage", in_stage)
    monkeypatch.setattr(catalog, "artifact_path", lambda v: Path(v.artifact))
    monkeypatch.setattr(adapters, "unpack_adapter", unpack_adapter)
    monkeypatch.setattr(adapters, "AdapterModel", RecordedModel)
    monkeypatch.setattr(server, "create_app", create_app)
    monkeypatch.setattr("uvicorn.run", run)
    monkeypatch.setattr("pipelines.cli.serve.open_registry", lambda spec: ("opened", spec))
    done = CliRunner().invoke(app, ["serve", *argv])
    return done, seen


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_stages_versions_serve_on_one_base_with_the_options_limits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    done, seen = serve(
        monkeypatch,
        [
            "--stage",
            "production",
            "--port",
            str(port),
            "--max-queue",
            "5",
            "--request-timeout",
            "9",
            "--registry",
            "local:/srv/registry.sqlite#adapters",
        ],
    )
    assert done.exit_code == 0, done.output
    assert seen["stage"] == "production"
    assert seen["registry"] == ("opened", "local:/srv/registry.sqlite#adapters")
    assert seen["scratch"].startswith("peftops-serve-")
    assert seen["unpacked"] == [Path("/s3/b/model.tar.gz"), Path("/s3/a/model.tar.gz")]
    assert seen["model"] == ("tiny-base", {"b-task": "b", "a-task": "a"})
    assert seen["app"] == {
        "stage": "production",
        "versions": {"b-task": 3, "a-task": 1},
        "max_queue": 5,
        "request_timeout_s": 9.0,
    }
    assert seen["run"] == ("the app", {"host": "127.0.0.1", "port": port, "log_level": "warning"})
    assert done.stdout == ""  # what it serves is said on stderr
    assert done.stderr == (
        f"peftops: serving production on http://127.0.0.1:{port}: a-task (version 1), "
        "b-task (version 3) on tiny-base\n"
    )


def test_without_options_staging_serves_on_port_8080_with_the_servers_limits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("pipelines.cli.serve.check_listenable", lambda host, port: None)
    done, seen = serve(monkeypatch, [])
    assert done.exit_code == 0, done.output
    assert seen["stage"] == "staging"
    assert seen["app"]["max_queue"] == server.MAX_QUEUE
    assert seen["app"]["request_timeout_s"] == server.REQUEST_TIMEOUT_S
    assert seen["run"][1] == {"host": "127.0.0.1", "port": 8080, "log_level": "warning"}


def test_a_stage_that_is_not_one_is_refused_before_anything_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    done, seen = serve(monkeypatch, ["--stage", "dev"])
    assert done.exit_code == 2
    assert done.output == "peftops: error: --stage 'dev': use one of staging, production\n"
    assert seen == {"unpacked": []}


def test_a_port_in_use_is_refused_before_any_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done, seen = serve(monkeypatch, ["--port", str(port)])
    assert done.exit_code == 2
    assert done.output == (
        f"peftops: error: cannot listen on 127.0.0.1:{port}: Address already in use (while "
        f"attempting to bind on address ('127.0.0.1', {port})); pick another --port or --host\n"
    )
    assert seen == {"unpacked": []}


def test_a_host_that_does_not_resolve_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    done, _ = serve(monkeypatch, ["--host", "no-such-host.invalid", "--port", str(free_port())])
    assert done.exit_code == 2
    assert done.output.startswith("peftops: error: cannot listen on no-such-host.invalid:")
    assert done.output.endswith("; pick another --port or --host\n")


def ipv6_loopback() -> bool:
    """Whether this machine can listen on ::1 (a container may have IPv6 switched off)."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_an_ipv6_loopback_address_is_listenable(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    done, seen = serve(monkeypatch, ["--host", "::1", "--port", str(port)])
    assert done.exit_code == 0, done.output
    assert seen["run"][1]["host"] == "::1"
