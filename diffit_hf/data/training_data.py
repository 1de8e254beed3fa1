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
    labelled: bool = True

    def num_classes(self, requested: int = 0) -> int:
        """The model's class count: the data's class names, else `requested` (e.g. from `--model-config`); 0 for
        unlabelled data (unconditional training), where asking for classes is a `ValueError`."""
        if not self.labelled:
            if requested:
                raise ValueError(f"The training data has no labels, so the model cannot have num_classes={requested}:"
                                 " drop num_classes from --model-config (unconditional training), or pass a labelled "
                                 "dataset (--label-column names its label column).")
            return 0
        return len(self.class_names) if self.class_names else requested


def _collate_pixels(rows: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([r["pixel_values"] for r in rows]), torch.tensor([r.get("label", -1) for r in rows])


def load_training_data(latents: str | None = None, dataset: str | None = None, resolution: int = 32,
                       grayscale: bool = False, random_flip: bool = False, seed: int = 0, image_column: str = "image",
                       label_column: str | None = "label") -> TrainingData:
    """Latents from a cache made by `encode_latents.py` (resampled from the stored mean/std each epoch, seeded), or
    the `train` split of an image dataset (`load_image_dataset`, its columns named by `image_column` and
    `label_column`) at `resolution`."""
    if (latents is None) == (dataset is None):
        raise ValueError("Pass a latent cache (--latents) or an image dataset (--dataset), exactly one of them.")
    if latents is not None:
        data = LatentDataset(latents, resample=True, random_flip=random_flip, seed=seed)
        labelled = len(data) > 0 and bool(data.labels.min() >= 0)  # an unlabelled dataset is cached with -1
        return TrainingData(data, None, data.latent_shape, data.class_names, data.meta, labelled)
    images = load_image_dataset(dataset, "train", image_column, label_column)
    images.set_transform(image_transform(resolution, grayscale, random_flip=random_flip, seed=seed))
    names = getattr(images.features.get("label"), "names", None)
    return TrainingData(images, _collate_pixels, (1 if grayscale else 3, resolution, resolution), names, None,
                        "label" in images.column_names)
