"""The EMA of the trained weights, as diffusers' `EMAModel` with one of two decay schedules:

- warmup (our default, for short runs): `decay_s = min(decay, 1 - (1 + s) ** -power)`, so that a run of a few
  thousand steps averages its recent weights instead of staying close to the random initialisation;
- DiT's (`warmup=False`): the EMA starts as a copy of the initial weights and every step uses the constant `decay`
  (DiT's `update_ema(ema, model, decay=0)` once, then 0.9999). diffusers' `use_ema_warmup=False` alone would mean
  `(1 + s) / (10 + s)`, and a first update that copies the weights after step 1; `min_decay=decay` pins the value,
  and `update_after_step=-1` makes step 1 an ordinary update (`get_decay` counts `s = step - update_after_step - 1`).
"""

from __future__ import annotations

from diffusers.training_utils import EMAModel
from torch import nn


def make_ema(model: nn.Module, decay: float, warmup: bool = True, power: float = 2 / 3,
             model_cls: type | None = None) -> EMAModel:
    """An `EMAModel` of `model`'s parameters (saved with `model_cls`, by default `model`'s class, and its config)
    with the warmup schedule, or DiT's constant `decay` from the first step when `warmup` is False. (FSDP2 swaps
    the class of a sharded model: pass the class it had before `accelerator.prepare`.)"""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"The EMA decay must lie in [0, 1), got {decay}.")
    schedule = ({"use_ema_warmup": True, "inv_gamma": 1.0, "power": power} if warmup else
                {"use_ema_warmup": False, "min_decay": decay, "update_after_step": -1})
    return EMAModel(model.parameters(), decay=decay, model_cls=model_cls or type(model), model_config=model.config,
                    **schedule)
