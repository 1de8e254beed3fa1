"""DiffiTPipeline: class-conditional (or unconditional) sampling with DiT / DiffiT models and any diffusers scheduler.

Differences from diffusers' `DiTPipeline` (each one a bug users hit there): the null class is read from the model
config (not hard-coded to 1000), learned variance is passed to schedulers that use it, `get_label_ids("Bag")` does
not split a string into characters, `id2label` is saved with the pipeline, and the VAE is optional (pixel-space
models).

Pushed repos ship this module as remote code, bundled with `schedules.py` and `labels.py` into one
`pipeline_diffit.py`, without the installed class's Hub I/O (`DiffiTHubMixin`; see `diffit_hf.pipelines.remote_code`).
"""

from __future__ import annotations

import inspect
import math
import numbers

import torch
from diffusers.models import AutoencoderKL
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.schedulers import DDPMParallelScheduler, DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

from .hub_mixin import DiffiTHubMixin
from .labels import label_ids, label_table, resolve_labels
from .schedules import (
    EDM_SCHEDULERS,
    EDM_TIMESTEP_SCALE,
    FLOW_SCHEDULERS,
    GUIDANCE_SCHEDULES,
    LEARNED_VARIANCE,
    PREDICTION_TYPES,
    SCHEDULERS,
    EDMHeunScheduler,
    check_guidance_interval,
    ddpm_log_sigmas,
    dit_timestep_fraction,
    flow_scheduler,
    guidance_scale_at,
    in_guidance_interval,
    is_flow_dpm_solver,
    scheduler_prediction_type,
    set_timesteps,
    step_log_sigma,
)

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


class DiffiTPipeline(DiffiTHubMixin, DiffusionPipeline):
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
        self.labels = label_table(id2label, transformer.config.get("num_classes", 0))  # lower-cased name -> id
        self.register_to_config(id2label=id2label)

    def use_scheduler(self, name: str) -> None:
        """Swaps in another diffusers scheduler by short name, for what the model predicts: `SCHEDULERS` for
        epsilon / v models (from the current config; DDPM uses the learned variance when the model has one, the
        others sample with the prediction alone), `FLOW_SCHEDULERS` for flow models (keeping the time shift, see
        `schedules.flow_scheduler`), `EDM_SCHEDULERS` for EDM models (from the current config: `sigma_data`, sigma
        range; `"heun"` is EDM's Alg. 1, `EDMHeunScheduler`)."""
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
            self.scheduler = flow_scheduler(self.scheduler, name, self._image_seq_len(*self._sample_size()))
            return
        if name not in SCHEDULERS:
            raise ValueError(f"Unknown scheduler {name!r}; valid choices are {', '.join(SCHEDULERS)}.")
        learned = self.transformer.config.learn_sigma
        variance = ("learned_range" if learned else "fixed_large") if name == "ddpm" else None
        overrides = {"variance_type": variance, "prediction_type": self.config.prediction_type}
        self.scheduler = getattr(diffusers, SCHEDULERS[name]).from_config(self.scheduler.config, **overrides)

    @property
    def num_classes(self) -> int:
        return self.transformer.config.get("num_classes", 0)

    def get_label_ids(self, names: str | list[str]) -> list[int]:
        """Class ids for class names (case-insensitive); a single string is one name."""
        return label_ids(names, self.labels, self.config.id2label)

    def _sample_size(self) -> tuple[int, int]:
        """`(height, width)` of the transformer's input."""
        size = self.transformer.config.sample_size
        return (size, size) if isinstance(size, int) else tuple(size)

    def _image_seq_len(self, height: int, width: int) -> int:
        """Tokens per image (latent pixels / patch^2): what the flow schedulers' dynamic shifting depends on."""
        patch = self.transformer.config.get("patch_size") or 1
        return (height // patch) * (width // patch)

    def _latents_shape(self, labels: list[int] | None, num_images_per_label: int) -> tuple[int, int, int, int]:
        """`(batch, in_channels, height, width)` of the initial noise for these labels."""
        batch = num_images_per_label * (len(labels) if labels is not None else 1)
        return (batch, self.transformer.config.in_channels, *self._sample_size())

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
        guidance_interval: tuple[float, float] | None = None,
    ) -> tuple[list[int] | None, tuple[int, int, int, int]]:
        """Raises a `ValueError` for the first invalid `__call__` argument (or scheduler/model mismatch), before any
        sampling work is done. Returns what the checks resolve, for `__call__` to use: the class ids (from ids and
        names; `None` for an unconditional model) and the latent shape `(batch, in_channels, height, width)`."""
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

        labels = resolve_labels(class_labels, self.num_classes, self.labels, self.config.id2label)
        shape = self._latents_shape(labels, num_images_per_label)
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
        check_guidance_interval(guidance_interval)
        return labels, shape

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | list[int | str] | torch.Tensor | None = None,
        num_images_per_label: int = 1,
        guidance_scale: float = 4.0,
        guidance_schedule: str = "constant",
        guidance_channels: int | None = None,
        guidance_scale_pow: float = 4.0,
        guidance_interval: tuple[float, float] | None = None,
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
            guidance_interval (`tuple[float, float]`, *optional*):
                `(sigma_low, sigma_high)`: guide only the steps whose noise level `sigma = 1 / sqrt(SNR)` lies in
                `(sigma_low, sigma_high]` (Kynkaanniemi et al. 2024: guidance at high noise costs diversity and at low
                noise does little); the other steps use the conditional prediction alone and skip the unconditional
                pass. `sigma` is measured the same way for every prediction type (flow: `t / (1 - t)`). `None`:
                every step is guided.
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
        # 1. Check inputs; the class ids (ids and names resolved) and the latent shape (B, C, H, W) come back
        labels, shape = self.check_inputs(class_labels, num_images_per_label, guidance_scale, guidance_schedule,
                                          guidance_channels, num_inference_steps, generator, latents, output_type,
                                          guidance_scale_pow, guidance_interval)
        interval = check_guidance_interval(guidance_interval)

        # 2. Labels: B class ids, then B null labels for the unconditional pass of classifier-free guidance
        device, dtype = self._execution_device, self.transformer.dtype
        use_cfg = labels is not None and guidance_scale > 1.0
        ids = guided_labels = None
        if labels is not None:
            ids = torch.tensor(labels, device=device).repeat_interleave(num_images_per_label)  # (B,)
            guided_labels = torch.cat([ids, torch.full_like(ids, self.num_classes)])  # (2B,)

        # 3. Initial noise
        channels, height, width = shape[1:]
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        latents = latents.to(device=device, dtype=dtype)
        scheduler = self._sampling_scheduler()
        set_timesteps(scheduler, num_inference_steps, device, self._image_seq_len(height, width))
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
            model_t = t
            if prediction_type == "edm":  # the EDM schedulers' timesteps are c_noise
                model_t = t * EDM_TIMESTEP_SCALE
            elif flow_dpm:  # its timesteps are int64 floor(1000 sigma); the model was trained on the continuous 1000 t
                model_t = (scheduler.sigmas[i] * num_train_timesteps).to(device)
            # classifier-free guidance at this step: at every step, or inside the interval of noise levels
            guide = use_cfg and (interval is None or in_guidance_interval(
                step_log_sigma(prediction_type, model_t, num_train_timesteps, log_sigmas), interval))
            model_input = torch.cat([latents, latents]) if guide else latents
            if hasattr(scheduler, "scale_model_input"):  # (the flow-matching schedulers have none)
                model_input = scheduler.scale_model_input(model_input, t)
            timesteps = model_t.expand(model_input.shape[0]) if torch.is_tensor(model_t) else model_t
            model_labels = guided_labels if guide else ids  # (2B,), (B,) or None
            out = self.transformer(model_input, timesteps, model_labels).sample  # (B or 2B, C or 2C, H, W)
            pred, variance = out[:, :channels], out[:, channels:]  # epsilon, v or velocity; learned variance
            if guide:  # guidance is linear in the prediction, so it is the same for every prediction type
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
