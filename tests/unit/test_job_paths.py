"""Where a job's script finds its inputs (training_scripts/job_environment.py and
contracts.split_file): SageMaker's variable when set, the container path inside a job, a local
folder on a laptop; a split folder's one JSONL file, or a one-line error naming what it holds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from training_scripts import contracts, job_environment


def arguments_class() -> type:
    """A script's arguments with two path fields, made when called (not at import), as a
    script's module makes them."""
    return dataclasses.make_dataclass(
        "Arguments",
        [
            ("data", str, job_environment.sagemaker_path_field(
                "/opt/ml/input/data/train", "data/train", "The training split.",
                env_var="SM_CHANNEL_X")),
            ("model", str, job_environment.sagemaker_path_field(
                "/opt/ml/model", "out/model", "Output.")),
        ],
    )  # fmt: skip


@pytest.mark.skipif(
    Path("/opt/ml").is_dir(), reason="inside a SageMaker container the container path wins"
)
def test_a_path_argument_reads_sagemakers_variable_else_the_local_folder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SM_CHANNEL_X", raising=False)
    arguments = arguments_class()
    assert (arguments().data, arguments().model) == ("data/train", "out/model")
    monkeypatch.setenv("SM_CHANNEL_X", "/opt/ml/input/data/x")
    assert (arguments().data, arguments().model) == ("/opt/ml/input/data/x", "out/model")
    monkeypatch.setenv("SM_CHANNEL_X", "")  # set but empty: not a path
    assert arguments().data == "data/train"


def test_inside_a_job_the_container_path_is_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_is_dir = Path.is_dir
    monkeypatch.setattr(Path, "is_dir", lambda self: str(self) == "/opt/ml" or real_is_dir(self))
    monkeypatch.delenv("SM_CHANNEL_X", raising=False)
    arguments = arguments_class()
    assert (arguments().data, arguments().model) == ("/opt/ml/input/data/train", "/opt/ml/model")
    assert job_environment.sagemaker_path(None, "/opt/ml/c", "local") == "/opt/ml/c"


def test_a_path_arguments_help_is_shown(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        job_environment.parsed_arguments(arguments_class(), ["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--data DATA The training split." in shown and "--model MODEL Output." in shown


def test_a_split_folder_holds_one_jsonl_file(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text("{}\n")
    assert contracts.split_file(tmp_path) == tmp_path / "train.jsonl"
    assert contracts.split_file(tmp_path / "train.jsonl") == tmp_path / "train.jsonl"
    (tmp_path / contracts.SPLIT_FILE).write_text("{}\n")
    assert contracts.split_file(tmp_path) == tmp_path / contracts.SPLIT_FILE  # by its name


@pytest.mark.parametrize(
    ("files", "found"), [((), "none"), (("b.jsonl", "a.jsonl"), "['a.jsonl', 'b.jsonl']")]
)
def test_a_split_folder_without_exactly_one_jsonl_file_is_one_line_naming_them(
    tmp_path: Path, files: tuple[str, ...], found: str
) -> None:
    for name in files:
        (tmp_path / name).write_text("{}\n")
    (tmp_path / "notes.txt").write_text("not a split")
    with pytest.raises(FileNotFoundError) as missing:
        contracts.split_file(tmp_path)
    assert str(missing.value) == (
        f"{tmp_path}: expected one preprocessed split file ({contracts.SPLIT_FILE}); found "
        f"{found}. Run preprocess.py and point at its output."
    )


def test_a_comparison_path_defaults_to_the_lower_rouge_l_bound() -> None:
    assert contracts.comparison_path("adapter_vs_base") == "comparisons.adapter_vs_base.rougeL.low"
    assert (
        contracts.comparison_path("adapter_vs_full_finetune", "chrf", "high")
        == "comparisons.adapter_vs_full_finetune.chrf.high"
    )
