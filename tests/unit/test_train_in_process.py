"""train.py's main, run in this process on the tiny causal model: a few LoRA steps, merged
after. Its metrics are checked against what each must come from (the arguments, the files it
wrote, the curves it logged, counts worked out here), and its outputs against what serving and
evaluation load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import CHATML, lora_job_paths
from training_scripts import checkpoints, contracts, model_card, tasks, train, trainable_model
from training_scripts.enums import PeftMethod
from training_scripts.model_loading import load_tokenizer

STEPS = 4
RANK, ALPHA = 4, 8


def arguments(model: Path, splits: Path, out: Path, *extra: str) -> list[str]:
    return [
        *lora_job_paths(model, splits, out),
        "--max-steps", str(STEPS),
        "--per-device-batch-size", "4",
        "--learning-rate", "0.01",
        "--lora-r", str(RANK),
        "--lora-alpha", str(ALPHA),
        "--lora-dropout", "0",
        "--logging-steps", "1",
        "--validation-steps", "2",
        "--validation-max-examples", "4",
        "--save-steps", "1000",
        "--gradient-checkpointing", "false",
        "--precision", "fp32",
        "--seed", "7",
        # Padded rows: the real tokens are fewer than the processed ones.
        "--batching", "length_grouped",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def chat_model(tiny_causal: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import AutoTokenizer

    model = tmp_path_factory.mktemp("chat-llama")
    shutil.copytree(tiny_causal, model, dirs_exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(model)
    return model


@pytest.fixture(scope="module")
def trained(chat_model: Path, splits: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train")
    (out / "model").mkdir()  # SageMaker creates the model folder before the job starts
    extra = ("--dataset-version", "week-3", "--merge", "true")
    assert train.main(arguments(chat_model, splits, out, *extra)) == 0
    return out


def metrics_of(out: Path) -> dict[str, Any]:
    return json.loads((out / "model" / "training_metrics.json").read_text(encoding="utf-8"))


def lora_parameters(model: Path) -> int:
    """What a rank-RANK LoRA on every linear layer but the LM head adds: r x (in + out) each."""
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model)
    return sum(
        RANK * (module.in_features + module.out_features)
        for name, module in base.named_modules()
        if isinstance(module, torch.nn.Linear) and name != "lm_head"
    )


def test_the_metrics_say_what_ran_on_what(trained: Path, chat_model: Path, splits: Path) -> None:
    from transformers import AutoModelForCausalLM

    metrics = metrics_of(trained)
    base_parameters = sum(
        p.numel() for p in AutoModelForCausalLM.from_pretrained(chat_model).parameters()
    )
    trainable = lora_parameters(chat_model)
    task = tasks.split_task(splits / "train")
    expected = {
        "method": "lora",
        "base_model": str(chat_model),
        "model_kind": "causal",
        "trainable_params": trainable,
        "total_params": base_parameters + trainable,
        "trainable_percent": pytest.approx(100 * trainable / (base_parameters + trainable)),
        "global_step": STEPS,
        "resumed_from_step": None,
        "train_examples": 96,
        "learning_rate": 0.01,
        "optimizer": "adamw_torch",
        "precision": "float32",
        "world_size": 1,
        "epochs": 1.0,
        "max_steps": STEPS,
        "min_steps": 20,  # the default: --max-steps bounds the run
        "planned_steps": STEPS,
        "per_device_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "seed": 7,
        "device": "cpu",
        "dataset_version": "week-3",
        "train_data_sha256": checkpoints.content_hash(str(splits / "train")),
        "task": {"name": task.name, "sha256": task.sha256},
        "truncated_inputs": 0,
        "truncated_targets": 0,
        "tracking_run_id": None,
        "merged_dir": str(trained / "model" / "merged"),
    }
    assert {key: metrics.get(key) for key in expected} == expected


def test_the_adapters_lineage_is_its_own_config(trained: Path) -> None:
    config = json.loads((trained / "model" / "adapter_config.json").read_text())
    assert metrics_of(trained)["adapter"] == {
        "peft_type": "LORA",
        "r": RANK,
        "lora_alpha": ALPHA,
        "lora_dropout": 0.0,
        "target_modules": sorted(config["target_modules"]),
    }
    assert (config["r"], config["lora_alpha"]) == (RANK, ALPHA)


def test_the_curves_are_the_logged_steps_and_validation_from_step_0_to_the_last(
    trained: Path,
) -> None:
    metrics = metrics_of(trained)
    training, validation = metrics["loss_curve"], metrics["validation_curve"]
    assert [p["step"] for p in training] == [1, 2, 3, 4]
    assert [p["step"] for p in validation] == [0, 2, 4]
    assert metrics["final_loss"] == training[-1]["loss"]
    assert metrics["eval_loss_before"] == validation[0]["loss"]
    assert metrics["eval_loss_after"] == validation[-1]["loss"]
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]
    assert metrics["mean_train_loss"] == pytest.approx(
        sum(p["loss"] for p in training) / len(training), rel=1e-3
    )


def test_the_throughput_is_the_real_tokens_over_the_training_time(trained: Path) -> None:
    metrics = metrics_of(trained)
    assert metrics["train_runtime_s"] > 0
    assert 0 < metrics["real_tokens"] < metrics["processed_tokens"]
    assert metrics["padding_free"] is False
    assert metrics["tokens_per_second"] == pytest.approx(
        metrics["real_tokens"] / metrics["train_runtime_s"]
    )
    assert metrics["non_pad_fraction"] == pytest.approx(
        metrics["real_tokens"] / metrics["processed_tokens"]
    )


def test_the_job_output_holds_the_adapter_alone_with_its_task_and_card(
    trained: Path, splits: Path
) -> None:
    model = trained / "model"
    task = tasks.split_task(splits / "train")
    assert (model / "adapter_config.json").is_file()
    assert (model / "adapter_model.safetensors").is_file()
    assert not (model / "model.safetensors").exists()
    assert (model / "tokenizer.json").is_file()
    assert json.loads((model / tasks.TASK_SPEC_FILE).read_text()) == task.document()
    card = (model / "README.md").read_text(encoding="utf-8")
    metrics = metrics_of(trained)
    metrics.pop("merged_dir")  # merging comes after the card
    prompt = model_card.prompt_format(load_tokenizer(str(model)), task)
    assert "<|im_start|>assistant" in prompt  # the chat template's prompt, not the plain one
    assert card == model_card.adapter_readme(metrics, prompt, task)
    # The same metrics where SageMaker uploads the job's output data.
    assert contracts.TRAINING_METRICS.read(trained / "output") == contracts.TRAINING_METRICS.read(
        model
    )


def test_the_merged_model_answers_as_the_adapter_on_its_base(
    trained: Path, chat_model: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged_dir = trained / "model" / "merged"
    assert (merged_dir / "model.safetensors").is_file()
    assert (merged_dir / "tokenizer.json").is_file()
    batch = AutoTokenizer.from_pretrained(merged_dir)(
        ["#Person1#: hello there"], return_tensors="pt"
    )
    adapted = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(chat_model), str(trained / "model")
    )
    base = AutoModelForCausalLM.from_pretrained(chat_model)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    with torch.no_grad():
        logits = {
            name: model.eval()(**batch).logits
            for name, model in (("adapted", adapted), ("base", base), ("merged", merged))
        }
    torch.testing.assert_close(logits["merged"], logits["adapted"], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(logits["merged"], logits["base"], atol=1e-3)


def test_the_checkpoint_folder_remembers_the_run(
    trained: Path, chat_model: Path, splits: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Resuming there with other arguments is refused before any step."""
    other = arguments(chat_model, splits, trained / "again", "--lora-r", "8")
    other[other.index("--checkpoint-dir") + 1] = str(trained / "checkpoints")
    assert train.main(other) == 2
    assert "holds checkpoints of another run (differing: lora_r)" in capsys.readouterr().err
    assert not (trained / "again").exists()


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        (
            PeftMethod.LORA,
            {
                "lora_r": 4,
                "lora_alpha": 8,
                "target_modules": "all-linear",
                "optimizer": "adamw_torch",
            },
        ),
        (
            PeftMethod.QLORA,
            {
                "lora_r": 4,
                "lora_alpha": 8,
                "target_modules": "all-linear",
                "optimizer": "paged_adamw_8bit",
            },
        ),
        (PeftMethod.PROMPT_TUNING, {"num_virtual_tokens": 5, "optimizer": "adamw_torch"}),
        (PeftMethod.FULL, {"optimizer": "adamw_torch"}),
    ],
)
def test_a_tracked_run_records_the_settings_of_its_method(
    method: PeftMethod, expected: dict[str, Any]
) -> None:
    args = train.TrainArguments(
        method=method,
        model_name_or_path="base",
        dataset_version="week-9",
        epochs=2.0,
        max_steps=11,
        min_steps=3,
        per_device_batch_size=6,
        gradient_accumulation_steps=5,
        learning_rate=0.125,
        precision="fp32",
        seed=13,
        lora_r=4,
        lora_alpha=8,
        num_virtual_tokens=5,
    )
    assert train.tracked_params(args) == {
        "method": method.value,
        "base_model": "base",
        "dataset_version": "week-9",
        "learning_rate": 0.125,
        "epochs": 2.0,
        "max_steps": 11,
        "min_steps": 3,
        "per_device_batch_size": 6,
        "gradient_accumulation_steps": 5,
        "precision": "fp32",
        "seed": 13,
        **expected,
    }


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("no_train_split", "train"),
        ("no_base_model", "no-such-model"),
    ],
)
def test_a_failed_run_exits_2_with_its_reason_where_sagemaker_shows_it(
    case: str,
    words: str,
    tiny_causal: Path,
    splits: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    job_output = tmp_path / "job-output"
    job_output.mkdir()
    monkeypatch.setattr(train, "FAILURE_DIR", job_output)
    model, data = tiny_causal, splits
    if case == "no_train_split":
        data = tmp_path / "empty-splits"
        (data / "validation").mkdir(parents=True)
    else:
        model = tmp_path / "no-such-model"
    assert train.main(arguments(model, data, tmp_path / "run")) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("train: error: ") and words in error
    assert (job_output / "failure").read_text(encoding="utf-8") == error.removeprefix(
        "train: error: "
    )


def test_a_failure_reason_is_cut_to_what_sagemaker_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(train, "FAILURE_DIR", tmp_path)
    train.write_failure_reason("é" * 1500)
    assert (tmp_path / "failure").read_text(encoding="utf-8") == "é" * 1000
    monkeypatch.setattr(train, "FAILURE_DIR", tmp_path / "outside-a-job")
    train.write_failure_reason("nothing written")
    assert not (tmp_path / "outside-a-job").exists()


def with_argument(argv: list[str], option: str, value: str) -> list[str]:
    argv = list(argv)
    argv[argv.index(option) + 1] = value
    return argv


def test_a_full_fine_tune_writes_the_whole_model_into_a_folder_it_creates(
    tiny_causal: Path, splits: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    model_dir = tmp_path / "job" / "nested" / "model"
    argv = with_argument(arguments(tiny_causal, splits, tmp_path), "--output-dir", str(model_dir))
    argv = with_argument(with_argument(argv, "--method", "full"), "--max-steps", "2")
    assert train.main(argv) == 0
    assert (model_dir / "model.safetensors").is_file()
    assert not (model_dir / "adapter_config.json").exists()
    assert not (model_dir / "README.md").exists()  # a card is an adapter's
    metrics = contracts.TRAINING_METRICS.read(model_dir)
    assert (metrics["method"], metrics["adapter"], metrics["global_step"]) == ("full", {}, 2)
    reloaded = AutoModelForCausalLM.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_causal)
    assert not torch.equal(
        reloaded.get_output_embeddings().weight, base.get_output_embeddings().weight
    )


def test_a_seq2seq_adapters_card_shows_the_encoders_prompt(
    tiny_seq2seq: Path, splits: Path, tmp_path: Path
) -> None:
    argv = with_argument(arguments(tiny_seq2seq, splits, tmp_path), "--max-steps", "2")
    assert train.main(argv) == 0
    model = tmp_path / "model"
    metrics = contracts.TRAINING_METRICS.read(model)
    task = tasks.split_task(splits / "train")
    prompt = model_card.prompt_format(load_tokenizer(str(model)), task, seq2seq=True)
    assert prompt != model_card.prompt_format(load_tokenizer(str(model)), task)
    assert metrics["model_kind"] == "seq2seq"
    assert (model / "README.md").read_text(encoding="utf-8") == model_card.adapter_readme(
        metrics, prompt, task
    )


def test_the_lineage_of_each_kind_of_model(tiny_causal: Path) -> None:
    from peft import LoraConfig, PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    def base() -> Any:
        return AutoModelForCausalLM.from_pretrained(tiny_causal)

    lora = LoraConfig(task_type="CAUSAL_LM", r=2, lora_alpha=4, target_modules=["v_proj", "q_proj"])
    prompt = PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3)
    assert trainable_model.lora_lineage(base()) == {}
    assert trainable_model.lora_lineage(get_peft_model(base(), lora)) == {
        "peft_type": "LORA",
        "r": 2,
        "lora_alpha": 4,
        "lora_dropout": 0.0,
        "target_modules": ["q_proj", "v_proj"],
    }
    assert trainable_model.lora_lineage(get_peft_model(base(), prompt)) == {
        "peft_type": "PROMPT_TUNING",
        "num_virtual_tokens": 3,
    }


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU merges in the run's precision")
def test_a_cpu_merges_in_float32_whatever_the_bases_stored_dtype(
    trained: Path, chat_model: Path, tmp_path: Path
) -> None:
    """The merged weights keep the adapter's small deltas: bf16 sums would round them."""
    from transformers import AutoModelForCausalLM

    base = tmp_path / "bf16-base"
    AutoModelForCausalLM.from_pretrained(chat_model, dtype=torch.bfloat16).save_pretrained(base)
    load_tokenizer(str(chat_model)).save_pretrained(base)
    adapter = tmp_path / "adapter"
    shutil.copytree(trained / "model", adapter, ignore=shutil.ignore_patterns("merged"))
    args = train.TrainArguments(
        method=PeftMethod.LORA, model_name_or_path=str(base), precision="bf16"
    )
    merged = trainable_model.merge_adapter(args, adapter)
    assert merged == adapter / "merged"
    weights = AutoModelForCausalLM.from_pretrained(merged, dtype="auto").parameters()
    assert {p.dtype for p in weights} == {torch.float32}
