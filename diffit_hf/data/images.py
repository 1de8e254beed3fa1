"""Image sources and the one preprocessing path shared by VAE training, latent encoding and pixel-space training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, DatasetDict, load_dataset, load_from_disk
from PIL import Image

from .fashion_mnist import load_fashion_mnist


def load_image_dataset(source: str, split: str = "train", image_column: str = "image",
                       label_column: str | None = "label") -> Dataset:
    """One split of an image dataset, with columns renamed to `image` and `label`.

    `source` is `"fashion-mnist"` (offline, Debian package), a directory saved with `Dataset.save_to_disk`, a local
    image folder (one sub-folder per class, loaded with `imagefolder`; images directly in it: no label column, an
    unconditional dataset), or a Hub dataset id (needs the Hub).
    """
    path = Path(source)
    if source == "fashion-mnist":
        data = load_fashion_mnist(splits=(split,))
    elif path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        data = load_from_disk(str(path))
    elif path.is_dir():
        data = load_dataset("imagefolder", data_dir=str(path))
    elif path.exists():
        raise ValueError(f"{source} is a file; pass a folder of images, a saved dataset folder, or a dataset id.")
    else:
        data = load_dataset(source, split=split)
    if isinstance(data, DatasetDict):
        if split not in data:
            raise ValueError(f"{source} has no split {split!r}; available: {', '.join(data)}.")
        data = data[split]
    if label_column == "label" and "label" not in data.column_names and path.is_dir():
        label_column = None  # a folder of images without class sub-folders: unconditional data
    for wanted, role in ((image_column, "image"), (label_column, "label")):
        if wanted is not None and wanted not in data.column_names:
            raise ValueError(f"{source} has no {role} column {wanted!r}; columns are {', '.join(data.column_names)}.")
    if image_column != "image":
        data = data.rename_column(image_column, "image")
    if label_column is not None and label_column != "label":
        data = data.rename_column(label_column, "label")
    return data


def center_crop_resize(image: Image.Image, resolution: int) -> Image.Image:
    """ADM-style: halve with a box filter while the short side >= 2x the target, bicubic-resize the short side to
    `resolution`, then center-crop to a square."""
    while min(image.size) >= 2 * resolution:
        image = image.resize(tuple(s // 2 for s in image.size), resample=Image.BOX)
    scale = resolution / min(image.size)
    image = image.resize(tuple(round(s * scale) for s in image.size), resample=Image.BICUBIC)
    left, top = (image.size[0] - resolution) // 2, (image.size[1] - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution))


def preprocess_image(image: Image.Image, resolution: int, grayscale: bool = False, flip: bool = False) -> torch.Tensor:
    """PIL image -> (C, resolution, resolution) float tensor in [-1, 1]; C = 1 (grayscale) or 3 (RGB)."""
    image = center_crop_resize(image.convert("L" if grayscale else "RGB"), resolution)
    if flip:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    array = np.asarray(image, dtype=np.float32)
    tensor = torch.from_numpy(array[None] if grayscale else array.transpose(2, 0, 1).copy())
    return tensor / 127.5 - 1.0


def image_transform(resolution: int, grayscale: bool = False, random_flip: bool = False, seed: int | None = None):
    """A `Dataset.set_transform` function adding `pixel_values` ((C, H, W) in [-1, 1]) to each batch; horizontal flips
    with probability 1/2 when `random_flip`."""
    rng = np.random.default_rng(seed)

    def transform(batch: dict) -> dict:
        batch["pixel_values"] = [
            preprocess_image(img, resolution, grayscale, flip=random_flip and bool(rng.random() < 0.5))
            for img in batch["image"]
        ]
        return batch

    return transform


def load_image_tensors(source: str, split: str, resolution: int, grayscale: bool = False,
                       limit: int | None = None, image_column: str = "image",
                       label_column: str | None = "label") -> tuple[torch.Tensor, torch.Tensor | None]:
    """A whole split (or its first `limit` rows) preprocessed to `(N, C, res, res)` in [-1, 1], and its labels."""
    data = load_image_dataset(source, split, image_column, label_column)
    if limit is not None and limit < len(data):
        data = data.select(range(limit))
    images = torch.stack([preprocess_image(img, resolution, grayscale) for img in data["image"]])
    labels = torch.tensor(data["label"]) if label_column is not None else None
    return images, labels
