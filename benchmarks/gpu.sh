#!/usr/bin/env bash
# Run the benchmark suite on CUDA in float16 and bfloat16 (and float32 for reference): about 5 minutes, plus up to
# ~7 for the LinCIR training run (it builds a bigG-sized text tower).
#
#   bash benchmarks/gpu.sh                            # results in benchmarks/results-gpu/*.json, tables on stdout
#   ONLY="compodiff_graphs graph_tests" bash benchmarks/gpu.sh   # only the named runs (names below)
#   bash benchmarks/gpu.sh --dry-run                  # no GPU: the LinCIR training run on the CPU, tiny sizes, 3 steps
#
# Needs a CUDA build of torch and hf-cir installed (`pip install -e .`). faiss rows are CPU-only and skipped.
# `graph_tests` runs the CUDA-only tests of the captured sampling loop (needs pytest).
# `lincir_training` times LinCIR's training step (hf-cir's default path, bf16) on ViT-L- and bigG-sized text towers
# with random weights at batch 64 and 256, and projects the paper's 8-GPU ViT-G run from the bigG step at batch 64
# (printed as a projection, not a measurement).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; fi
if [[ $DRY_RUN == 0 ]]; then
    "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: gpu.sh needs a GPU (or pass --dry-run)')"
    "$PYTHON" -c "import torch; print('# GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
fi
if [[ $DRY_RUN == 1 ]]; then RESULTS=${RESULTS:-$(mktemp -d)}; fi  # a dry run's numbers are not results
RESULTS=${RESULTS:-benchmarks/results-gpu}
mkdir -p "$RESULTS"
wanted() { [[ -z "${ONLY:-}" || " $ONLY " == *" $1 "* ]] && [[ $DRY_RUN == 0 || $1 == lincir_training ]]; }
run() { local name=$1; shift; wanted "$name" || return 0; echo; echo "\$ $*"; timeout "${TIMEOUT:-150}" "$PYTHON" "$@" --json "$RESULTS/$name.json"; }
run retrieval benchmarks/bench_retrieval.py --device cuda --dtypes float32 float16 bfloat16 --no-faiss \
    --sizes 100000 1000000 --repeats 10
run compodiff benchmarks/bench_compodiff.py --device cuda --dtypes float32 float16 bfloat16 \
    --sizes full tiny --configs 1x2 1x4 32x2 32x4 --repeats 5 --repeats-large 3
run compodiff_graphs benchmarks/bench_compodiff_graphs.py --device cuda --dtypes float32 float16 bfloat16 \
    --configs 1x4 32x2 --repeats 5
run lincir benchmarks/bench_lincir.py --device cuda --dtypes float32 float16 bfloat16 --batches 1 64 --repeats 10
if wanted graph_tests; then
    echo; echo "\$ $PYTHON -m pytest -q tests/pipelines/compodiff/test_captured_sampling.py"
    timeout 150 "$PYTHON" -m pytest -p no:cacheprovider -q -rs tests/pipelines/compodiff/test_captured_sampling.py
fi
# LinCIR training (bf16, as the paper); --dry-run: the same code path on the CPU with the tiny tower.
LINCIR_TRAINING=(benchmarks/bench_lincir_training.py --configurations default --mixed_precision bf16 --mixes captions
    --keyword_extractor builtin --project_paper)
if [[ $DRY_RUN == 1 ]]; then
    run lincir_training "${LINCIR_TRAINING[@]}" --device cpu --towers tiny --batch_size 64 --num_captions 256 \
        --tiny_steps 3 --warmup 1 --projection_tower tiny
else
    TIMEOUT=400 run lincir_training "${LINCIR_TRAINING[@]}" --device cuda --towers vit-l bigg --batch_size 64 256 \
        --num_captions 4096 --steps 20 --warmup 3
fi
