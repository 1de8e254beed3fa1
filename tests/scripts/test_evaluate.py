"""training/evaluate.py end to end: a tiny pipeline, an untrained classifier, a few samples."""

import json

import numpy as np
import pytest
import torch

from diffit_hf import DiffiTPipeline
from diffit_hf.evaluation import (
    FashionClassifier,
    class_consistency,
    feature_stats,
    inception_score,
    load_extractor,
    quantize,
)
from diffit_hf.training.config import make_config

from ..evaluation.tiny_inception import save_tiny_inception
from ..tiny import save_tiny_pixel_pipeline


@pytest.fixture(scope="module")
def evaluate(script):
    return script("training/evaluate.py")


def test_evaluate_writes_metrics_floor_grid_and_caches_reference(tmp_path, evaluate):
    save_tiny_pixel_pipeline(tmp_path / "pipe")
    FashionClassifier().save_pretrained(tmp_path / "clf")
    torch.manual_seed(0)
    second = FashionClassifier(channels=(8, 16, 32), feature_dim=4, features="spatial", convs_per_stage=1)
    second.save_pretrained(tmp_path / "clf2")
    cfg = make_config(evaluate.EvalConfig, dict(
        pipeline=str(tmp_path / "pipe"), num_samples=40, batch_size=20, num_inference_steps=2,
        extractor=str(tmp_path / "clf"), classifier=str(tmp_path / "clf"), cache_dir=str(tmp_path / "stats"),
        second_extractor=str(tmp_path / "clf2"), scheduler="ddim", reference_limit=300, guidance_interval=(0.5, 50.0)))
    result = evaluate.main(cfg)
    saved = json.loads((tmp_path / "pipe" / "eval.json").read_text())
    keys = ("fid", "kid", "precision", "recall", "class_consistency", "floor_fid", "floor_kid",
            "floor_class_consistency")
    for key in keys:
        assert key in saved and saved[key] == result[key]
    assert result["floor_fid"] < result["fid"]  # real training images are closer to the test split than noise

    # the second evaluator: its own features (64-d spatial map), floor and class consistency
    ev = saved["second_evaluator"]
    assert ev["extractor"] == "fmnist-spatial" and set(keys) <= set(ev)
    assert ev["floor_fid"] < ev["fid"] and ev["fid"] != result["fid"]
    pipe = DiffiTPipeline.from_pretrained(tmp_path / "pipe")
    pipe.use_scheduler("ddim")
    images, labels = evaluate.generate(cfg, pipe, list(range(40)), False, dict(
        num_inference_steps=2, guidance_scale=cfg.guidance_scale, guidance_schedule="constant",
        guidance_interval=(0.5, 50.0)))
    features2 = load_extractor(str(tmp_path / "clf2"))
    assert features2(images).shape == (40, 4 * 4 * 4)
    assert ev["class_consistency"] == pytest.approx(class_consistency(features2.logits(images), labels))
    assert saved["sampling"]["guidance_interval"] == [0.5, 50.0]
    assert (tmp_path / "pipe" / "eval_samples.png").exists()
    cached = sorted((tmp_path / "stats").glob("*.safetensors"))
    assert len(cached) == 4  # reference split and floor subset, for each evaluator
    assert sorted(p.name for p in (tmp_path / "stats").iterdir()) == [p.name for p in cached]  # no temporary files
    mtimes = [p.stat().st_mtime_ns for p in cached]
    again = evaluate.main(cfg)
    assert [p.stat().st_mtime_ns for p in cached] == mtimes  # reused, not recomputed
    assert again["fid"] == result["fid"]  # fixed seeds per sample: the same samples


@pytest.mark.parametrize("kind", ["fmnist", "inception"])
def test_evaluate_against_reference_stats(tmp_path, evaluate, kind, monkeypatch):
    """One code path for FID-FMNIST and Inception FID: samples rounded to uint8, features, FID against an ADM-style
    reference .npz (mu, sigma); Inception also gives the Inception Score. The Frechet distance itself is tested
    against scipy in tests/evaluation; here a recorder takes its place (a 2048-d eigh takes a minute on a busy CPU)
    and the test checks what it was given."""
    calls = []

    def record(*stats):
        calls.append([torch.as_tensor(x, dtype=torch.float64) for x in stats])
        return 100.0 + len(calls)

    monkeypatch.setattr(evaluate, "frechet_distance", record)
    save_tiny_pixel_pipeline(tmp_path / "pipe")
    if kind == "fmnist":
        FashionClassifier().save_pretrained(tmp_path / "clf")
        extractor, weights = str(tmp_path / "clf"), None
    else:
        extractor, weights = "inception", str(save_tiny_inception(tmp_path))
    features = load_extractor(extractor, inception_weights=weights)
    torch.manual_seed(1)
    reference = features(torch.rand(64, 1, 32, 32) * 2 - 1)  # stand-in "real" statistics
    mu, sigma = feature_stats(reference)
    np.savez(tmp_path / "ref.npz", mu=mu.numpy(), sigma=sigma.numpy())
    values = dict(pipeline=str(tmp_path / "pipe"), num_samples=30, batch_size=15, num_inference_steps=2,
                  scheduler="ddim", extractor=extractor, inception_weights=weights, classifier=None,
                  reference_stats=str(tmp_path / "ref.npz"), floor_split="train" if kind == "fmnist" else None,
                  cache_dir=str(tmp_path / "stats"), output=str(tmp_path / "eval.json"), second_extractor=None)
    result = evaluate.main(make_config(evaluate.EvalConfig, values))

    cfg = make_config(evaluate.EvalConfig, values)
    pipe = DiffiTPipeline.from_pretrained(tmp_path / "pipe")
    pipe.use_scheduler("ddim")
    sampling = dict(num_inference_steps=2, guidance_scale=cfg.guidance_scale, guidance_schedule="constant")
    images, _ = evaluate.generate(cfg, pipe, list(range(30)), False, sampling)
    assert torch.equal(quantize(images), images)  # what the extractors saw lies on the uint8 grid
    assert result["fid"] == 101.0  # the first Frechet distance: samples vs the reference statistics
    ref_mu, ref_sigma, fake_mu, fake_sigma = calls[0]
    assert torch.equal(ref_mu, mu) and torch.equal(ref_sigma, sigma)
    expected_mu, expected_sigma = feature_stats(features(images))
    torch.testing.assert_close(fake_mu, expected_mu)
    torch.testing.assert_close(fake_sigma, expected_sigma)
    assert result["reference"] == str(tmp_path / "ref.npz")
    assert "kid" not in result  # statistics alone give FID only
    if kind == "fmnist":
        assert result["floor_fid"] == 102.0 and "inception_score" not in result
    else:
        assert "floor_fid" not in result
        assert result["inception_score"] == pytest.approx(inception_score(features.class_probabilities(images))[0])

    np.savez(tmp_path / "wrong.npz", mu=np.zeros(5), sigma=np.eye(5))  # another extractor's statistics
    with pytest.raises(ValueError, match="5-d statistics"):
        evaluate.main(make_config(evaluate.EvalConfig, {**values, "reference_stats": str(tmp_path / "wrong.npz")}))


def test_second_evaluator_missing_or_without_a_split_is_refused_before_sampling(tmp_path, evaluate):
    with pytest.raises(FileNotFoundError, match="train_classifier.py --features spatial"):
        evaluate.main(make_config(evaluate.EvalConfig, dict(second_extractor=str(tmp_path / "absent"),
                                                            pipeline=str(tmp_path / "no-pipeline"))))
    FashionClassifier(features="spatial").save_pretrained(tmp_path / "clf2")
    with pytest.raises(ValueError, match="--second-extractor none"):
        make_config(evaluate.EvalConfig, dict(second_extractor=str(tmp_path / "clf2"), reference_stats="ref.npz"))


def test_evaluate_preset_refuses_overridden_flags(evaluate):
    with pytest.raises(ValueError, match="--preset dit-paper sets the sampling settings; drop --guidance-scale"):
        make_config(evaluate.EvalConfig, dict(preset="dit-paper", guidance_scale=3.0))


def test_evaluate_guidance_interval_flag(evaluate):
    from diffit_hf.training.config import parse_config

    assert parse_config(evaluate.EvalConfig, ["--guidance-interval", "0.3", "inf"]).guidance_interval == (
        0.3, float("inf"))
    for bad in (["2", "1"], ["1"], ["0", "1", "2"]):
        with pytest.raises(ValueError, match="guidance_interval must be \\(sigma_low, sigma_high\\)"):
            parse_config(evaluate.EvalConfig, ["--guidance-interval", *bad])
    with pytest.raises(ValueError, match="drop --guidance-interval"):
        make_config(evaluate.EvalConfig, dict(preset="dit-paper", guidance_interval=(0.3, 5.0)))
