"""Image sources and the one preprocessing path shared by VAE training, latent encoding and pixel-space training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, DatasetDict, load_dataset, load_from_disk
from PIL import Image

from .fashion_mnist import load_fashion_mnist

NO_LABELS = ("", "none")  # --label-column values meaning an unlabelled dataset (unconditional training)


def load_image_dataset(source: str, split: str = "train", image_column: str = "image",
                       label_column: str | None = "label", limit: int | None = None) -> Dataset:
    """One split of an image dataset, with columns renamed to `image` and `label` (no `label` column when unlabelled).

    `source` is `"fashion-mnist"` (offline, Debian package), a directory saved with `Dataset.save_to_disk`, a local
    image folder (one sub-folder per class, loaded with `imagefolder`; images directly in the folder: unlabelled), or
    a Hub dataset id (needs the Hub, or its local cache with `HF_HUB_OFFLINE=1`). `label_column=None` (or `"none"`)
    reads a dataset as unlabelled, for unconditional training. `limit`: the first `limit` rows only.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 (or None for all rows), got {limit}.")
    path = Path(source)
    if label_column is not None and label_column.lower() in NO_LABELS:
        label_column = None
    folder = False
    if source == "fashion-mnist":
        data = load_fashion_mnist(splits=(split,), limit=limit)
    elif path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        data = load_from_disk(str(path))
    elif path.is_dir():
        data, folder = load_dataset("imagefolder", data_dir=str(path)), True
    elif path.exists():
        raise ValueError(f"{source} is a file; pass a folder of images, a saved dataset folder, or a dataset id.")
    elif source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise FileNotFoundError(f"No such dataset folder: {source} (and it is not a Hub id like 'owner/name').")
    else:
        try:
            data = load_dataset(source, split=split)
        except ConnectionError as err:  # datasets' own offline error; without HF_HUB_OFFLINE it retries first
            raise ConnectionError(
                f"{source!r} is not a local folder and could not be loaded from the Hub ({err}). Without internet, "
                "pass fashion-mnist, a folder of images, or a dataset saved with Dataset.save_to_disk; a Hub dataset "
                "must be downloaded (and cached) first, then HF_HUB_OFFLINE=1 reads the cache without waiting."
            ) from err
    if isinstance(data, DatasetDict):
        if split not in data:
            raise ValueError(f"{source} has no split {split!r}; available: {', '.join(data)}.")
        data = data[split]
    if folder and label_column == "label" and "label" not in data.column_names:
        label_column = None  # an image folder without class sub-folders: unlabelled
    for wanted, role in ((image_column, "image"), (label_column, "label")):
        if wanted is not None and wanted not in data.column_names:
            hint = " (--label-column none for an unlabelled dataset)" if role == "label" else ""
            raise ValueError(f"{source} has no {role} column {wanted!r}; columns are "
                             f"{', '.join(data.column_names)}{hint}.")
    if image_column != "image":
        data = data.rename_column(image_column, "image")
    if label_column is None and "label" in data.column_names:
        data = data.remove_columns("label")
    if label_column is not None and label_column != "label":
        if "label" in data.column_names:
            data = data.remove_columns("label")
        data = data.rename_column(label_column, "label")
    if limit is not None and limit < len(data):
        data = data.select(range(limit))
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
    data = load_image_dataset(source, split, image_column, label_column, limit)
    images = torch.stack([preprocess_image(img, resolution, grayscale) for img in data["image"]])
    labels = torch.tensor(data["label"]) if "label" in data.column_names else None
    return images, labels
