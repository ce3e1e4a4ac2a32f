"""The definition's expressions on a local run: parameters, step properties, execution
variables, `Std:Join`, `Std:JsonGet` and condition types, resolved as SageMaker resolves them."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipelines.local.errors import UnsupportedConstructError

COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "Equals": operator.eq,
    "GreaterThan": operator.gt,
    "GreaterThanOrEqualTo": operator.ge,
    "LessThan": operator.lt,
    "LessThanOrEqualTo": operator.le,
}


def as_text(value: Any) -> str:
    """A value as `Std:Join` writes it (booleans in lower case, as in JSON)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def as_number(value: Any) -> Any:
    """Comparisons take numbers where both sides are numbers, as the service does."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def typed_parameter(declaration: dict[str, Any], value: Any) -> Any:
    """A parameter value converted to its declared type and checked against its enum."""
    kind = declaration["Type"]
    convert: Callable[[Any], Any] = {
        "Integer": int,
        "Float": float,
        "Boolean": lambda v: str(v).lower() == "true",
    }.get(kind, str)
    try:
        converted = convert(value)
    except ValueError as err:
        raise UnsupportedConstructError(
            f"parameter {declaration['Name']} must be {kind}, got {value!r}"
        ) from err
    allowed = declaration.get("EnumValues")
    if allowed and converted not in allowed:
        raise UnsupportedConstructError(
            f"parameter {declaration['Name']} must be one of {allowed}, got {value!r}"
        )
    return converted


def json_path_value(document: Any, path: str) -> Any:
    """JsonGet's path syntax: dotted keys and [index]."""
    value = document
    for part in re.findall(r"[^.\[\]]+", path):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


@dataclass
class Scope:
    """What an expression can refer to at this point of the run."""

    parameters: dict[str, Any]
    execution: dict[str, str]
    properties: dict[str, dict[str, Any]] = field(default_factory=dict)
    property_files: dict[str, dict[str, Any]] = field(default_factory=dict)  # "Step.File" -> JSON

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self.resolve(v) for v in node]
        if not isinstance(node, dict):
            return node
        if set(node) == {"Get"}:
            return self.get(node["Get"])
        if set(node) == {"Std:Join"}:
            join = node["Std:Join"]
            return join["On"].join(as_text(self.resolve(v)) for v in join["Values"])
        if set(node) == {"Std:JsonGet"}:
            return self.json_get(node["Std:JsonGet"])
        if len(node) == 1 and next(iter(node)).startswith("Std:"):
            raise UnsupportedConstructError(
                f"function {next(iter(node))} is not supported by the local runner"
            )
        return {k: self.resolve(v) for k, v in node.items()}

    def get(self, reference: str) -> Any:
        head, _, rest = reference.partition(".")
        if head == "Parameters":
            return self.parameters[rest]
        if head == "Execution":
            if rest not in self.execution:
                raise UnsupportedConstructError(
                    f"execution variable {rest} is not supported by the local runner"
                )
            return self.execution[rest]
        if head == "Steps":
            step, _, path = rest.partition(".")
            produced = self.properties.get(step)
            if produced is None:
                raise UnsupportedConstructError(
                    f"{reference}: step {step} has not run (steps run in definition order)"
                )
            if path not in produced:
                raise UnsupportedConstructError(
                    f"{reference}: the local runner does not produce property {path} of {step}"
                )
            return produced[path]
        raise UnsupportedConstructError(
            f"reference {reference} is not supported by the local runner"
        )

    def json_get(self, spec: dict[str, Any]) -> Any:
        source = spec["PropertyFile"]
        reference = source["Get"] if isinstance(source, dict) else source
        match = re.fullmatch(r"Steps\.(\w+)\.PropertyFiles\.(\w+)", reference)
        if not match:
            raise UnsupportedConstructError(
                f"JsonGet on {reference} is not supported by the local runner"
            )
        document = self.property_files.get(f"{match[1]}.{match[2]}")
        if document is None:
            raise UnsupportedConstructError(f"property file {reference} was not produced")
        return json_path_value(document, spec["Path"])

    def condition(self, condition: dict[str, Any]) -> bool:
        kind = condition["Type"]
        if kind in COMPARISONS:
            left = as_number(self.resolve(condition["LeftValue"]))
            right = as_number(self.resolve(condition["RightValue"]))
            return COMPARISONS[kind](left, right)
        if kind == "Not":
            # "Condition", as the SDK writes it: the service refuses "Expression"
            # (sagemaker-python-sdk issue #2746).
            return not self.condition(condition["Condition"])
        if kind == "Or":
            return any(self.condition(c) for c in condition["Conditions"])
        if kind == "In":
            return self.resolve(condition["QueryValue"]) in self.resolve(condition["Values"])
        raise UnsupportedConstructError(
            f"condition type {kind} is not supported by the local runner"
        )

    def all_hold(self, conditions: list[dict[str, Any]]) -> bool:
        """A ConditionStep's outcome: true when every one of its conditions holds."""
        return all(self.condition(c) for c in conditions)
