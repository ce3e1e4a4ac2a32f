"""The three scripts run as subprocesses the way SageMaker runs them: processing paths as
arguments, training paths from SM_* environment variables, hyperparameters as CLI arguments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import REPO, SCRIPTS, write_jsonl
from training_scripts import contracts


def run_script(
    name: str, args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args],
        env={**os.environ, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=400,
    )


def sagemaker_env(root: Path, model: Path, splits: Path) -> dict[str, str]:
    return {
        "SM_CHANNEL_TRAIN": str(splits / "train"),
        "SM_CHANNEL_VALIDATION": str(splits / "validation"),
        "SM_CHANNEL_MODEL": str(model),
        "SM_MODEL_DIR": str(root / "opt/ml/model"),
        "SM_OUTPUT_DATA_DIR": str(root / "opt/ml/output/data"),
    }


def test_preprocess_train_evaluate_as_in_a_container(tiny_causal: Path, tmp_path: Path) -> None:
    # Processing job: input and output folders as SageMaker mounts them.
    data = tmp_path / "opt/ml/processing/input/data"
    rows = [
        json.loads(line)
        for line in (REPO / "data/sample/dialogues.jsonl").read_text().splitlines()[:120]
    ]
    write_jsonl(data / "part-0.jsonl", rows)
    prep = tmp_path / "opt/ml/processing/output"
    done = run_script(
        "preprocess.py",
        [
            "--input",
            str(data),
            "--output-dir",
            str(prep),
            "--tokenizer",
            str(tiny_causal),
            "--max-input-tokens",
            "256",
        ],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = contracts.MANIFEST.read(prep)
    assert manifest["records_in"] == 120 == sum(manifest["records_out"].values())

    # Training jobs: channels and model dir from the environment, hyperparameters as arguments.
    hyperparameters = [
        "--max-steps",
        "12",
        "--per-device-batch-size",
        "8",
        "--gradient-checkpointing",
        "false",
        "--logging-steps",
        "4",
    ]
    adapter_root, full_root = tmp_path / "adapter-job", tmp_path / "full-job"
    for root, method, rate in ((adapter_root, "qlora", "1e-2"), (full_root, "full", "3e-3")):
        root.mkdir(parents=True)
        done = run_script(
            "train.py",
            ["--method", method, "--learning-rate", rate, *hyperparameters],
            env=sagemaker_env(root, tiny_causal, prep),
            cwd=root,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        for folder in ("opt/ml/output/data", "opt/ml/model"):
            metrics = contracts.TRAINING_METRICS.read(root / folder)
            assert metrics["method"] == method and metrics["global_step"] == 12
        assert (
            root / "runs/local/checkpoints/checkpoint-12/trainer_state.json"
        ).is_file()  # local default
    assert (adapter_root / "opt/ml/model/adapter_model.safetensors").is_file()
    assert (full_root / "opt/ml/model/model.safetensors").is_file()

    # The evaluation step receives the training jobs' model.tar.gz, as SageMaker stores them.
    for root in (adapter_root, full_root):
        with tarfile.open(root / "model.tar.gz", "w:gz") as tar:
            for path in (root / "opt/ml/model").iterdir():
                tar.add(path, arcname=path.name)
    evaluation_dir = tmp_path / "opt/ml/processing/output/evaluation"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = run_script(
        "evaluate.py",
        [
            "--base-model", str(tiny_causal),
            "--adapter-dir", str(adapter_root / "model.tar.gz"),
            "--baseline-dir", str(full_root / "model.tar.gz"),
            "--test-dir", str(prep / "test"),
            "--output-dir", str(evaluation_dir),
            "--max-new-tokens", "12",
        ],
        env={"TMPDIR": str(scratch)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    # The unpacked archives (a full model is hundreds of MB) do not outlive the job.
    assert list(scratch.iterdir()) == []
    evaluation = contracts.EVALUATION.read(evaluation_dir)
    assert set(evaluation["models"]) == {"base", "adapter", "full_finetune"}
    test_examples = len((prep / "test" / "data.jsonl").read_text().splitlines())
    for name, entry in evaluation["models"].items():
        for key in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
            # Each score is the mean over every test example, none dropped.
            scores = entry["per_example"][key]
            assert len(scores) == test_examples, (name, key)
            assert entry[key] == pytest.approx(sum(scores) / len(scores)), (name, key)
        assert entry["total_params"] > 0 and entry["artifact_bytes"] > 0
    adapter, full = evaluation["models"]["adapter"], evaluation["models"]["full_finetune"]
    assert adapter["trainable_params"] < full["trainable_params"] == full["total_params"]
    assert adapter["artifact_bytes"] < full["artifact_bytes"]
    # Scored as served: on the unquantized base the endpoint loads, not the 4-bit one it trained on.
    assert adapter["base_quantized_4bit"] is False and adapter["train_runtime_s"] > 0
    assert set(evaluation["comparisons"]) == {"adapter_vs_full_finetune", "adapter_vs_base"}
    versus_base = evaluation["comparisons"]["adapter_vs_base"]["rougeL"]
    assert versus_base["difference"] == pytest.approx(
        adapter["rougeL"] - evaluation["models"]["base"]["rougeL"]
    )
    assert versus_base["low"] <= versus_base["difference"] <= versus_base["high"]
    assert len(adapter["per_example"]["rougeL"]) == evaluation["test_examples"]
    # The adapter's README is its model card, not peft's empty template.
    readme = (adapter_root / "opt/ml/model" / "README.md").read_text()
    assert "## Prompt format" in readme and "{dialogue}" in readme
    predictions = [
        json.loads(line) for line in (evaluation_dir / "predictions.jsonl").read_text().splitlines()
    ]
    assert len(predictions) == evaluation["test_examples"] == manifest["records_out"]["test"]
    assert {"input", "reference", "base", "adapter", "full_finetune"} <= set(predictions[0])
    assert "<svg" in (evaluation_dir / "report.html").read_text()
    assert "## Evaluation" in (evaluation_dir / "model_card.md").read_text()

    # A scheduled run reuses the stored baseline instead of retraining it.
    reused_dir = tmp_path / "reused"
    done = run_script(
        "evaluate.py",
        ["--base-model", str(tiny_causal), "--adapter-dir", str(adapter_root / "opt/ml/model"), "--baseline-evaluation", str(evaluation_dir / "evaluation.json"),
         "--test-dir", str(prep / "test"), "--output-dir", str(reused_dir), "--max-new-tokens", "12"],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    reused = contracts.EVALUATION.read(reused_dir)
    assert reused["baseline_source"] == {
        "kind": "reused",
        "evaluation": str(evaluation_dir / "evaluation.json"),
        "test_set_matches": True,
    }
    assert reused["models"]["full_finetune"]["rougeL"] == full["rougeL"]
    assert (
        reused["models"]["adapter"]["rougeL"] == adapter["rougeL"]
    )  # greedy decoding is deterministic


def test_bad_data_fails_the_processing_job_with_a_clear_message(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"dialogue": "a", "summary": "b"}\n{"dialogue": "c"}\n')
    done = run_script(
        "preprocess.py", ["--input", str(source), "--output-dir", str(tmp_path / "out")]
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f'preprocess: error: {source} line 2: field "summary" is missing (fields present: dialogue); '
        "task dialogue-summary's target_field names it: rename the data's field or describe your "
        "fields in a task spec (--task-spec). Fix it (fix the record) or pass --skip-invalid to "
        "skip such records."
    )
    assert "Traceback" not in done.stderr


def test_unknown_hyperparameter_is_rejected(
    tiny_causal: Path, splits: Path, tmp_path: Path
) -> None:
    done = run_script(
        "train.py",
        ["--method", "lora", "--no-such-flag", "1"],
        env=sagemaker_env(tmp_path, tiny_causal, splits),
        cwd=tmp_path,
    )
    assert done.returncode != 0 and "--no-such-flag" in done.stderr


@pytest.mark.parametrize("script", ["preprocess.py", "train.py", "evaluate.py"])
def test_every_script_prints_its_help(script: str) -> None:
    done = run_script(script, ["--help"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: ") and "--output-dir" in done.stdout


def cli_commands(app, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of a typer app: ("pipeline", "start"), ("run-local",), ..."""
    import typer.main

    group = typer.main.get_command(app)
    found = [prefix]

    def walk(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            found.append((*path, name))
            walk(sub, (*path, name))

    walk(group, prefix)
    return found


def test_every_cli_command_prints_its_help() -> None:
    from typer.testing import CliRunner

    from pipelines.cli import app

    commands = cli_commands(app)
    assert ("models", "approve") in commands and ("run-local",) in commands
    for path in commands:
        done = CliRunner().invoke(app, [*path, "--help"])
        assert done.exit_code == 0, (path, done.output)
        assert "Usage: " in done.output, path


@pytest.mark.parametrize(
    ("script", "argv"),
    [
        ("preprocess.py", ["--inptu", "data.jsonl"]),
        ("train.py", ["--model-name-or-path", "m", "--lora-rank", "8"]),
        ("evaluate.py", ["--base-model", "m", "--baseline-dir", "b", "--max-input-tokens", "9"]),
    ],
)
def test_a_misspelt_flag_is_one_line_naming_it(
    script: str, argv: list[str], tmp_path: Path
) -> None:
    done = run_script(script, argv, cwd=tmp_path)
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, lines
    stem = script.removesuffix(".py")
    assert lines[0] == f"{stem}: error: unknown arguments {' '.join(argv[-2:])}; see --help"
