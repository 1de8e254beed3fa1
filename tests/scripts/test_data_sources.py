"""Data sources users have: an image folder without class sub-folders (unconditional, end to end), column names as
flags, and a Hub dataset id offline."""

import numpy as np
import pytest
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage

from diffit_hf import DiffiTPipeline
from diffit_hf.data import LatentDataset, load_image_dataset

from ..tiny import tiny_vae
from .conftest import TINY_MODEL


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """40 grayscale 16x16 images directly in one folder: no class sub-folders, no labels."""
    folder = tmp_path_factory.mktemp("flat-images")
    rng = np.random.default_rng(0)
    for i in range(40):
        PILImage.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(folder / f"img{i:03d}.png")
    return folder


def test_unconditional_image_folder_end_to_end(script, image_folder, tmp_path):
    from diffit_hf.training.config import make_config

    data = load_image_dataset(str(image_folder))
    assert data.column_names == ["image"] and len(data) == 40
    tiny_vae(sample_size=16).save_pretrained(tmp_path / "vae")
    encode = script("training/encode_latents.py")
    meta = encode.main(make_config(encode.EncodeConfig, dict(
        vae=str(tmp_path / "vae"), dataset=str(image_folder), resolution=16, grayscale=True, shard_size=16,
        num_workers=2, random_flip=True, out=str(tmp_path / "cache"))))
    assert meta["class_names"] is None and meta["num_samples"] == 40
    assert LatentDataset(tmp_path / "cache").labels.tolist() == [-1] * 40
    train = script("training/train_latent.py")
    values = dict(latents=str(tmp_path / "cache"), model_config=TINY_MODEL, batch_size=8, max_steps=3,
                  checkpointing_steps=3, validation_steps=3, validation_per_class=2, validation_inference_steps=2,
                  random_flip=True, cpu_threads=1, output_dir=str(tmp_path / "run"))
    result = train.main(make_config(train.TrainConfig, values))
    assert result["steps"] == 3 and np.isfinite(result["final_loss"])
    pipe = DiffiTPipeline.from_pretrained(tmp_path / "run")
    assert pipe.transformer.config.num_classes == 0 and pipe.num_classes == 0
    pipe.set_progress_bar_config(disable=True)
    images = pipe(None, num_images_per_label=2, num_inference_steps=2, output_type="np").images
    assert images.shape == (2, 16, 16, 1) and np.isfinite(images).all()
    generate = script("pipelines/generate.py")
    generate.main(make_config(generate.GenerateConfig, dict(model=str(tmp_path / "run"), steps=2, num_per_label=2,
                                                            out=str(tmp_path / "grid.png"))))
    assert PILImage.open(tmp_path / "grid.png").size[0] > 0
    # classes asked of unlabelled data are refused, naming the way out
    with pytest.raises(ValueError, match="has no labels, so the model cannot have num_classes=10"):
        train.main(make_config(train.TrainConfig, {**values, "output_dir": str(tmp_path / "run2"),
                                                   "model_config": '{"num_classes": 10}'}))


def test_column_names_are_flags(script, tmp_path):
    rng = np.random.default_rng(0)
    pics = [PILImage.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)) for _ in range(16)]
    features = Features({"img": Image(), "category": Value("int64"), "label": Value("string")})
    Dataset.from_dict({"img": pics, "category": [i % 2 for i in range(16)], "label": ["x"] * 16},
                      features=features).save_to_disk(str(tmp_path / "data"))
    data = load_image_dataset(str(tmp_path / "data"), image_column="img", label_column="category")
    assert sorted(data.column_names) == ["image", "label"] and data["label"] == [i % 2 for i in range(16)]
    assert "label" not in load_image_dataset(str(tmp_path / "data"), image_column="img", label_column="none").features
    with pytest.raises(ValueError, match="no label column 'cls'; columns are img, category, label "
                                         r"\(--label-column none for an unlabelled dataset\)"):
        load_image_dataset(str(tmp_path / "data"), image_column="img", label_column="cls")
    # pixel-space training reads the columns the flags name
    from diffit_hf.training.config import make_config

    train = script("training/train_latent.py")
    result = train.main(make_config(train.TrainConfig, dict(
        dataset=str(tmp_path / "data"), image_column="img", label_column="category", resolution=8, grayscale=True,
        model="DiT-S/2", model_config='{"num_layers": 1, "num_attention_heads": 2, "attention_head_dim": 8, '
        '"num_classes": 2}', batch_size=8, max_steps=2, checkpointing_steps=2, validation_steps=100,
        cpu_threads=1, output_dir=str(tmp_path / "pixels"))))
    assert result["steps"] == 2
    assert DiffiTPipeline.from_pretrained(tmp_path / "pixels").transformer.config.num_classes == 2
    evaluate = script("training/evaluate.py")
    assert {"image_column", "label_column"} <= set(evaluate.EvalConfig.__dataclass_fields__)


def test_a_hub_dataset_id_offline_fails_fast_and_says_what_to_do(monkeypatch):
    import time

    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    start = time.monotonic()
    with pytest.raises(ConnectionError, match="'someone/no-such-dataset' is not a local folder and could not be "
                                              "loaded from the Hub .*save_to_disk.*HF_HUB_OFFLINE=1"):
        load_image_dataset("someone/no-such-dataset")
    assert time.monotonic() - start < 20
    with pytest.raises(FileNotFoundError, match="No such dataset folder: ./missing/images"):
        load_image_dataset("./missing/images")
