"""DiffiTPipeline: class-conditional (or unconditional) sampling with DiT / DiffiT models and any diffusers scheduler.

Differences from diffusers' `DiTPipeline` (each one a bug users hit there): the null class is read from the model
config (not hard-coded to 1000), learned variance is passed to schedulers that use it, `get_label_ids("Bag")` does
not split a string into characters, `id2label` is saved with the pipeline, and the VAE is optional (pixel-space
models).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import numbers
import os
import tempfile

import numpy as np
import torch
from diffusers.models import AutoencoderKL
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.schedulers import DDPMParallelScheduler, DDPMScheduler, EDMEulerScheduler
from diffusers.schedulers.scheduling_edm_euler import EDMEulerSchedulerOutput
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

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
OUTPUT_TYPES = ("pil", "np", "pt", "latent")
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


class DiffiTPipeline(DiffusionPipeline):
    r"""
    Image generation with a DiT or DiffiT denoiser (latent with an `AutoencoderKL`, or pixel space without one).

    Args:
        transformer ([`DiTModel`], [`DiffiTModel`] or [`DiffiTUNetModel`]):
            Denoiser with the shared forward contract `transformer(hidden_states, timestep, class_labels).sample`.
        scheduler ([`SchedulerMixin`]):
            Any diffusers scheduler (DDPM, DDIM, DPM-Solver++, Euler, ...). DDPM with
            `variance_type="learned_range"` samples with the model's learned variance; every other scheduler gets
            the prediction alone, whatever `variance_type` its config inherited (so
            `DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)` works as in diffusers' docs).
            `dit_scheduler()` is DiT's own sampling (timesteps, no clipping, variance).
        vae ([`AutoencoderKL`], *optional*):
            Decodes latents to images; `None` for pixel-space models.
        id2label (`dict[int, str]`, *optional*):
            Class names, saved with the pipeline; a name may list comma-separated synonyms.
        prediction_type (`str`, *optional*):
            What the transformer was trained to predict: `"epsilon"`, `"v_prediction"`, `"flow"` or `"edm"` (see
            `diffit_hf.training.objectives`); saved with the pipeline, so that a scheduler expecting something else
            is refused. Defaults to what `scheduler` expects.
        latent (`bool`, *optional*):
            Whether the transformer works on VAE latents; saved with the pipeline, so that a latent pipeline whose
            VAE went missing is refused instead of writing raw latents as images. Defaults to `vae is not None`.
    """

    model_cpu_offload_seq = "transformer->vae"
    _optional_components = ["vae"]

    def __init__(
        self,
        transformer: nn.Module,
        scheduler,
        vae: AutoencoderKL | None = None,
        id2label: dict | None = None,
        prediction_type: str | None = None,
        latent: bool | None = None,
    ):
        super().__init__()
        self.register_modules(transformer=transformer, vae=vae, scheduler=scheduler)
        latent = vae is not None if latent is None else latent
        if latent and vae is None:
            raise ValueError("This pipeline works on VAE latents but has no VAE (is the 'vae' entry missing from its "
                             "model_index.json, or its vae/ folder?): restore it, or pass vae=... when loading.")
        self.register_to_config(latent=latent)
        prediction_type = prediction_type or scheduler_prediction_type(scheduler)
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"Unknown prediction_type {prediction_type!r}; valid choices are "
                             f"{', '.join(PREDICTION_TYPES)}.")
        self.register_to_config(prediction_type=prediction_type)
        id2label = {int(k): v for k, v in (id2label or {}).items()}  # JSON keys come back as strings
        num_classes = transformer.config.get("num_classes", 0)
        for key in id2label:
            if not 0 <= key < max(num_classes, 1):
                raise ValueError(f"id2label has id {key}, outside the model's classes [0, {num_classes - 1}].")
        self.register_to_config(id2label=id2label)
        self.labels = {}  # lower-cased name or synonym -> id
        for key, value in id2label.items():
            for name in value.split(","):
                name = name.strip().lower()
                if self.labels.get(name, key) != key:
                    raise ValueError(
                        f"id2label gives the name {name!r} to ids {self.labels[name]} and {key}; class names and "
                        "their comma-separated synonyms must be unique (case-insensitive)."
                    )
                self.labels[name] = key

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        r"""
        Loads a saved pipeline folder or Hub repo id (all of diffusers' `from_pretrained` arguments apply).

        Repos pushed with `diffit_hf.pipelines.hub.push_to_hub` also ship remote code for plain diffusers
        (`DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True)`); called on this class, that code is
        ignored and the installed diffit_hf classes are used, without `trust_remote_code`.
        """
        if cls.__module__.split(".")[0] != "diffit_hf" or kwargs.get("trust_remote_code"):
            # running as remote code (this file, copied into a pushed repo), or asked to
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        # Imported here, and not with an import statement: as remote code this file runs without diffit_hf, and
        # diffusers' remote-code loader would fetch any `from .module import` it finds as a file of the repo.
        hub = importlib.import_module(".hub", __package__)
        download = {key: kwargs.pop(key) for key in hub.DOWNLOAD_KWARGS if key in kwargs}
        with hub.local_view(pretrained_model_name_or_path, cls.__name__, **download) as folder:
            return super().from_pretrained(folder, **kwargs)

    def _is_remote_code(self) -> bool:
        """Whether this class runs as a pushed repo's code (plain diffusers, no diffit_hf installed)."""
        return type(self).__module__.split(".")[0] != "diffit_hf"

    def save_pretrained(self, save_directory: str | os.PathLike, safe_serialization: bool = True,
                        variant: str | None = None, max_shard_size: int | str | None = None, push_to_hub: bool = False,
                        **kwargs):
        r"""
        Saves the pipeline as diffusers does, plus the remote code that lets plain diffusers load the folder
        (`DiffusionPipeline.from_pretrained(save_directory, trust_remote_code=True)`), generated from this package
        (see `diffit_hf.pipelines.hub.add_remote_code`). `push_to_hub=True` then pushes the folder with
        `diffit_hf.pipelines.hub.push_to_hub` (model card, verification; `repo_id`, `token`, `private`,
        `commit_message`, `license` and `exist_ok` are taken from `kwargs`), as `DiffiTPipeline.push_to_hub` does.
        """
        if self._is_remote_code():
            return super().save_pretrained(save_directory, safe_serialization=safe_serialization, variant=variant,
                                           max_shard_size=max_shard_size, push_to_hub=push_to_hub, **kwargs)
        hub = importlib.import_module(".hub", __package__)
        scheduler = self.scheduler
        if isinstance(scheduler, EDMHeunScheduler):  # saved as the EDM Euler config it extends, for plain diffusers
            self.scheduler = EDMEulerScheduler.from_config(scheduler.config)
        try:
            super().save_pretrained(save_directory, safe_serialization=safe_serialization, variant=variant,
                                    max_shard_size=max_shard_size)
        finally:
            self.scheduler = scheduler
        hub.add_remote_code(save_directory)
        hub.carry_provenance(self.transformer, save_directory)
        if push_to_hub:
            repo_id = kwargs.pop("repo_id", None) or os.path.basename(os.path.normpath(save_directory))
            options = {key: kwargs.pop(key) for key in ("token", "exist_ok", "commit_message", "license")
                       if key in kwargs}
            return hub.push_to_hub(save_directory, repo_id, private=bool(kwargs.pop("private", False)), **options)

    def push_to_hub(self, repo_id: str, commit_message: str | None = None, private: bool | None = None,
                    token: str | None = None, create_pr: bool = False, safe_serialization: bool = True,
                    variant: str | None = None, **kwargs) -> str:
        r"""
        Uploads the pipeline with its remote code and a generated model card, after checking that it loads and
        samples (see `diffit_hf.pipelines.hub.push_to_hub`: the same staging and errors as
        `pipelines/push_to_hub.py`). Returns the repo URL.

        Examples:

        ```py
        >>> pipe.push_to_hub("you/dit-fashion-mnist", license="apache-2.0")  # doctest: +SKIP
        >>> # then, anywhere with plain diffusers:
        >>> from diffusers import DiffusionPipeline
        >>> pipe = DiffusionPipeline.from_pretrained("you/dit-fashion-mnist", trust_remote_code=True)  # doctest: +SKIP
        ```
        """
        if self._is_remote_code():
            return super().push_to_hub(repo_id, commit_message=commit_message, private=private, token=token,
                                       create_pr=create_pr, safe_serialization=safe_serialization, variant=variant)
        if create_pr:
            raise ValueError("create_pr=True is not supported by DiffiTPipeline.push_to_hub; push to a branch-free "
                             "repo or open the pull request on the Hub.")
        hub = importlib.import_module(".hub", __package__)
        with tempfile.TemporaryDirectory(prefix="diffit-save-") as folder:
            self.save_pretrained(folder, safe_serialization=safe_serialization, variant=variant)
            return hub.push_to_hub(folder, repo_id, token=token, private=bool(private), commit_message=commit_message,
                                   **kwargs)

    def use_scheduler(self, name: str) -> None:
        """Swaps in another diffusers scheduler by short name, for what the model predicts: `SCHEDULERS` for
        epsilon / v models (from the current config; DDPM uses the learned variance when the model has one, the
        others sample with the prediction alone), `FLOW_SCHEDULERS` for flow models (keeping the time shift, see
        `_flow_scheduler`), `EDM_SCHEDULERS` for EDM models (from the current config: `sigma_data`, sigma range;
        `"heun"` is EDM's Alg. 1, `EDMHeunScheduler`)."""
        import diffusers

        if self.config.prediction_type == "edm":
            if name not in EDM_SCHEDULERS:
                raise ValueError(f"Scheduler {name!r} does not sample an EDM model; valid choices are "
                                 f"{', '.join(EDM_SCHEDULERS)}.")
            target = EDMHeunScheduler if name == "heun" else getattr(diffusers, EDM_SCHEDULERS[name])
            self.scheduler = target.from_config(self.scheduler.config)
            return
        if self.config.prediction_type == "flow":
            if name not in FLOW_SCHEDULERS:
                raise ValueError(f"Scheduler {name!r} does not sample a flow model; valid choices are "
                                 f"{', '.join(FLOW_SCHEDULERS)}.")
            self.scheduler = self._flow_scheduler(name)
            return
        if name not in SCHEDULERS:
            raise ValueError(f"Unknown scheduler {name!r}; valid choices are {', '.join(SCHEDULERS)}.")
        learned = self.transformer.config.learn_sigma
        variance = ("learned_range" if learned else "fixed_large") if name == "ddpm" else None
        overrides = {"variance_type": variance, "prediction_type": self.config.prediction_type}
        self.scheduler = getattr(diffusers, SCHEDULERS[name]).from_config(self.scheduler.config, **overrides)

    def _image_seq_len(self) -> int:
        """Tokens per image (latent pixels / patch^2): what the flow schedulers' dynamic shifting depends on."""
        _, _, height, width = self._latents_shape(None, 1)
        patch = self.transformer.config.get("patch_size") or 1
        return (height // patch) * (width // patch)

    def _flow_scheduler(self, name: str):
        """The `FLOW_SCHEDULERS[name]` scheduler with the current one's time shift: `shift` / `flow_shift`, and
        dynamic shifting resolved for this model's token count where the target has no such option (the shift is
        then fixed, so it samples the same noise levels). Options only the flow Euler scheduler has
        (`shift_terminal`, Karras/exponential/beta sigmas, ...) are refused for the others, never dropped."""
        import diffusers

        config = self.scheduler.config
        shift = config.get("shift", config.get("flow_shift", 1.0))
        num_train_timesteps = config.get("num_train_timesteps", 1000)
        if name == "euler":  # keeps every option of a flow Euler config
            euler = config if isinstance(self.scheduler, diffusers.FlowMatchEulerDiscreteScheduler) else {
                "num_train_timesteps": num_train_timesteps}
            return diffusers.FlowMatchEulerDiscreteScheduler.from_config(euler, shift=shift)
        kept = {key: config[key] for key, default in FLOW_EULER_ONLY.items() if config.get(key, default) != default}
        if kept:
            raise ValueError(f"The saved flow scheduler sets {kept}, which {FLOW_SCHEDULERS[name]} cannot apply; "
                             "sample with use_scheduler('euler'), or drop these options from the scheduler.")
        if config.get("use_dynamic_shifting") and config.get("base_shift") is not None:
            shift = flow_dynamic_shift(config, self._image_seq_len())
        if name == "heun":
            return diffusers.FlowMatchHeunDiscreteScheduler(num_train_timesteps=num_train_timesteps, shift=shift)
        solver = config if is_flow_dpm_solver(self.scheduler) else {"num_train_timesteps": num_train_timesteps}
        return diffusers.DPMSolverMultistepScheduler.from_config(
            solver, use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=shift,
            use_dynamic_shifting=False)

    @property
    def num_classes(self) -> int:
        return self.transformer.config.get("num_classes", 0)

    def get_label_ids(self, names: str | list[str]) -> list[int]:
        """Class ids for class names (case-insensitive); a single string is one name."""
        if isinstance(names, str):
            names = [names]
        if not self.labels:
            raise ValueError("This pipeline has no id2label mapping; pass integer class ids instead of names.")
        ids = []
        for name in names:
            key = name.strip().lower()
            if key not in self.labels:
                valid = ", ".join(sorted(self.config.id2label[i] for i in sorted(self.config.id2label)))
                raise ValueError(f"Unknown class name {name!r}; valid names are: {valid}.")
            ids.append(self.labels[key])
        return ids

    def _resolve_labels(self, class_labels) -> list[int] | None:
        """Class ids in `[0, num_classes)` from ids and names, or `None` for an unconditional model."""
        if self.num_classes == 0:
            if class_labels is not None:
                raise ValueError("This model is unconditional (num_classes=0); pass class_labels=None.")
            return None
        if class_labels is None:
            raise ValueError(f"Pass class_labels (ids in [0, {self.num_classes - 1}] or names) for this model.")
        if isinstance(class_labels, (numbers.Number, str)) or torch.is_tensor(class_labels) and class_labels.ndim == 0:
            class_labels = [class_labels]
        class_labels = list(class_labels.tolist() if torch.is_tensor(class_labels) else class_labels)
        if not class_labels:
            raise ValueError("class_labels is empty.")
        ids = []
        for label in class_labels:
            label = label.item() if torch.is_tensor(label) else label
            if isinstance(label, str):
                ids += self.get_label_ids(label)
            elif isinstance(label, numbers.Integral) and not isinstance(label, bool):
                ids.append(int(label))
            else:  # int() would truncate 2.7 to 2 and read True as 1
                raise ValueError(
                    f"class_labels must hold integer class ids or class names, got {label!r} ({type(label).__name__})."
                )
        bad = [i for i in ids if not 0 <= i < self.num_classes]
        if bad:
            raise ValueError(f"Label ids {bad} are outside [0, {self.num_classes - 1}].")
        return ids

    def _latents_shape(self, labels: list[int] | None, num_images_per_label: int) -> tuple[int, int, int, int]:
        """`(batch, in_channels, height, width)` of the initial noise for these labels."""
        batch = num_images_per_label * (len(labels) if labels is not None else 1)
        size = self.transformer.config.sample_size
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        return (batch, self.transformer.config.in_channels, height, width)

    def _scheduler_uses_learned_variance(self) -> bool:
        """Only ancestral DDPM sampling uses the model's learned variance; other schedulers get epsilon alone."""
        learned_config = self.scheduler.config.get("variance_type") == "learned_range"
        return learned_config and isinstance(self.scheduler, (DDPMScheduler, DDPMParallelScheduler))

    def _sampling_scheduler(self):
        """The scheduler that steps this call: `self.scheduler`, or, for a non-DDPM scheduler whose config inherited
        a learned `variance_type` (`X.from_config(pipe.scheduler.config)`), a copy with `variance_type=None`. Such
        schedulers use no variance; with a learned type they would only slice the model output to its first 3
        channels, which is wrong for 4-channel latents. The pipeline hands them the prediction alone instead."""
        scheduler = self.scheduler
        if self._scheduler_uses_learned_variance() or scheduler.config.get("variance_type") not in LEARNED_VARIANCE:
            return scheduler
        return type(scheduler).from_config(scheduler.config, variance_type=None)

    def check_inputs(
        self,
        class_labels: int | str | list[int | str] | torch.Tensor | None,
        num_images_per_label: int,
        guidance_scale: float,
        guidance_schedule: str,
        guidance_channels: int | None,
        num_inference_steps: int,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None,
        output_type: str,
        guidance_scale_pow: float = 4.0,
    ) -> None:
        """Raises a `ValueError` for the first invalid `__call__` argument (or scheduler/model mismatch), before any
        sampling work is done."""
        if not isinstance(num_inference_steps, numbers.Integral) or isinstance(num_inference_steps, bool):
            raise ValueError(f"num_inference_steps must be an int, got {num_inference_steps!r}.")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}.")
        if not isinstance(num_images_per_label, numbers.Integral) or isinstance(num_images_per_label, bool):
            raise ValueError(f"num_images_per_label must be an int, got {num_images_per_label!r}.")
        if num_images_per_label < 1:
            raise ValueError(f"num_images_per_label must be >= 1, got {num_images_per_label}.")
        # inf turns the guided epsilon into NaN images; nan compares False with 1.0 and silently disables guidance
        finite = isinstance(guidance_scale, numbers.Real) and not isinstance(guidance_scale, bool)
        if not finite or not math.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}.")
        if guidance_schedule not in GUIDANCE_SCHEDULES:
            raise ValueError(
                f"Unknown guidance_schedule {guidance_schedule!r}; valid choices are {', '.join(GUIDANCE_SCHEDULES)}."
            )
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"Unknown output_type {output_type!r}; valid choices are {', '.join(OUTPUT_TYPES)}.")

        shape = self._latents_shape(self._resolve_labels(class_labels), num_images_per_label)
        batch, channels = shape[:2]
        if isinstance(generator, list) and len(generator) != batch:
            raise ValueError(f"Got {len(generator)} generators for a batch of {batch} images.")
        if latents is not None and tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}.")
        if guidance_channels is not None and not 1 <= guidance_channels <= channels:
            raise ValueError(f"guidance_channels must lie in [1, {channels}], got {guidance_channels}.")

        expected = scheduler_prediction_type(self.scheduler)
        if expected != self.config.prediction_type:
            raise ValueError(
                f"{type(self.scheduler).__name__} expects a {expected!r} model, but this transformer predicts "
                f"{self.config.prediction_type!r}; pick a matching scheduler with pipe.use_scheduler(name)."
            )
        # diffusers' DDPM "learned" takes the model's variance output as the variance itself (NaN images for our
        # models); "learned_range" interpolates log beta_t and log beta_tilde_t as improved DDPM / DiT train it
        ddpm = isinstance(self.scheduler, (DDPMScheduler, DDPMParallelScheduler))
        if ddpm and self.scheduler.config.get("variance_type") == "learned":
            raise ValueError(
                "variance_type='learned' reads the model's variance output as the variance itself, but DiT/DiffiT "
                "models learn an interpolation (improved DDPM); use variance_type='learned_range' (learn_sigma=True) "
                "or a fixed one ('fixed_large', 'fixed_small'); diffit_hf.dit_scheduler() is DiT's choice."
            )
        if self._scheduler_uses_learned_variance() and not self.transformer.config.learn_sigma:
            raise ValueError(
                "The scheduler uses a learned variance but the model has learn_sigma=False; use a scheduler with "
                "a fixed variance_type ('fixed_large', DiT's choice, or 'fixed_small')."
            )
        if not isinstance(guidance_scale_pow, numbers.Real) or not 0 < guidance_scale_pow < math.inf:
            raise ValueError(f"guidance_scale_pow must be a positive finite number, got {guidance_scale_pow!r}.")

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | list[int | str] | torch.Tensor | None = None,
        num_images_per_label: int = 1,
        guidance_scale: float = 4.0,
        guidance_schedule: str = "constant",
        guidance_channels: int | None = None,
        guidance_scale_pow: float = 4.0,
        num_inference_steps: int = 50,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        r"""
        Generate images.

        Args:
            class_labels (`int`, `str`, `list` or `torch.Tensor`, *optional*):
                Class ids (integers) or names to generate; `None` for unconditional models.
            num_images_per_label (`int`, defaults to 1):
                Images per label (the batch size of an unconditional model).
            guidance_scale (`float`, defaults to 4.0):
                Classifier-free guidance scale, a finite number; `<= 1` disables guidance (no unconditional pass).
            guidance_schedule (`str`, defaults to `"constant"`):
                One of `GUIDANCE_SCHEDULES`: `"constant"`, or `"power_cosine"` (DiffiT's schedule, ramping the scale
                up as noise decreases; defined on the noise level, as DiT's diffusion reaches it, so that flow and
                EDM models ramp at the same SNRs as DDPM ones, see `guidance_scale_at`).
            guidance_channels (`int`, *optional*):
                Guide only the first `guidance_channels` channels; `None` guides all (3 reproduces the DiT/DiffiT
                papers' sampling code on 4-channel latents).
            guidance_scale_pow (`float`, defaults to 4.0):
                The exponent of the power-cosine schedule (`--scale_pow` of NVIDIA's DiffiT sampling script).
            num_inference_steps (`int`, defaults to 50):
                Denoising steps.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                For reproducible sampling; a list needs one generator per image.
            latents (`torch.Tensor`, *optional*):
                Initial noise of shape `(batch, in_channels, height, width)`.
            output_type (`str`, defaults to `"pil"`):
                `"pil"`, `"np"` (NHWC in [0, 1]), `"pt"` (NCHW in [0, 1]) or `"latent"` (the final latents).
            return_dict (`bool`, defaults to `True`):
                Return an [`ImagePipelineOutput`] instead of a tuple.

        Returns:
            [`ImagePipelineOutput`] or `tuple`: the generated images.

        Examples:

        ```py
        >>> import torch
        >>> from diffusers import DDPMScheduler
        >>> from diffit_hf import DiffiTPipeline, create_model

        >>> # a trained pipeline: DiffiTPipeline.from_pretrained("you/dit-fashion-mnist"); here an untrained tiny one
        >>> transformer = create_model("DiT-S/4", sample_size=8, in_channels=1, num_classes=10, num_layers=1)
        >>> pipe = DiffiTPipeline(transformer, DDPMScheduler(variance_type="learned_range"),
        ...                       id2label={0: "T-shirt/top", 8: "Bag"})
        >>> pipe.set_progress_bar_config(disable=True)
        >>> images = pipe(["Bag", 0], num_images_per_label=2, guidance_scale=4.0, num_inference_steps=10,
        ...               generator=torch.Generator().manual_seed(0)).images
        >>> len(images), images[0].size  # 2 images of each label, as PIL images
        (4, (8, 8))
        >>> pipe.use_scheduler("dpm")  # DPM-Solver++ 2M: good images in ~25 steps
        >>> pipe(8, num_inference_steps=25, output_type="np").images.shape
        (1, 8, 8, 1)

        ```
        """
        # 1. Check inputs
        self.check_inputs(class_labels, num_images_per_label, guidance_scale, guidance_schedule, guidance_channels,
                          num_inference_steps, generator, latents, output_type, guidance_scale_pow)

        # 2. Labels: B class ids, then B null labels for the unconditional pass of classifier-free guidance
        labels = self._resolve_labels(class_labels)
        device, dtype = self._execution_device, self.transformer.dtype
        use_cfg = labels is not None and guidance_scale > 1.0
        if labels is not None:
            ids = torch.tensor(labels, device=device).repeat_interleave(num_images_per_label)  # (B,)
            null = torch.full_like(ids, self.num_classes)
            model_labels = torch.cat([ids, null]) if use_cfg else ids  # (2B,) or (B,)
        else:
            model_labels = None

        # 3. Initial noise
        shape = self._latents_shape(labels, num_images_per_label)
        channels = shape[1]
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        latents = latents.to(device=device, dtype=dtype)
        scheduler = self._sampling_scheduler()
        set_timesteps(scheduler, num_inference_steps, device, self._image_seq_len())
        latents = latents * getattr(scheduler, "init_noise_sigma", 1.0)  # flow-matching schedulers: 1

        # 4. Denoising loop
        learned_variance = self._scheduler_uses_learned_variance()
        # only stochastic schedulers take a generator (diffusers' pipelines check the signature the same way)
        takes_generator = "generator" in inspect.signature(scheduler.step).parameters
        step_kwargs = {"generator": generator} if takes_generator else {}
        guidance_channels = channels if guidance_channels is None else guidance_channels
        prediction_type = self.config.prediction_type
        num_train_timesteps = scheduler.config.get("num_train_timesteps", 1000)
        log_sigmas = ddpm_log_sigmas(scheduler) if prediction_type not in ("flow", "edm") else None
        flow_dpm = is_flow_dpm_solver(scheduler)
        for i, t in enumerate(self.progress_bar(scheduler.timesteps)):
            model_input = torch.cat([latents, latents]) if use_cfg else latents
            if hasattr(scheduler, "scale_model_input"):  # (the flow-matching schedulers have none)
                model_input = scheduler.scale_model_input(model_input, t)
            model_t = t
            if prediction_type == "edm":  # the EDM schedulers' timesteps are c_noise
                model_t = t * EDM_TIMESTEP_SCALE
            elif flow_dpm:  # its timesteps are int64 floor(1000 sigma); the model was trained on the continuous 1000 t
                model_t = (scheduler.sigmas[i] * num_train_timesteps).to(device)
            timesteps = model_t.expand(model_input.shape[0]) if torch.is_tensor(model_t) else model_t
            out = self.transformer(model_input, timesteps, model_labels).sample  # (B or 2B, C or 2C, H, W)
            pred, variance = out[:, :channels], out[:, channels:]  # epsilon, v or velocity; learned variance
            if use_cfg:  # guidance is linear in the prediction, so it is the same for every prediction type
                cond, uncond = pred.chunk(2)
                fraction = dit_timestep_fraction(prediction_type, model_t, num_train_timesteps, log_sigmas)
                scale = guidance_scale_at(guidance_scale, guidance_schedule, fraction, guidance_scale_pow)
                guided = uncond[:, :guidance_channels] + scale * (cond - uncond)[:, :guidance_channels]
                pred = torch.cat([guided, cond[:, guidance_channels:]], dim=1)
                variance = variance.chunk(2)[0]
            # schedulers with a fixed variance get the prediction alone (check_inputs made sure learn_sigma otherwise)
            model_output = torch.cat([pred, variance], dim=1) if learned_variance else pred
            latents = scheduler.step(model_output, t, latents, **step_kwargs).prev_sample

        # 5. Decode
        if output_type == "latent":
            images = latents
        else:
            if self.vae is not None:
                samples = self.vae.decode(latents / self.vae.config.scaling_factor).sample
            else:
                samples = latents
            images = (samples.float() / 2 + 0.5).clamp(0, 1)  # (B, C, H, W) in [0, 1]
            if output_type != "pt":
                images = images.permute(0, 2, 3, 1).cpu().numpy()
                if output_type == "pil":
                    images = self.numpy_to_pil(images)

        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
