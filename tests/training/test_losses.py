import math

import pytest
import torch
from diffusers import DDPMScheduler

from diffit_hf.training.losses import diffusion_loss, discretized_gaussian_log_likelihood, learned_log_variance


@pytest.fixture
def scheduler():
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                         variance_type="learned_range")


def noised(scheduler, n=6, t=None):
    x0 = torch.randn(n, 4, 8, 8).clamp(-1, 1)
    noise = torch.randn_like(x0)
    t = torch.randint(0, 1000, (n,)) if t is None else t
    return x0, noise, scheduler.add_noise(x0, noise, t), t


def test_learned_log_variance_matches_diffusers_sampler(scheduler):
    scheduler.set_timesteps(1000)
    v = torch.rand(3, 4, 2, 2) * 2 - 1
    for t in (1, 10, 500, 999):
        ours = learned_log_variance(scheduler, torch.full((3,), t), v)
        # diffusers recomputes beta_t as 1 - abar_t / abar_{t-1}: equal up to float32 rounding
        torch.testing.assert_close(ours, scheduler._get_variance(t, v, "learned_range").float(), rtol=1e-4, atol=0)


def test_epsilon_only_loss_is_mse(scheduler):
    x0, noise, xt, t = noised(scheduler)
    out = torch.randn_like(x0)
    losses = diffusion_loss(out, noise, x0, xt, t, scheduler)
    torch.testing.assert_close(losses["loss"], torch.nn.functional.mse_loss(out, noise))
    assert losses["vb"] == 0


def test_vb_is_zero_for_the_true_posterior(scheduler):
    """Exact epsilon and v = -1 (log variance = log beta_tilde_t) reproduce q(x_{t-1} | x_t, x_0): KL = 0."""
    x0, noise, xt, t = noised(scheduler, t=torch.tensor([1, 5, 100, 500, 900, 999]))
    out = torch.cat([noise, -torch.ones_like(noise)], dim=1)
    losses = diffusion_loss(out, noise, x0, xt, t, scheduler)
    assert losses["mse"].item() == pytest.approx(0, abs=1e-10)
    assert losses["vb"].item() == pytest.approx(0, abs=1e-4)
    wrong = diffusion_loss(torch.cat([noise, torch.ones_like(noise)], dim=1), noise, x0, xt, t, scheduler)
    assert wrong["vb"] > 0.01


def test_vb_trains_only_the_variance(scheduler):
    x0, noise, xt, t = noised(scheduler)
    out = torch.randn(6, 8, 8, 8, requires_grad=True)
    losses = diffusion_loss(out, noise, x0, xt, t, scheduler)
    losses["vb"].backward()
    assert out.grad[:, :4].abs().max() == 0  # the mean is detached in the VB term
    assert out.grad[:, 4:].abs().max() > 0


def test_t0_uses_the_discretized_decoder_likelihood(scheduler):
    x0 = torch.linspace(-1, 1, 256).view(1, 1, 16, 16).expand(2, 4, 16, 16).contiguous()
    ll = discretized_gaussian_log_likelihood(x0, x0, torch.full_like(x0, math.log(1e-3)))
    assert torch.all(ll <= 0) and ll.mean() > -0.01  # a sharp Gaussian on the bin centre: nearly all mass
    noise = torch.randn_like(x0)
    t = torch.zeros(2, dtype=torch.long)
    losses = diffusion_loss(torch.cat([noise, torch.zeros_like(noise)], 1), noise, x0,
                            scheduler.add_noise(x0, noise, t), t, scheduler)
    assert torch.isfinite(losses["vb"]) and losses["vb"] > 0


def test_bad_channel_count(scheduler):
    x0, noise, xt, t = noised(scheduler)
    with pytest.raises(ValueError, match="channels"):
        diffusion_loss(torch.randn(6, 5, 8, 8), noise, x0, xt, t, scheduler)


def _dit_tables_float64(t):
    """DiT's GaussianDiffusion tables at `t`, in float64 numpy (linear betas 1e-4..0.02, 1000 steps)."""
    import numpy as np

    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    abar = np.cumprod(1.0 - betas)
    abar_prev = np.append(1.0, abar[:-1])
    post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
    return {"log_beta_tilde": np.log(np.append(post_var[1], post_var[1:]))[t],
            "coef_x0": (betas * np.sqrt(abar_prev) / (1.0 - abar))[t],
            "coef_xt": ((1.0 - abar_prev) * np.sqrt(1.0 - betas) / (1.0 - abar))[t]}


@pytest.mark.parametrize("t", [0, 1, 2, 10, 500, 999])
def test_posterior_tables_are_dits_float64_tables(scheduler, t):
    """diffusers' float32 alphas_cumprod puts log(beta_tilde_1) ~1e-3 off DiT's; we build the tables in float64."""
    from diffit_hf.training.losses import posterior_tables

    ref = _dit_tables_float64(t)
    ours = learned_log_variance(scheduler, torch.tensor([t]), -torch.ones(1, 1, 1, 1)).item()  # v = -1: beta_tilde
    assert ours == pytest.approx(ref["log_beta_tilde"], rel=1e-6)
    tables = posterior_tables(scheduler)
    for key in ("coef_x0", "coef_xt"):
        assert tables[key][t].item() == pytest.approx(ref[key], rel=1e-12)


def test_vb_matches_a_float64_reference_near_t0(scheduler):
    """The whole VLB term at small t against the same formulas evaluated in float64 (improved DDPM Eq. 9-10)."""
    import numpy as np

    x0, noise, xt, t = noised(scheduler, n=4, t=torch.tensor([1, 2, 3, 5]))
    v = torch.rand_like(x0) * 2 - 1
    eps = noise + 0.1 * torch.randn_like(noise)
    ours = diffusion_loss(torch.cat([eps, v], 1), noise, x0, xt, t, scheduler)["vb"].item()
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    abar = np.cumprod(1.0 - betas)
    ref = []
    for i, ti in enumerate(t.tolist()):
        tab = _dit_tables_float64(ti)
        x0_, xt_, eps_, v_ = (a[i].double().numpy() for a in (x0, xt, eps, v))
        true_mean = tab["coef_x0"] * x0_ + tab["coef_xt"] * xt_
        pred_x0 = np.sqrt(1 / abar[ti]) * xt_ - np.sqrt(1 / abar[ti] - 1) * eps_
        model_mean = tab["coef_x0"] * pred_x0 + tab["coef_xt"] * xt_
        frac = (v_ + 1) / 2
        model_log_var = frac * np.log(betas[ti]) + (1 - frac) * tab["log_beta_tilde"]
        true_log_var = tab["log_beta_tilde"]
        kl = 0.5 * (-1 + model_log_var - true_log_var + np.exp(true_log_var - model_log_var)
                    + (true_mean - model_mean) ** 2 * np.exp(-model_log_var))
        ref.append(kl.mean() / np.log(2.0))
    assert ours == pytest.approx(float(np.mean(ref)), rel=1e-4)
