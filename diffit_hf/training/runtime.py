"""Process-level settings and measurements shared by the training scripts."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration


def make_run_accelerator(output_dir: str | Path, mixed_precision: str = "no", report_to: str | None = None,
                         gradient_accumulation_steps: int = 1, fsdp_plugin=None, cpu_threads: int | None = None,
                         allow_tf32: bool = False) -> Accelerator:
    """The `Accelerator` of a training run writing to `output_dir` (tracker logs in `logs/`), with a seedable
    sampler: the shuffle order depends on (seed, epoch) only, so a resumed run sees the same batches. On CPU each
    process gets its share of the cores (or `cpu_threads`, `set_cpu_threads`); `allow_tf32` turns TF32 on."""
    out = Path(output_dir)
    accelerator = Accelerator(
        mixed_precision=mixed_precision, gradient_accumulation_steps=gradient_accumulation_steps, log_with=report_to,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True), fsdp_plugin=fsdp_plugin,
    )
    set_cpu_threads(accelerator, cpu_threads)
    if allow_tf32:
        enable_tf32()
    return accelerator


MIXED_PRECISION = ("auto", "no", "bf16", "fp16")


def bf16_matmul_hardware() -> bool:
    """Whether bf16 matmuls run on dedicated hardware here: a CUDA GPU with bf16 (unless ACCELERATE_USE_CPU is set),
    or a CPU with AVX512-BF16 or AMX-BF16 (Linux: the /proc/cpuinfo flags). Without them, bf16 autocast on a CPU
    converts for fp32 kernels and trains ~5x slower than fp32 (a 2-core Xeon, docs/diffit_vs_dit.md)."""
    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    if torch.cuda.is_available() and not use_cpu:
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no way to tell, fp32 is the safe choice
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", flags) is not None


def resolve_mixed_precision(value: str) -> str:
    """A config's `mixed_precision`: `"auto"` is `"bf16"` where `bf16_matmul_hardware()` and `"no"` (fp32) elsewhere;
    `"no"`, `"bf16"` and `"fp16"` stay as they are. Raises `ValueError` for anything else."""
    if value not in MIXED_PRECISION:
        raise ValueError(f"Unknown mixed_precision {value!r}; valid choices are {', '.join(MIXED_PRECISION)}.")
    if value != "auto":
        return value
    return "bf16" if bf16_matmul_hardware() else "no"


def start_trackers(accelerator, config) -> None:
    """Starts the trackers of `config.report_to` (none if unset) in `config.tracker_project_name`, with the config's
    scalar fields as the run's hyperparameters."""
    if config.report_to:
        accelerator.init_trackers(config.tracker_project_name, config={
            k: v for k, v in dataclasses.asdict(config).items() if isinstance(v, (int, float, str, bool))})


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


@contextlib.contextmanager
def timed(totals: dict[str, float], key: str):
    """Adds the seconds the block takes to `totals[key]` (where a loop's time goes besides its main work)."""
    start = time.time()
    try:
        yield
    finally:
        totals[key] = totals.get(key, 0.0) + time.time() - start
