import math

import pytest
import torch
from accelerate import Accelerator

from diffit_hf.training.lr_finder import lr_range_test, suggest_lr


def smoothed_rows(lrs, losses):
    return [(lr, loss, loss) for lr, loss in zip(lrs, losses)]


def test_suggestion_is_the_steepest_descent_before_the_minimum():
    lrs = [10 ** (-6 + 0.25 * k) for k in range(25)]  # 1e-6 .. 1
    # a sigmoid drop centred between the grid points 1e-3 and 10^-2.75, a flat minimum near 1e-2, divergence
    # after: the steepest segment starts at 1e-3 (the suggestion is a segment's left end)
    losses = [1.0 - 0.8 / (1 + math.exp(-4 * (math.log10(lr) + 2.875))) for lr in lrs]
    losses = [loss + (50 * (lr - 0.03) if lr > 0.03 else 0.0) for lr, loss in zip(lrs, losses)]
    assert suggest_lr(smoothed_rows(lrs, losses)) == pytest.approx(1e-3)
    # the slope after the minimum (divergence, steeper in absolute value) is never chosen
    assert suggest_lr(smoothed_rows(lrs, losses[::-1])) == lrs[0]


def test_range_test_on_a_quadratic_stops_when_the_loss_diverges(tmp_path):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.tensor([3.0]))
    optimizer = torch.optim.SGD([w], lr=0.0)
    accelerator = Accelerator(cpu=True)
    # loss w^2: SGD converges for lr < 1 and diverges above, so the sweep must stop before 100
    result = lr_range_test(lambda i, batch: (w**2).sum(), optimizer, [0], accelerator, min_lr=1e-3, max_lr=100.0,
                           num_steps=60, output_dir=tmp_path)
    lrs = [r[0] for r in result["rows"]]
    assert lrs[0] == pytest.approx(1e-3) and lrs == sorted(lrs)
    assert 1.0 < lrs[-1] < 100.0  # stopped by divergence, after lr 1
    assert 1e-2 <= result["suggested_lr"] <= 1.0
    assert (tmp_path / "lr_finder.csv").read_text().splitlines()[0] == "lr,loss,smoothed_loss"
    with pytest.raises(ValueError, match="min_lr < max_lr"):
        lr_range_test(lambda i, b: (w**2).sum(), optimizer, [0], accelerator, min_lr=1.0, max_lr=0.1)
