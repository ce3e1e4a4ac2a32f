"""The CLI never surprises: one --registry form everywhere, enumerations checked before any
work, a version, a comparison that says when its two sides do not compare, and no library
noise on the scripts' stderr."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.registry import (
    LocalRegistry,
    Registration,
    RegistryError,
    local_registry_location,
    open_registry,
)
from tests.conftest import REPO, SCRIPTS


def test_version() -> None:
    done = CliRunner().invoke(app, ["--version"])
    expected = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert done.exit_code == 0 and done.output.strip() == f"peftops {expected}"


def test_the_console_script_names_itself_peftops(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`peftops` (pyproject's script, cli.app:main) says its own name in usage and errors,
    whatever path it was started by."""
    from pipelines.cli.app import main

    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/some-wrapper", "no-such-command"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    assert "Usage: peftops [OPTIONS] COMMAND [ARGS]..." in capsys.readouterr().err


@pytest.mark.parametrize(
    ("spec", "path", "group"),
    [
        ("local:runs/r.sqlite", "runs/r.sqlite", ""),
        ("runs/r.sqlite", "runs/r.sqlite", ""),
        ("local:runs/r.sqlite#smoke", "runs/r.sqlite", "smoke"),
        ("runs/r.sqlite#smoke", "runs/r.sqlite", "smoke"),
        ("local:C:/runs/r.sqlite#smoke", "C:/runs/r.sqlite", "smoke"),  # a colon in the path
    ],
)
def test_a_local_registry_is_named_the_same_way_everywhere(
    spec: str, path: str, group: str
) -> None:
    assert local_registry_location(spec) == (Path(path), group)
    registry = open_registry(spec)
    assert isinstance(registry, LocalRegistry)
    assert (registry.path, registry.group) == (Path(path), group or "peftops-adapters")


@pytest.mark.parametrize("spec", ["s3://bucket/registry", "", "local:", "sagemaker:"])
def test_a_registry_that_is_neither_is_one_line(spec: str) -> None:
    with pytest.raises(RegistryError, match="--registry"):
        open_registry(spec)
    done = CliRunner().invoke(app, ["models", "list", "--registry", spec])
    assert done.exit_code == 2 and done.output.count("\n") == 1, done.output


def test_models_and_run_local_read_the_same_file_from_a_bare_path(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite"
    LocalRegistry(path, "peftops-adapters").register(
        Registration("peftops-adapters", "s3://b/m.tar.gz", "PendingManualApproval", {}, None, None, "")
    )  # fmt: skip
    for spec in (str(path), f"local:{path}"):
        listed = CliRunner().invoke(app, ["models", "list", "--registry", spec, "--json"])
        assert [v["version"] for v in json.loads(listed.output)] == [1], spec
    refused = CliRunner().invoke(app, ["run-local", "--registry", "sagemaker:group"])
    assert refused.exit_code == 2
    assert "run-local registers into a local registry" in refused.output


def test_an_unknown_status_is_refused_before_reading_anything(tmp_path: Path) -> None:
    done = CliRunner().invoke(
        app, ["models", "list", "--status", "bogus", "--registry", str(tmp_path / "none.sqlite")]
    )
    assert done.exit_code == 2
    assert done.output.strip() == (
        "peftops: error: --status 'bogus': use one of PendingManualApproval, Approved, Rejected"
    )


def evaluation(rouge: float, test_set: str) -> dict:
    scores = {"rouge1": rouge, "rouge2": rouge, "rougeL": rouge, "rougeLsum": rouge}
    return {
        "models": {"adapter": scores | {"artifact_bytes": 3 * 2**20, "trainable_params": 1234567}},
        "test_set_sha256": test_set,
    }


SUMMARY = {
    "name": "dialogue-summary", "format": "fields", "template": "Summarize:\n{dialogue}",
    "target_field": "summary",
}  # fmt: skip


def evaluated_with(spec: dict) -> dict:
    """A whole evaluation.json of a version trained for `spec`."""
    from tests.evaluations import evaluation as whole_evaluation
    from training_scripts import tasks

    task = tasks.parse_task_spec(spec, "spec")
    return whole_evaluation(
        adapter=0.4, full_finetune=0.41, base=0.2,
        task={"name": task.name, "sha256": task.sha256, "spec": task.document(),
              "smoke_request": tasks.chat_request(task, "A: hi")},
    )  # fmt: skip


def test_compare_formats_figures_and_warns_on_different_test_sets(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite"
    registry = LocalRegistry(path, "peftops-adapters")
    for rouge, test_set in ((0.41234, "a" * 64), (0.43, "a" * 64), (0.5, "b" * 64)):
        registry.register(
            Registration(
                "peftops-adapters",
                f"s3://b/{rouge}.tar.gz",
                "PendingManualApproval",
                {},
                None,
                evaluation(rouge, test_set),
                "",
            )
        )
    runner = CliRunner()
    same = runner.invoke(app, ["models", "compare", "1", "2", "--registry", str(path)])
    assert same.exit_code == 0 and "warning" not in same.output
    row = next(line for line in same.output.splitlines() if " rougeL " in line)
    assert "0.4123" in row and "0.4300" in row and "+0.0177" in row
    assert "3.0 MB" in same.output and "1,234,567" in same.output
    different = runner.invoke(app, ["models", "compare", "1", "3", "--registry", str(path)])
    assert "were scored on different test sets (aaaaaaaaaaaa vs bbbbbbbbbbbb)" in different.output
    as_json = runner.invoke(app, ["models", "compare", "1", "3", "--registry", str(path), "--json"])
    assert json.loads(as_json.stdout)["same_test_set"] is False


def has_avx512_bf16() -> bool:
    from bitsandbytes.functional import has_avx512bf16

    return bool(has_avx512bf16())


def test_train_prints_no_library_noise() -> None:
    """bitsandbytes warns at import, on CPUs with AVX512-BF16, that an optional hub kernel is
    missing; train.py (whose Trainer import loads bitsandbytes) says only what a user can act
    on."""
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "train.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "kernels-community" not in done.stderr
    if not has_avx512_bf16():
        pytest.skip("this CPU has no AVX512-BF16: bitsandbytes does not try the hub kernel here")


def _raiser(error: BaseException):
    def command(*args, **kwargs):
        raise error

    return command


def _domain_errors() -> list[tuple[BaseException, int, str]]:
    from botocore.exceptions import ClientError, NoRegionError

    from pipelines.cli.options import CommandError
    from pipelines.local.errors import LocalRunError, StepFailedError, UnsupportedConstructError
    from pipelines.publishing import PublishError
    from pipelines.serving.adapters import ServingError
    from training_scripts.contracts import ContractError

    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "ListModelPackages")
    return [
        (RegistryError("version 9 is not in peftops-adapters"), 2, "version 9 is not in"),
        (ContractError("evaluation.json: schema 1; rerun"), 2, "evaluation.json: schema 1"),
        (PublishError("data.csv: holds no records"), 2, "data.csv: holds no records"),
        (ServingError("no version in staging"), 2, "no version in staging"),
        (LocalRunError("--preset huge: unknown"), 2, "--preset huge: unknown"),
        (StepFailedError("step Evaluate failed"), 2, "step Evaluate failed"),
        (UnsupportedConstructError("step X: type Y"), 2, "step X: type Y"),
        (denied, 2, "AWS: An error occurred (AccessDenied)"),
        (NoRegionError(), 2, "AWS: You must specify a region"),
        (CommandError("the run failed", code=1), 1, "the run failed"),
    ]


# Where each command family reaches the registry or AWS first: a domain error raised there
# must come out of the root as one line and its exit code, whatever the command.
COMMANDS = {
    "models list": ("pipelines.cli.models.open_registry", ["models", "list"]),
    "models show": ("pipelines.cli.models.open_registry", ["models", "show", "1"]),
    "models approve": (
        "pipelines.cli.models.open_registry",
        ["models", "approve", "1", "-d", "why"],
    ),
    "serve": ("pipelines.cli.serve.open_registry", ["serve", "--stage", "staging"]),
    "data publish": (
        "pipelines.cli.publish.open_store",
        ["data", "publish", "--data", "x.jsonl", "--bucket", "b"],
    ),
    "pipeline start": (
        "boto3.client",
        ["pipeline", "start", "--name", "p", "--region", "eu-west-1"],
    ),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_commands_user_errors_are_one_line_from_the_root(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    target, argv = COMMANDS[command]
    for error, code, line in _domain_errors():
        monkeypatch.setattr(target, _raiser(error))
        done = CliRunner().invoke(app, argv)
        assert done.exit_code == code, (command, error, done.output)
        assert done.output.count("\n") == 1 and f"peftops: error: {line}" in done.output, (
            command,
            done.output,
        )


def test_a_bug_is_not_dressed_as_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pipelines.cli.models.open_registry", _raiser(KeyError("bug")))
    done = CliRunner().invoke(app, ["models", "list"])
    assert isinstance(done.exception, KeyError) and "peftops: error" not in done.output


@pytest.mark.parametrize("command", [["models", "list"], ["serve"], ["run-local"]])
def test_help_shows_the_registry_forms_whole(command: list[str]) -> None:
    """Rich reads `[#GROUP]` as markup and would drop it from the help."""
    done = CliRunner().invoke(app, [*command, "--help"], terminal_width=200)
    assert done.exit_code == 0 and "PATH[#GROUP]" in done.output, done.output


def test_compare_refuses_versions_of_different_tasks_or_specs_and_show_prints_the_spec(
    tmp_path: Path,
) -> None:
    path = tmp_path / "registry.sqlite"
    registry = LocalRegistry(path, "peftops-adapters")
    reworded = {**SUMMARY, "template": "Summarize briefly:\n{dialogue}"}
    for number, spec in enumerate((SUMMARY, reworded, SUMMARY)):
        registry.register(
            Registration(
                "peftops-adapters", f"s3://b/{number}.tar.gz",
                "PendingManualApproval", {"task": spec["name"]}, None,
                evaluated_with(spec), "",
            )
        )  # fmt: skip
    runner = CliRunner()
    assert (
        runner.invoke(app, ["models", "compare", "1", "3", "--registry", str(path)]).exit_code == 0
    )
    refused = runner.invoke(app, ["models", "compare", "1", "2", "--registry", str(path)])
    assert refused.exit_code == 2
    assert "are for different tasks or task specs" in refused.output
    assert refused.output.count("\n") == 1
    shown = runner.invoke(app, ["models", "show", "2", "--registry", str(path)])
    assert shown.exit_code == 0
    assert '    template: "Summarize briefly:\\n{dialogue}"' in shown.output
    assert '    format: "fields"' in shown.output
    as_json = json.loads(
        runner.invoke(app, ["models", "show", "2", "--registry", str(path), "--json"]).stdout
    )
    assert as_json["task_spec"]["template"] == reworded["template"]


def test_serve_refuses_an_address_it_cannot_listen_on_before_loading_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A port out of range, a busy port or an address that does not resolve: exit 2 in one
    line, before the registry is read or a model loads."""
    import socket

    monkeypatch.setattr("pipelines.cli.serve.open_registry", pytest.fail)
    out_of_range = CliRunner().invoke(app, ["serve", "--port", "70000"])
    assert out_of_range.exit_code == 2
    assert "should be less than or equal to 65535" in " ".join(out_of_range.output.split())
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        refused = CliRunner().invoke(app, ["serve", "--port", str(port)])
    assert refused.exit_code == 2, refused.output
    assert refused.output.strip().startswith(f"peftops: error: cannot listen on 127.0.0.1:{port}:")
    unknown = CliRunner().invoke(app, ["serve", "--host", "no-such-host.invalid", "--port", "8080"])
    assert unknown.exit_code == 2 and "cannot listen on no-such-host.invalid:8080" in unknown.output


def test_serve_defaults_are_the_endpoints_own() -> None:
    """`peftops serve --help` shows the queue bound and timeout the endpoint applies when
    created without them (the CLI's defaults cannot import the server: it loads FastAPI)."""
    import inspect

    from pipelines.cli.serve import serve_command
    from pipelines.serving import server

    defaults = inspect.signature(serve_command).parameters
    assert defaults["max_queue"].default == server.MAX_QUEUE
    assert defaults["request_timeout"].default == server.REQUEST_TIMEOUT_S
    created = inspect.signature(server.create_app).parameters
    assert created["max_queue"].default == server.MAX_QUEUE
    assert created["request_timeout_s"].default == server.REQUEST_TIMEOUT_S


@pytest.mark.parametrize(
    ("recorded", "shown"),
    [
        ("line\nbreak", "line\\nbreak"),  # Cc
        ("bell\x07", "bell\\x07"),  # Cc
        ("zero\u200bwidth", "zero\\u200bwidth"),  # Cf
        ("right\u202eto left", "right\\u202eto left"),  # Cf: a bidi override
        ("line\u2028separator", "line\\u2028separator"),  # Zl
        ("paragraph\u2029separator", "paragraph\\u2029separator"),  # Zp
        ("café \u2013 naïve 日本", "café \u2013 naïve 日本"),  # printable: as recorded
    ],
)
def test_recorded_text_shows_on_one_line_with_its_control_characters_escaped(
    recorded: str, shown: str
) -> None:
    from pipelines.cli.models import escaped

    assert escaped(recorded) == shown


@pytest.mark.parametrize(
    ("values", "parsed"),
    [
        ([], {}),
        (["LoraRank=8"], {"LoraRank": "8"}),
        (["Note=a=b", "Empty="], {"Note": "a=b", "Empty": ""}),  # the first = splits
        (["LoraRank=8", "LoraRank=16"], {"LoraRank": "16"}),  # the last one given wins
    ],
)
def test_parameters_are_name_and_value_at_the_first_equals_sign(
    values: list[str], parsed: dict[str, str]
) -> None:
    from pipelines.cli.options import parse_assignments

    assert parse_assignments(values) == parsed


@pytest.mark.parametrize("value", ["LoraRank", "=8"])
def test_a_parameter_without_a_name_or_a_value_is_refused_with_an_example(value: str) -> None:
    from pipelines.cli.options import CommandError, parse_assignments

    with pytest.raises(CommandError) as caught:
        parse_assignments(["Ok=1", value])
    assert str(caught.value) == f"--param {value!r}: use Name=Value, e.g. --param LoraRank=8"


@pytest.mark.parametrize(("tty", "width"), [(True, 123), (False, 200)])
def test_tables_take_the_terminals_width_and_a_fixed_one_in_a_pipe(
    tty: bool, width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import sys

    from pipelines.cli.options import PIPED_WIDTH, console

    class Stdout(io.StringIO):
        def isatty(self) -> bool:
            return tty

    monkeypatch.setattr(sys, "stdout", Stdout())
    monkeypatch.setenv("COLUMNS", "123")
    assert PIPED_WIDTH == 200
    assert console().width == width


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({}, ""),
        ({"Metadata": {"Lambda": {"OutputParameters": []}}}, ""),
        (
            {"Metadata": {"Lambda": {"OutputParameters": [{"Name": "Other", "Value": "x"}]}}},
            "",
        ),
        (
            {
                "Metadata": {
                    "Lambda": {
                        "OutputParameters": [
                            {"Name": "Other", "Value": "x"},
                            {"Name": "Message", "Value": "version 3 registered"},
                        ]
                    }
                }
            },
            "version 3 registered",
        ),
    ],
)
def test_a_function_steps_message_is_its_message_output_or_nothing(
    step: dict, message: str
) -> None:
    from pipelines.cli.pipeline import function_message

    assert function_message(step) == message
