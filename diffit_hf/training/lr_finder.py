"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates", Sec. 3.3): an exponential lr sweep over real
training batches that stops when the smoothed loss diverges, and the steepest-descent suggestion. Written here:
accelerate and diffusers have none."""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..utils import atomic_path
from .loss_log import plot_curve

logger = logging.getLogger(__name__)


def suggest_lr(rows: list[tuple[float, float, float]]) -> float:
    """The lr of the steepest descent of the smoothed loss against log(lr), before its minimum.

    Args:
        rows (`list[tuple[float, float, float]]`): `(lr, loss, smoothed_loss)` in increasing lr order.
    """
    stop = min(range(len(rows)), key=lambda k: rows[k][2]) + 1
    slopes = [(rows[k + 1][2] - rows[k][2]) / math.log(rows[k + 1][0] / rows[k][0]) for k in range(stop - 1)]
    return rows[min(range(len(slopes)), key=slopes.__getitem__)][0] if slopes else rows[0][0]


def lr_range_test(
    loss_at: Callable[[int, object], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    batches: Iterable,
    accelerator,
    min_lr: float = 1e-7,
    max_lr: float = 1.0,
    num_steps: int = 100,
    output_dir: str | Path | None = None,
) -> dict:
    """Sweeps the lr from `min_lr` to `max_lr` in `num_steps` exponential steps, one optimiser step per batch.

    Args:
        loss_at (`Callable`): `loss_at(i, batch)` -> the training loss of sweep step `i` (scalar tensor).
        optimizer (`torch.optim.Optimizer`): its lr is overwritten at every step.
        batches (`Iterable`): training batches, restarted when exhausted.
        accelerator ([`~accelerate.Accelerator`]): backward, the loss mean over processes, the main process.
        output_dir (`str` or `Path`, *optional*): where the main process writes `lr_finder.csv` and `.png`.

    Returns:
        `dict`: `{"suggested_lr": float, "rows": [(lr, loss, smoothed_loss), ...]}`.
    """
    if not 0 < min_lr < max_lr:
        raise ValueError(f"The lr finder needs 0 < min_lr < max_lr, got {min_lr} and {max_lr}.")
    lrs = torch.logspace(math.log10(min_lr), math.log10(max_lr), num_steps).tolist()
    rows, smoothed, best = [], 0.0, float("inf")
    iterator = iter(batches)
    for i, lr in enumerate(tqdm(lrs, desc="lr finder", disable=not accelerator.is_local_main_process)):
        try:
            batch = next(iterator)
        except StopIteration:
            iterator = iter(batches)
            batch = next(iterator)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = loss_at(i, batch)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        value = accelerator.reduce(loss.detach(), "mean").item()
        smoothed = 0.98 * smoothed + 0.02 * value
        debiased = smoothed / (1 - 0.98 ** (i + 1))
        rows.append((lr, value, debiased))
        best = min(best, debiased)
        if not math.isfinite(value) or debiased > 4 * best:
            break
    suggestion = suggest_lr(rows)
    if output_dir is not None and accelerator.is_main_process:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "lr_finder.csv") as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["lr", "loss", "smoothed_loss"])
            writer.writerows(rows)
        plot_curve([r[0] for r in rows], [r[2] for r in rows], out / "lr_finder.png", "learning rate",
                   "smoothed loss", log_x=True)
        logger.info(f"lr finder: suggested learning rate {suggestion:.3g} (steepest descent); see "
                    f"{out / 'lr_finder.png'}")
    return {"suggested_lr": suggestion, "rows": rows}
