"""Noise and guidance schedules of `DiffiTPipeline`: the diffusers schedulers each prediction type samples with
(by short name), DiT's diffusion as a scheduler, the papers' sampling presets, the guidance schedules on DiT's noise
clock, the flow schedulers' time shift, and EDM's Heun sampler (`EDMHeunScheduler`), which diffusers lacks.

Shipped as remote code inside the pushed `pipeline_diffit.py` (`diffit_hf.pipelines.remote_code`): it imports
torch, numpy and diffusers only.
"""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np
import torch
from diffusers.schedulers import DDPMScheduler, EDMEulerScheduler
from diffusers.schedulers.scheduling_edm_euler import EDMEulerSchedulerOutput

GUIDANCE_SCHEDULES = ("constant", "power_cosine")
SCHEDULERS = {"ddpm": "DDPMScheduler", "ddim": "DDIMScheduler", "dpm": "DPMSolverMultistepScheduler",
              "euler": "EulerDiscreteScheduler", "heun": "HeunDiscreteScheduler"}  # short names; dpm = DPM-Solver++ 2M
# flow models (velocity prediction): the flow-matching schedulers, and DPM-Solver++ on flow sigmas
FLOW_SCHEDULERS = {"euler": "FlowMatchEulerDiscreteScheduler", "heun": "FlowMatchHeunDiscreteScheduler",
                   "dpm": "DPMSolverMultistepScheduler"}
# options of FlowMatchEulerDiscreteScheduler that the flow Heun and DPM-Solver schedulers lack, with their defaults
FLOW_EULER_ONLY = {"shift_terminal": None, "invert_sigmas": False, "use_karras_sigmas": False,
                   "use_exponential_sigmas": False, "use_beta_sigmas": False, "stochastic_sampling": False}
# EDM-preconditioned models; heun: EDM's own deterministic sampler (Karras et al. 2022, Alg. 1), EDMHeunScheduler
EDM_SCHEDULERS = {"euler": "EDMEulerScheduler", "dpm": "EDMDPMSolverMultistepScheduler", "heun": "EDMHeunScheduler"}
PREDICTION_TYPES = ("epsilon", "v_prediction", "flow", "edm")
# EDM's c_noise = ln(sigma) / 4 lies in about [-1.6, 1.1]; the timestep embedding was designed for 0..1000, so the
# model sees 1000 * c_noise, in training (diffit_hf.training.objectives) and here
EDM_TIMESTEP_SCALE = 1000.0
LEARNED_VARIANCE = ("learned", "learned_range")

# How the papers sample their headline ImageNet results: DDPM with the learned variance, 250 steps, classifier-free
# guidance on the first 3 of the 4 latent channels (a leftover of DiT's code that DiffiT kept). DiffiT's settings
# depend on the resolution (latent side 32 = 256 px, 64 = 512 px); `None` = any size.
SAMPLING_PRESETS: dict[str, dict[int | None, dict]] = {
    # DiT-XL/2, FID-50K 2.27 (Peebles & Xie 2023, Table 4; facebookresearch/DiT sample_ddp.py)
    "dit-paper": {None: dict(scheduler="ddpm", num_inference_steps=250, guidance_scale=1.5,
                             guidance_schedule="constant", guidance_channels=3)},
    # latent DiffiT (Hatamizadeh et al. 2024; NVlabs/DiffiT sample.py): FID 1.73 at 256 px, 2.67 at 512 px
    "diffit-paper": {
        32: dict(scheduler="ddpm", num_inference_steps=250, guidance_scale=4.4, guidance_schedule="power_cosine",
                 guidance_scale_pow=4.0, guidance_channels=3),
        64: dict(scheduler="ddpm", num_inference_steps=250, guidance_scale=1.49, guidance_schedule="constant",
                 guidance_channels=3),
    },
}


def schedulers_for(prediction_type: str) -> dict[str, str]:
    """`DiffiTPipeline.use_scheduler` short names -> diffusers classes that sample a `prediction_type` model."""
    return {"flow": FLOW_SCHEDULERS, "edm": EDM_SCHEDULERS}.get(prediction_type, SCHEDULERS)


def sampling_preset(name: str, latent_size: int | tuple[int, int]) -> dict:
    """The settings of a paper's sampler for a model with `latent_size` latents: `scheduler` (a `SCHEDULERS` short
    name for `DiffiTPipeline.use_scheduler`) and `__call__` arguments (`num_inference_steps`, `guidance_scale`,
    `guidance_schedule`, `guidance_channels`, and `guidance_scale_pow` with the power-cosine schedule)."""
    if name not in SAMPLING_PRESETS:
        raise ValueError(f"Unknown sampling preset {name!r}; valid choices are {', '.join(SAMPLING_PRESETS)}.")
    by_size = SAMPLING_PRESETS[name]
    if None in by_size:
        return dict(by_size[None])
    height, width = (latent_size, latent_size) if isinstance(latent_size, int) else latent_size
    if height == width and height in by_size:
        return dict(by_size[height])
    sizes = " and ".join(f"{s}x{s} ({s * 8} px)" for s in by_size)
    raise ValueError(f"Sampling preset {name!r} is defined for {sizes} latents, not {latent_size}; pass the "
                     "sampling settings yourself.")


def scheduler_prediction_type(scheduler) -> str:
    """What a scheduler expects the model to predict: `"flow"` (the velocity `eps - x0` of flow matching) for the
    flow-matching schedulers and DPM-Solver's `"flow_prediction"`, `"edm"` (EDM's preconditioned F) for the EDM
    schedulers, else its `prediction_type` (`"epsilon"`, `"v_prediction"`, ...)."""
    if type(scheduler).__name__.startswith("FlowMatch"):
        return "flow"
    if type(scheduler).__name__.startswith("EDM"):
        return "edm"
    kind = scheduler.config.get("prediction_type", "epsilon")
    return "flow" if kind == "flow_prediction" else kind


def dit_scheduler(learn_sigma: bool = True, prediction_type: str = "epsilon") -> DDPMScheduler:
    """DiT's diffusion as a diffusers scheduler: 1000 steps, linear betas 1e-4..0.02, and DiT's sampling:
    - `variance_type`: `"learned_range"` when the model learns sigma, else DiT's default fixed-*large* variance;
    - `clip_sample=False` (DiT samples with `clip_denoised=False`; latents are not confined to [-1, 1]);
    - `timestep_spacing="linspace"`: `n` steps visit `round(i * 999 / (n - 1))`, DiT's respacing (t = 999 included),
      where diffusers' default `"leading"` visits {996, ..., 0} for 250 steps.
    Training uses the same object (`diffit_hf.training.objectives`), and trained pipelines are saved with it."""
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                         variance_type="learned_range" if learn_sigma else "fixed_large", clip_sample=False,
                         timestep_spacing="linspace", prediction_type=prediction_type)


def ddpm_log_sigmas(scheduler) -> np.ndarray:
    """`log sigma_t = 0.5 * log((1 - abar_t) / abar_t)` of a DDPM-family scheduler's training schedule, `(T,)`, in
    float64 (linear betas rebuilt in float64 as `diffit_hf.training.losses.posterior_tables` does); `sigma_t` is the
    noise level `x_t / sqrt(abar_t) = x0 + sigma_t * eps`, i.e. `1 / sqrt(SNR)`."""
    config = scheduler.config
    if config.get("beta_schedule") == "linear" and config.get("trained_betas") is None:
        betas = np.linspace(config.beta_start, config.beta_end, config.num_train_timesteps, dtype=np.float64)
    else:
        betas = scheduler.betas.double().numpy()
    abar = np.cumprod(1.0 - betas)
    return 0.5 * np.log((1.0 - abar) / abar)


@functools.lru_cache(maxsize=1)
def _dit_log_sigmas() -> np.ndarray:
    return ddpm_log_sigmas(dit_scheduler())


def step_log_sigma(prediction_type: str, model_timestep: float, num_train_timesteps: int = 1000,
                   log_sigmas: np.ndarray | None = None) -> float:
    """The noise level `log sigma` (`sigma = 1 / sqrt(SNR)`, `x = x0 + sigma * eps` up to a scale) of the step whose
    model input carries `model_timestep` (what the transformer receives):
    - `"flow"`: `t = model_timestep / T` and `x_t = (1 - t) x0 + t eps`, so `sigma = t / (1 - t)`;
    - `"edm"`: `model_timestep = EDM_TIMESTEP_SCALE * ln(sigma) / 4`;
    - DDPM (`"epsilon"`, `"v_prediction"`): `log_sigmas` (`ddpm_log_sigmas(scheduler)`) interpolated at the
      (possibly fractional) training timestep."""
    t = float(model_timestep)
    if prediction_type == "edm":
        return 4.0 * t / EDM_TIMESTEP_SCALE
    if prediction_type == "flow":
        t = min(max(t / num_train_timesteps, 0.0), 1.0)
        return math.inf if t == 1.0 else -math.inf if t == 0.0 else math.log(t) - math.log1p(-t)
    return float(np.interp(t, np.arange(len(log_sigmas)), log_sigmas))


def dit_timestep_fraction(prediction_type: str, model_timestep: float, num_train_timesteps: int = 1000,
                          log_sigmas: np.ndarray | None = None) -> float:
    """`t / T` of DiT's diffusion (1000 steps, linear betas 1e-4..0.02) at the noise level of a step
    (`step_log_sigma`, same arguments): the common clock of the guidance schedules, so that DDPM, flow and EDM models
    ramp at the same noise levels. A scheduler with DiT's own schedule reads `t / T` directly (NVIDIA's clock);
    others are interpolated in log sigma, clamped to DiT's t = 0 (sigma ~0.01) .. 999 (sigma ~157)."""
    dit = _dit_log_sigmas()
    if prediction_type not in ("flow", "edm") and np.array_equal(log_sigmas, dit):
        return float(model_timestep) / len(dit)
    log_sigma = step_log_sigma(prediction_type, model_timestep, num_train_timesteps, log_sigmas)
    return float(np.interp(log_sigma, dit, np.arange(len(dit)))) / len(dit)


def guidance_scale_at(scale: float, schedule: str, timestep_fraction: float, scale_pow: float = 4.0) -> float:
    """Guidance scale for one step: constant, or DiffiT's power-cosine ramp
    `1 + (scale - 1) * 0.5 * (1 - cos(pi * (1 - t / T) ** scale_pow))` (1 at high noise, `scale` at t = 0; `scale_pow`
    is the `--scale_pow` of NVIDIA's sampling script, 4 by default), with `t / T = timestep_fraction`, the step's noise
    level on DiT's clock (`dit_timestep_fraction`): for DiT's diffusion exactly NVIDIA's `forward_with_cfg`."""
    if schedule == "constant":
        return scale
    progress = (1.0 - timestep_fraction) ** scale_pow
    return 1.0 + (scale - 1.0) * 0.5 * (1.0 - math.cos(math.pi * progress))


def check_guidance_interval(interval) -> tuple[float, float] | None:
    """`interval` as `(sigma_low, sigma_high)` floats, or `None`; a `ValueError` naming the problem unless it is two
    numbers with `0 <= sigma_low < sigma_high` (`sigma_high` may be `inf`)."""
    if interval is None:
        return None
    numbers_ok = (not isinstance(interval, (str, bytes)) and len(interval) == 2
                  and all(isinstance(x, numbers.Real) and not isinstance(x, bool) for x in interval))
    if not numbers_ok or not 0 <= interval[0] < interval[1] or math.isnan(interval[1]):
        raise ValueError(f"guidance_interval must be (sigma_low, sigma_high) with 0 <= sigma_low < sigma_high "
                         f"(noise levels sigma = 1 / sqrt(SNR); sigma_high may be inf), got {interval!r}.")
    return float(interval[0]), float(interval[1])


def in_guidance_interval(log_sigma: float, interval: tuple[float, float]) -> bool:
    """Whether a step at noise level `log sigma` (`step_log_sigma`) is guided: `sigma_low < sigma <= sigma_high`, the
    limited interval of Kynkaanniemi et al. 2024 ("Applying guidance in a limited interval improves sample and
    distribution quality in diffusion models")."""
    sigma = math.exp(log_sigma) if log_sigma < 700 else math.inf
    return interval[0] < sigma <= interval[1]


def flow_dynamic_mu(config, image_seq_len: int) -> float:
    """The `mu` of a flow scheduler's dynamic shifting for images of `image_seq_len` tokens: linear in the token count
    from `base_shift` at `base_image_seq_len` to `max_shift` at `max_image_seq_len` (SD3 / Flux pipelines)."""
    slope = (config.max_shift - config.base_shift) / (config.max_image_seq_len - config.base_image_seq_len)
    return config.base_shift + slope * (image_seq_len - config.base_image_seq_len)


def flow_dynamic_shift(config, image_seq_len: int) -> float:
    """The fixed `shift` that samples the same sigmas as dynamic shifting at `image_seq_len` tokens: `exp(mu)`
    (`time_shift_type="exponential"`, `e^mu t / (e^mu t + 1 - t)`) or `mu` (`"linear"`)."""
    mu = flow_dynamic_mu(config, image_seq_len)
    return math.exp(mu) if config.get("time_shift_type", "exponential") == "exponential" else mu


def is_flow_dpm_solver(scheduler) -> bool:
    """Whether `scheduler` is DPM-Solver on flow sigmas (`DPMSolverMultistepScheduler(use_flow_sigmas=True)`)."""
    return type(scheduler).__name__ == "DPMSolverMultistepScheduler" and bool(scheduler.config.get("use_flow_sigmas"))


def set_timesteps(scheduler, num_inference_steps: int, device: torch.device | str | None = None,
                  image_seq_len: int | None = None) -> None:
    """`scheduler.set_timesteps` (with the `mu` of dynamic shifting for images of `image_seq_len` tokens), except
    for DPM-Solver on flow sigmas: diffusers starts those at `1 - 1/T` (and keeps `floor(1000 sigma)` as timesteps);
    here they start at pure noise, `sigma = shift(1)`, spaced as diffusers spaces them (`linspace(1, 0)`, shifted by
    `flow_shift`). At sigma 1 (alpha 0, lambda = -inf) DPM-Solver++'s first step is exactly DDIM's (`exp(-h) = 0`)
    and the next step's second-order term vanishes (`1 / r0 = 0`). The pipeline feeds the model
    `1000 * scheduler.sigmas[i]`, not the truncated `timesteps`."""
    config = scheduler.config
    if config.get("use_dynamic_shifting") and config.get("base_shift") is not None:  # flow Euler: needs mu
        if image_seq_len is None:
            raise ValueError(f"{type(scheduler).__name__} uses dynamic shifting: pass image_seq_len.")
        scheduler.set_timesteps(num_inference_steps, device=device, mu=flow_dynamic_mu(config, image_seq_len))
    else:
        scheduler.set_timesteps(num_inference_steps, device=device)
    if not is_flow_dpm_solver(scheduler):
        return
    shift = float(scheduler.config.flow_shift)  # (set_timesteps wrote exp(mu) here under dynamic shifting)
    sigmas = np.linspace(1.0, 0.0, num_inference_steps + 1)[:-1]
    sigmas = shift * sigmas / (1.0 + (shift - 1.0) * sigmas)
    last = scheduler.sigmas[-1:]  # (final_sigmas_type)
    scheduler.sigmas = torch.cat([torch.from_numpy(sigmas).float(), last])
    # the solver finds its step index by these (integer) timesteps
    scheduler.timesteps = torch.from_numpy(sigmas * scheduler.config.num_train_timesteps).to(device, torch.int64)



def flow_scheduler(scheduler, name: str, image_seq_len: int):
    """The `FLOW_SCHEDULERS[name]` scheduler with `scheduler`'s time shift: `shift` / `flow_shift`, and dynamic
    shifting resolved for images of `image_seq_len` tokens where the target has no such option (the shift is then
    fixed, so it samples the same noise levels). Options only the flow Euler scheduler has (`shift_terminal`,
    Karras/exponential/beta sigmas, ...) are refused for the others, never dropped."""
    import diffusers

    config = scheduler.config
    shift = config.get("shift", config.get("flow_shift", 1.0))
    num_train_timesteps = config.get("num_train_timesteps", 1000)
    if name == "euler":  # keeps every option of a flow Euler config
        euler = config if isinstance(scheduler, diffusers.FlowMatchEulerDiscreteScheduler) else {
            "num_train_timesteps": num_train_timesteps}
        return diffusers.FlowMatchEulerDiscreteScheduler.from_config(euler, shift=shift)
    kept = {key: config[key] for key, default in FLOW_EULER_ONLY.items() if config.get(key, default) != default}
    if kept:
        raise ValueError(f"The saved flow scheduler sets {kept}, which {FLOW_SCHEDULERS[name]} cannot apply; "
                         "sample with use_scheduler('euler'), or drop these options from the scheduler.")
    if config.get("use_dynamic_shifting") and config.get("base_shift") is not None:
        shift = flow_dynamic_shift(config, image_seq_len)
    if name == "heun":
        return diffusers.FlowMatchHeunDiscreteScheduler(num_train_timesteps=num_train_timesteps, shift=shift)
    solver = config if is_flow_dpm_solver(scheduler) else {"num_train_timesteps": num_train_timesteps}
    return diffusers.DPMSolverMultistepScheduler.from_config(
        solver, use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift,
        use_dynamic_shifting=False)


class EDMHeunScheduler(EDMEulerScheduler):
    """EDM's deterministic sampler (Karras et al. 2022, Algorithm 1): Heun's second-order steps between the Karras
    sigmas, and an Euler last step to sigma 0, so `N` steps cost `2N - 1` model evaluations (EDM's 18 steps: 35 NFE).
    diffusers has no EDM Heun; this is `EDMEulerScheduler` (same config, sigmas and preconditioning) stepped as
    diffusers' `HeunDiscreteScheduler` steps: each sigma but the first is visited twice in `timesteps`, first as the
    corrector of the step into it, then as the start of the next step."""

    order = 2

    def set_timesteps(self, num_inference_steps: int = None, device: str | torch.device = None,
                      sigmas: torch.Tensor | list[float] | None = None):
        super().set_timesteps(num_inference_steps, device, sigmas)
        self.step_sigmas = self.sigmas  # (N + 1,), the last one 0 (or sigma_min)
        visits = torch.cat([self.step_sigmas[:1], self.step_sigmas[1:-1].repeat_interleave(2)])  # (2N - 1,)
        self.sigmas = torch.cat([visits, self.step_sigmas[-1:]])  # scale_model_input reads sigmas[step_index]
        self.timesteps = self.precondition_noise(visits).to(device)
        self.derivative, self.dt, self.start = None, None, None  # the pending Heun step

    def step(self, model_output: torch.Tensor, timestep: float | torch.Tensor, sample: torch.Tensor,
             generator: torch.Generator | None = None, return_dict: bool = True) -> EDMEulerSchedulerOutput | tuple:
        """One model evaluation: an Euler predictor (the whole step when the next sigma is the last), or the
        corrector that averages the two slopes (Alg. 1, lines 4-8)."""
        if self.step_index is None:
            self._init_step_index(timestep)
        sigma = self.sigmas[self.step_index]
        denoised = self.precondition_outputs(sample, model_output.float(), sigma)
        slope = (sample.float() - denoised) / sigma  # d = (x - D(x; sigma)) / sigma
        if self.dt is None:  # predictor from step_sigmas[i]
            sigma_next = self.step_sigmas[self.step_index // 2 + 1]
            prev_sample = sample.float() + (sigma_next - sigma) * slope
            if self.step_index < len(self.timesteps) - 1:  # not the last step: a corrector follows
                self.derivative, self.dt, self.start = slope, sigma_next - sigma, sample.float()
        else:  # corrector at step_sigmas[i + 1]
            prev_sample = self.start + self.dt * 0.5 * (self.derivative + slope)
            self.derivative, self.dt, self.start = None, None, None
        self._step_index += 1
        prev_sample = prev_sample.to(model_output.dtype)
        if not return_dict:
            return prev_sample, denoised
        return EDMEulerSchedulerOutput(prev_sample=prev_sample, pred_original_sample=denoised)
