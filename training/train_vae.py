"""Train a diffusers `AutoencoderKL` with accelerate: reconstruction (L1 or MSE) + a small KL term (latent diffusion).

    # offline demo default: Fashion-MNIST 32x32 grayscale, downsampling 2 -> 16x16x4 latents
    accelerate launch training/train_vae.py --output-dir outputs/vae
    # 128x128 RGB images -> 32x32x4 latents (downsampling 4 = three blocks)
    accelerate launch training/train_vae.py --dataset path/to/images --resolution 128 --no-grayscale \
        --block-out-channels 64 128 256 --output-dir outputs/vae-128

Writes `OUTPUT_DIR/` (config.json + safetensors, loadable with `AutoencoderKL.from_pretrained`, with
`scaling_factor = 1 / std(latents)` measured on the training set), `checkpoints/checkpoint-STEP/` (accelerate
state: resume with `--resume-from-checkpoint latest`), `reconstructions.png` and `metrics.json` (test-split PSNR).
"""

from __future__ import annotations

from diffit_hf.training.config import parse_config
from diffit_hf.training.vae import VAETrainConfig, train_vae

__all__ = ["VAETrainConfig", "main"]


def main(cfg: VAETrainConfig) -> dict:
    return train_vae(cfg)


if __name__ == "__main__":
    main(parse_config(VAETrainConfig))
