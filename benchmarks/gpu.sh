#!/usr/bin/env bash
# Run the benchmark suite on CUDA in float16 and bfloat16 (and float32 for reference), in under 5 minutes.
#
#   bash benchmarks/gpu.sh                # results in benchmarks/results-gpu/*.json, tables on stdout
#
# Needs a CUDA build of torch and hf-cir installed (`pip install -e .`). faiss rows are CPU-only and skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: gpu.sh needs a GPU')"
"$PYTHON" -c "import torch; print('# GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)"
RESULTS=${RESULTS:-benchmarks/results-gpu}
mkdir -p "$RESULTS"
run() { local name=$1; shift; echo; echo "\$ $*"; timeout 150 "$PYTHON" "$@" --json "$RESULTS/$name.json"; }
run retrieval benchmarks/bench_retrieval.py --device cuda --dtypes float32 float16 bfloat16 --no-faiss \
    --sizes 100000 1000000 --repeats 10
run compodiff benchmarks/bench_compodiff.py --device cuda --dtypes float32 float16 bfloat16 \
    --sizes full tiny --configs 1x2 1x4 32x2 32x4 --repeats 5 --repeats-large 3
run lincir benchmarks/bench_lincir.py --device cuda --dtypes float32 float16 bfloat16 --batches 1 64 --repeats 10
