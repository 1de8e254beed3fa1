"""Tiny builders shared by several test modules (not a test module itself, like hub_server.py)."""

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler
from safetensors.torch import load_file

from diffit_hf import DiffiTPipeline, DiTModel
from diffit_hf.models.presets import create_model_for_data

NAMES = {0: "T-shirt/top", 1: "Trouser", 2: "Pullover", 3: "Dress", 4: "Coat", 5: "Sandal", 6: "Shirt",
         7: "Sneaker", 8: "Bag", 9: "Ankle boot"}
TINY = dict(num_layers=2, num_attention_heads=2, attention_head_dim=8)


def tiny_vae(sample_size: int = 16, scaling_factor: float = 0.5, seed: int = 0) -> AutoencoderKL:
    """A seeded 2-level grayscale AutoencoderKL: `sample_size` pixels -> `sample_size / 2` latents, 4 channels."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(8, 16), latent_channels=4,
        norm_num_groups=8, sample_size=sample_size, scaling_factor=scaling_factor,
    ).eval()


def weights(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors of a save_pretrained model folder."""
    return load_file(str(Path(folder) / "diffusion_pytorch_model.safetensors"))


def save_tiny_pixel_pipeline(folder: Path, sample_size: int = 32, patch_size: int = 8, std: float = 0.05) -> Path:
    """A saved pixel-space pipeline (no VAE, DDPMScheduler): a 1-block grayscale DiT for Fashion-MNIST's 10 classes,
    its weights perturbed (seeded) so that every layer matters. Returns `folder`."""
    from diffusers import DDPMScheduler

    from diffit_hf import DiffiTPipeline, DiTModel
    from diffit_hf.data import FASHION_MNIST_CLASSES

    from .conftest import _perturb

    torch.manual_seed(0)
    model = _perturb(DiTModel(sample_size=sample_size, patch_size=patch_size, in_channels=1, num_layers=1,
                              num_attention_heads=2, attention_head_dim=8, num_classes=10, learn_sigma=False), std=std)
    DiffiTPipeline(transformer=model, scheduler=DDPMScheduler(),
                   id2label=dict(enumerate(FASHION_MNIST_CLASSES))).save_pretrained(folder)
    return Path(folder)


def perturb(model, std=0.05):
    """Seeded noise on every parameter (zero-initialised layers included, so every path matters); eval mode."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn_like(p))
    return model.eval()


def tiny_pipeline(model_cls=DiTModel, learn_sigma=True, num_classes=10, scheduler=None, **overrides):
    """A perturbed 2-block model (8x8x4 latents) with the tiny VAE and Fashion-MNIST's class names."""
    torch.manual_seed(0)
    model = perturb(model_cls(sample_size=8, patch_size=2, in_channels=4, num_layers=2, num_attention_heads=2,
                              attention_head_dim=8, num_classes=num_classes, learn_sigma=learn_sigma, **overrides))
    scheduler = scheduler or DDPMScheduler(variance_type="learned_range" if learn_sigma else "fixed_small")
    return DiffiTPipeline(transformer=model, scheduler=scheduler, vae=tiny_vae(),
                          id2label=NAMES if num_classes == 10 else None)


def run(pipe, labels=(7, 8), steps=2, seed=0, **kwargs):
    """Images (numpy) of `labels`, seeded."""
    pipe.set_progress_bar_config(disable=True)
    return pipe(labels, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed), output_type="np",
                **kwargs).images


def trained(name="DiT-S/2", classes=10, seed=1):
    """A tiny model whose weights are all non-trivial (zero-initialised layers perturbed), as after training."""
    torch.manual_seed(seed)
    model = create_model_for_data(name, (4, 8, 8), classes, **TINY)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model
