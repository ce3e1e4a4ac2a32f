"""`peftops models`: list, show, compare, approve and reject registered adapter versions, in
the local registry or SageMaker's."""

from __future__ import annotations

import json
import unicodedata
from typing import Annotated, Any

import typer

from pipelines.cli.aws import RegionOption
from pipelines.cli.options import (
    DEFAULT_REGISTRY,
    CommandError,
    JsonOption,
    RegistryOption,
    console,
    open_registry,
)
from pipelines.registry import ModelVersion
from pipelines.registry.lifecycle import StageStatus
from training_scripts import contracts

models_app = typer.Typer(
    help="List, compare, approve, reject, promote and archive registered adapters.",
    no_args_is_help=True,
)


def adapter_metric(version: ModelVersion, key: str) -> Any:
    """A figure of the version's adapter from its evaluation; None where there is none."""
    try:
        return contracts.value_at(version.evaluation or {}, contracts.metric_path("adapter", key))
    except contracts.ContractError:
        return None


def _rouge(version: ModelVersion, key: str) -> str:
    value = adapter_metric(version, key)
    return "-" if value is None else f"{value:.4f}"


@models_app.command("list")
def models_list(
    registry: RegistryOption = DEFAULT_REGISTRY,
    region: RegionOption = None,
    status: Annotated[str | None, typer.Option()] = None,
    as_json: JsonOption = False,
) -> None:
    """Registered versions, oldest first."""
    from pipelines.registry import APPROVAL_STATUSES

    if status is not None and status not in APPROVAL_STATUSES:
        raise CommandError(f"--status {status!r}: use one of {', '.join(APPROVAL_STATUSES)}")
    from pipelines.registry import other_groups

    store = open_registry(registry, region)
    versions = store.list(status)
    if as_json:
        typer.echo(json.dumps([v.to_json() for v in versions], indent=2))
        return
    if not versions:
        # Other groups are worth naming only when this one holds nothing at all.
        held = "" if status else other_groups(store)
        typer.echo(
            f"peftops: model group {store.group} holds no "
            + (f"{status} versions" if status else "versions")
            + (f"; {held}" if held else ""),
            err=True,
        )
        return
    from rich.table import Table

    table = Table()
    for column in ("version", "task", "status", "stage", "created", "method", "ROUGE-L", "gate"):
        table.add_column(column)
    from pipelines.registry import approval_verdict

    for v in versions:
        table.add_row(
            str(v.version),
            v.task,
            v.status,
            str(v.lifecycle),
            v.created,
            v.metadata.get("peft_method", "-"),
            _rouge(v, "rougeL"),
            approval_verdict(v)[1],
        )
    console().print(table)


@models_app.command("show")
def models_show(
    version: int,
    registry: RegistryOption = DEFAULT_REGISTRY,
    region: RegionOption = None,
    as_json: JsonOption = False,
) -> None:
    """One version: status, artifact, lineage and metrics."""
    found = open_registry(registry, region).get(version)
    if as_json:
        typer.echo(json.dumps(found.to_json(), indent=2))
        return
    from pipelines.registry import approval_verdict

    typer.echo(f"{found.group} version {found.version}: {found.status}")
    typer.echo(f"  artifact:   {found.model_data_url}")
    typer.echo(f"  evaluation: {found.evaluation_uri}")
    typer.echo(f"  gate:       {approval_verdict(found)[1]}")
    if found.approval_description:
        typer.echo(f"  decision:   {escaped(found.approval_description)}")
    for key, value in sorted(found.metadata.items()):
        typer.echo(f"  {key}: {value}")
    for name in contracts.MODEL_NAMES if found.evaluation else ():
        entry = contracts.value_at(found.evaluation, contracts.model_path(name))
        typer.echo(f"  {name}: " + " ".join(f"{k}={entry[k]:.4f}" for k in contracts.ROUGE_KEYS))
    for name, per_metric in ((found.evaluation or {}).get("comparisons") or {}).items():
        figures = per_metric.get("rougeL") if isinstance(per_metric, dict) else None
        if isinstance(figures, dict):  # evaluations before intervals hold plain differences
            typer.echo(
                f"  {name}: rougeL {figures['difference']:+.4f} "
                f"[{figures['low']:+.4f}, {figures['high']:+.4f}] (95% interval)"
            )
    typer.echo(f"  model card: {'registered' if found.model_card else 'none'}")
    typer.echo(f"  task:       {found.task}")
    spec = found.task_spec
    if spec is None:
        typer.echo("  task spec:  none recorded (registered before versions kept their task)")
    else:
        typer.echo(f"  task spec:  sha256 {found.task_spec_sha256}")
        for key in ("format", "metric", "system", "template", "target_field", "labels",
                    "max_new_tokens"):  # fmt: skip
            if spec.get(key) not in (None, "", []):
                typer.echo(f"    {key}: {json.dumps(spec[key], ensure_ascii=False)}")
    typer.echo(f"  stage:      {found.lifecycle}" + (
        f" ({escaped(found.lifecycle.description)})" if found.lifecycle.description else ""
    ))  # fmt: skip
    if found.history:
        typer.echo("  history:")
    for d in found.history:
        typer.echo(
            f"    {d.at}  {escaped(d.who)}  {d.action}: {d.before} -> {d.after}  ({escaped(d.why)})"
        )


def escaped(text: str) -> str:
    """Recorded text on one line, its control characters escaped: a line break written into a
    registry by another tool cannot print as a history entry of its own."""
    return "".join(
        ascii(c)[1:-1] if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in text
    )


@models_app.command("compare")
def models_compare(
    first: int,
    second: int,
    registry: RegistryOption = DEFAULT_REGISTRY,
    region: RegionOption = None,
    as_json: JsonOption = False,
) -> None:
    """Two versions' adapter metrics side by side."""
    store = open_registry(registry, region)
    a, b = (store.get(first), store.get(second))
    if (a.task, a.task_spec_sha256) != (b.task, b.task_spec_sha256):
        raise CommandError(
            f"versions {first} and {second} are for different tasks or task specs "
            f"({a.task} {str(a.task_spec_sha256)[:12]} vs {b.task} {str(b.task_spec_sha256)[:12]}): "
            "their scores answer different prompts and do not compare"
        )
    keys = (*contracts.ROUGE_KEYS, "trainable_params", "artifact_bytes", "train_runtime_s")

    rows = {
        key: {"first": adapter_metric(a, key), "second": adapter_metric(b, key)} for key in keys
    }
    for key in ("peft_method", "lora_r", "lora_alpha", "dataset_uri"):
        rows[key] = {"first": a.metadata.get(key), "second": b.metadata.get(key)}
    test_sets = [(v.evaluation or {}).get("test_set_sha256") for v in (a, b)]
    same_test_set = test_sets[0] is not None and test_sets[0] == test_sets[1]
    if not same_test_set:
        # Scores on different test sets do not compare: say so before anyone reads them.
        typer.echo(
            f"peftops: warning: versions {first} and {second} were scored on different test sets "
            f"({' vs '.join(str(t)[:12] for t in test_sets)}); their scores do not compare",
            err=True,
        )
    if as_json:
        typer.echo(
            json.dumps(
                {"first": first, "second": second, "same_test_set": same_test_set, "metrics": rows},
                indent=2,
            )
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in ("", f"version {first}", f"version {second}", "difference"):
        table.add_column(column)
        table.columns[-1].justify = "right" if column else "left"
    for key, pair in rows.items():
        x, y = pair["first"], pair["second"]
        numeric = isinstance(x, int | float) and isinstance(y, int | float)
        difference = shown(key, y - x, signed=True) if numeric else ""
        table.add_row(key, shown(key, x), shown(key, y), difference)
    Console().print(table)


def shown(key: str, value: Any, *, signed: bool = False) -> str:
    """A figure as a reviewer reads it: scores to 4 decimals, sizes in MB, counts grouped."""
    if value is None:
        return "-"
    sign = "+" if signed else ""
    if key.endswith("_bytes") and isinstance(value, int | float):
        return f"{value / 2**20:{sign},.1f} MB"
    if key.endswith("_s") and isinstance(value, int | float):
        return f"{value:{sign},.1f} s"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:{sign},}"
    return f"{value:{sign}.4f}"


def echo_version(version: ModelVersion, as_json: bool, state: str) -> None:
    """A decided version: its JSON, or one line with its new state."""
    if as_json:
        typer.echo(json.dumps(version.to_json(), indent=2))
    else:
        typer.echo(f"{version.group} version {version.version} ({version.task}): {state}")


def _decide(
    version: int,
    status: str,
    registry: str,
    region: str | None,
    reason: str,
    who: str | None,
    force: bool,
    as_json: bool,
) -> None:
    import getpass

    from pipelines.registry import decide

    store = open_registry(registry, region)
    decided = decide(store, version, status, who=who or getpass.getuser(), why=reason, force=force)
    echo_version(decided, as_json, f"{decided.status} ({decided.approval_description})")


ReasonOption = Annotated[
    str, typer.Option("--description", "-d", help="Why: recorded with the decision.")
]


WhoOption = Annotated[str | None, typer.Option(help="Who decides (default: the current user).")]


@models_app.command("approve")
def models_approve(
    version: int,
    description: ReasonOption,
    registry: RegistryOption = DEFAULT_REGISTRY,
    region: RegionOption = None,
    who: WhoOption = None,
    force: Annotated[bool, typer.Option(help="Approve even without a passing evaluation.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Approve a version; refused when its evaluation is missing or its gate failed."""
    _decide(version, "Approved", registry, region, description, who, force, as_json)


@models_app.command("reject")
def models_reject(
    version: int,
    description: ReasonOption,
    registry: RegistryOption = DEFAULT_REGISTRY,
    region: RegionOption = None,
    who: WhoOption = None,
    as_json: JsonOption = False,
) -> None:
    """Reject a version."""
    _decide(version, "Rejected", registry, region, description, who, False, as_json)


StageChoice = Annotated[str, typer.Option("--to", help="staging or production.")]


@models_app.command("promote")
def models_promote(
    version: int,
    to: StageChoice,
    description: ReasonOption,
    registry: RegistryOption = DEFAULT_REGISTRY,
    region: RegionOption = None,
    who: WhoOption = None,
    wait: Annotated[
        int,
        typer.Option(
            min=0, help="SageMaker: seconds to wait for the stage deployer's outcome (0: none)."
        ),
    ] = 0,
    as_json: JsonOption = False,
) -> None:
    """Promote an approved version to staging, or from a passed staging smoke test to
    production. A local registry's version is smoke-tested here at once; on SageMaker the
    stage's deployer takes it from there and records the outcome (`--wait` follows it)."""
    import getpass

    from pipelines.registry import promote
    from pipelines.registry.lifecycle import PROMOTION_STAGES

    if to not in PROMOTION_STAGES:
        raise CommandError(f"--to {to!r}: use one of {', '.join(PROMOTION_STAGES)}")
    store = open_registry(registry, region)
    who = who or getpass.getuser()
    outcome = promote(store, version, to, who=who, why=description)
    if store.deploys_here:
        from pipelines.serving.local_deployer import deploy

        outcome = deploy(store, version)
    elif wait:
        from pipelines.registry.decisions import awaited_deployment

        outcome = awaited_deployment(store, version, timeout_s=wait)
    echo_version(outcome, as_json, f"{outcome.lifecycle} ({outcome.lifecycle.description})")
    if outcome.lifecycle.status == StageStatus.FAILED:
        raise typer.Exit(1)


@models_app.command("archive")
def models_archive(
    version: int,
    description: ReasonOption,
    registry: RegistryOption = DEFAULT_REGISTRY,
    region: RegionOption = None,
    who: WhoOption = None,
    as_json: JsonOption = False,
) -> None:
    """Archive a version that serves nowhere: it can never be promoted again."""
    import getpass

    from pipelines.registry import archive

    store = open_registry(registry, region)
    done = archive(store, version, who=who or getpass.getuser(), why=description)
    echo_version(done, as_json, str(done.lifecycle))
