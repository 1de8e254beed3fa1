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

import argparse

import torch
from accelerate import Accelerator
from diffusers import AutoencoderKL

from diffit_hf.data import load_image_dataset
from diffit_hf.data.latent_cache import encode_to_cache
from diffit_hf.training.runtime import set_cpu_threads


def encode_dataset(accelerator: Accelerator, vae_path: str, dataset: str, out: str, resolution: int,
                   grayscale: bool = False, split: str = "train", image_column: str = "image",
                   label_column: str = "label", vae_subfolder: str | None = None, shard_size: int = 1024,
                   batch_size: int = 64) -> dict:
    """Every process encodes its shards; then the main process verifies them all and writes the index."""
    vae = AutoencoderKL.from_pretrained(vae_path, subfolder=vae_subfolder).to(accelerator.device).eval()
    data = load_image_dataset(dataset, split, image_column, label_column)
    kwargs = dict(vae_id=vae_path, shard_size=shard_size, batch_size=batch_size)
    with torch.no_grad():
        meta = encode_to_cache(vae, data, out, resolution, grayscale, process_index=accelerator.process_index,
                               num_processes=accelerator.num_processes, progress=accelerator.is_local_main_process,
                               **kwargs)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:  # every shard is there now: verify them all and write the index
            meta = encode_to_cache(vae, data, out, resolution, grayscale, progress=False, **kwargs)
            print(f"cache {out}: {meta['num_samples']} latents of shape {meta['latent_shape']} "
                  f"in {meta['num_shards']} shards, scaling factor {meta['scaling_factor']}")
    accelerator.wait_for_everyone()
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae", required=True, help="AutoencoderKL folder or Hub id")
    parser.add_argument("--vae-subfolder", default=None, help="e.g. 'vae' inside a pipeline repo")
    parser.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist, an image folder, a saved dataset "
                        "folder, or a Hub dataset id")
    parser.add_argument("--split", default="train")
    parser.add_argument("--image-column", default="image")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--grayscale", action="store_true")
    parser.add_argument("--shard-size", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    accelerator = Accelerator()
    set_cpu_threads(accelerator)
    encode_dataset(accelerator, args.vae, args.dataset, args.out, args.resolution, args.grayscale, args.split,
                   args.image_column, args.label_column, args.vae_subfolder, args.shard_size, args.batch_size)


if __name__ == "__main__":
    main()
