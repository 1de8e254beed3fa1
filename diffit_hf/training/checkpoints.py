"""Atomic, resumable accelerate checkpoints shared by the training scripts.

A checkpoint is `accelerator.save_state` written into `checkpoint-{step:07d}.tmp/` and renamed to
`checkpoint-{step:07d}/` only once every process has finished writing, so a crash mid-write never leaves a folder
that `latest_checkpoint` would pick up. accelerate gives save/load; the atomic rename and the retention limit are
what it lacks (its `automatic_checkpoint_naming` writes in place).

Inside a checkpoint the trained model and its EMA are `save_pretrained` folders, `<name>/` and `<name>_ema/`
(`register_checkpoint_hooks`, the hooks of diffusers' training examples), next to accelerate's optimiser,
scheduler, sampler and RNG states.
"""

from __future__ import annotations

import math
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


def resume_from_checkpoint(accelerator, resume: str | None, folder: str | Path) -> int:
    """Loads `resume` ("latest" or a checkpoint folder) into the prepared objects; returns the step to continue
    from. "latest" with no checkpoint in `folder` starts from scratch and says so (as diffusers' examples do)."""
    if not resume:
        return 0
    if resume == "latest" and latest_checkpoint(folder) is None:
        accelerator.print(f"--resume-from-checkpoint latest: no checkpoint in {folder}, starting from scratch")
        return 0
    path = resolve_checkpoint(resume, folder)
    accelerator.load_state(str(path))
    accelerator.print(f"resumed from {path} at step {checkpoint_step(path)}")
    return checkpoint_step(path)


def check_finite_loss(loss: float, step: int, folder: str | Path) -> None:
    """Raises `FloatingPointError` before the update of `step` when the loss is NaN or infinite, naming the last
    checkpoint in `folder`."""
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"Loss is {loss} at step {step}; stopping before the update. The last good checkpoint is "
            f"{latest_checkpoint(folder) or 'none'} (resume with --resume-from-checkpoint latest)."
        )


def register_checkpoint_hooks(accelerator, model, ema=None, name: str = "transformer") -> None:
    """`save_state` writes `model` (the unwrapped `ModelMixin`) as `<name>/` and `ema` (a diffusers `EMAModel`) as
    `<name>_ema/` save_pretrained folders; `load_state` reads them back into the same objects."""
    model_cls = type(model)

    def save_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            model.save_pretrained(Path(output_dir) / name)
            if ema is not None:
                ema.save_pretrained(Path(output_dir) / f"{name}_ema")
        weights.clear()  # saved above: accelerate must not write them again (`models` is accelerate's own list)

    def load_hook(models, input_dir):
        models.clear()  # a copy: loaded here, into the module that the prepared (wrapped) model shares
        saved = model_cls.from_pretrained(input_dir, subfolder=name)
        model.load_state_dict(saved.state_dict())
        if ema is not None:
            loaded = ema.from_pretrained(str(Path(input_dir) / f"{name}_ema"), model_cls)
            ema.load_state_dict(loaded.state_dict())
            ema.to(accelerator.device)

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


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
