"""The pipeline side of diffusers' idioms: `torch_dtype=` / `dtype=`, `.to(...)`, `enable_model_cpu_offload()` and
`set_progress_bar_config`, as in diffusers' own pipelines."""

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from diffit_hf import DiffiTPipeline

from ..tiny import run, tiny_pipeline

# a deterministic sampler and fixed fp32 noise: noise drawn in float64 would be other numbers, not other precision
NOISE = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))


def deterministic(pipe):
    return run(pipe, latents=NOISE)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("idioms") / "pipe"
    tiny_pipeline(scheduler=DDIMScheduler()).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("spelling", ["torch_dtype", "dtype"])
def test_from_pretrained_dtype_loads_every_component_in_it(saved, spelling):
    reference = deterministic(DiffiTPipeline.from_pretrained(saved))
    pipe = DiffiTPipeline.from_pretrained(saved, **{spelling: torch.float64})
    assert pipe.transformer.dtype == torch.float64 and pipe.vae.dtype == torch.float64
    assert pipe.dtype == torch.float64
    images = deterministic(pipe)
    assert images.dtype == np.float32  # outputs as diffusers pipelines give them
    np.testing.assert_allclose(images, reference, atol=1e-4)  # the same images, in another precision


def test_from_pretrained_bf16(saved):
    pipe = DiffiTPipeline.from_pretrained(saved, torch_dtype=torch.bfloat16)
    assert pipe.transformer.dtype == torch.bfloat16
    np.testing.assert_allclose(deterministic(pipe), deterministic(DiffiTPipeline.from_pretrained(saved)), atol=0.05)


def test_to_moves_and_casts_every_component_and_returns_the_pipeline():
    pipe = tiny_pipeline(scheduler=DDIMScheduler())
    reference = deterministic(pipe)
    assert pipe.to("cpu") is pipe and pipe.device.type == "cpu"
    assert pipe.to(torch.float64) is pipe
    assert pipe.transformer.dtype == torch.float64 and pipe.vae.dtype == torch.float64
    np.testing.assert_allclose(deterministic(pipe), reference, atol=1e-4)
    pipe.to("cpu", torch.float32)
    assert pipe.transformer.dtype == torch.float32 and pipe.vae.dtype == torch.float32


def test_model_cpu_offload_hooks_give_the_same_images():
    """On a machine without an accelerator diffusers refuses the default device; with `device="cpu"` the hooks of
    `model_cpu_offload_seq` ("transformer->vae") are installed and sampling runs through them unchanged."""
    pipe = tiny_pipeline()
    reference = run(pipe)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="requires accelerator"):
            pipe.enable_model_cpu_offload()
    pipe.enable_model_cpu_offload(device="cuda" if torch.cuda.is_available() else "cpu")
    assert hasattr(pipe.transformer, "_hf_hook") and hasattr(pipe.vae, "_hf_hook")
    assert pipe._execution_device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    np.testing.assert_allclose(run(pipe), reference, atol=1e-5)
    np.testing.assert_allclose(run(pipe), reference, atol=1e-5)  # hooks reset after each call (free hooks)


def test_set_progress_bar_config(capsys):
    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(desc="denoising-xyz")
    pipe([7], num_inference_steps=3, output_type="np")
    err = capsys.readouterr().err
    assert "denoising-xyz" in err and "3/3" in err
    pipe.set_progress_bar_config(disable=True)
    pipe([7], num_inference_steps=3, output_type="np")
    assert capsys.readouterr().err == ""
