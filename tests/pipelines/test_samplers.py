"""What the samplers feed the model and how guidance follows the noise level, for every objective: recorded with a
stand-in transformer whose guided prediction is the guidance scale itself."""

import math

import numpy as np
import pytest
import torch

from diffit_hf import DiffiTPipeline, DiTModel, dit_scheduler
from diffit_hf.training.objectives import make_objective

OBJECTIVES = ("epsilon", "v_prediction", "flow", "edm")


class Recorder(torch.nn.Module):
    """Predicts 1 for class labels and 0 for the null label, so that the guided prediction equals the guidance scale
    (`uncond + scale * (cond - uncond)`); records the timesteps it receives."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.timesteps = inner, []
        self.config, self.dtype, self.device = inner.config, inner.dtype, inner.device

    def forward(self, x, t, y):
        self.timesteps.append(t[0].item() if torch.is_tensor(t) else float(t))
        cond = (y < self.config.num_classes).to(x.dtype).view(-1, 1, 1, 1)
        return type("Out", (), {"sample": cond.expand_as(x).clone()})()


def recording_pipeline(scheduler):
    torch.manual_seed(0)
    model = DiTModel(sample_size=4, patch_size=2, in_channels=4, num_layers=1, num_attention_heads=2,
                     attention_head_dim=8, num_classes=10, learn_sigma=False)
    pipe = DiffiTPipeline(transformer=Recorder(model), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def applied_scales(pipe, steps, **kwargs):
    """(model timesteps, guidance scales) of each model evaluation of one sampling call."""
    scales, step = [], pipe.scheduler.step

    def recording_step(model_output, timestep, sample, **step_kwargs):
        scales.append(model_output.flatten()[0].item())  # (every element holds the scale)
        return step(model_output, timestep, sample, **step_kwargs)

    pipe.scheduler.step = recording_step
    pipe.transformer.timesteps.clear()
    pipe(7, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="latent", **kwargs)
    return list(pipe.transformer.timesteps), scales


def dit_fraction_at_snr(snr: float) -> float:
    """t / T of DiT's diffusion where abar / (1 - abar) = snr, from diffusers' own alphas_cumprod."""
    abar = dit_scheduler().alphas_cumprod.double().numpy()
    log_snr = np.log(abar / (1 - abar))  # decreasing in t
    minus_log_snr = math.inf if snr == 0 else -math.inf if snr == math.inf else -math.log(snr)
    return float(np.interp(minus_log_snr, -log_snr, np.arange(len(abar)))) / len(abar)


def nvidia_scale(scale, fraction, scale_pow=4.0):
    """NVIDIA's forward_with_cfg: 1 + (s - 1) * 0.5 * (1 - cos(pi * (1 - t / 1000) ** pow))."""
    return 1 + (scale - 1) * 0.5 * (1 - math.cos(math.pi * (1 - fraction) ** scale_pow))


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_power_cosine_guidance_is_one_at_the_highest_noise_and_full_at_the_lowest(objective):
    pipe = recording_pipeline(make_objective(objective).pipeline_scheduler())
    _, scales = applied_scales(pipe, 20, guidance_scale=4.4, guidance_schedule="power_cosine")
    assert scales[0] == pytest.approx(1.0, abs=0.01), scales  # EDM's c_noise timesteps gave 4.4 at sigma = 80
    assert scales[-1] == pytest.approx(4.4, rel=1e-3), scales
    assert all(a <= b + 1e-9 for a, b in zip(scales, scales[1:])), scales  # ramps up as the noise falls


def test_the_diffit_preset_guides_exactly_as_nvidias_forward_with_cfg():
    pipe = recording_pipeline(dit_scheduler(learn_sigma=False))
    timesteps, scales = applied_scales(pipe, 250, guidance_scale=4.4, guidance_schedule="power_cosine")
    assert timesteps[0] == 999 and timesteps[-1] == 0 and len(scales) == 250
    expected = [np.float32(nvidia_scale(4.4, t / 1000)).item() for t in timesteps]
    assert scales == expected  # bit for bit (the guided prediction is float32)


@pytest.mark.parametrize("objective", ["flow", "edm"])
def test_power_cosine_guidance_matches_ddpm_at_the_same_snr(objective):
    """Flow (sigma = t) and EDM steps get DiT's scale at the DiT timestep of the same SNR (flow t = 0.5 is SNR 1,
    DiT's t ~ 260: 1.70 at scale 4.4, where the raw t / T gave 1.03)."""
    pipe = recording_pipeline(make_objective(objective).pipeline_scheduler())
    timesteps, scales = applied_scales(pipe, 12, guidance_scale=4.4, guidance_schedule="power_cosine")
    for t, scale in zip(timesteps, scales):
        if objective == "flow":
            s = t / 1000
            snr = math.inf if s == 0 else ((1 - s) / s) ** 2
        else:
            snr = math.exp(-2 * 4 * t / 1000)  # t = 1000 * ln(sigma) / 4, SNR = 1 / sigma^2
        assert scale == pytest.approx(nvidia_scale(4.4, dit_fraction_at_snr(snr)), rel=1e-3, abs=1e-3), (t, scale)
    assert 1.2 < max(scales[len(scales) // 2 - 2: len(scales) // 2 + 2]) < 4.3  # mid-range steps are mid-range


def flow_dpm_scheduler(**config):
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", **config)


def test_dpm_solver_on_flow_sigmas_feeds_the_model_the_continuous_sigma_from_pure_noise():
    """diffusers keeps int64 timesteps floor(1000 sigma) starting at sigma 0.999 (999, 856, ... for 7 steps); a flow
    model trained on the continuous 1000 t must see 1000, 857.14..., starting from pure noise."""
    pipe = recording_pipeline(flow_dpm_scheduler())
    timesteps, _ = applied_scales(pipe, 7, guidance_scale=1.0)
    np.testing.assert_allclose(timesteps, 1000 * np.linspace(1, 0, 8)[:-1], rtol=0, atol=1e-3)
    shifted = recording_pipeline(flow_dpm_scheduler(flow_shift=3.0))
    timesteps, _ = applied_scales(shifted, 7, guidance_scale=1.0)
    sigmas = np.linspace(1, 0, 8)[:-1]
    np.testing.assert_allclose(timesteps, 1000 * 3 * sigmas / (1 + 2 * sigmas), rtol=0, atol=1e-3)


def test_dpm_solver_on_flow_sigmas_integrates_the_velocity_of_a_known_flow_from_sigma_one():
    """A 'model' returning the exact velocity (x - x0) / t lands on x0, starting from pure noise (sigma 1)."""
    x0 = torch.randn(1, 4, 4, 4)

    class ExactVelocity(Recorder):
        def forward(self, x, t, y):
            self.timesteps.append(t[0].item())
            return type("Out", (), {"sample": (x - x0) / (t / 1000).view(-1, 1, 1, 1)})()

    pipe = recording_pipeline(flow_dpm_scheduler())
    pipe.transformer = ExactVelocity(pipe.transformer.inner)
    noise = torch.randn(1, 4, 4, 4)
    out = pipe(7, guidance_scale=1.0, num_inference_steps=5, latents=noise, output_type="latent").images
    assert pipe.transformer.timesteps[0] == 1000.0  # x = eps: the model sees pure noise at t = 1000
    torch.testing.assert_close(out, x0, rtol=1e-4, atol=1e-4)


def test_use_scheduler_keeps_the_saved_flow_shift():
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe = recording_pipeline(FlowMatchEulerDiscreteScheduler(shift=3.0))
    pipe.use_scheduler("heun")
    assert pipe.scheduler.config.shift == 3.0
    pipe.use_scheduler("dpm")
    assert pipe.scheduler.config.flow_shift == 3.0 and pipe.scheduler.config.use_flow_sigmas
    pipe.use_scheduler("euler")
    assert type(pipe.scheduler) is FlowMatchEulerDiscreteScheduler and pipe.scheduler.config.shift == 3.0
    # the shifted schedule reaches the model: sigma ~0.5 shifted by 3 is ~0.75
    timesteps, _ = applied_scales(pipe, 3, guidance_scale=1.0)
    assert timesteps[0] == 1000.0 and 745 < timesteps[1] < 755, timesteps


def test_use_scheduler_keeps_dynamic_shifting_and_refuses_what_it_cannot_apply():
    from diffusers import FlowMatchEulerDiscreteScheduler

    dynamic = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                              base_image_seq_len=1, max_image_seq_len=16)
    pipe = recording_pipeline(dynamic)
    tokens = (4 // 2) ** 2  # 4x4 latents, patch 2
    mu = 0.5 + (1.15 - 0.5) / (16 - 1) * (tokens - 1)
    euler, _ = applied_scales(pipe, 4, guidance_scale=1.0)  # samples (diffusers wants mu for dynamic shifting)
    pipe.use_scheduler("euler")
    assert pipe.scheduler.config.use_dynamic_shifting and pipe.scheduler.config.max_image_seq_len == 16
    pipe.use_scheduler("heun")  # no dynamic shifting there: the fixed shift of this model's token count
    assert pipe.scheduler.config.shift == pytest.approx(math.exp(mu))
    heun, _ = applied_scales(pipe, 4, guidance_scale=1.0)
    assert heun[:2] == pytest.approx(euler[:2], rel=1e-3)  # the dynamic schedule's noise levels (667 unshifted)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift_terminal=0.1)
    for name in ("heun", "dpm"):
        with pytest.raises(ValueError, match="shift_terminal.*use_scheduler\\('euler'\\)"):
            pipe.use_scheduler(name)
    pipe.use_scheduler("euler")
    assert pipe.scheduler.config.shift_terminal == 0.1


def test_edm_heun_is_karras_algorithm_1_with_an_euler_last_step(tmp_path):
    """use_scheduler("heun") on an EDM model samples as EDM's Alg. 1, written out here on the same Karras sigmas:
    Heun steps, then an Euler step to sigma 0; N steps cost 2N - 1 model evaluations."""
    from diffusers import EDMEulerScheduler

    class Nonlinear(Recorder):  # F(c_in x, t): any fixed nonlinear function of the input and the timestep
        def forward(self, x, t, y):
            self.timesteps.append(t[0].item())
            return type("Out", (), {"sample": torch.tanh(x) * (1 + t.view(-1, 1, 1, 1) / 1000)})()

    pipe = recording_pipeline(EDMEulerScheduler())
    pipe.transformer = Nonlinear(pipe.transformer.inner)
    pipe.use_scheduler("heun")
    assert type(pipe.scheduler).__name__ == "EDMHeunScheduler" and pipe.config.prediction_type == "edm"
    steps, noise = 5, torch.randn(1, 4, 4, 4)
    out = pipe(7, guidance_scale=1.0, num_inference_steps=steps, latents=noise, output_type="latent").images

    reference = EDMEulerScheduler()
    reference.set_timesteps(steps)
    sigmas, sd = reference.sigmas.double().tolist(), 0.5

    def denoise(x, s):  # D(x; s) = c_skip x + c_out F(c_in x; 1000 ln(s) / 4)
        f = torch.tanh(x / math.sqrt(s**2 + sd**2)) * (1 + math.log(s) / 4)
        return sd**2 / (s**2 + sd**2) * x + s * sd / math.sqrt(s**2 + sd**2) * f

    x = noise.double() * reference.init_noise_sigma
    for s, s_next in zip(sigmas, sigmas[1:]):
        d = (x - denoise(x, s)) / s
        x_next = x + (s_next - s) * d
        if s_next > 0:  # second-order correction (Alg. 1, lines 6-8)
            x_next = x + (s_next - s) * 0.5 * (d + (x_next - denoise(x_next, s_next)) / s_next)
        x = x_next
    torch.testing.assert_close(out.double(), x, rtol=1e-4, atol=1e-4)
    visited = [math.exp(4 * t / 1000) for t in pipe.transformer.timesteps]
    assert len(visited) == 2 * steps - 1
    assert visited == pytest.approx([sigmas[0]] + [s for s in sigmas[1:-1] for _ in (0, 1)], rel=1e-5)
    # saved as the EDM Euler config it extends (plain diffusers has no EDM Heun): loads, and heun is one call away
    pipe.transformer = pipe.transformer.inner
    pipe.save_pretrained(tmp_path / "pipe")
    assert type(pipe.scheduler).__name__ == "EDMHeunScheduler"
    assert type(DiffiTPipeline.from_pretrained(tmp_path / "pipe").scheduler) is EDMEulerScheduler
