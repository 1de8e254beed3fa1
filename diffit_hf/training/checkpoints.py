"""Atomic, resumable accelerate checkpoints shared by the training scripts.

A checkpoint is `accelerator.save_state` written into `checkpoint-{step:07d}.tmp/` and renamed to
`checkpoint-{step:07d}/` only once every process has finished writing, so a crash mid-write never leaves a folder
that `latest_checkpoint` would pick up. accelerate gives save/load; the atomic rename and the retention limit are
what it lacks (its `automatic_checkpoint_naming` writes in place).

Inside a checkpoint the trained model and its EMA are `save_pretrained` folders, `<name>/` and `<name>_ema/`
(written and read by `distributed.register_checkpoint_hooks`, the hooks of diffusers' training examples), next to
accelerate's optimiser, scheduler, sampler and RNG states, and `processes.json`: the number of processes that wrote
it and their batch (a run resumes with the same number, or its global batch and data order would change).
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import zipfile
from pathlib import Path

from ..utils import atomic_write_json

_DONE = re.compile(r"^checkpoint-(\d+)$")
PROCESSES = "processes.json"


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:07d}"


def checkpoint_step(path: str | Path) -> int:
    """The step a complete checkpoint folder was written at."""
    match = _DONE.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not a checkpoint folder (expected a name like {checkpoint_name(1000)}).")
    return int(match.group(1))


def list_checkpoints(folder: str | Path) -> list[Path]:
    """Complete checkpoints in `folder`, oldest first (temporary `.tmp` folders are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    done = [p for p in folder.iterdir() if p.is_dir() and _DONE.match(p.name)]
    return sorted(done, key=checkpoint_step)


def latest_checkpoint(folder: str | Path) -> Path | None:
    done = list_checkpoints(folder)
    return done[-1] if done else None


def _torch_file_problem(path: Path) -> str | None:
    """Why the `torch.save` archive `path` cannot be loaded (missing, truncated, not an archive), or None; reads
    the zip directory only, never unpickles."""
    if not path.is_file():
        return f"{path.name} is missing"
    try:
        with zipfile.ZipFile(path) as archive:
            size = path.stat().st_size
            if any(info.header_offset + info.compress_size > size for info in archive.infolist()):
                return f"{path.name} is truncated"
    except (OSError, zipfile.BadZipFile) as err:
        return f"{path.name} is truncated or damaged ({err})"
    return None


def _pretrained_folder_problem(folder: Path) -> str | None:
    """Why the save_pretrained folder `folder` cannot be loaded (config not a JSON object, weights missing or
    truncated), or None; reads the config and the weights' headers only."""
    from ..data.cache_format import read_header  # the safetensors layout, checked without reading the tensors

    name = folder.name
    try:
        config = json.loads((folder / "config.json").read_text())
    except FileNotFoundError:
        return f"{name}/config.json is missing"
    except (OSError, ValueError) as err:
        return f"{name}/config.json is unreadable ({err})"
    if not isinstance(config, dict):
        return f"{name}/config.json holds no config"
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return f"{name}/ holds no safetensors weights"
    for file in files:
        try:
            read_header(file)
        except (OSError, ValueError) as err:
            return f"{name}/{file.name} is truncated or damaged ({err})"
    return None


def checkpoint_problem(path: str | Path, parts: tuple[str, ...] = (), num_processes: int = 1,
                       num_schedulers: int = 0) -> str | None:
    """Why `path` is not a complete checkpoint, or None: each of `parts` (save_pretrained folders written by
    `register_checkpoint_hooks`) holds a readable config and untruncated weights, and accelerate's optimiser (FSDP:
    its sharded `optimizer_0/`), the `num_schedulers` learning-rate schedules and the per-process RNG states are
    intact archives: every file that resuming loads (a truncated RNG state would be skipped by accelerate without
    an error, losing the exact resume)."""
    path = Path(path)
    if not path.is_dir():
        return "it is not a folder"
    for part in parts:
        problem = _pretrained_folder_problem(path / part)
        if problem:
            return problem
    if (path / "optimizer_0").is_dir():  # FSDP: accelerate's sharded model and optimiser state
        for name in ("pytorch_model_fsdp_0", "optimizer_0"):
            if not (path / name / ".metadata").is_file():
                return f"{name}/.metadata is missing"
    elif not (path / "optimizer.bin").is_file():
        return "optimizer.bin is missing"
    archives = [path / "optimizer.bin"] if (path / "optimizer.bin").exists() else []
    archives += [path / ("scheduler.bin" if i == 0 else f"scheduler_{i}.bin") for i in range(num_schedulers)]
    archives += [path / f"random_states_{rank}.pkl" for rank in range(num_processes)]
    archives += [path / "scaler.pt"] if (path / "scaler.pt").exists() else []
    for archive in archives:
        problem = _torch_file_problem(archive)
        if problem:
            return problem
    return None


def checkpoint_processes(path: str | Path) -> dict:
    """`{"num_processes", "batch_per_process"}` of the run that wrote the checkpoint `path` (older checkpoints
    without `processes.json`: the count of their per-process RNG states, batch unknown)."""
    path = Path(path)
    try:
        return {"batch_per_process": None, **json.loads((path / PROCESSES).read_text())}
    except (OSError, ValueError):
        ranks = [int(m.group(1)) for p in path.glob("random_states_*.pkl")
                 if (m := re.fullmatch(r"random_states_(\d+)\.pkl", p.name))]
        return {"num_processes": max(ranks, default=0) + 1, "batch_per_process": None}


def _check_same_processes(path: Path, num_processes: int, batch_per_process: int | None) -> None:
    """`ValueError` naming the change when the checkpoint `path` was written by another number of processes."""
    written = checkpoint_processes(path)
    if written["num_processes"] == num_processes:
        return

    def batch(processes: int, per_process: int | None) -> str:
        return f" (global batch {processes} x {per_process} = {processes * per_process})" if per_process else ""

    before = batch(written["num_processes"], written["batch_per_process"])
    now = batch(num_processes, batch_per_process)
    raise ValueError(
        f"{path} was written by {written['num_processes']} process(es){before}; this run has {num_processes}{now}: "
        "resuming would change the global batch and re-read or skip rows of the epoch. Resume with the run's "
        f"number of processes (accelerate launch --num_processes {written['num_processes']}), or start a new run "
        f"from its weights: --init-from {path / 'transformer'} in another --output-dir."
    )


def resolve_checkpoint(resume: str, folder: str | Path, parts: tuple[str, ...] = (), num_processes: int = 1,
                       log=print, num_schedulers: int = 0, batch_per_process: int | None = None) -> Path:
    """`"latest"` -> the newest complete checkpoint in `folder` (incomplete newer ones are skipped, saying why);
    otherwise `resume` must be a complete checkpoint folder. Either must have been written by `num_processes`
    processes (`ValueError` naming the change otherwise; `batch_per_process` only makes the message precise)."""
    if resume != "latest":
        path = Path(resume)
        if not path.is_dir():
            raise FileNotFoundError(f"No checkpoint to resume from ({resume!r} does not exist).")
        checkpoint_step(path)
        problem = checkpoint_problem(path, parts, checkpoint_processes(path)["num_processes"], num_schedulers)
        if problem:
            raise ValueError(f"Cannot resume from {path}: {problem}. Resume from another checkpoint, or from "
                             "'latest' (the newest complete one).")
        _check_same_processes(path, num_processes, batch_per_process)
        return path
    skipped = []
    for path in reversed(list_checkpoints(folder)):
        problem = checkpoint_problem(path, parts, checkpoint_processes(path)["num_processes"], num_schedulers)
        if problem is None:
            for name in skipped:
                log(f"skipped the incomplete checkpoint {name}")
            _check_same_processes(path, num_processes, batch_per_process)
            return path
        skipped.append(f"{path} ({problem})")
    if skipped:
        raise FileNotFoundError(f"No complete checkpoint in {folder}: {'; '.join(skipped)}.")
    raise FileNotFoundError(f"No checkpoint to resume from ({resume!r}; looked in {folder}).")


def resume_from_checkpoint(accelerator, resume: str | None, folder: str | Path, parts: tuple[str, ...] = (),
                           batch_per_process: int | None = None) -> int:
    """Loads `resume` ("latest" or a checkpoint folder) into the prepared objects; returns the step to continue
    from. "latest" with no checkpoint in `folder` starts from scratch and says so (as diffusers' examples do);
    `parts` are the save_pretrained folders a complete checkpoint holds (see `checkpoint_problem`); a checkpoint
    written by another number of processes is refused (`batch_per_process`: for the message)."""
    if not resume:
        return 0
    if resume == "latest" and latest_checkpoint(folder) is None:
        accelerator.print(f"--resume-from-checkpoint latest: no checkpoint in {folder}, starting from scratch")
        return 0
    path = resolve_checkpoint(resume, folder, parts, accelerator.num_processes, log=accelerator.print,
                              num_schedulers=len(accelerator._schedulers),  # each one's scheduler*.bin is loaded
                              batch_per_process=batch_per_process)
    accelerator.load_state(str(path))
    accelerator.print(f"resumed from {path} at step {checkpoint_step(path)}")
    return checkpoint_step(path)


def finite_checkpoint(folder: str | Path, part: str = "transformer") -> Path | None:
    """The newest checkpoint in `folder` whose `part` weights are all finite."""
    from safetensors.torch import load_file

    for path in reversed(list_checkpoints(folder)):
        files = sorted((path / part).glob("*.safetensors"))
        if files and all(t.isfinite().all() for f in files for t in load_file(str(f)).values()):
            return path
    return None


def check_finite_loss(loss: float, step: int, folder: str | Path, part: str = "transformer",
                      checked_at: int | None = None) -> None:
    """Raises `FloatingPointError` when the loss of `step` (seen at the check of step `checked_at`: losses are
    checked on logging steps and before every checkpoint) is NaN or infinite, before a checkpoint can hold the
    weights it produced. Resuming would repeat it (every step's randomness is fixed), so the message says what to
    change and names the newest checkpoint in `folder` whose weights are finite."""
    if math.isfinite(loss):
        return
    good = finite_checkpoint(folder, part)
    where = (f"The newest checkpoint with finite weights is {good}: resume from it with --resume-from-checkpoint "
             f"{good} after the change." if good else "No checkpoint with finite weights exists: start again.")
    seen = f" (found at the check of step {checked_at})" if checked_at not in (None, step) else ""
    raise FloatingPointError(
        f"Loss is {loss} at step {step}{seen}; stopping before a checkpoint holds its weights. Resuming as is "
        "repeats it (each step's randomness is fixed): lower --learning-rate, set --max-grad-norm (e.g. 1.0), or "
        "check the data. " + where
    )


def save_checkpoint(accelerator, folder: str | Path, step: int, total_limit: int | None = None,
                    batch_per_process: int | None = None) -> Path:
    """Writes the accelerate state atomically, with `processes.json` (the process count and `batch_per_process`,
    examples per process and optimiser step); keeps the newest `total_limit` checkpoints (None or <= 0: all).

    Every process must call it (each writes its own RNG state).
    """
    folder = Path(folder)
    final = folder / checkpoint_name(step)
    tmp = folder / f"{final.name}.tmp"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)  # left by a crashed run
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp))
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        previous = latest_checkpoint(folder)
        need = sum(f.stat().st_size for f in previous.rglob("*") if f.is_file()) if previous else 0
        raise OSError(err.errno, f"No space left on the device of {folder} while writing {final.name}: a checkpoint "
                      f"takes about {need / 2**20:,.0f} MiB (the previous one). Free space or lower "
                      "--checkpoints-total-limit; the previous checkpoints are intact.") from err
    if accelerator.is_main_process:
        atomic_write_json(tmp / PROCESSES, {"num_processes": accelerator.num_processes,
                                            "batch_per_process": batch_per_process})
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if total_limit is not None and total_limit > 0:
            for old in list_checkpoints(folder)[:-total_limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final
