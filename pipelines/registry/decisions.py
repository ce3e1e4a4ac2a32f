"""Decisions on registered versions: approval (the quality gate checked again from the stored
evaluation, the same rule the pipeline's condition step applies), rejection, promotion through
the stages, a deployment's outcome, archiving. Each is kept in the version's history."""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable

from pipelines.functions.registered_adapter import EVALUATION_DIGEST, SMOKE_TEST
from pipelines.registry import lifecycle
from pipelines.registry.versions import Change, ModelVersion, Registry, RegistryError
from training_scripts import contracts


def approval_verdict(version: ModelVersion) -> tuple[bool, str]:
    """Whether a version may be approved: not a smoke test, its evaluation the one registered,
    and that evaluation passing the gate (`contracts.gate_verdict`) at the thresholds recorded
    at registration."""
    if version.metadata.get(SMOKE_TEST) == "true":
        return False, "it is a smoke test's adapter (a random model that checks the plumbing)"
    if not version.evaluation:
        return False, "its evaluation is missing"
    recorded = version.metadata.get(EVALUATION_DIGEST)
    if not recorded:
        return False, "its evaluation's digest was not recorded at registration"
    if recorded != version.evaluation_sha256:
        return False, (
            f"its evaluation at {version.evaluation_uri} changed after registration "
            f"(sha256 {version.evaluation_sha256}, registered {recorded})"
        )
    try:
        thresholds = contracts.GateThresholds(
            metric_tolerance=float(version.metadata["metric_tolerance"]),
            min_metric_gain=float(version.metadata["min_metric_gain"]),
        )
    except (KeyError, ValueError):
        return False, "its gate thresholds were not recorded"
    try:
        passed, reason = contracts.gate_verdict(version.evaluation, thresholds)
    except contracts.ContractError as err:
        return False, f"its evaluation is unreadable ({err})"
    return passed, reason if passed else f"its {reason}"


def stated_reason(why: str) -> str:
    """A person's reason for a decision: one line of text, never empty. A line break would
    print as another history entry (a decision nobody made), so it is refused, not kept."""
    reason = why.strip()
    if not reason:
        raise RegistryError("every decision says why: pass a non-empty --description")
    control = next((c for c in reason if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")), None)
    if control is not None:
        raise RegistryError(
            f"--description must be one line of text; it holds {control!r}: write it on one line"
        )
    return reason


def decide(
    registry: Registry, version: int, status: str, *, who: str, why: str, force: bool
) -> ModelVersion:
    """Approve or reject a version; approval needs a passing gate unless forced. A version
    that holds a stage is not rejected: archive it once another version took its place."""
    why = stated_reason(why)
    if status not in ("Approved", "Rejected"):
        raise RegistryError(f"status must be Approved or Rejected, not {status}")
    current = registry.get(version)
    action = "approve" if status == "Approved" else "reject"
    if status == "Approved":
        passed, reason = approval_verdict(current)
        if not passed and not force:
            raise RegistryError(
                f"version {version} cannot be approved: {reason}; pass --force to approve anyway"
            )
        if not passed:
            why, action = f"{why} [forced: {reason}]", "force-approve"
    elif current.lifecycle.status in lifecycle.HOLDS_STAGE:
        raise RegistryError(
            f"version {version} holds {current.lifecycle.stage} for task {current.task}; "
            "promote another version there before rejecting it"
        )
    return registry.change(version, Change(who=who, action=action, why=why, status=status))


def promote(registry: Registry, version: int, to: str, *, who: str, why: str) -> ModelVersion:
    """Mark a version pending deployment to a stage; its deployer then records the outcome."""
    why = stated_reason(why)
    current = registry.get(version)
    pending = lifecycle.promotion(current, to, registry.list())
    pending = lifecycle.Lifecycle(pending.stage, pending.status, why)
    return registry.change(version, Change(who=who, action="promote", why=why, lifecycle=pending))


def record_deployment(
    registry: Registry, version: int, *, passed: bool, detail: str, who: str
) -> ModelVersion:
    """A pending version's smoke test outcome: deployed (retiring the task's previous version
    in that stage) or failed (the previous one serves on)."""
    current = registry.get(version)
    outcome, retired = lifecycle.deployment_outcome(current, passed, detail, registry.list())
    if retired is not None:
        registry.change(
            retired.version,
            Change(
                who=who,
                action="retire",
                why=f"version {version} took {outcome.stage} over",
                lifecycle=lifecycle.Lifecycle(
                    outcome.stage, lifecycle.StageStatus.RETIRED, f"replaced by version {version}"
                ),
            ),
        )
    action = "deploy" if passed else "fail"
    return registry.change(version, Change(who=who, action=action, why=detail, lifecycle=outcome))


def archive(registry: Registry, version: int, *, who: str, why: str) -> ModelVersion:
    why = stated_reason(why)
    target = lifecycle.archived(registry.get(version))
    return registry.change(version, Change(who=who, action="archive", why=why, lifecycle=target))


def awaited_deployment(
    registry: Registry,
    version: int,
    *,
    timeout_s: float,
    poll_s: float = 15.0,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> ModelVersion:
    """The version once its stage's deployer has recorded an outcome (deployed or failed)."""
    deadline = monotonic() + timeout_s
    while True:
        current = registry.get(version)
        if current.lifecycle.status != lifecycle.StageStatus.PENDING:
            return current
        if monotonic() >= deadline:
            raise RegistryError(
                f"version {version} is still pending in {current.lifecycle.stage} after "
                f"{timeout_s:.0f} s; its deployer records the outcome (`peftops models show "
                f"{version}`)"
            )
        sleep(poll_s)
