import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput

from diffit_hf import DiffiTModel, DiffiTPipeline, DiffiTUNetModel, dit_scheduler
from diffit_hf.pipelines.schedules import GUIDANCE_SCHEDULES, guidance_scale_at, in_guidance_interval

from ..tiny import NAMES, run, tiny_pipeline
from ..tiny import perturb as _perturb


def test_shape_and_pinned_slice():
    images = run(tiny_pipeline())
    assert images.shape == (2, 16, 16, 1)  # latent 8x8x4, VAE upsamples 2x, grayscale
    assert images.min() >= 0 and images.max() <= 1
    # regression pin (diffusers-style expected slice), recorded from this implementation on CPU
    expected = np.array([0.6135, 0.5996, 0.5770, 0.5627, 0.6019, 0.5925, 0.5507, 0.6394, 0.5884])
    assert np.abs(images[0, -3:, -3:, 0].flatten() - expected).max() <= 1e-3


def test_same_seed_same_images_and_different_seed_differs():
    pipe = tiny_pipeline()
    a, b, c = run(pipe, seed=3), run(pipe, seed=3), run(pipe, seed=4)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_label_names_case_insensitive_and_errors():
    pipe = tiny_pipeline()
    assert pipe.get_label_ids("bag") == [8]
    assert pipe.get_label_ids(["Sneaker", "ANKLE BOOT"]) == [7, 9]
    with pytest.raises(ValueError, match="valid names are: .*Ankle boot"):
        pipe.get_label_ids("Hat")
    assert np.array_equal(run(pipe, labels=["Sneaker", "bag"]), run(pipe, labels=[7, 8]))


@pytest.mark.parametrize(
    "scheduler_cls", [DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, DDPMScheduler]
)
@pytest.mark.parametrize("learn_sigma", [False, True])
def test_scheduler_swap_via_from_config(scheduler_cls, learn_sigma):
    pipe = tiny_pipeline(learn_sigma=learn_sigma)  # learned variance used only by DDPM
    overrides = {} if scheduler_cls is DDPMScheduler else {"variance_type": None}
    pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config, **overrides)
    images = run(pipe, steps=3)
    assert images.shape == (2, 16, 16, 1) and np.isfinite(images).all()


def _scramble_variance(pipe):
    """Makes the transformer's variance channels (out[:, 4:]) random, leaving its prediction untouched."""
    def hook(module, args, output):
        gen = torch.Generator().manual_seed(len(module._seen))
        module._seen.append(1)
        output.sample[:, 4:] = torch.rand(output.sample[:, 4:].shape, generator=gen) * 2 - 1
        return output
    pipe.transformer._seen = []
    return pipe.transformer.register_forward_hook(hook)


@pytest.mark.parametrize("scheduler_cls", [DPMSolverMultistepScheduler, DDIMScheduler, EulerDiscreteScheduler])
def test_diffusers_scheduler_idiom_uses_the_prediction_alone(scheduler_cls):
    """`X.from_config(pipe.scheduler.config)` (diffusers' DiT docs) inherits variance_type="learned_range": it works,
    samples exactly as the scheduler made with variance_type=None, and ignores the variance channels (DPM-Solver on
    its own would slice the output to 3 of the 4 latent channels)."""
    pipe = tiny_pipeline(learn_sigma=True)
    ddpm_config = pipe.scheduler.config
    pipe.scheduler = scheduler_cls.from_config(ddpm_config, variance_type=None)
    reference = run(pipe, steps=3)
    pipe.scheduler = scheduler_cls.from_config(ddpm_config)
    if "variance_type" in pipe.scheduler.config:  # DPM-Solver keeps it; DDIM and Euler drop the unknown key
        assert pipe.scheduler.config.variance_type == "learned_range"
    np.testing.assert_array_equal(run(pipe, steps=3), reference)
    handle = _scramble_variance(pipe)
    np.testing.assert_array_equal(run(pipe, steps=3), reference)  # the variance channels do not matter
    handle.remove()
    assert pipe.scheduler.config.get("variance_type") in (None, "learned_range")  # the user's object is untouched


def test_ddpm_still_samples_with_the_learned_variance():
    pipe = tiny_pipeline(learn_sigma=True)
    reference = run(pipe, steps=3)
    _scramble_variance(pipe)
    assert not np.allclose(run(pipe, steps=3), reference)  # DDPM's noise scale comes from the variance channels


def test_ddpm_learned_variance_type_is_refused():
    """diffusers' "learned" reads the output as the variance itself: negative values give NaN samples."""
    scheduler = DDPMScheduler(variance_type="learned")
    scheduler.set_timesteps(10)
    out = torch.cat([torch.zeros(1, 4, 2, 2), -torch.ones(1, 4, 2, 2)], dim=1)
    step = scheduler.step(out, scheduler.timesteps[0], torch.zeros(1, 4, 2, 2), generator=torch.Generator())
    assert torch.isnan(step.prev_sample).all()  # the fault, reproduced
    pipe = tiny_pipeline(learn_sigma=True, scheduler=DDPMScheduler(variance_type="learned"))
    with pytest.raises(ValueError, match="variance_type='learned_range'"):
        run(pipe)


def dit_respacing(num_timesteps: int, steps: int) -> list[int]:
    """The timesteps DiT's `space_timesteps(num_timesteps, str(steps))` keeps (one section: a float stride of
    (T - 1) / (n - 1), rounded), in sampling order."""
    stride, cur, taken = (num_timesteps - 1) / (steps - 1), 0.0, []
    for _ in range(steps):
        taken.append(round(cur))
        cur += stride
    return sorted(taken, reverse=True)


@pytest.mark.parametrize("steps", [250, 50])
def test_dit_scheduler_visits_dits_timesteps(steps):
    leading = DDPMScheduler(variance_type="learned_range")
    leading.set_timesteps(steps)
    assert leading.timesteps[0] < 999  # diffusers' default spacing never visits t = 999
    pipe = tiny_pipeline(learn_sigma=True, scheduler=dit_scheduler())
    seen = []
    pipe.transformer.register_forward_pre_hook(lambda m, args: seen.append(int(args[1][0])))
    run(pipe, labels=[7], steps=steps, guidance_scale=1.0)
    assert seen == dit_respacing(1000, steps)


def test_dit_scheduler_is_dits_sampling_and_what_training_saves():
    from diffit_hf.training.objectives import make_objective

    learned, fixed = dit_scheduler(), dit_scheduler(learn_sigma=False)
    assert learned.config.variance_type == "learned_range" and fixed.config.variance_type == "fixed_large"
    assert not learned.config.clip_sample and learned.config.timestep_spacing == "linspace"
    assert make_objective("epsilon", learn_sigma=True).pipeline_scheduler().config == learned.config
    assert make_objective("epsilon", learn_sigma=False).pipeline_scheduler().config == fixed.config
    pipe = tiny_pipeline(learn_sigma=False)
    pipe.use_scheduler("ddpm")
    assert pipe.scheduler.config.variance_type == "fixed_large"


def test_learned_sigma_is_used_by_learned_range_scheduler():
    pipe = tiny_pipeline(learn_sigma=True)
    learned = run(pipe, guidance_scale=1.0)
    pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config, variance_type="fixed_small")
    fixed = run(pipe, guidance_scale=1.0)
    assert not np.allclose(learned, fixed)  # the variance channels changed the sampling noise scale


def test_guidance_uses_null_class_from_config_and_channels():
    pipe = tiny_pipeline()
    calls = []
    pipe.transformer.register_forward_pre_hook(lambda m, args: calls.append(args[2].clone()))
    run(pipe, labels=[7], steps=1, guidance_scale=4.0)
    assert calls[0].tolist() == [7, 10]  # conditional then null (num_classes = 10, not 1000)
    base = run(pipe, guidance_scale=4.0)
    partial = run(pipe, guidance_scale=4.0, guidance_channels=3)
    none = run(pipe, guidance_scale=1.0)
    assert not np.allclose(base, partial) and not np.allclose(base, none)


def test_power_cosine_schedule():
    assert guidance_scale_at(4.0, "constant", 0.5) == 4.0
    assert guidance_scale_at(4.0, "power_cosine", 0.999999) == pytest.approx(1.0, abs=1e-6)
    assert guidance_scale_at(4.0, "power_cosine", 0.0) == pytest.approx(4.0)
    mid = guidance_scale_at(4.0, "power_cosine", 0.5)
    assert mid == pytest.approx(1 + 3 * 0.5 * (1 - np.cos(np.pi * 0.5**4)))
    pipe = tiny_pipeline()
    assert not np.allclose(run(pipe, guidance_schedule="power_cosine"), run(pipe))
    assert GUIDANCE_SCHEDULES == ("constant", "power_cosine")  # the list CLIs offer
    # NVIDIA's --scale_pow: the exponent of (1 - t / T)
    assert guidance_scale_at(4.0, "power_cosine", 0.5, 2.0) == pytest.approx(
        1 + 3 * 0.5 * (1 - np.cos(np.pi * 0.5**2)))
    assert not np.allclose(run(pipe, guidance_schedule="power_cosine", guidance_scale_pow=2.0),
                           run(pipe, guidance_schedule="power_cosine"))
    for bad in (0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="guidance_scale_pow"):
            run(pipe, guidance_schedule="power_cosine", guidance_scale_pow=bad)


def _batch_sizes(pipe):
    """The batch of every transformer call of `pipe` (appended to the returned list)."""
    calls = []
    pipe.transformer.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    return calls


def test_guidance_interval_guides_only_the_steps_inside_it():
    pipe = tiny_pipeline()
    calls = _batch_sizes(pipe)
    everywhere = run(pipe, steps=4, guidance_scale=4.0)
    assert calls == [4, 4, 4, 4]  # 2 labels, conditional + null
    calls.clear()
    np.testing.assert_array_equal(run(pipe, steps=4, guidance_scale=4.0, guidance_interval=(0, float("inf"))),
                                  everywhere)
    assert calls == [4, 4, 4, 4]
    # DDPM at 4 steps visits t = 750, 500, 250, 0; sigma = sqrt((1 - abar) / abar), computed here independently
    abar = pipe.scheduler.alphas_cumprod.double()
    sigma = ((1 - abar) / abar).sqrt()
    only_500 = (float(sigma[250] + sigma[500]) / 2, float(sigma[500] + sigma[750]) / 2)
    calls.clear()
    middle = run(pipe, steps=4, guidance_scale=4.0, guidance_interval=only_500)
    assert calls == [2, 4, 2, 2]  # unguided steps skip the unconditional pass
    calls.clear()
    never = run(pipe, steps=4, guidance_scale=4.0, guidance_interval=(1e6, 2e6))
    assert calls == [2, 2, 2, 2]
    np.testing.assert_array_equal(never, run(pipe, steps=4, guidance_scale=1.0))
    assert not np.allclose(middle, everywhere) and not np.allclose(middle, never)


def test_guidance_interval_measures_flow_noise_levels():
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe = tiny_pipeline(learn_sigma=False, scheduler=FlowMatchEulerDiscreteScheduler())
    calls = _batch_sizes(pipe)
    # flow sigmas 1, 0.75, 0.5, 0.25: noise levels t / (1 - t) = inf, 3, 1, 1/3
    run(pipe, steps=4, guidance_scale=4.0, guidance_interval=(0.5, 2.0))
    assert calls == [2, 2, 4, 2]
    calls.clear()
    run(pipe, steps=4, guidance_scale=4.0, guidance_interval=(0.5, float("inf")))
    assert calls == [4, 4, 4, 2]


def test_guidance_interval_is_open_below_and_closed_above():
    assert not in_guidance_interval(math.log(1.0), (1.0, 2.0))  # sigma_low itself is not guided
    assert in_guidance_interval(math.log(2.0), (1.0, 2.0))  # sigma_high is
    assert in_guidance_interval(math.inf, (1.0, math.inf)) and not in_guidance_interval(math.inf, (1.0, 2.0))
    assert not in_guidance_interval(-math.inf, (0.0, 2.0))  # sigma 0 (the data) is never guided


@pytest.mark.parametrize("bad", [(1.0, 0.5), (-1.0, 2.0), (1.0,), "ab", (0.0, float("nan")), (True, 2.0), (1, 1)])
def test_guidance_interval_is_checked_before_any_work(bad):
    pipe = tiny_pipeline()
    calls = _batch_sizes(pipe)
    with pytest.raises(ValueError, match="guidance_interval must be \\(sigma_low, sigma_high\\)"):
        run(pipe, guidance_interval=bad)
    assert calls == []


def test_unconditional_and_pixel_space_models():
    unet = _perturb(DiffiTUNetModel(sample_size=16, in_channels=1, block_out_channels=(16,), layers_per_block=(1,),
                                    window_size=4, attention_head_dim=8, norm_num_groups=4, num_classes=0))
    pipe = DiffiTPipeline(transformer=unet, scheduler=DDPMScheduler(), vae=None)
    pipe.set_progress_bar_config(disable=True)
    images = pipe(num_images_per_label=3, num_inference_steps=2, output_type="pt").images
    assert images.shape == (3, 1, 16, 16)
    pil = pipe(num_images_per_label=1, num_inference_steps=1, output_type="pil").images
    assert pil[0].size == (16, 16)
    with pytest.raises(ValueError, match="unconditional"):
        pipe(class_labels=[1], num_inference_steps=1)


def test_diffit_latent_model_in_pipeline():
    pipe = tiny_pipeline(DiffiTModel)
    assert run(pipe).shape == (2, 16, 16, 1)
    latents = pipe([1], num_inference_steps=1, output_type="latent").images
    assert latents.shape == (1, 4, 8, 8)


def test_save_load_round_trip_same_images(tmp_path):
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path)
    loaded = DiffiTPipeline.from_pretrained(tmp_path)
    assert loaded.config.id2label == NAMES or {int(k): v for k, v in loaded.config.id2label.items()} == NAMES
    assert loaded.get_label_ids("Bag") == [8]
    assert np.array_equal(run(pipe), run(loaded))


def test_bad_inputs():
    pipe = tiny_pipeline()
    with pytest.raises(ValueError, match=r"outside \[0, 9\]"):
        run(pipe, labels=[3, 10])
    with pytest.raises(ValueError, match="empty"):
        run(pipe, labels=[])
    with pytest.raises(ValueError, match="num_inference_steps"):
        run(pipe, steps=0)
    with pytest.raises(ValueError, match="latents must have shape"):
        run(pipe, latents=torch.randn(2, 4, 8, 9))
    with pytest.raises(ValueError, match="generators"):
        pipe([1, 2], num_inference_steps=1, generator=[torch.Generator()])
    with pytest.raises(ValueError, match="constant, power_cosine"):
        run(pipe, guidance_schedule="linear")
    with pytest.raises(ValueError, match="pil, np, pt, latent"):
        pipe([1], num_inference_steps=1, output_type="jpg")
    fixed_model = tiny_pipeline(learn_sigma=False, scheduler=DDPMScheduler(variance_type="learned_range"))
    with pytest.raises(ValueError, match="learn_sigma=False"):
        fixed_model([1], num_inference_steps=1)


def test_guidance_scale_and_step_count_types():
    pipe = tiny_pipeline()
    # inf made NaN images; nan compared False with 1.0 and silently disabled guidance
    for scale in (float("inf"), float("-inf"), float("nan"), "4", True, None, torch.tensor(4.0)):
        with pytest.raises(ValueError, match="guidance_scale must be a finite number"):
            run(pipe, guidance_scale=scale)
    for steps in (2.0, 2.5, True, "2", None):
        with pytest.raises(ValueError, match="num_inference_steps must be an int"):
            run(pipe, steps=steps)
    with pytest.raises(ValueError, match="num_images_per_label must be an int"):
        run(pipe, num_images_per_label=1.5)
    assert np.array_equal(run(pipe, steps=np.int64(2), guidance_scale=np.float32(4.0)), run(pipe))


@pytest.mark.parametrize(
    "labels", [2.7, [1, 2.7], [1, 2.0], True, [True, 3], torch.tensor([1.0, 2.0]), torch.tensor(2.0),
               [torch.tensor(1.5)], torch.tensor([True]), np.array([1.0, 2.0])]
)
def test_non_integer_label_ids_are_refused(labels):
    pipe = tiny_pipeline()
    with pytest.raises(ValueError, match="integer class ids or class names"):
        run(pipe, labels=labels)


def test_integer_label_ids_of_any_integer_type():
    pipe = tiny_pipeline()
    reference = run(pipe, labels=[7, 8])
    for labels in (torch.tensor([7, 8]), np.array([7, 8]), [np.int64(7), torch.tensor(8)], ["Sneaker", 8]):
        assert np.array_equal(run(pipe, labels=labels), reference)


@pytest.mark.parametrize(
    "id2label", [{0: "Bag", 1: "bag"}, {0: "Coat, Jacket", 1: "jacket"}, {0: "Coat", 1: "Jacket, COAT "}]
)
def test_duplicate_class_names_are_refused(id2label):
    model = tiny_pipeline().transformer
    with pytest.raises(ValueError, match="must be unique"):
        DiffiTPipeline(transformer=model, scheduler=DDPMScheduler(), id2label=id2label)


def test_class_name_synonyms():
    pipe = DiffiTPipeline(transformer=tiny_pipeline().transformer, scheduler=DDPMScheduler(),
                          id2label={0: "Coat, Jacket", 1: "Bag, bag"})  # a repeat within one class is harmless
    assert pipe.get_label_ids(["jacket", "COAT", "Bag"]) == [0, 0, 1]


def test_inputs_are_checked_before_any_work():
    pipe = tiny_pipeline(learn_sigma=False, scheduler=DDPMScheduler(variance_type="learned_range"))
    calls = []
    pipe.transformer.register_forward_pre_hook(lambda module, args: calls.append(1))
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    bad_calls = [
        ({"class_labels": [1]}, "learn_sigma=False"),  # the scheduler/model mismatch comes last
        ({"class_labels": [1], "guidance_scale": float("nan")}, "guidance_scale"),
        ({"class_labels": [1], "num_inference_steps": 0}, "num_inference_steps"),
        ({"class_labels": [1, 2.5]}, "integer class ids"),
        ({"class_labels": [1], "latents": torch.randn(2, 4, 8, 8)}, "latents must have shape"),
        ({"class_labels": [1], "guidance_channels": 5}, r"guidance_channels must lie in \[1, 4\]"),
    ]
    for kwargs, message in bad_calls:
        with pytest.raises(ValueError, match=message):
            pipe(**{"num_inference_steps": 1, **kwargs}, generator=generator)
    assert not calls and pipe.scheduler.num_inference_steps is None  # no denoising, no set_timesteps
    assert torch.equal(generator.get_state(), state)  # no noise drawn


def test_learned_sigma_is_read_from_the_model_config():
    pipe = tiny_pipeline(learn_sigma=True)
    pipe.transformer.register_to_config(learn_sigma=False)  # the config, not the channel count, is the answer
    pipe.use_scheduler("ddpm")
    assert pipe.scheduler.config.variance_type == "fixed_large"
    pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config, variance_type="learned_range")
    with pytest.raises(ValueError, match="learn_sigma=False"):
        run(pipe)


def test_return_types():
    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    out = pipe([1], num_inference_steps=1)
    assert isinstance(out, ImagePipelineOutput) and out.images[0].mode == "L"
    (images,) = pipe([1], num_inference_steps=1, output_type="np", return_dict=False)
    assert images.shape == (1, 16, 16, 1)


def test_generate_cli_writes_labelled_grid(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from PIL import Image

    tiny_pipeline().save_pretrained(tmp_path / "pipe")
    out = tmp_path / "grid.png"
    script = Path(__file__).resolve().parents[2] / "pipelines" / "generate.py"
    subprocess.run([sys.executable, str(script), "--model", str(tmp_path / "pipe"), "--labels", "Bag", "3",
                    "--steps", "1", "--num-per-label", "2", "--scheduler", "ddim", "--out", str(out)], check=True)
    grid = Image.open(out)
    assert grid.size == (2 * 16, 2 * 16 + 12)  # 2 labels x 2 images of 16x16, plus the caption strip


def test_use_scheduler_by_short_name():
    pipe = tiny_pipeline()
    pipe.use_scheduler("dpm")
    assert isinstance(pipe.scheduler, DPMSolverMultistepScheduler) and pipe.scheduler.config.variance_type is None
    assert run(pipe).shape == (2, 16, 16, 1)
    pipe.use_scheduler("ddpm")
    assert pipe.scheduler.config.variance_type == "learned_range"  # DDPM keeps the learned variance
    with pytest.raises(ValueError, match="valid choices are ddpm, ddim, dpm, euler, heun"):
        pipe.use_scheduler("lms")


OBJECTIVE_SCHEDULERS = {"epsilon": ["ddpm", "ddim", "dpm", "euler", "heun"],
                        "v_prediction": ["ddpm", "ddim", "dpm", "euler", "heun"], "flow": ["euler", "heun", "dpm"],
                        "edm": ["euler", "dpm", "heun"]}
REFUSED = {"flow": "does not sample a flow model; valid choices are euler, heun, dpm",
           "edm": "does not sample an EDM model; valid choices are euler, dpm, heun"}


@pytest.mark.parametrize("objective", list(OBJECTIVE_SCHEDULERS))
def test_every_objective_samples_with_every_compatible_scheduler(objective, tmp_path):
    from diffit_hf.training.objectives import make_objective

    scheduler = make_objective(objective, learn_sigma=False).pipeline_scheduler()
    pipe = tiny_pipeline(learn_sigma=False, scheduler=scheduler)
    assert pipe.config.prediction_type == objective
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = DiffiTPipeline.from_pretrained(tmp_path / "pipe")  # samples right with no extra argument
    assert loaded.config.prediction_type == objective and type(loaded.scheduler) is type(scheduler)
    np.testing.assert_array_equal(run(loaded), run(pipe))
    for name in OBJECTIVE_SCHEDULERS[objective]:
        loaded.use_scheduler(name)
        first, again = run(loaded, steps=3), run(loaded, steps=3)
        assert np.isfinite(first).all(), name
        np.testing.assert_array_equal(first, again)  # deterministic for a seed
    # a scheduler that expects another prediction is refused, before any sampling work
    for name in {"ddpm", "ddim"} - set(OBJECTIVE_SCHEDULERS[objective]):
        with pytest.raises(ValueError, match=REFUSED[objective]):
            loaded.use_scheduler(name)
    other = DDPMScheduler(prediction_type="epsilon") if objective != "epsilon" else DDPMScheduler(
        prediction_type="v_prediction")
    loaded.scheduler = other
    with pytest.raises(ValueError, match=f"but this transformer predicts '{objective}'"):
        run(loaded)


def test_a_flow_sampler_integrates_the_velocity_of_a_known_flow():
    """A 'model' returning the exact velocity eps - x0 of a flow from a known x0 must land on x0."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    class ExactVelocity(torch.nn.Module):
        def __init__(self, inner, x0):
            super().__init__()
            self.inner, self.x0 = inner, x0
            self.config, self.dtype, self.device = inner.config, inner.dtype, inner.device

        def forward(self, x, t, y):  # x = (1 - s) x0 + s eps  ->  eps - x0 = (x - x0) / s
            s = (t / 1000).view(-1, 1, 1, 1)
            return type("Out", (), {"sample": (x - self.x0) / s})()

    pipe = tiny_pipeline(learn_sigma=False, scheduler=FlowMatchEulerDiscreteScheduler())
    x0 = torch.randn(2, 4, 8, 8)
    pipe.transformer = ExactVelocity(pipe.transformer, x0)
    out = pipe([7, 8], guidance_scale=1.0, num_inference_steps=4, output_type="latent").images
    torch.testing.assert_close(out, x0, rtol=1e-4, atol=1e-4)


def test_an_edm_sampler_with_the_exact_denoiser_lands_on_the_data():
    """A 'model' whose preconditioned output D = c_skip x + c_out F is exactly x0 must sample x0."""
    from diffusers import EDMEulerScheduler

    from diffit_hf.pipelines.schedules import EDM_TIMESTEP_SCALE

    class ExactDenoiser(torch.nn.Module):
        def __init__(self, inner, x0, sigma_data=0.5):
            super().__init__()
            self.inner, self.x0, self.sd = inner, x0, sigma_data
            self.config, self.dtype, self.device = inner.config, inner.dtype, inner.device

        def forward(self, x_in, t, y):  # t = 1000 * ln(sigma) / 4, x_in = c_in * x
            s = torch.exp(4 * t / EDM_TIMESTEP_SCALE).view(-1, 1, 1, 1)
            x = x_in * (s**2 + self.sd**2).sqrt()
            c_skip, c_out = self.sd**2 / (s**2 + self.sd**2), s * self.sd / (s**2 + self.sd**2).sqrt()
            x0 = self.x0.repeat(len(x) // len(self.x0), 1, 1, 1)  # (2B with guidance)
            return type("Out", (), {"sample": (x0 - c_skip * x) / c_out})()

    pipe = tiny_pipeline(learn_sigma=False, scheduler=EDMEulerScheduler())
    x0 = torch.randn(2, 4, 8, 8) * 0.5
    pipe.transformer = ExactDenoiser(pipe.transformer, x0)
    out = pipe([7, 8], guidance_scale=2.0, num_inference_steps=5, output_type="latent").images
    torch.testing.assert_close(out, x0, rtol=1e-4, atol=1e-4)


def test_a_latent_pipeline_without_its_vae_is_refused(tmp_path):
    import json
    import shutil

    pipe = tiny_pipeline()
    assert pipe.config.latent is True
    pipe.save_pretrained(tmp_path / "pipe")
    index_path = tmp_path / "pipe" / "model_index.json"
    index = json.loads(index_path.read_text())
    del index["vae"]  # a hand-edited model_index.json
    index_path.write_text(json.dumps(index))
    with pytest.raises(ValueError, match="works on VAE latents but has no VAE"):
        DiffiTPipeline.from_pretrained(tmp_path / "pipe")
    # a pixel-space pipeline never had one: it loads
    pixel = tiny_pipeline()
    pixel = DiffiTPipeline(transformer=pixel.transformer, scheduler=pixel.scheduler, vae=None)
    assert pixel.config.latent is False
    pixel.save_pretrained(tmp_path / "pixel")
    assert DiffiTPipeline.from_pretrained(tmp_path / "pixel").vae is None
    # a missing component folder is named
    shutil.rmtree(tmp_path / "pixel" / "transformer")
    with pytest.raises(FileNotFoundError, match="lacks its .transformer. component"):
        DiffiTPipeline.from_pretrained(tmp_path / "pixel")
