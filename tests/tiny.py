"""Tiny builders shared by several test modules (not a test module itself, like hub_server.py)."""

from pathlib import Path

import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file


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
