#!/usr/bin/env bash
# GPU benchmark for the README (issue 15), a few minutes on one GPU: DiT-XL/2 and DiffiT-XL/2 bf16 train steps
# (eager / compiled, with / without gradient checkpointing, diffusers' DiT alongside), MFU against the GPU's dense
# bf16 peak, and DiffiTPipeline vs diffusers' DiTPipeline sampling. Writes benchmarks/results/gpu_bench.{json,md};
# then run `python benchmarks/update_readme.py` and commit both.
#
#   bash benchmarks/gpu_bench.sh                      # on the GPU machine
#   bash benchmarks/gpu_bench.sh --tiny --device cpu  # tiny models on CPU: the script runs (CI does this)
#
# Extra arguments go to benchmarks/gpu_bench.py (--rows, --batches, --steps, --sample-*, --output; see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
"$PYTHON" benchmarks/gpu_bench.py "$@"
