"""Encode an image dataset once into a latent cache (VAE mean/std + labels), sharded across accelerate processes.

    # offline: our trained VAE on Fashion-MNIST
    accelerate launch training/encode_latents.py --vae outputs/vae --dataset fashion-mnist --resolution 32 \
        --grayscale --out outputs/latents-fmnist-32
    # with the Hub: SD's VAE on ImageNet at 256 px -> 32x32x4 latents, both orientations, bf16 storage
    accelerate launch training/encode_latents.py --vae stabilityai/sd-vae-ft-ema --dataset imagenet-1k \
        --resolution 256 --random-flip --dtype bf16 --num-workers 8 --out latents-in1k-256
    # an image folder without class sub-folders: unconditional (or --label-column none for any dataset)
    accelerate launch training/encode_latents.py --vae outputs/vae --dataset my-images/ --out latents-mine

Resumable: rerunning skips shards already complete; a cache made with another VAE or resolution is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from accelerate import Accelerator

from diffit_hf.data import encode_dataset
from diffit_hf.data.cache_format import STORAGE_DTYPES
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
    label_column: str = field(default="label", metadata={
        "help": "the dataset's label column; 'none': unlabelled (unconditional training)"})
    resolution: int = field(default=32, metadata={"help": "images are resized and center-cropped to it"})
    grayscale: bool = field(default=False, metadata={"help": "encode 1-channel images"})
    shard_size: int = field(default=1024, metadata={"help": "latents per cache shard"})
    batch_size: int = field(default=64, metadata={"help": "images per VAE forward pass"})
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers decoding and resizing images"})
    dtype: str = field(default="fp32", metadata={"choices": list(STORAGE_DTYPES),
                                                 "help": "storage of the latents' mean and std (bf16: half the disk)"})
    random_flip: bool = field(default=False, metadata={
        "help": "also encode every image mirrored left-right (train_latent.py --random-flip picks one)"})
    out: str | None = field(default=None, metadata={"help": "the cache folder to write (required)"})

    def __post_init__(self):
        if self.vae is None:
            raise ValueError("--vae is required: an AutoencoderKL folder or Hub id.")
        if self.out is None:
            raise ValueError("--out is required: the cache folder to write.")
        if self.num_workers < 0:
            raise ValueError(f"--num-workers must be >= 0, got {self.num_workers}.")


def main(cfg: EncodeConfig) -> dict:
    accelerator = Accelerator()
    set_cpu_threads(accelerator)
    return encode_dataset(accelerator, cfg.vae, cfg.dataset, cfg.out, cfg.resolution, cfg.grayscale, cfg.split,
                          cfg.image_column, cfg.label_column, cfg.vae_subfolder, cfg.shard_size, cfg.batch_size,
                          dtype=cfg.dtype, random_flip=cfg.random_flip, num_workers=cfg.num_workers)


if __name__ == "__main__":
    main(parse_config(EncodeConfig))
