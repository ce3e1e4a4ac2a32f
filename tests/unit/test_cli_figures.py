"""How the CLI reads a settings file (`--config`) and shows a version's figures
(pipelines/cli/pipeline.py's load_config, pipelines/cli/models.py's shown)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer

from pipelines.cli.models import shown
from pipelines.cli.pipeline import load_config
from pipelines.definition.config import PipelineConfig


@pytest.mark.parametrize(
    ("key", "value", "signed", "text"),
    [
        ("rougeL", 0.41234, False, "0.4123"),
        ("rougeL", 0.41234, True, "+0.4123"),
        ("rougeL", -0.01, True, "-0.0100"),
        ("trainable_params", 1234567, False, "1,234,567"),
        ("trainable_params", 1234567, True, "+1,234,567"),
        ("artifact_bytes", 3 * 2**20, False, "3.0 MB"),
        ("artifact_bytes", 1536 * 2**20, True, "+1,536.0 MB"),
        ("train_runtime_s", 1234.56, False, "1,234.6 s"),
        ("train_runtime_s", 12, True, "+12.0 s"),
        ("merged", True, True, "True"),  # a flag, never a count
        ("method", "qlora", True, "qlora"),
        ("rougeL", None, True, "-"),
        ("runtime_S", 3.0, False, "3.0000"),  # only a lower-case _s suffix is seconds
    ],
)
def test_a_figure_shows_as_a_reviewer_reads_it(
    key: str, value: Any, signed: bool, text: str
) -> None:
    assert shown(key, value, signed=signed) == text
    if not signed:
        assert shown(key, value) == text  # unsigned unless asked


def test_no_settings_file_is_the_default_configuration() -> None:
    assert load_config(None) == PipelineConfig()


def test_a_settings_file_sets_its_fields(tmp_path: Path) -> None:
    path = tmp_path / "stage.json"
    path.write_text(json.dumps({"epochs": 3.0, "name": "peftops-nightly"}))
    assert load_config(path) == PipelineConfig(epochs=3.0, name="peftops-nightly")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "{path}: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        (json.dumps({"epoch": 3}), "{path}: unknown settings ['epoch']; known: "),
    ],
)  # fmt: skip
def test_a_settings_file_that_cannot_be_used_is_a_bad_parameter_naming_it(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "stage.json"
    path.write_text(text)
    with pytest.raises(typer.BadParameter) as refused:
        load_config(path)
    assert str(refused.value).startswith(message.format(path=path))


def test_a_missing_settings_file_is_a_bad_parameter_naming_it(tmp_path: Path) -> None:
    with pytest.raises(typer.BadParameter) as refused:
        load_config(tmp_path / "absent.json")
    assert str(refused.value).startswith(f"{tmp_path / 'absent.json'}: [Errno 2]")
