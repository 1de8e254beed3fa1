"""Fashion-MNIST from Debian's `dataset-fashion-mnist` package (idx `.gz` files) as a `datasets.DatasetDict`."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image

FASHION_MNIST_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
SPLITS = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60_000),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10_000)}
INSTALL_HINT = "Install it with `apt-get install -y dataset-fashion-mnist` (bash scripts/setup.sh does this)."


def read_idx(path: Path) -> np.ndarray:
    """Reads an idx file (gzip-compressed) into a uint8 array; ValueError naming the file if it is corrupt."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"{path} is not a readable gzip idx file ({err}).") from err
    if len(data) < 8:
        raise ValueError(f"{path} is truncated: {len(data)} bytes, not even an idx header.")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08 or ndim not in (1, 3):
        raise ValueError(f"{path} has a bad idx magic number (dtype 0x{dtype_code:02x}, {ndim} dims).")
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise ValueError(f"{path} is truncated or corrupt: {len(data)} bytes, the header {dims} needs {expected}.")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load_fashion_mnist(root: str | Path | None = None, splits: tuple[str, ...] = ("train", "test"),
                       limit: int | None = None) -> DatasetDict:
    """Fashion-MNIST as `DatasetDict` with `image` (`datasets.Image`, 28x28 grayscale) and `label` (`ClassLabel`,
    the 10 official names) columns: `train` (60,000) and `test` (10,000); with `limit`, each split's first `limit`
    rows only (the files are still checked whole; the PNG encoding of the rest is skipped)."""
    root = Path(root) if root is not None else FASHION_MNIST_DIR
    if not root.is_dir():
        raise FileNotFoundError(f"Fashion-MNIST not found at {root}. {INSTALL_HINT}")
    features = Features({"image": Image(), "label": ClassLabel(names=FASHION_MNIST_CLASSES)})
    out = {}
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"Unknown split {split!r}; valid splits are {', '.join(SPLITS)}.")
        images_file, labels_file, count = SPLITS[split]
        for name in (images_file, labels_file):
            if not (root / name).is_file():
                raise FileNotFoundError(f"{root / name} is missing. {INSTALL_HINT}")
        images, labels = read_idx(root / images_file), read_idx(root / labels_file)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"{root / images_file} and {root / labels_file} disagree: {images.shape} vs {labels.shape}."
            )
        if root == FASHION_MNIST_DIR and len(images) != count:
            raise ValueError(f"{root / images_file} holds {len(images)} images, Fashion-MNIST {split} has {count}.")
        if labels.max(initial=0) >= len(FASHION_MNIST_CLASSES):
            raise ValueError(f"{root / labels_file} has label {labels.max()}, outside the 10 classes.")
        images, labels = images[:limit], labels[:limit]  # limit None: all
        # datasets' Image feature takes a (H, W) uint8 array per row and stores it as PNG
        out[split] = Dataset.from_dict({"image": list(images), "label": labels.tolist()}, features=features)
    return DatasetDict(out)
