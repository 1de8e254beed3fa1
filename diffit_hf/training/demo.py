"""The offline demo chain: Fashion-MNIST (Debian's package) -> our VAE -> a latent cache, each built only if absent,
so that `accelerate launch training/train_latent.py` with no data arguments trains end to end without the Hub."""

from __future__ import annotations

import time
from pathlib import Path

from ..data import encode_dataset
from .vae import VAETrainConfig, train_vae

DEMO_VAE = "outputs/vae-fmnist"
DEMO_LATENTS = "outputs/latents-fmnist-32"


def prepare_demo_latents(accelerator, mixed_precision: str = "no", seed: int = 0,
                         cpu_threads: int | None = None) -> tuple[str, dict[str, float]]:
    """Builds what is missing of the demo's VAE and latent cache; returns the cache folder and the seconds each
    stage that ran took."""
    seconds = {}
    if not (Path(DEMO_VAE) / "config.json").exists():
        accelerator.print(f"demo: training the Fashion-MNIST VAE into {DEMO_VAE} (once)")
        start = time.time()
        train_vae(VAETrainConfig(output_dir=DEMO_VAE, mixed_precision=mixed_precision, seed=seed,
                                 cpu_threads=cpu_threads, resume_from_checkpoint="latest"))  # after a crash too
        seconds["vae"] = time.time() - start
    accelerator.wait_for_everyone()
    if not (Path(DEMO_LATENTS) / "index.json").exists():
        accelerator.print(f"demo: encoding Fashion-MNIST train into {DEMO_LATENTS} (once)")
        start = time.time()
        encode_dataset(accelerator, DEMO_VAE, "fashion-mnist", DEMO_LATENTS, resolution=32, grayscale=True)
        seconds["cache"] = time.time() - start
    return DEMO_LATENTS, seconds
