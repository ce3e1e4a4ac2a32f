#!/usr/bin/env bash
# The benchmark on one GPU, in one call of a machine that has no network:
#   1. install the carried wheels (bitsandbytes, transformers, peft at this project's pins)
#      on top of the machine's own torch;
#   2. build a random-weight Llama-3.2-1B-shaped model (~1.07B parameters) with SmolLM2's
#      tokenizer: no download;
#   3. run benchmarks/run.py in bf16: ours vs the strong baseline (length-grouped, same token
#      budget, completion-only loss) and the common recipe, for QLoRA, LoRA and full
#      fine-tuning on bundled and long-prompt data, plus MFU against a bf16 matrix-product
#      peak measured in the same run, a token-budget sweep and a profile of one QLoRA step.
#
# Prepare here (downloads ~58 MB of wheels, saves the tokenizer): make gpu-carry
# Then, on the GPU machine, with benchmarks/.carry carried:      bash benchmarks/gpu_check.sh
# Results: the table on stdout, JSON in $PEFTOPS_GPU_RESULTS (default runs/gpu-check).
#
# --dry-run runs every step that needs no GPU, with the project's venv, a 2-layer model and a
# few steps on the CPU (the test suite does this so the script cannot rot): pins read, wheels
# checked if carried, model built, benchmark run, JSON written.
# Further arguments go to benchmarks/run.py and override the ones below (e.g. --batch-size 32).
set -euo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
CARRY=${PEFTOPS_GPU_CARRY:-benchmarks/.carry}
RESULTS=${PEFTOPS_GPU_RESULTS:-runs/gpu-check}
WORK=${PEFTOPS_GPU_WORKDIR:-/tmp/peftops-gpu-check}
CARRIED_PACKAGES="bitsandbytes transformers peft"
mkdir -p "$RESULTS" "$WORK"

pin() {  # the version constraints.txt pins for a package
    local version
    version=$(sed -n "s/^$1==\(.*\)$/\1/p" constraints.txt)
    [[ -n "$version" ]] || { echo "gpu_check: $1 is not pinned in constraints.txt" >&2; exit 2; }
    echo "$version"
}

check_wheels() {  # every carried package present as exactly its pinned wheel
    local package version
    for package in $CARRIED_PACKAGES; do
        version=$(pin "$package")
        compgen -G "$CARRY/wheels/$package-$version-*.whl" >/dev/null || {
            echo "gpu_check: $CARRY/wheels has no $package-$version wheel; run 'make gpu-carry'" >&2
            exit 2
        }
    done
}

for package in $CARRIED_PACKAGES; do echo "gpu_check: $package pinned at $(pin "$package")"; done

if [[ $DRY_RUN == 1 ]]; then
    PYTHON=${PYTHON:-.venv/bin/python}
    if [[ -d "$CARRY/wheels" ]]; then check_wheels; else echo "gpu_check: dry run, no carried wheels"; fi
    TOKENIZER="$WORK/tokenizer"
    [[ -f "$TOKENIZER/tokenizer_config.json" ]] ||
        "$PYTHON" -c "import sys; from pathlib import Path; from pipelines.fixtures.models import build_tiny_causal; build_tiny_causal(Path(sys.argv[1]))" "$TOKENIZER"
    BENCH=(--model random-llama-tiny --methods qlora,lora,full --repeats 1 --examples 6
           --warmup-examples 2 --batch-size 2 --eval-examples 2 --eval-every-examples 2
           --matmul-size 256 --long-prompt-dialogues 2 --budgets 512,1024 --profile)
else
    PYTHON=python3
    check_wheels
    "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --target "$WORK/site" "$CARRY"/wheels/*.whl
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    TOKENIZER="$CARRY/tokenizer"
    # 256 examples per run (about 16 steps of the naive arm's 16): long enough for
    # steady-state throughput on a GPU, short enough for 3 methods x 2 data x 3 arms x 2
    # repeats (+ a warm-up), the budget sweep and the profile in a few minutes.
    BENCH=(--model random-llama-1b --methods qlora,lora,full --repeats 2 --examples 256
           --warmup-examples 32 --batch-size 16 --eval-examples 32 --eval-every-examples 64
           --precision bf16 --budgets 4096,8192,16384,32768 --profile)
fi

"$PYTHON" - <<'EOF'
import bitsandbytes, peft, torch, transformers
print(f"gpu_check: torch {torch.__version__}, transformers {transformers.__version__}, "
      f"peft {peft.__version__}, bitsandbytes {bitsandbytes.__version__}, "
      f"cuda {torch.cuda.is_available()}")
EOF

export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
"$PYTHON" -m benchmarks.run "${BENCH[@]}" --tokenizer "$TOKENIZER" \
    --workdir "$WORK/bench" --output "$RESULTS/gpu_check.json" "$@"
