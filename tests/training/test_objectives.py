import pytest
import torch

from diffit_hf import DiTModel
from diffit_hf.training.objectives import EpsilonObjective, make_objective


class Recorder(torch.nn.Module):
    """A fake model returning a fixed output and recording its inputs."""

    def __init__(self, out):
        super().__init__()
        self.out, self.calls = out, []

    def forward(self, x, t, y):
        self.calls.append((x, t, y))
        return type("Out", (), {"sample": self.out})()


def test_epsilon_objective_noises_with_ddpm_and_regresses_epsilon():
    objective = EpsilonObjective(learn_sigma=False)
    assert objective.scheduler.config.variance_type == "fixed_small"
    x0 = torch.randn(5, 4, 4, 4)
    model = Recorder(torch.zeros(5, 4, 4, 4))
    torch.manual_seed(1)
    losses = objective.training_losses(model, x0, None)
    torch.manual_seed(1)  # the same draws, explicitly: noise first, then t
    noise = torch.randn_like(x0)
    t = torch.randint(0, 1000, (5,))
    abar = objective.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    x, t_seen, _ = model.calls[0]
    torch.testing.assert_close(t_seen, t)
    torch.testing.assert_close(x, abar.sqrt() * x0 + (1 - abar).sqrt() * noise)
    torch.testing.assert_close(losses["loss"], noise.square().mean())  # the model predicted 0
    assert losses["vb"] == 0


def test_learned_sigma_adds_the_vb_term_and_unknown_names_are_refused():
    objective = make_objective("epsilon", learn_sigma=True)
    assert objective.scheduler.config.variance_type == "learned_range"
    model = DiTModel(sample_size=4, patch_size=2, in_channels=4, num_layers=1, num_attention_heads=1,
                     attention_head_dim=8, num_classes=0)
    with torch.no_grad():
        losses = objective.training_losses(model, torch.randn(3, 4, 4, 4), None)
    assert losses["vb"] > 0 and losses["loss"] == pytest.approx((losses["mse"] + losses["vb"]).item())
    with pytest.raises(ValueError, match="valid choices are epsilon"):
        make_objective("eps", learn_sigma=True)
