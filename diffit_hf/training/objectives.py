"""Training objectives: what a training step draws (timesteps, noise), what the model is asked to predict, and the
scheduler that samples the trained model. The loop calls `objective.training_losses(model, x_start, labels)`, as
DiT's `train.py` calls `diffusion.training_losses`; the model code is the same for every objective.

- `epsilon`: DiT's recipe (DDPM, epsilon prediction, learned sigma trained by improved DDPM's hybrid loss).
- `v_prediction`: the same DDPM noising, target `v = sqrt(abar) * eps - sqrt(1 - abar) * x0` (Salimans & Ho 2022).
- `flow`: SiT's linear interpolant `x_t = (1 - t) * x0 + t * eps`, velocity target `eps - x0`, continuous
  `t in [0, 1]` fed to the timestep embedding as `1000 * t` (the scale it was designed for); `t` uniform or
  logit-normal (SD3). Sampled with diffusers' flow-matching Euler/Heun schedulers.
- `edm`: Karras et al. 2022 (as the DiffiT paper trains its image-space model): `x = x0 + sigma * eps` with
  log-normal sigma, the model F preconditioned as `D(x) = c_skip x + c_out F(c_in x, c_noise)`, loss weight
  `(sigma^2 + sigma_data^2) / (sigma * sigma_data)^2`; `c_noise = ln(sigma) / 4` reaches the timestep embedding as
  `1000 * c_noise` (`EDM_TIMESTEP_SCALE`, applied by `DiffiTPipeline` too). Sampled with diffusers' EDM schedulers.

Only `epsilon` learns sigma: the others sample with a fixed variance or none, so their models are built with
`learn_sigma=False` (no extra output channels).
"""

from __future__ import annotations

import math

import torch
from diffusers import DDPMScheduler, EDMEulerScheduler, FlowMatchEulerDiscreteScheduler
from diffusers.training_utils import compute_density_for_timestep_sampling, compute_snr

from ..pipelines.schedules import EDM_TIMESTEP_SCALE, dit_scheduler
from .losses import diffusion_loss, per_sample_mse

LOSS_KEYS = ("loss", "mse", "vb")  # every objective returns these (vb is 0 where there is no learned variance)
TIMESTEP_SAMPLING = ("uniform", "logit_normal")


class DDPMObjective:
    """DDPM noising at uniform integer timesteps with an epsilon or v target; with `learn_sigma` (epsilon only) the
    variational-bound term trains the variance (DiT's hybrid loss).

    Args:
        prediction_type (`str`, defaults to `"epsilon"`): `"epsilon"` or `"v_prediction"`.
        learn_sigma (`bool`, defaults to `True`): whether the model outputs `2 * C` channels (epsilon, variance).
        snr_gamma (`float`, *optional*): min-SNR-gamma loss weighting (Hang et al. 2023), as diffusers' examples:
            `min(snr, gamma) / snr` for epsilon, `min(snr, gamma) / (snr + 1)` for v.
    """

    def __init__(self, prediction_type: str = "epsilon", learn_sigma: bool = True, snr_gamma: float | None = None):
        if learn_sigma and prediction_type != "epsilon":
            raise ValueError(f"Only the epsilon objective learns sigma; build the model with learn_sigma=False for "
                             f"{prediction_type!r}.")
        if snr_gamma is not None and not snr_gamma > 0:  # <= 0 or NaN: a zero, negative (gradient ascent) or NaN loss
            raise ValueError(f"snr_gamma (min-SNR weighting) must be > 0, got {snr_gamma}; 5 is the paper's value, "
                             "or leave it unset for no weighting.")
        self.name = prediction_type
        self.prediction_type, self.learn_sigma, self.snr_gamma = prediction_type, learn_sigma, snr_gamma
        self.scheduler = dit_scheduler(learn_sigma, prediction_type)  # trained and sampled with DiT's diffusion

    def training_losses(self, model, x_start: torch.Tensor, class_labels: torch.Tensor | None
                        ) -> dict[str, torch.Tensor]:
        """`{"loss", "mse", "vb"}` for one batch `x_start` `(N, C, H, W)`; randomness from the global RNG."""
        channels = x_start.shape[1]
        noise = torch.randn_like(x_start)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (x_start.shape[0],), device=x_start.device)
        x_t = self.scheduler.add_noise(x_start, noise, t)
        out = model(x_t, t, class_labels).sample  # (N, C or 2C, H, W)
        if out.shape[1] != (2 if self.learn_sigma else 1) * channels:
            raise ValueError(f"The model outputs {out.shape[1]} channels for {channels}-channel inputs; the "
                             f"{self.name} objective with learn_sigma={self.learn_sigma} needs "
                             f"{(2 if self.learn_sigma else 1) * channels}.")
        target = noise if self.prediction_type == "epsilon" else self.scheduler.get_velocity(x_start, noise, t)
        weight = None
        if self.snr_gamma is not None:
            snr = compute_snr(self.scheduler, t)
            clipped = torch.minimum(snr, torch.full_like(snr, self.snr_gamma))
            weight = clipped / snr if self.prediction_type == "epsilon" else clipped / (snr + 1)
        return diffusion_loss(out, target, x_start, x_t, t, self.scheduler, weight)

    def pipeline_scheduler(self) -> DDPMScheduler:
        """The scheduler saved with the trained pipeline (`DiffiTPipeline.use_scheduler` swaps in others)."""
        return self.scheduler


class FlowObjective:
    """Flow matching with SiT's linear interpolant and a velocity target.

    Args:
        timestep_sampling (`str`, defaults to `"uniform"`): `"uniform"` t, or `"logit_normal"`:
            `t = sigmoid(N(logit_mean, logit_std))` (SD3, LightningDiT).
        logit_mean, logit_std (`float`, defaults to 0 and 1): the logit-normal's parameters.
    """

    name = "flow"
    learn_sigma = False

    def __init__(self, timestep_sampling: str = "uniform", logit_mean: float = 0.0, logit_std: float = 1.0):
        if timestep_sampling not in TIMESTEP_SAMPLING:
            raise ValueError(f"Unknown timestep_sampling {timestep_sampling!r}; valid choices are "
                             f"{', '.join(TIMESTEP_SAMPLING)}.")
        self.timestep_sampling, self.logit_mean, self.logit_std = timestep_sampling, logit_mean, logit_std
        self.scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000)

    def training_losses(self, model, x_start: torch.Tensor, class_labels: torch.Tensor | None
                        ) -> dict[str, torch.Tensor]:
        """`{"loss", "mse", "vb"}` for one batch `x_start` `(N, C, H, W)`; randomness from the global RNG."""
        noise = torch.randn_like(x_start)
        t = compute_density_for_timestep_sampling(self.timestep_sampling, x_start.shape[0], self.logit_mean,
                                                  self.logit_std, device=x_start.device)  # (N,) in [0, 1]
        t_ = t.view(-1, *([1] * (x_start.ndim - 1)))
        x_t = (1.0 - t_) * x_start + t_ * noise  # t = 1: pure noise, as the flow-matching schedulers count
        velocity = model(x_t, t * self.scheduler.config.num_train_timesteps, class_labels).sample
        if velocity.shape[1] != x_start.shape[1]:
            raise ValueError(f"The model outputs {velocity.shape[1]} channels for {x_start.shape[1]}-channel "
                             "inputs; the flow objective needs learn_sigma=False.")
        mse = per_sample_mse(velocity, noise - x_start)
        return {"loss": mse.mean(), "mse": mse.mean(), "vb": mse.new_zeros(())}

    def pipeline_scheduler(self) -> FlowMatchEulerDiscreteScheduler:
        return self.scheduler


class EDMObjective:
    """EDM's preconditioning, noise distribution and loss weighting (Karras et al. 2022, Table 1), with diffusers'
    `EDMEulerScheduler` defaults (`sigma_data` 0.5, sampling sigmas 0.002..80).

    Args:
        p_mean, p_std (`float`, defaults to -1.2 and 1.2): `ln(sigma) ~ N(p_mean, p_std)` in training.
        sigma_data (`float`, defaults to 0.5): the data's standard deviation.
    """

    name = "edm"
    learn_sigma = False

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2, sigma_data: float = 0.5):
        self.p_mean, self.p_std, self.sigma_data = p_mean, p_std, sigma_data
        self.scheduler = EDMEulerScheduler(sigma_data=sigma_data, prediction_type="epsilon")  # EDM's F-prediction

    def training_losses(self, model, x_start: torch.Tensor, class_labels: torch.Tensor | None
                        ) -> dict[str, torch.Tensor]:
        """`{"loss", "mse", "vb"}` for one batch `x_start` `(N, C, H, W)`; randomness from the global RNG."""
        noise = torch.randn_like(x_start)
        sigma = torch.exp(self.p_mean + self.p_std * torch.randn(x_start.shape[0], device=x_start.device))  # (N,)
        s = sigma.view(-1, *([1] * (x_start.ndim - 1)))
        sd2 = self.sigma_data**2
        c_skip, c_out, c_in = sd2 / (s**2 + sd2), s * self.sigma_data / (s**2 + sd2).sqrt(), 1 / (s**2 + sd2).sqrt()
        x = x_start + s * noise
        out = model(c_in * x, EDM_TIMESTEP_SCALE * sigma.log() / 4, class_labels).sample  # F, (N, C, H, W)
        if out.shape[1] != x_start.shape[1]:
            raise ValueError(f"The model outputs {out.shape[1]} channels for {x_start.shape[1]}-channel inputs; the "
                             "edm objective needs learn_sigma=False.")
        denoised = c_skip * x + c_out * out.float()
        weight = (sigma**2 + sd2) / (sigma * self.sigma_data) ** 2  # (N,)
        mse = per_sample_mse(denoised, x_start)
        return {"loss": (weight * mse).mean(), "mse": mse.mean(), "vb": mse.new_zeros(())}

    def pipeline_scheduler(self) -> EDMEulerScheduler:
        return self.scheduler


OBJECTIVES = ("epsilon", "v_prediction", "flow", "edm")
Objective = DDPMObjective | FlowObjective | EDMObjective  # the same interface: training_losses, pipeline_scheduler


def make_objective(name: str, learn_sigma: bool = False, snr_gamma: float | None = None,
                   timestep_sampling: str = "uniform", logit_mean: float = 0.0, logit_std: float = 1.0,
                   sigma_data: float | None = None) -> Objective:
    """The objective called `name` (one of `OBJECTIVES`), with its options; `ValueError` for options it lacks.
    `sigma_data` (edm only): the data's standard deviation, saved in the pipeline's scheduler (0.5 if `None`, EDM's
    value for pixels in [-1, 1]; unit-variance latents need 1.0, Karras et al. 2022, App. B.6)."""
    if name not in OBJECTIVES:
        raise ValueError(f"Unknown objective {name!r}; valid choices are {', '.join(OBJECTIVES)}.")
    if (logit_mean, logit_std) != (0.0, 1.0) and (name, timestep_sampling) != ("flow", "logit_normal"):
        raise ValueError(f"logit_mean / logit_std (--logit-mean / --logit-std) set the logit-normal timestep "
                         f"sampling; they apply only with objective 'flow' and timestep_sampling 'logit_normal', "
                         f"not {name!r} with {timestep_sampling!r}.")
    if name in ("flow", "edm"):
        if snr_gamma is not None:
            raise ValueError(f"snr_gamma (min-SNR weighting) applies to the DDPM objectives, not to {name!r}.")
        if learn_sigma:
            raise ValueError(f"The {name} objective has no learned variance; build the model with learn_sigma=False.")
    if sigma_data is not None and name != "edm":
        raise ValueError(f"sigma_data (--edm-sigma-data) applies to the edm objective, not to {name!r}.")
    if sigma_data is not None and not 0 < sigma_data < math.inf:
        raise ValueError(f"sigma_data must be a positive finite number, got {sigma_data!r}.")
    if name == "edm":
        if timestep_sampling != "uniform":
            raise ValueError("timestep_sampling applies to the flow objective; edm draws log-normal sigmas.")
        return EDMObjective(sigma_data=0.5 if sigma_data is None else sigma_data)
    if name == "flow":
        return FlowObjective(timestep_sampling, logit_mean, logit_std)
    if timestep_sampling != "uniform":
        raise ValueError(f"timestep_sampling={timestep_sampling!r} applies to the flow objective; the DDPM "
                         "objectives draw integer timesteps uniformly.")
    return DDPMObjective(name, learn_sigma, snr_gamma)


def model_overrides_for(name: str) -> dict:
    """Model config the objective needs: only epsilon learns sigma."""
    return {} if name == "epsilon" else {"learn_sigma": False}
