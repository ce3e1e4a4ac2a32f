"""Approval decisions on registered versions: the quality gate checked again from the stored
evaluation (the same rule the pipeline's condition step applies), then the status change."""

from __future__ import annotations

from pipelines.functions.registered_adapter import EVALUATION_DIGEST, SMOKE_TEST
from pipelines.registry.versions import ModelVersion, Registry, RegistryError
from training_scripts import contracts


def gate_verdict(version: ModelVersion) -> tuple[bool, str]:
    """Whether the version's evaluation is the one registered and passes the gate thresholds
    recorded at registration."""
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
            rouge_l_tolerance=float(version.metadata["rouge_l_tolerance"]),
            min_rouge_l_gain=float(version.metadata["min_rouge_l_gain"]),
        )
    except (KeyError, ValueError):
        return False, "its gate thresholds were not recorded"
    try:
        passed, reason = contracts.gate_verdict(version.evaluation, thresholds)
    except contracts.ContractError as err:
        return False, f"its evaluation is unreadable ({err})"
    return passed, reason if passed else f"its {reason}"


def decide(
    registry: Registry, version: int, status: str, *, who: str, why: str, force: bool
) -> ModelVersion:
    """Approve or reject a version; approval needs a passing gate unless forced."""
    if status not in ("Approved", "Rejected"):
        raise RegistryError(f"status must be Approved or Rejected, not {status}")
    current = registry.get(version)
    if status == "Approved":
        passed, reason = gate_verdict(current)
        if not passed and not force:
            raise RegistryError(
                f"version {version} cannot be approved: {reason}; pass --force to approve anyway"
            )
        if not passed:
            why = f"{why} [forced: {reason}]"
    return registry.set_status(version, status, f"{who}: {why}")
