"""Training objectives: what a training step draws (timesteps, noise), what the model is asked to predict, and the
scheduler that samples the trained model. The loop calls `objective.training_losses(model, x_start, labels)`, as
DiT's `train.py` calls `diffusion.training_losses`.
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler

from .losses import diffusion_loss

LOSS_KEYS = ("loss", "mse", "vb")  # every objective returns these (vb is 0 where there is no learned variance)


def dit_noise_scheduler(learn_sigma: bool) -> DDPMScheduler:
    """DiT's diffusion: 1000 steps, linear betas 1e-4..0.02; learned-range variance when the model learns sigma."""
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                         variance_type="learned_range" if learn_sigma else "fixed_small", clip_sample=False)


class EpsilonObjective:
    """DiT's recipe: DDPM noising at uniform timesteps, epsilon MSE, plus improved DDPM's variational-bound term
    when the model learns sigma (`diffusion_loss`).

    Args:
        learn_sigma (`bool`): whether the model outputs `2 * C` channels (epsilon and variance values).
    """

    name = "epsilon"

    def __init__(self, learn_sigma: bool):
        self.learn_sigma = learn_sigma
        self.scheduler = dit_noise_scheduler(learn_sigma)

    def training_losses(self, model, x_start: torch.Tensor, class_labels: torch.Tensor | None
                        ) -> dict[str, torch.Tensor]:
        """`{"loss", "mse", "vb"}` for one batch `x_start` `(N, C, H, W)`; randomness from the global RNG."""
        noise = torch.randn_like(x_start)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (x_start.shape[0],), device=x_start.device)
        x_t = self.scheduler.add_noise(x_start, noise, t)
        out = model(x_t, t, class_labels).sample  # (N, C or 2C, H, W)
        return diffusion_loss(out.float(), noise, x_start, x_t, t, self.scheduler)

    def pipeline_scheduler(self) -> DDPMScheduler:
        """The scheduler saved with the trained pipeline (any other can be swapped in for sampling)."""
        return self.scheduler


def make_objective(name: str, learn_sigma: bool) -> EpsilonObjective:
    """The objective called `name` (see `OBJECTIVES`)."""
    if name not in OBJECTIVES:
        raise ValueError(f"Unknown objective {name!r}; valid choices are {', '.join(OBJECTIVES)}.")
    return OBJECTIVES[name](learn_sigma)


OBJECTIVES = {"epsilon": EpsilonObjective}
