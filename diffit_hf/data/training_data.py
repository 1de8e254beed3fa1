"""The training set of a denoiser: cached VAE latents, or images for pixel-space models."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from .images import image_transform, load_image_dataset
from .latent_cache import LatentDataset


@dataclass
class TrainingData:
    """A dataset of `(x, label)` rows with its collate function, sample shape `(C, H, W)`, class names and, for
    latents, the cache's index (its VAE: `load_cache_vae(data.cache_meta)`)."""

    dataset: Dataset
    collate_fn: Callable | None
    shape: tuple[int, int, int]
    class_names: list[str] | None
    cache_meta: dict | None


def _collate_pixels(rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([r["pixel_values"] for r in rows]), torch.tensor([r.get("label", -1) for r in rows])


def load_training_data(latents: str | None = None, dataset: str | None = None, resolution: int = 32,
                       grayscale: bool = False, random_flip: bool = False, seed: int = 0) -> TrainingData:
    """Latents from a cache made by `encode_latents.py` (resampled from the stored mean/std each epoch, seeded), or
    the `train` split of an image dataset (`load_image_dataset`) at `resolution`."""
    if (latents is None) == (dataset is None):
        raise ValueError("Pass a latent cache (--latents) or an image dataset (--dataset), exactly one of them.")
    if latents is not None:
        data = LatentDataset(latents, resample=True, random_flip=random_flip, seed=seed)
        return TrainingData(data, None, data.latent_shape, data.class_names, data.meta)
    images = load_image_dataset(dataset, "train")
    images.set_transform(image_transform(resolution, grayscale, random_flip=random_flip, seed=seed))
    names = getattr(images.features.get("label"), "names", None)
    return TrainingData(images, _collate_pixels, (1 if grayscale else 3, resolution, resolution), names, None)
