import gzip
import struct

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset
from PIL import Image

from diffit_hf.data import (
    FASHION_MNIST_CLASSES,
    center_crop_resize,
    image_transform,
    load_fashion_mnist,
    load_image_dataset,
    load_image_tensors,
    preprocess_image,
    read_idx,
)


def write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_idx_dir(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 6), ("t10k", 4)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return tmp_path


def test_idx_round_trip_and_dataset_columns(tiny_idx_dir):
    images = read_idx(tiny_idx_dir / "train-images-idx3-ubyte.gz")
    data = load_fashion_mnist(tiny_idx_dir)
    assert set(data) == {"train", "test"} and len(data["train"]) == 6 and len(data["test"]) == 4
    assert isinstance(data["train"].features["label"], ClassLabel)
    assert data["train"].features["label"].names == FASHION_MNIST_CLASSES
    row = data["train"][3]
    assert row["label"] == 3 and row["image"].size == (28, 28) and row["image"].mode == "L"
    assert np.array_equal(np.asarray(row["image"]), images[3])  # PNG storage is lossless


def test_limit_keeps_the_first_rows_and_checks_the_whole_file(tiny_idx_dir, monkeypatch):
    full = load_fashion_mnist(tiny_idx_dir)
    limited = load_fashion_mnist(tiny_idx_dir, limit=3)
    assert [len(limited[s]) for s in ("train", "test")] == [3, 3]
    for split in ("train", "test"):
        assert limited[split]["label"] == full[split]["label"][:3]
        assert all(np.array_equal(np.asarray(a), np.asarray(b))
                   for a, b in zip(limited[split]["image"], full[split]["image"][:3]))
    monkeypatch.setattr("diffit_hf.data.images.load_fashion_mnist",
                        lambda splits, limit: load_fashion_mnist(tiny_idx_dir, splits, limit))
    images, labels = load_image_tensors("fashion-mnist", "train", 32, grayscale=True, limit=2)
    all_images, all_labels = load_image_tensors("fashion-mnist", "train", 32, grayscale=True)
    assert torch.equal(images, all_images[:2]) and torch.equal(labels, all_labels[:2]) and len(all_labels) == 6
    with pytest.raises(ValueError, match="limit must be >= 1"):
        load_image_dataset("fashion-mnist", "train", limit=0)
    write_idx(tiny_idx_dir / "train-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3, 4, 12]))  # bad row after the limit
    with pytest.raises(ValueError, match="outside the 10 classes"):
        load_fashion_mnist(tiny_idx_dir, limit=2)


def test_truncated_idx_file_is_named(tiny_idx_dir):
    path = tiny_idx_dir / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "rb") as f:
        raw = f.read()
    with gzip.open(path, "wb") as f:
        f.write(raw[:-100])  # a short payload behind a valid header
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz is truncated"):
        load_fashion_mnist(tiny_idx_dir)
    path.write_bytes(path.read_bytes()[:40])  # a cut gzip stream
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz"):
        load_fashion_mnist(tiny_idx_dir)


def test_missing_package_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path)  # folder exists, files do not


def test_real_fashion_mnist_from_debian_package():
    # parse the installed idx files directly (fast): official counts, balanced classes
    root = "/usr/share/datasets/fashion-mnist"
    train_labels = read_idx(f"{root}/train-labels-idx1-ubyte.gz")
    assert read_idx(f"{root}/train-images-idx3-ubyte.gz").shape == (60_000, 28, 28)
    assert (np.bincount(train_labels, minlength=10) == 6000).all()
    test = load_fashion_mnist(splits=("test",))["test"]
    assert len(test) == 10_000
    assert (np.bincount(test["label"], minlength=10) == 1000).all()
    assert test.features["label"].int2str(test[0]["label"]) == "Ankle boot"


def test_center_crop_resize_adm_style():
    image = Image.new("RGB", (300, 100), "white")
    out = center_crop_resize(image, 32)
    assert out.size == (32, 32)
    wide = Image.fromarray(np.tile(np.arange(90, dtype=np.uint8), (30, 1)))  # 90x30, intensity = column
    crop = np.asarray(center_crop_resize(wide, 30))
    assert crop.shape == (30, 30) and abs(int(crop[0, 0]) - 30) <= 1  # the middle third was kept


def test_preprocess_range_channels_and_flip():
    array = np.zeros((8, 8, 3), dtype=np.uint8)
    array[:, :4] = 255
    image = Image.fromarray(array)
    rgb = preprocess_image(image, 8)
    assert rgb.shape == (3, 8, 8) and rgb.min() == -1 and rgb.max() == 1
    assert torch.equal(preprocess_image(image, 8, flip=True), rgb.flip(-1))
    gray = preprocess_image(image, 8, grayscale=True)
    assert gray.shape == (1, 8, 8)


def test_image_folder_and_saved_dataset_sources(tmp_path, tiny_idx_dir):
    for cls in ("cat", "dog"):
        (tmp_path / "folder" / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (10, 12), (i * 100, 0, 0)).save(tmp_path / "folder" / cls / f"{i}.png")
    folder = load_image_dataset(str(tmp_path / "folder"))
    assert len(folder) == 4 and folder.features["label"].names == ["cat", "dog"]

    saved = Dataset.from_dict({"img": [Image.new("L", (5, 5))] * 3, "y": [0, 1, 0]})
    saved.save_to_disk(str(tmp_path / "saved"))
    data = load_image_dataset(str(tmp_path / "saved"), image_column="img", label_column="y")
    assert data.column_names == ["image", "label"]
    with pytest.raises(ValueError, match="no image column 'pixels'"):
        load_image_dataset(str(tmp_path / "saved"), image_column="pixels")

    data.set_transform(image_transform(4, grayscale=True, random_flip=True, seed=0))
    assert data[0]["pixel_values"].shape == (1, 4, 4)
