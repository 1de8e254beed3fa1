"""Encode an image dataset once into a latent cache (VAE mean/std + labels), sharded across accelerate processes.

    # offline: our trained VAE on Fashion-MNIST
    accelerate launch training/encode_latents.py --vae outputs/vae --dataset fashion-mnist --resolution 32 \
        --grayscale --out outputs/latents-fmnist-32
    # with the Hub: SD's VAE on ImageNet at 256 px -> 32x32x4 latents
    accelerate launch training/encode_latents.py --vae stabilityai/sd-vae-ft-ema --dataset imagenet-1k \
        --resolution 256 --out latents-in1k-256

Resumable: rerunning skips shards already complete; a cache made with another VAE or resolution is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from accelerate import Accelerator

from diffit_hf.data import encode_dataset
from diffit_hf.training.config import parse_config
from diffit_hf.training.runtime import set_cpu_threads


@dataclass
class EncodeConfig:
    """Encode an image dataset into a latent cache (see training/encode_latents.py)."""

    vae: str | None = field(default=None, metadata={"help": "AutoencoderKL folder or Hub id (required)"})
    vae_subfolder: str | None = field(default=None, metadata={"help": "e.g. 'vae' inside a pipeline repo"})
    dataset: str = field(default="fashion-mnist", metadata={
        "help": "fashion-mnist, an image folder, a saved dataset folder, or a Hub dataset id"})
    split: str = field(default="train", metadata={"help": "the dataset split to encode"})
    image_column: str = field(default="image", metadata={"help": "the dataset's image column"})
    label_column: str = field(default="label", metadata={"help": "the dataset's label column"})
    resolution: int = field(default=32, metadata={"help": "images are resized and center-cropped to it"})
    grayscale: bool = field(default=False, metadata={"help": "encode 1-channel images"})
    shard_size: int = field(default=1024, metadata={"help": "latents per cache shard"})
    batch_size: int = field(default=64, metadata={"help": "images per VAE forward pass"})
    out: str | None = field(default=None, metadata={"help": "the cache folder to write (required)"})

    def __post_init__(self):
        if self.vae is None:
            raise ValueError("--vae is required: an AutoencoderKL folder or Hub id.")
        if self.out is None:
            raise ValueError("--out is required: the cache folder to write.")


def main(cfg: EncodeConfig) -> dict:
    accelerator = Accelerator()
    set_cpu_threads(accelerator)
    return encode_dataset(accelerator, cfg.vae, cfg.dataset, cfg.out, cfg.resolution, cfg.grayscale, cfg.split,
                          cfg.image_column, cfg.label_column, cfg.vae_subfolder, cfg.shard_size, cfg.batch_size)


if __name__ == "__main__":
    main(parse_config(EncodeConfig))
