"""Runs a training script with accelerate's FSDP2 path on CPU processes (gloo), where accelerate alone would fall back
to DDP: for tests and `benchmarks/gpu_smoke.sh --tiny` on machines without GPUs (see
`distributed.allow_fsdp_on_cpu`).

    ACCELERATE_USE_CPU=true ACCELERATE_USE_FSDP=true FSDP_VERSION=2 \\
        torchrun --standalone --nproc_per_node 2 -m diffit_hf.training.cpu_fsdp training/train_latent.py --max-steps 4
"""

from __future__ import annotations

import runpy
import sys

from .distributed import allow_fsdp_on_cpu

if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m diffit_hf.training.cpu_fsdp SCRIPT [ARGS...]")
    allow_fsdp_on_cpu()
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
