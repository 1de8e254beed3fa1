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
