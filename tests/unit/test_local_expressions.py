"""The local runner's expressions resolve and compare as SageMaker does: parameters, step
properties, execution variables, Join, JsonGet, every condition type, and a condition step's
outcome only when all of its conditions hold."""

from __future__ import annotations

import pytest

from pipelines.local.errors import UnsupportedConstructError
from pipelines.local.expressions import Scope, as_text, typed_parameter


def scope() -> Scope:
    return Scope(
        parameters={"Tolerance": 0.02, "Method": "qlora", "Rank": 16, "Flag": True},
        execution={"PipelineExecutionId": "exec-1"},
        properties={
            "Train": {
                "TrainingJobName": "job-7",
                "ModelArtifacts.S3ModelArtifacts": "s3://b/train/model.tar.gz",
            },
            "Prep": {"ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri": "s3://b/prep/train"},
        },
        property_files={"Evaluate.Report": {"gate": {"shortfall": 0.02}, "scores": [0.1, 0.4]}},
    )


def get(reference: str) -> dict:
    return {"Get": reference}


def json_get(path: str) -> dict:
    return {
        "Std:JsonGet": {"PropertyFile": get("Steps.Evaluate.PropertyFiles.Report"), "Path": path}
    }


def compare(kind: str, left, right) -> dict:
    return {"Type": kind, "LeftValue": left, "RightValue": right}


def test_references_resolve_to_their_values() -> None:
    s = scope()
    assert s.resolve(get("Parameters.Rank")) == 16
    assert s.resolve(get("Execution.PipelineExecutionId")) == "exec-1"
    assert s.resolve(get("Steps.Train.TrainingJobName")) == "job-7"
    # A property's own path holds dots (and an output's name in brackets): the step is the
    # first part only.
    assert s.resolve(get("Steps.Train.ModelArtifacts.S3ModelArtifacts")) == (
        "s3://b/train/model.tar.gz"
    )
    assert s.resolve(get("Steps.Prep.ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri")) == (
        "s3://b/prep/train"
    )
    # The SDK writes a property file's reference as a Get, or as its plain text.
    plain = {
        "Std:JsonGet": {"PropertyFile": "Steps.Evaluate.PropertyFiles.Report", "Path": "scores[0]"}
    }
    assert s.resolve(plain) == 0.1
    assert s.resolve(json_get("gate.shortfall")) == 0.02
    assert s.resolve(json_get("scores[1]")) == 0.4
    joined = {
        "Std:Join": {
            "On": "/",
            "Values": ["s3://b", get("Parameters.Method"), get("Parameters.Flag")],
        }
    }
    assert s.resolve(joined) == "s3://b/qlora/true"
    assert s.resolve({"Nested": [get("Parameters.Rank"), {"X": get("Parameters.Method")}]}) == {
        "Nested": [16, {"X": "qlora"}]
    }


@pytest.mark.parametrize(
    ("kind", "left", "right", "holds"),
    [
        ("Equals", 1, 1.0, True),
        ("Equals", "qlora", "lora", False),
        ("GreaterThan", 0.02, 0.02, False),
        ("GreaterThan", 0.03, 0.02, True),
        ("GreaterThanOrEqualTo", 0.02, 0.02, True),
        ("GreaterThanOrEqualTo", 0.01, 0.02, False),
        ("LessThan", 0.02, 0.02, False),
        ("LessThan", 0.01, 0.02, True),
        ("LessThanOrEqualTo", 0.02, 0.02, True),
        ("LessThanOrEqualTo", 0.03, 0.02, False),
        ("LessThanOrEqualTo", "0.02", 0.02, True),  # a Join's text compares as a number
    ],
)
def test_comparisons_at_their_boundaries(kind: str, left, right, holds: bool) -> None:
    assert scope().condition(compare(kind, left, right)) is holds


def test_property_file_values_compare_with_parameters() -> None:
    at_limit = compare("LessThanOrEqualTo", json_get("gate.shortfall"), get("Parameters.Tolerance"))
    assert scope().condition(at_limit)


def test_not_or_in() -> None:
    s = scope()
    true, false = compare("Equals", 1, 1), compare("Equals", 1, 2)
    assert s.condition({"Type": "Not", "Condition": false})
    assert not s.condition({"Type": "Not", "Condition": true})
    assert s.condition({"Type": "Or", "Conditions": [false, true]})
    assert not s.condition({"Type": "Or", "Conditions": [false, false]})
    member = {"Type": "In", "QueryValue": get("Parameters.Method"), "Values": ["lora", "qlora"]}
    assert s.condition(member)
    assert not s.condition({**member, "Values": ["lora"]})


def test_a_condition_step_needs_every_condition() -> None:
    s = scope()
    true, false = compare("Equals", 1, 1), compare("Equals", 1, 2)
    assert s.all_hold([true, true])
    assert not s.all_hold([true, false])
    assert not s.all_hold([false, true])


def test_what_it_cannot_resolve_is_an_error() -> None:
    s = scope()
    with pytest.raises(UnsupportedConstructError, match="step Nope has not run"):
        s.resolve(get("Steps.Nope.TrainingJobName"))
    with pytest.raises(UnsupportedConstructError, match="does not produce property Other"):
        s.resolve(get("Steps.Train.Other"))
    with pytest.raises(UnsupportedConstructError, match="execution variable StartDateTime"):
        s.resolve(get("Execution.StartDateTime"))
    with pytest.raises(UnsupportedConstructError, match="condition type Between"):
        s.condition({"Type": "Between"})


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (get("Context.Region"), "reference Context.Region is not supported by the local runner"),
        ({"Std:JsonGet": {"PropertyFile": get("Parameters.Rank"), "Path": "a"}},
         "JsonGet on Parameters.Rank is not supported by the local runner"),
        ({"Std:JsonGet": {"PropertyFile": get("Steps.Train.PropertyFiles.Metrics"), "Path": "a"}},
         "property file Steps.Train.PropertyFiles.Metrics was not produced"),
        ({"Std:Select": {"Values": [1, 2], "Index": 0}},
         "function Std:Select is not supported by the local runner"),
    ],
)  # fmt: skip
def test_each_unresolvable_expression_is_refused_in_its_own_words(node: dict, message: str) -> None:
    with pytest.raises(UnsupportedConstructError) as refused:
        scope().resolve(node)
    assert str(refused.value) == message


def test_parameters_take_their_declared_type_and_enum() -> None:
    assert typed_parameter({"Name": "R", "Type": "Integer"}, "8") == 8
    assert typed_parameter({"Name": "T", "Type": "Float"}, "0.5") == 0.5
    with pytest.raises(UnsupportedConstructError, match="R must be Integer"):
        typed_parameter({"Name": "R", "Type": "Integer"}, "eight")
    declared = {"Name": "M", "Type": "String", "EnumValues": ["qlora", "lora"]}
    with pytest.raises(UnsupportedConstructError, match="must be one of"):
        typed_parameter(declared, "full")


@pytest.mark.parametrize(
    ("value", "converted"),
    [
        ("true", True),
        ("True", True),
        (True, True),
        ("false", False),
        ("yes", False),
        (False, False),
    ],
)
def test_a_boolean_parameter_is_true_only_when_it_reads_true(
    value: object, converted: bool
) -> None:
    assert typed_parameter({"Name": "B", "Type": "Boolean"}, value) is converted


@pytest.mark.parametrize(
    ("value", "text"), [(True, "true"), (False, "false"), ("MixedCase", "MixedCase"), (8, "8")]
)
def test_a_joined_value_keeps_its_text_and_writes_booleans_as_json_does(
    value: object, text: str
) -> None:
    assert as_text(value) == text
