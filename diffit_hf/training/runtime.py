"""Process-level settings shared by the training scripts."""

from __future__ import annotations

import os

import torch


def set_cpu_threads(accelerator, threads: int | None = None) -> int:
    """On CPU, give each local process its share of the cores (or `threads`); returns the thread count.

    `accelerate launch` sets OMP_NUM_THREADS=1 when `--num_cpu_threads_per_process` is not given, which halves the
    speed of a single CPU process on two cores; GPU runs are left alone.
    """
    if accelerator.device.type != "cpu":
        return torch.get_num_threads()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
    threads = threads or max(1, (os.cpu_count() or 1) // max(local, 1))
    torch.set_num_threads(threads)
    return threads


def enable_tf32() -> None:
    """TF32 matmuls and convolutions on Ampere+ GPUs (DiT trains in TF32); no effect on CPU."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def weight_digest(model: torch.nn.Module) -> int:
    """A 56-bit digest of the model's weights (to check that data-parallel ranks hold identical weights); FSDP
    shards are gathered first (a collective: call it on every rank)."""
    import hashlib

    from .distributed import full_tensor

    h = hashlib.sha256()
    for p in model.parameters():
        h.update(full_tensor(p).float().cpu().numpy().tobytes())
    return int(h.hexdigest()[:14], 16)
