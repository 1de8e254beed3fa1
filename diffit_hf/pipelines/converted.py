"""Runnable pipelines around converted ImageNet checkpoints (official DiT, diffusers DiT, NVIDIA's DiffiT): the
transformer, the SD VAE the papers decode with, the scheduler our training saves, and ImageNet-1k class names."""

from __future__ import annotations

from diffusers.models import AutoencoderKL
from torch import nn

from ..data.imagenet import imagenet_id2label
from .pipeline_diffit import DiffiTPipeline
from .schedules import dit_scheduler

# The VAE of DiT's and DiffiT's ImageNet results (both sample.py scripts default to the "ema" fine-tune).
SD_VAE = "stabilityai/sd-vae-ft-ema"


def load_vae(name_or_path: str = SD_VAE) -> AutoencoderKL:
    """An `AutoencoderKL` from a Hub id (cached or downloaded) or a local folder, with an offline hint on failure."""
    try:
        return AutoencoderKL.from_pretrained(name_or_path).eval()
    except (OSError, ValueError) as err:
        raise OSError(
            f"Could not load the VAE {name_or_path!r} ({type(err).__name__}: {str(err).splitlines()[0]}). Offline, "
            f"download {SD_VAE} once where there is a connection and pass its local folder with --vae PATH, or "
            "pass --vae none to write the transformer folder alone (not a runnable pipeline)."
        ) from err


def converted_pipeline(transformer: nn.Module, vae: AutoencoderKL, id2label: dict[int, str] | None = None
                       ) -> DiffiTPipeline:
    """A `DiffiTPipeline` for a converted latent ImageNet model: DiT's own sampling (`dit_scheduler`: DDPM with
    the learned variance, DiT's timesteps, no clipping; also what our training saves), and the ImageNet-1k class
    names when the model has 1000 classes (unless `id2label` is given)."""
    if vae.config.latent_channels != transformer.config.in_channels:
        raise ValueError(f"The VAE has {vae.config.latent_channels} latent channels, the transformer takes "
                         f"{transformer.config.in_channels}.")
    if id2label is None and transformer.config.num_classes == 1000:
        id2label = imagenet_id2label()
    scheduler = dit_scheduler(learn_sigma=transformer.config.learn_sigma)
    return DiffiTPipeline(transformer=transformer.eval(), scheduler=scheduler, vae=vae, id2label=id2label)
