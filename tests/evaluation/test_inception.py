"""Inception-v3 FID/IS through clean-fid's TorchScript loader, offline, with a tiny Inception-shaped network."""

import numpy as np
import pytest
import torch

from diffit_hf.evaluation import (
    InceptionFeatures,
    inception_score,
    load_extractor,
    load_reference_stats,
    quantize,
    to_uint8,
)

from .tiny_inception import TinyInception, save_tiny_inception


def test_quantize_rounds_to_the_uint8_grid_as_dit_saves_samples():
    x = torch.tensor([-1.0, -0.99999, 0.0, 0.003, 0.5, 1.0, 1.7, -3.0])
    assert to_uint8(x).tolist() == [0, 0, 128, 128, 191, 255, 255, 0]  # clamp(127.5 x + 128), truncated
    q = quantize(torch.rand(2, 3, 8, 8) * 2 - 1)
    assert torch.equal(to_uint8(q), ((q + 1) * 127.5).round().to(torch.uint8))  # on the grid, a fixed point
    assert torch.equal(quantize(q), q)


def test_inception_extractor_feeds_uint8_images_to_the_torchscript_network(tmp_path):
    path = save_tiny_inception(tmp_path)
    extractor = load_extractor("inception", inception_weights=path)
    assert isinstance(extractor, InceptionFeatures) and extractor.name == "inception-v3-tf"
    torch.manual_seed(0)
    reference = TinyInception().eval()  # the same seeded weights, not scripted
    with torch.no_grad():
        reference.output.weight.mul_(20)
    images = torch.rand(5, 3, 24, 24) * 2 - 1
    pixels = to_uint8(images).float()  # 0..255 integers, what the ADM evaluator's network reads
    with torch.no_grad():
        torch.testing.assert_close(extractor(images), reference(pixels, return_features=True))
        probs = extractor.class_probabilities(images)
        torch.testing.assert_close(probs, reference(pixels, no_output_bias=True))
    assert probs.shape == (5, 1008) and torch.allclose(probs.sum(1), torch.ones(5))
    gray = images[:, :1]  # one channel is repeated to RGB
    torch.testing.assert_close(extractor(gray), extractor(gray.expand(-1, 3, -1, -1)))


def test_inception_weights_missing_or_misnamed(tmp_path):
    with pytest.raises(FileNotFoundError, match="pass --inception-weights PATH"):
        InceptionFeatures(tmp_path / "inception-2015-12-05.pt")
    path = save_tiny_inception(tmp_path)
    other = path.rename(tmp_path / "inception.pt")
    with pytest.raises(ValueError, match="rename it to inception-2015-12-05.pt"):
        InceptionFeatures(other)


def numpy_inception_score(probs: np.ndarray, splits: int) -> float:
    scores = []
    for part in np.array_split(probs, splits):
        py = part.mean(0, keepdims=True)
        scores.append(np.exp(np.mean(np.sum(part * (np.log(part) - np.log(py)), axis=1))))
    return float(np.mean(scores))


def test_inception_score():
    one_hot = torch.eye(10).repeat(3, 1)  # confident and evenly spread over 10 classes: IS = 10
    assert inception_score(one_hot, splits=3) == pytest.approx((10.0, 0.0))
    same = torch.full((20, 10), 0.1)  # no information: IS = 1
    assert inception_score(same, splits=2)[0] == pytest.approx(1.0)
    torch.manual_seed(0)
    probs = (torch.randn(100, 7) * 2).softmax(1)
    expected = numpy_inception_score(probs.double().numpy(), 4)
    assert inception_score(probs, splits=4)[0] == pytest.approx(expected, rel=1e-9)


def test_reference_stats_npz(tmp_path):
    mu, sigma = np.arange(3.0), np.eye(3)
    np.savez(tmp_path / "ref.npz", mu=mu, sigma=sigma, arr_0=np.zeros((2, 4, 4, 3), np.uint8))  # ADM's layout
    loaded = load_reference_stats(tmp_path / "ref.npz")
    assert loaded[0].dtype == torch.float64 and np.array_equal(loaded[0].numpy(), mu)
    assert np.array_equal(loaded[1].numpy(), sigma)
    np.savez(tmp_path / "bad.npz", arr_0=np.zeros(3))
    with pytest.raises(ValueError, match="no mu or sigma array"):
        load_reference_stats(tmp_path / "bad.npz")
