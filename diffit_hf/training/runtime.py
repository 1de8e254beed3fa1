"""A training run's process-level life, shared by the training scripts: `start_run` (the `Accelerator`, once the output
folder is known to be this run's), `record_run` (its config saved, its trackers started) and `end_run`; CPU threads,
TF32 and where the time goes (`timed`)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration
from diffusers.optimization import SchedulerType, get_scheduler

from .config import save_config

RUN_CONFIG = "train_config.json"  # the run's config in its output folder: saved by record_run, compared on resume

MIXED_PRECISION = ("auto", "no", "bf16", "fp16")


def mixed_precision_field(default: str = "no"):
    """The `mixed_precision` field of a training config (resolve "auto" in its `__post_init__` with
    `resolve_mixed_precision`, so the saved config holds what ran)."""
    return dataclasses.field(default=default, metadata={"choices": list(MIXED_PRECISION), "help": (
        "auto: bf16 where the GPU or CPU has bf16 matmul hardware (AVX512-BF16/AMX), else fp32; saved resolved")})


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


def start_run(config: Any, outputs: tuple[str, ...], may_change: set[str], gradient_accumulation_steps: int = 1,
              fsdp_plugin=None, allow_tf32: bool = False) -> Accelerator:
    """The `Accelerator` of the run that `config` describes (its fields `output_dir`, `mixed_precision`, `report_to`,
    `cpu_threads`, `resume_from_checkpoint` and `overwrite_output_dir`), returned on every process together once the
    output folder is known to be this run's: a new run (`check_new_run` with `outputs`), or the same run resumed with
    the same settings (`check_unchanged`: only the fields `may_change` may differ from its saved config).

    Tracker logs go to `output_dir/logs`; the sampler is seedable: the shuffle order depends on (seed, epoch) only,
    so a resumed run sees the same batches. On CPU each process gets its share of the cores (or `cpu_threads`,
    `set_cpu_threads`); `allow_tf32` turns TF32 on."""
    out = Path(config.output_dir)
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision, gradient_accumulation_steps=gradient_accumulation_steps,
        log_with=config.report_to,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True), fsdp_plugin=fsdp_plugin,
    )
    set_cpu_threads(accelerator, config.cpu_threads)
    if allow_tf32:
        enable_tf32()
    check_new_run(out, config.resume_from_checkpoint, config.overwrite_output_dir, outputs,
                  delete=accelerator.is_main_process)
    if config.resume_from_checkpoint:
        check_unchanged(out / RUN_CONFIG, config, may_change)
    accelerator.wait_for_everyone()
    return accelerator


def check_new_run(output_dir: str | Path, resume: str | None, overwrite: bool, outputs: tuple[str, ...],
                  delete: bool = True) -> None:
    """A new run never mixes with an old one: without `resume`, an `output_dir` that holds any of `outputs` (e.g.
    checkpoints, a saved model) is refused with the choices, unless `overwrite`: then those are deleted (where
    `delete`, i.e. on the main process)."""
    found = [Path(output_dir) / name for name in outputs if (Path(output_dir) / name).exists()]
    if not found or resume:
        return
    if not overwrite:
        raise FileExistsError(
            f"{output_dir} already holds a run ({', '.join(p.name for p in found)}). Continue it with "
            "--resume-from-checkpoint latest, start a new run in another --output-dir, or pass "
            "--overwrite-output-dir to replace it."
        )
    for path in found if delete else []:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def check_unchanged(saved: str | os.PathLike, config: Any, may_change: set[str]) -> None:
    """On resume: `ValueError` naming the fields (other than `may_change`) in which `config` differs from the run's
    saved config at `saved` (a resumed run restores optimiser, schedule, EMA and RNG from its checkpoint, so such a
    change would be silently ignored). Nothing to compare when `saved` does not exist."""
    if not Path(saved).is_file():
        return
    before = json.loads(Path(saved).read_text())
    now = json.loads(json.dumps(dataclasses.asdict(config)))
    changed = sorted(k for k in now if k not in may_change and k in before and before[k] != now[k])
    if changed:
        pairs = ", ".join(f"{k} {before[k]!r} -> {now[k]!r}" for k in changed)
        raise ValueError(f"Resuming with changed settings ({pairs}): a resumed run continues with the saved "
                         f"optimiser, schedule and randomness, so the change would not take effect. Resume with the "
                         f"run's values (see {saved}), or start a new run in another --output-dir.")


def record_run(accelerator, config: Any, step: int = 0) -> None:
    """Once a resumed run has loaded its checkpoint of `step` and its lr schedule is known to continue the saved one
    (`check_lr_resume`, done here first): the main process saves `config` as `output_dir/train_config.json` (what
    `start_run` compares a resumed run with), and the trackers of `config.report_to` (none if unset) start in
    `config.tracker_project_name`, with the config's scalar fields as the run's hyperparameters."""
    check_lr_resume(Path(config.output_dir) / RUN_CONFIG, config, step)
    if accelerator.is_main_process:
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        save_config(config, Path(config.output_dir) / RUN_CONFIG)
    if config.report_to:
        accelerator.init_trackers(config.tracker_project_name, config={
            k: v for k, v in dataclasses.asdict(config).items() if isinstance(v, (int, float, str, bool))})


# The final barrier of each process, kept alive until the interpreter exits (see end_run).
_FINAL_BARRIERS: list = []


def end_run(accelerator) -> None:
    """Waits for every process and ends the run (trackers, process group) without gloo's teardown deadlock.

    Seen here (2026-11-26, py-spy on a hung rank 0 of a two-process CPU run): when a DDP model is freed after
    `destroy_process_group`, its reducer drops the last reference to the gloo process group, whose destructor joins
    the gloo worker threads while this thread holds the GIL; a worker that still holds the last reference to the
    final barrier's work (and, through it, to tensors with Python objects) needs the GIL to free it: deadlock. Here
    the final barrier's work stays referenced from Python until exit, so no worker ever frees it. Hand-written: no
    library offers this, and torch and accelerate free in this order."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        work = torch.distributed.barrier(async_op=True)
        work.wait()
        _FINAL_BARRIERS.append(work)
    else:
        accelerator.wait_for_everyone()
    accelerator.end_training()


LR_SCHEDULES = [s.value for s in SchedulerType] + ["wsd"]


def check_lr_schedule(name: str, warmup_steps: int, total_steps: int, decay_steps: int = 0) -> None:
    """Raises ValueError for a schedule `lr_schedule` cannot lay out (before any work)."""
    if name not in LR_SCHEDULES:
        raise ValueError(f"Unknown lr schedule {name!r}; choose one of {', '.join(LR_SCHEDULES)}.")
    if name == "wsd" and not 0 < decay_steps <= total_steps - warmup_steps:
        raise ValueError(f"The wsd schedule needs 0 < lr_decay_steps <= max_steps - lr_warmup_steps "
                         f"({total_steps - warmup_steps}), got {decay_steps}.")
    if name != "wsd" and decay_steps:
        raise ValueError(f"lr_decay_steps applies to the wsd schedule only, not {name!r}.")


def lr_schedule(accelerator, name: str, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                decay_steps: int = 0):
    """diffusers' `get_scheduler(name, ...)` with its warmup and decay in optimizer steps at any process count, or
    `"wsd"`: warmup-stable-decay (transformers' `get_wsd_schedule`: linear warmup, the constant lr, then a linear
    decay to zero over the last `decay_steps` steps).

    accelerate steps a prepared scheduler `num_processes` times per optimizer step (its convention for a global batch
    that grows with the processes), so the schedule is laid out in those units, as diffusers' training scripts do.
    Without it a two-process run warms up in half of `warmup_steps`, and a cosine schedule reaches zero half-way
    through the run and then rises again.
    """
    return _lr_schedule(name, optimizer, warmup_steps, total_steps, decay_steps, accelerator.num_processes)


def _lr_schedule(name: str, optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, decay_steps: int,
                 num_processes: int):
    check_lr_schedule(name, warmup_steps, total_steps, decay_steps)
    n = num_processes
    if name == "wsd":
        from transformers.optimization import get_wsd_schedule

        return get_wsd_schedule(optimizer, num_warmup_steps=warmup_steps * n, num_decay_steps=decay_steps * n,
                                num_training_steps=total_steps * n, decay_type="linear")
    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps * n, num_training_steps=total_steps * n)


def adamw(params, lr: float, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999)
          ) -> torch.optim.AdamW:
    """torch's AdamW with its fused kernel (one kernel updates every parameter; the same update, summed in another
    order) where all of `params` are plain CPU or CUDA tensors, else its default implementation (FSDP2's DTensor
    shards, other devices). With the EMA's foreach update it made the demo's train step 1.08x faster for DiT-S/4
    and 1.04x for DiffiT on a 2-core CPU (`benchmarks/bench_diffit.py speed --demo-only`); the checkpointed state
    has the same form either way."""
    params = list(params)
    fused = all(type(p) is torch.nn.Parameter and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas, fused=fused or None)


# the fields that lay out a run's lr schedule: they may change on resume where the lr of every step taken stays
LR_SCHEDULE_FIELDS = ("lr_scheduler", "lr_warmup_steps", "lr_decay_steps", "max_steps")


def lr_factors(name: str, warmup_steps: int, total_steps: int, decay_steps: int, steps: int) -> list[float]:
    """The lr multiplier of `lr_schedule(name, ...)` at each of the first `steps` optimizer steps."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = _lr_schedule(name, optimizer, warmup_steps, total_steps, decay_steps, num_processes=1)
    return [schedule.lr_lambdas[0](step) for step in range(steps)]


def check_lr_resume(saved: str | os.PathLike, config: Any, step: int) -> None:
    """On resume at `step`: `ValueError` unless the lr schedule of `config` (its `LR_SCHEDULE_FIELDS`) gives every
    step already taken the lr that the run's saved config at `saved` gave it. So a schedule may change on resume
    where it continues the run: a wsd decay branched from a checkpoint of a constant-lr run (or of wsd's stable
    phase), a longer constant run; not a cosine run with another `max_steps`, whose lr would jump. Nothing to
    compare when `saved` does not exist."""
    if not Path(saved).is_file() or step == 0:
        return
    before = json.loads(Path(saved).read_text())
    now = {k: getattr(config, k, 0) for k in LR_SCHEDULE_FIELDS}
    was = {k: before.get(k, 0) for k in LR_SCHEDULE_FIELDS}
    if was == now:
        return
    old, new = (lr_factors(s["lr_scheduler"], s["lr_warmup_steps"], s["max_steps"], s["lr_decay_steps"], step)
                for s in (was, now))
    differ = [i for i, (a, b) in enumerate(zip(old, new)) if not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)]
    if differ:
        changes = ", ".join(f"{k} {was[k]!r} -> {now[k]!r}" for k in LR_SCHEDULE_FIELDS if was[k] != now[k])
        i = differ[0]
        raise ValueError(f"Resuming at step {step} with another lr schedule ({changes}) that gives the steps already "
                         f"taken another lr (step {i}: {old[i]:.4g} x the lr before, {new[i]:.4g} x now). A schedule "
                         f"may change on resume only where it continues the run (e.g. a wsd decay after the steps "
                         f"taken); resume with the run's values (see {saved}), or start a new run.")


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


@contextlib.contextmanager
def timed(totals: dict[str, float], key: str):
    """Adds the seconds the block takes to `totals[key]` (where a loop's time goes besides its main work)."""
    start = time.time()
    try:
        yield
    finally:
        totals[key] = totals.get(key, 0.0) + time.time() - start
