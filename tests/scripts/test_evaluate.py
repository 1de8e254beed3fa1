"""training/evaluate.py end to end: a tiny pipeline, an untrained classifier, a few samples."""

import json

import pytest
import torch
from diffusers import DDPMScheduler

from diffit_hf import DiffiTPipeline, DiTModel
from diffit_hf.evaluation import FashionClassifier
from diffit_hf.training.config import make_config


@pytest.fixture(scope="module")
def evaluate(script):
    return script("training/evaluate.py")


def test_evaluate_writes_metrics_floor_grid_and_caches_reference(tmp_path, evaluate, perturb, fmnist_names):
    torch.manual_seed(0)
    model = perturb(DiTModel(sample_size=32, patch_size=8, in_channels=1, num_layers=1, num_attention_heads=2,
                             attention_head_dim=8, num_classes=10, learn_sigma=False))
    DiffiTPipeline(transformer=model, scheduler=DDPMScheduler(), id2label=fmnist_names).save_pretrained(
        tmp_path / "pipe")
    FashionClassifier().save_pretrained(tmp_path / "clf")
    cfg = make_config(evaluate.EvalConfig, dict(
        pipeline=str(tmp_path / "pipe"), num_samples=40, batch_size=20, num_inference_steps=2,
        extractor=str(tmp_path / "clf"), classifier=str(tmp_path / "clf"), cache_dir=str(tmp_path / "stats"),
        scheduler="ddim", reference_limit=300))
    result = evaluate.main(cfg)
    saved = json.loads((tmp_path / "pipe" / "eval.json").read_text())
    for key in ("fid", "kid", "precision", "recall", "class_consistency", "floor_fid", "floor_kid",
                "floor_class_consistency"):
        assert key in saved and saved[key] == result[key]
    assert result["floor_fid"] < result["fid"]  # real training images are closer to the test split than noise
    assert (tmp_path / "pipe" / "eval_samples.png").exists()
    cached = sorted((tmp_path / "stats").glob("*.safetensors"))
    assert len(cached) == 2  # reference split and floor subset
    assert sorted(p.name for p in (tmp_path / "stats").iterdir()) == [p.name for p in cached]  # no temporary files
    mtimes = [p.stat().st_mtime_ns for p in cached]
    again = evaluate.main(cfg)
    assert [p.stat().st_mtime_ns for p in cached] == mtimes  # reused, not recomputed
    assert again["fid"] == result["fid"]  # fixed seeds per sample: the same samples
