#!/usr/bin/env bash
# Run the benchmark suite on CUDA in float16 and bfloat16 (and float32 for reference), in under 5 minutes.
#
#   bash benchmarks/gpu.sh                            # results in benchmarks/results-gpu/*.json, tables on stdout
#   ONLY="compodiff_graphs graph_tests" bash benchmarks/gpu.sh   # only the named runs (names below)
#
# Needs a CUDA build of torch and hf-cir installed (`pip install -e .`). faiss rows are CPU-only and skipped.
# `graph_tests` runs the CUDA-only tests of the captured sampling loop (needs pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: gpu.sh needs a GPU')"
"$PYTHON" -c "import torch; print('# GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
RESULTS=${RESULTS:-benchmarks/results-gpu}
mkdir -p "$RESULTS"
wanted() { [[ -z "${ONLY:-}" || " $ONLY " == *" $1 "* ]]; }
run() { local name=$1; shift; wanted "$name" || return 0; echo; echo "\$ $*"; timeout 150 "$PYTHON" "$@" --json "$RESULTS/$name.json"; }
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
