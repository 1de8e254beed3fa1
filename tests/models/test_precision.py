"""bf16 after `from_pretrained(torch_dtype=...)` and after `.to(dtype)`: every model family and variant, and the
pipeline, whose images stay close to fp32's (measured on these tiny models, 10 DDPM steps: max |diff| 0.014-0.017,
mean 0.0015-0.003 on images in [0, 1])."""

import warnings

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from diffit_hf import DiffiTModel, DiffiTPipeline, DiffiTUNetModel, DiTModel

from ..tiny import perturb as _perturb
from ..tiny import run, tiny_pipeline
from .variants import VARIANTS, build, inputs


def loaded(model, how: str, dtype: torch.dtype, folder):
    if how == "to":
        return model.to(dtype)
    model.save_pretrained(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # diffusers' deprecation of `torch_dtype` in favour of `dtype`
        return type(model).from_pretrained(folder, torch_dtype=dtype)


@pytest.mark.parametrize("how", ["from_pretrained", "to"])
@pytest.mark.parametrize("name", VARIANTS)
def test_every_model_runs_in_bf16(name, how, tmp_path):
    model = build(name).eval()
    x, t, y = inputs(model)
    with torch.no_grad():
        ref = model(x, t, y).sample
        half = loaded(model, how, torch.bfloat16, tmp_path)
        assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
        out = half(x.bfloat16(), t, y).sample
        other_size = VARIANTS[name][2][-1]  # a non-default input size: a positional table computed on the fly
        x2 = torch.randn(2, model.config.in_channels, *other_size, dtype=torch.bfloat16)
        assert half(x2, t[:2], None if y is None else y[:2]).sample.dtype == torch.bfloat16
    assert out.dtype == torch.bfloat16 and out.isfinite().all()
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max() + 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 kernels need a GPU (CPU fp16 is emulated, ~100x slow)")
@pytest.mark.parametrize("name", VARIANTS)
def test_every_model_runs_in_fp16_on_a_gpu(name, tmp_path):
    model = build(name).eval()
    x, t, y = inputs(model)
    with torch.no_grad():
        ref = model(x, t, y).sample
        half = loaded(model, "from_pretrained", torch.float16, tmp_path).cuda()
        out = half(x.half().cuda(), t.cuda(), None if y is None else y.cuda()).sample.cpu()
    assert out.dtype == torch.float16 and out.isfinite().all()
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max() + 0.05


def unet_pipeline():
    unet = _perturb(DiffiTUNetModel(sample_size=16, in_channels=1, block_out_channels=(16,), layers_per_block=(1,),
                                    window_size=4, attention_head_dim=8, norm_num_groups=4, num_classes=0))
    return DiffiTPipeline(transformer=unet, scheduler=DDPMScheduler(), vae=None)


PIPELINES = {"dit": (lambda: tiny_pipeline(DiTModel), (7, 8)), "diffit": (lambda: tiny_pipeline(DiffiTModel), (7, 8)),
             "unet": (unet_pipeline, None)}


@pytest.mark.parametrize("how", ["from_pretrained", "to"])
@pytest.mark.parametrize("name", PIPELINES)
def test_pipeline_samples_in_bf16_close_to_fp32(name, how, tmp_path):
    make, labels = PIPELINES[name]
    pipe = make()
    reference = run(pipe, labels=labels, steps=10)
    pipe.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if how == "from_pretrained":
            half = DiffiTPipeline.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
        else:
            half = DiffiTPipeline.from_pretrained(tmp_path).to(torch.bfloat16)
    assert half.transformer.dtype == torch.bfloat16 and (half.vae is None or half.vae.dtype == torch.bfloat16)
    images = run(half, labels=labels, steps=10)
    diff = np.abs(images - reference)
    assert 0 < diff.max() < 0.05 and diff.mean() < 0.01, (diff.max(), diff.mean())  # bf16 was used, and is close
