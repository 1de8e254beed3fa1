"""Atomic, resumable accelerate checkpoints shared by the training scripts.

A checkpoint is `accelerator.save_state` written into `checkpoint-{step:07d}.tmp/` and renamed to
`checkpoint-{step:07d}/` only once every process has finished writing, so a crash mid-write never leaves a folder
that `latest_checkpoint` would pick up. accelerate gives save/load; the atomic rename and the retention limit are
what it lacks (its `automatic_checkpoint_naming` writes in place).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

_DONE = re.compile(r"^checkpoint-(\d+)$")


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


def resolve_checkpoint(resume: str, folder: str | Path) -> Path:
    """`"latest"` -> newest complete checkpoint in `folder`; otherwise `resume` must be a checkpoint folder."""
    path = latest_checkpoint(folder) if resume == "latest" else Path(resume)
    if path is None or not path.is_dir():
        raise FileNotFoundError(f"No checkpoint to resume from ({resume!r}; looked in {folder}).")
    checkpoint_step(path)
    return path


def save_checkpoint(accelerator, folder: str | Path, step: int, total_limit: int | None = None) -> Path:
    """Writes the accelerate state atomically; keeps the newest `total_limit` checkpoints (None or <= 0: all).

    Every process must call it (each writes its own RNG state).
    """
    folder = Path(folder)
    final = folder / checkpoint_name(step)
    tmp = folder / f"{final.name}.tmp"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)  # left by a crashed run
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
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
