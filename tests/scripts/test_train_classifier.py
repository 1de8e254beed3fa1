"""training/train_classifier.py: one short epoch on real Fashion-MNIST images, then the saved classifier's logits."""

import json

import pytest
import torch
import torch.nn.functional as F

from diffit_hf.data import load_image_tensors
from diffit_hf.evaluation import (
    ClassifierFeatures,
    class_consistency,
    gaussian_blur,
    in_batches,
    score_image_set,
    shifted_labels,
)
from diffit_hf.training.config import make_config


def test_classifier_training_and_class_consistency_of_real_images(tmp_path, script):
    train_classifier = script("training/train_classifier.py")
    cfg = make_config(train_classifier.ClassifierConfig, {"epochs": 1, "train_limit": 2048, "batch_size": 64,
                                                          "test_limit": 2000, "output_dir": str(tmp_path / "clf"),
                                                          "cpu_threads": torch.get_num_threads()})
    metrics = train_classifier.main(cfg)
    assert metrics["test_accuracy"] > 0.6  # 2,048 images, one epoch; the full run reaches >= 92%
    saved = json.loads((tmp_path / "clf" / "metrics.json").read_text())
    assert saved["test_accuracy"] == metrics["test_accuracy"]
    assert json.loads((tmp_path / "clf" / "train_config.json").read_text())["train_limit"] == 2048

    images, labels = load_image_tensors("fashion-mnist", "test", 32, grayscale=True, limit=2000)
    logits = torch.cat([ClassifierFeatures(tmp_path / "clf").logits(images[i:i + 1000])
                        for i in range(0, len(images), 1000)])
    assert class_consistency(logits, labels) == pytest.approx(metrics["test_accuracy"], abs=1e-12)


def test_spatial_evaluator_is_independent_and_scores_damaged_images_worse(tmp_path, script):
    """The second evaluator (`--features spatial`) differs from FID-FMNIST's in design, seed and augmentation, and
    can fail: against the test split, blurred real images and downsampled-then-upsampled ones (a lossy codec, as a
    VAE is) score a clearly worse FID than the real training images (the floor), and wrong labels a far lower class
    consistency. (With the demo's real classifiers and VAE: benchmarks/bench_evaluators.py.)"""
    train_classifier = script("training/train_classifier.py")
    cfg = make_config(train_classifier.ClassifierConfig, {"epochs": 1, "train_limit": 3000, "batch_size": 64,
                                                          "test_limit": 100, "features": "spatial",
                                                          "output_dir": str(tmp_path / "spatial"),
                                                          "cpu_threads": torch.get_num_threads()})
    assert (cfg.seed, cfg.random_shift) == (1, 2)
    train_classifier.main(cfg)
    extractor = ClassifierFeatures(tmp_path / "spatial")
    assert extractor.name == "fmnist-spatial"
    assert extractor.model.config.features == "spatial" and tuple(extractor.model.config.channels) == (32, 64, 128)
    with pytest.raises(ValueError, match="already holds a classifier"):  # no overwriting another evaluator
        train_classifier.main(cfg)

    reference = in_batches(extractor, load_image_tensors("fashion-mnist", "test", 32, grayscale=True, limit=2000)[0])
    real, labels = load_image_tensors("fashion-mnist", "train", 32, grayscale=True, limit=2000)
    assert reference.shape == (2000, 32 * 4 * 4)
    floor = score_image_set(extractor, reference, real, labels)
    blurred = score_image_set(extractor, reference, gaussian_blur(real, 1.0), labels)
    lossy = score_image_set(extractor, reference, F.interpolate(F.avg_pool2d(real, 2), scale_factor=2.0,
                                                                  mode="bilinear"), labels)
    swapped = score_image_set(extractor, reference, real, shifted_labels(labels, 10))
    assert blurred["fid"] > 4 * floor["fid"] and lossy["fid"] > 2 * floor["fid"], (floor, blurred, lossy)
    assert blurred["kid"] > floor["kid"] + 0.01
    assert swapped["class_consistency"] < floor["class_consistency"] - 0.5, (floor, swapped)
