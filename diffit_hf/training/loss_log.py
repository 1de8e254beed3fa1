"""The losses of a training run: their history (`logs/loss.csv` and its curve) and the losses of the steps since the
last check, kept on the device."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from ..utils import atomic_path


class LossHistory:
    """The rows of `logs/loss.csv` (`step` and one column per value). Every process may hold one; only the main
    process writes. A resumed run keeps the rows up to its checkpoint's step and drops the rest.

    Args:
        path (`str` or `Path`): the CSV file.
        columns (`tuple[str, ...]`): the value columns after `step`.
        resume_step (`int`, defaults to 0): keep existing rows with `step <= resume_step` (0: start empty).
        is_main_process (`bool`, defaults to `True`): whether `flush` writes.
    """

    def __init__(self, path: str | Path, columns: tuple[str, ...], resume_step: int = 0,
                 is_main_process: bool = True):
        self.path, self.columns, self.is_main_process = Path(path), tuple(columns), is_main_process
        self.rows: list[tuple] = []
        if resume_step > 0 and self.path.exists():
            with open(self.path, newline="") as f:
                for row in csv.DictReader(f):
                    if int(row["step"]) <= resume_step:
                        self.rows.append((int(row["step"]), *(float(row[c]) for c in self.columns)))

    def append(self, step: int, values: dict[str, float]) -> None:
        self.rows.append((step, *(float(values[c]) for c in self.columns)))

    def column(self, name: str) -> list[float]:
        index = 0 if name == "step" else 1 + self.columns.index(name)
        return [row[index] for row in self.rows]

    def flush(self) -> None:
        """Writes every row (atomically) from the main process."""
        if not self.is_main_process:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["step", *self.columns])
            writer.writerows(self.rows)

    def plot(self, path: str | Path, column: str = "loss") -> None:
        if self.is_main_process and self.rows:
            plot_curve(self.column("step"), self.column(column), path, "step", column)


class PendingLosses:
    """The losses of the optimiser steps since the last check, kept on the device: `collect` reduces them over the
    processes and copies them to the host in one go, on logging steps and before checkpoints. The loop then makes no
    host synchronisation on the other steps (a per-step `.tolist()` stalls the GPU's queue), and a NaN is still
    named by its own step.

    Args:
        keys (`tuple[str, ...]`): the loss names, e.g. `("loss", "mse", "vb")`.
    """

    def __init__(self, keys: tuple[str, ...]):
        self.keys = tuple(keys)
        self.rows: list[tuple[int, torch.Tensor, float]] = []  # (step, (K,) device tensor, lr)

    def add(self, step: int, micro_batches: list[dict[str, torch.Tensor]], lr: float) -> None:
        """Step `step`'s losses: the mean over its micro-batches (gradient accumulation), not synchronised."""
        values = torch.stack([torch.stack([m[k].detach().float() for k in self.keys]) for m in micro_batches])
        self.rows.append((step, values.mean(0), lr))  # (K,)

    def collect(self, accelerator) -> list[tuple[int, dict[str, float]]]:
        """`(step, {key: mean over processes, "lr": lr})` for each pending step, oldest first; one reduction and one
        host copy. Every process must call it at the same steps."""
        if not self.rows:
            return []
        values = accelerator.reduce(torch.stack([v for _, v, _ in self.rows]), "mean").tolist()  # (S, K)
        out = [(step, {**dict(zip(self.keys, row)), "lr": lr}) for (step, _, lr), row in zip(self.rows, values)]
        self.rows = []
        return out


def plot_curve(xs, ys, path: str | Path, xlabel: str, ylabel: str, log_x: bool = False) -> None:
    """A line plot saved as PNG (matplotlib, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, ys)
    ax.set(xlabel=xlabel, ylabel=ylabel, xscale="log" if log_x else "linear")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
