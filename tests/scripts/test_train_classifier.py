"""training/train_classifier.py: one short epoch on real Fashion-MNIST images, then the saved classifier's logits."""

import json

import pytest
import torch

from diffit_hf.data import load_image_tensors
from diffit_hf.evaluation import ClassifierFeatures, class_consistency
from diffit_hf.training.config import make_config


def test_classifier_training_and_class_consistency_of_real_images(tmp_path, script):
    train_classifier = script("training/train_classifier.py")
    cfg = make_config(train_classifier.ClassifierConfig, {"epochs": 1, "train_limit": 2048, "batch_size": 64,
                                                          "test_limit": 2000, "output_dir": str(tmp_path / "clf"),
                                                          "cpu_threads": 2})
    metrics = train_classifier.main(cfg)
    assert metrics["test_accuracy"] > 0.6  # 2,048 images, one epoch; the full run reaches >= 92%
    saved = json.loads((tmp_path / "clf" / "metrics.json").read_text())
    assert saved["test_accuracy"] == metrics["test_accuracy"]
    assert json.loads((tmp_path / "clf" / "train_config.json").read_text())["train_limit"] == 2048

    images, labels = load_image_tensors("fashion-mnist", "test", 32, grayscale=True, limit=2000)
    logits = torch.cat([ClassifierFeatures(tmp_path / "clf").logits(images[i:i + 1000])
                        for i in range(0, len(images), 1000)])
    assert class_consistency(logits, labels) == pytest.approx(metrics["test_accuracy"], abs=1e-12)
