"""The EMA of the trained weights, as diffusers' `EMAModel` with one of two decay schedules:

- warmup (our default, for short runs): `decay_s = min(decay, 1 - (1 + s) ** -power)`, so that a run of a few
  thousand steps averages its recent weights instead of staying close to the random initialisation;
- DiT's (`warmup=False`): the EMA starts as a copy of the initial weights and every step uses the constant `decay`
  (DiT's `update_ema(ema, model, decay=0)` once, then 0.9999). diffusers' `use_ema_warmup=False` alone would mean
  `(1 + s) / (10 + s)`, and a first update that copies the weights after step 1; `min_decay=decay` pins the value,
  and `update_after_step=-1` makes step 1 an ordinary update (`get_decay` counts `s = step - update_after_step - 1`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers.training_utils import EMAModel
from torch import nn


def make_ema(model: nn.Module, decay: float, warmup: bool = True, power: float = 2 / 3,
             model_cls: type | None = None) -> EMAModel:
    """An `EMAModel` of `model`'s parameters (saved with `model_cls`, by default `model`'s class, and its config)
    with the warmup schedule, or DiT's constant `decay` from the first step when `warmup` is False. (FSDP2 swaps
    the class of a sharded model: pass the class it had before `accelerator.prepare`.) The shadow weights are
    updated with torch's foreach ops: a few calls per step instead of three per parameter."""
    return EMAModel(model.parameters(), decay=decay, model_cls=model_cls or type(model), model_config=model.config,
                    foreach=True, **_schedule(decay, warmup, power))


def _schedule(decay: float, warmup: bool, power: float) -> dict:
    """`EMAModel`'s arguments for the warmup schedule or DiT's constant decay (see the module docstring)."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"The EMA decay must lie in [0, 1), got {decay}.")
    return ({"use_ema_warmup": True, "inv_gamma": 1.0, "power": power} if warmup else
            {"use_ema_warmup": False, "min_decay": decay, "update_after_step": -1})


#################################################################################
#                 Post-hoc EMA from snapshots of the raw weights                #
#################################################################################
# A run with `--snapshot-steps K` writes its raw weights every K steps (`snapshots/step-{step:07d}.safetensors`,
# step 0 and the last step included). Any EMA profile of that run can then be computed after training
# (`training/posthoc_ema.py`): the EMA after S steps is a weighted sum of the weights after each step,
# `e_S = sum_s w_s theta_s`, with `w_s = (1 - b_s) prod_{r > s} b_r` for the per-step decays `b_s` (Karras et al.
# 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models", reconstruct EMA profiles post hoc from
# stored ones; here from raw snapshots, each step's weights read as the linear interpolation of the two snapshots
# around it: exact for weights that move linearly between snapshots, and close when K is small against the EMA's
# length, which the script reports).

SNAPSHOT_DIR = "snapshots"


def snapshot_path(folder: str | Path, step: int) -> Path:
    return Path(folder) / f"step-{step:07d}.safetensors"


def save_snapshot(model: nn.Module, folder: str | Path, step: int, is_main_process: bool) -> None:
    """Writes `model`'s raw weights after `step` optimiser steps to `folder/step-{step:07d}.safetensors` atomically,
    on the main process (with FSDP2 shards every rank must call it: the weights are gathered)."""
    from safetensors.torch import save_file

    from ..utils import atomic_path
    from .distributed import full_state_dict

    state = full_state_dict(model)
    if is_main_process:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with atomic_path(snapshot_path(folder, step)) as tmp:
            save_file(state, str(tmp), metadata={"step": str(step)})


def step_weights(num_steps: int, decay: float, warmup: bool = True, power: float = 2 / 3) -> np.ndarray:
    """The weight `w_s` of the weights after step `s = 0 .. num_steps` in the EMA of `make_ema(model, decay, warmup,
    power)` after `num_steps` steps (float64, sums to 1), with diffusers' `EMAModel.get_decay` for the decays."""
    schedule = EMAModel([nn.Parameter(torch.zeros(1))], decay=decay, **_schedule(decay, warmup, power))
    w = np.zeros(num_steps + 1)
    w[0] = 1.0  # the EMA starts as a copy of the initial weights
    for s in range(1, num_steps + 1):  # EMAModel.step: e <- b e + (1 - b) theta_s
        b = schedule.get_decay(s)
        w[:s] *= b
        w[s] = 1.0 - b
    return w


def snapshot_weights(snapshot_steps: list[int], weights: np.ndarray) -> np.ndarray:
    """Per-step weights (`weights[s]` for steps `0 .. S`) moved onto the snapshots at `snapshot_steps` (sorted, from
    0 to S): step `s` between snapshots `a < b` gives `(b - s) / (b - a)` of its weight to `a`, the rest to `b`."""
    steps = np.asarray(snapshot_steps)
    if steps[0] != 0 or steps[-1] != len(weights) - 1 or np.any(np.diff(steps) <= 0):
        raise ValueError(f"Snapshots must run from step 0 to step {len(weights) - 1} in increasing order, got steps "
                         f"{steps[0]} .. {steps[-1]}.")
    s = np.arange(len(weights))
    right = np.clip(np.searchsorted(steps, s, side="left"), 1, len(steps) - 1)  # the snapshot at or after s
    a, b = steps[right - 1], steps[right]
    frac = (s - a) / (b - a)
    out = np.zeros(len(steps))
    np.add.at(out, right - 1, weights * (1 - frac))
    np.add.at(out, right, weights * frac)
    return out


def list_snapshots(folder: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the snapshots in `folder`, by step."""
    found = [(int(p.stem.split("-")[1]), p) for p in Path(folder).glob("step-*.safetensors")]
    return sorted(found)


def posthoc_ema(folder: str | Path, decay: float, warmup: bool = True, power: float = 2 / 3,
                num_steps: int | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """The EMA (decay schedule of `make_ema`) after the last snapshot in `folder` (or `num_steps`, which must be a
    snapshot's step), from the snapshots up to it. Returns the averaged state dict (float32, on CPU) and a summary:
    the step, the number of snapshots used, the largest gap between them and the EMA's length (the standard
    deviation of its weights over the steps, in steps)."""
    from safetensors import safe_open

    snaps = list_snapshots(folder)
    if not snaps:
        raise FileNotFoundError(f"{folder} holds no snapshots (step-*.safetensors): train with --snapshot-steps.")
    if num_steps is not None:
        if num_steps not in dict(snaps):
            raise ValueError(f"No snapshot of step {num_steps} in {folder}; there are steps "
                             f"{', '.join(str(s) for s, _ in snaps[-5:])} (last five).")
        snaps = [(s, p) for s, p in snaps if s <= num_steps]
    steps = [s for s, _ in snaps]
    per_step = step_weights(steps[-1], decay, warmup, power)
    weights = snapshot_weights(steps, per_step)
    average: dict[str, torch.Tensor] = {}
    for w, (step, path) in zip(weights, snaps):
        with safe_open(str(path), "pt") as f:
            if f.metadata().get("step") != str(step):
                raise ValueError(f"{path} says it holds step {f.metadata().get('step')}, not {step}.")
            keys = set(f.keys())
            if average and keys != set(average):
                raise ValueError(f"{path} holds other tensors than the snapshots before it: not the same model.")
            for key in keys:
                t = f.get_tensor(key)
                if key not in average:
                    average[key] = torch.zeros(t.shape, dtype=torch.float64)
                elif average[key].shape != t.shape:
                    raise ValueError(f"{path}: {key} has shape {tuple(t.shape)}, the snapshots before it "
                                     f"{tuple(average[key].shape)}: not the same model.")
                if w:
                    average[key].add_(t.double(), alpha=float(w))
    mean = float((per_step * np.arange(len(per_step))).sum())
    length = float(np.sqrt((per_step * (np.arange(len(per_step)) - mean) ** 2).sum()))
    summary = {"step": steps[-1], "snapshots": len(steps), "max_gap": int(np.diff(steps).max()) if len(steps) > 1
               else 0, "ema_length_steps": length, "decay": decay, "warmup": warmup, "power": power}
    return {k: v.float() for k, v in average.items()}, summary
