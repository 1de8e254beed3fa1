"""The DiT training loss: epsilon MSE, plus improved DDPM's variational-bound term when the variance is learned.

diffusers' schedulers sample but have no training losses, so the VLB term (Nichol & Dhariwal 2021, Eq. 9-10 and
their hybrid objective; used by DiT with `learn_sigma=True`) is written here from the paper's formulas.
"""

from __future__ import annotations

import math

import torch
from diffusers import DDPMScheduler


def _at(values: torch.Tensor, timesteps: torch.Tensor, ndim: int) -> torch.Tensor:
    """values[t] shaped (N, 1, ..., 1) for broadcasting against an `ndim`-dimensional batch."""
    return values.to(timesteps.device)[timesteps].float().view(-1, *([1] * (ndim - 1)))


def _normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor):
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation of the standard normal CDF used by improved DDPM."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor):
    """log p(x) of data in [-1, 1] quantised to 256 bins under N(mean, exp(log_scale)^2), elementwise (nats)."""
    centered = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = _standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_minus = _standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_minus = torch.log((1.0 - cdf_minus).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_minus).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_minus, log_delta))


def posterior_tables(scheduler: DDPMScheduler) -> dict[str, torch.Tensor]:
    """The tables of q(x_{t-1} | x_t, x_0) in float64, `(T,)` each, as DiT builds them: diffusers keeps betas and
    `alphas_cumprod` in float32, where `1 - alphas_cumprod` near t = 0 (~1e-4, against float32's 6e-8 spacing at 1)
    is off by ~0.2%. Values are gathered from these tables and only then cast to float32 (`_at`), as DiT does."""
    config = scheduler.config
    if config.beta_schedule == "linear" and config.trained_betas is None:
        betas = torch.linspace(config.beta_start, config.beta_end, config.num_train_timesteps, dtype=torch.float64)
    else:  # other schedules: diffusers' float32 betas, accumulated in float64
        betas = scheduler.betas.double()
    abar = torch.cumprod(1.0 - betas, dim=0)
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    posterior_variance = betas * (1.0 - abar_prev) / (1.0 - abar)  # beta_tilde_t
    return {
        "log_beta": torch.log(betas),
        # beta_tilde_0 = 0: clipped to beta_tilde_1 as in improved DDPM
        "log_beta_tilde": torch.log(torch.cat([posterior_variance[1:2], posterior_variance[1:]])),
        "coef_x0": betas * abar_prev.sqrt() / (1.0 - abar),  # posterior mean = coef_x0 * x0 + coef_xt * x_t
        "coef_xt": (1.0 - abar_prev) * (1.0 - betas).sqrt() / (1.0 - abar),
        "sqrt_recip_abar": (1.0 / abar).sqrt(),  # x0 = sqrt(1 / abar) x_t - sqrt(1 / abar - 1) eps
        "sqrt_recipm1_abar": (1.0 / abar - 1.0).sqrt(),
    }


def learned_log_variance(scheduler: DDPMScheduler, timesteps: torch.Tensor, v: torch.Tensor,
                         tables: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Improved DDPM Eq. 15: `v*log(beta_t) + (1-v)*log(beta_tilde_t)`, the model output v in [-1, 1] mapped to
    [0, 1] (diffusers' `variance_type="learned_range"` samples with the same interpolation)."""
    tables = tables or posterior_tables(scheduler)
    frac = (v.float() + 1.0) / 2.0
    return (frac * _at(tables["log_beta"], timesteps, v.ndim)
            + (1.0 - frac) * _at(tables["log_beta_tilde"], timesteps, v.ndim))


def variational_bound(
    eps: torch.Tensor,
    variance_values: torch.Tensor,
    x_start: torch.Tensor,
    x_t: torch.Tensor,
    timesteps: torch.Tensor,
    scheduler: DDPMScheduler,
) -> torch.Tensor:
    """Improved DDPM's L_vlb term for the learned variance only, in bits/dim, per sample `(N,)`: the mean comes from
    a detached epsilon (Sec. 3.1), so this term trains the variance values `v` alone.

    Args:
        eps (`torch.Tensor`): the predicted epsilon, `(N, C, H, W)` (detached here).
        variance_values (`torch.Tensor`): the model's variance outputs v in [-1, 1], `(N, C, H, W)`.
        x_start, x_t (`torch.Tensor`): clean and noised inputs, `(N, C, H, W)`.
        timesteps (`torch.LongTensor`): `(N,)` in `[0, num_train_timesteps)`.
        scheduler ([`DDPMScheduler`]): the training noise schedule.
    """
    ndim, x_start, x_t = eps.ndim, x_start.float(), x_t.float()
    tables = posterior_tables(scheduler)
    coef_x0, coef_xt = _at(tables["coef_x0"], timesteps, ndim), _at(tables["coef_xt"], timesteps, ndim)
    true_mean = coef_x0 * x_start + coef_xt * x_t
    true_log_var = _at(tables["log_beta_tilde"], timesteps, ndim)
    pred_x0 = (_at(tables["sqrt_recip_abar"], timesteps, ndim) * x_t
               - _at(tables["sqrt_recipm1_abar"], timesteps, ndim) * eps.detach().float())
    model_mean = coef_x0 * pred_x0 + coef_xt * x_t
    model_log_var = learned_log_variance(scheduler, timesteps, variance_values, tables)

    dims = tuple(range(1, ndim))
    kl = _normal_kl(true_mean, true_log_var, model_mean, model_log_var).mean(dim=dims) / math.log(2.0)  # bits/dim
    nll = -discretized_gaussian_log_likelihood(x_start, model_mean, 0.5 * model_log_var).mean(dim=dims) / math.log(2.0)
    return torch.where(timesteps == 0, nll, kl)  # (N,)


def per_sample_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all but the batch dimension, in float32: `(N,)`."""
    return (prediction.float() - target.float()).square().mean(dim=tuple(range(1, prediction.ndim)))


def diffusion_loss(
    model_output: torch.Tensor,
    target: torch.Tensor,
    x_start: torch.Tensor,
    x_t: torch.Tensor,
    timesteps: torch.Tensor,
    scheduler: DDPMScheduler,
    weight: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """DiT's loss for one batch; returns `{"loss", "mse", "vb"}` (batch means; `vb` is 0 without learned sigma;
    `mse` unweighted, `loss` with `weight`).

    Args:
        model_output (`torch.Tensor`): `(N, C, H, W)` prediction, or `(N, 2C, H, W)` epsilon and variance values v.
        target (`torch.Tensor`): what the first C channels regress: the epsilon that made `x_t` from `x_start`
            (`scheduler.add_noise`), or v. With variance values the prediction must be epsilon.
        x_start, x_t (`torch.Tensor`): clean and noised inputs, `(N, C, H, W)`.
        timesteps (`torch.LongTensor`): `(N,)` in `[0, num_train_timesteps)`.
        scheduler ([`DDPMScheduler`]): the training noise schedule.
        weight (`torch.Tensor`, *optional*): `(N,)` weights of the MSE term (e.g. min-SNR).
    """
    channels = x_start.shape[1]
    prediction = model_output[:, :channels].float()
    mse = per_sample_mse(prediction, target)  # (N,)
    weighted = mse if weight is None else mse * weight  # "mse" stays the plain MSE, comparable across weightings
    if model_output.shape[1] == channels:
        return {"loss": weighted.mean(), "mse": mse.mean(), "vb": mse.new_zeros(())}
    if model_output.shape[1] != 2 * channels:
        raise ValueError(f"model_output has {model_output.shape[1]} channels; expected {channels} or {2 * channels}.")
    vb = variational_bound(prediction, model_output[:, channels:], x_start, x_t, timesteps, scheduler)
    return {"loss": (weighted + vb).mean(), "mse": mse.mean(), "vb": vb.mean()}
