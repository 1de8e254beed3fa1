import numpy as np
import pytest
import scipy.linalg
import torch

from diffit_hf.evaluation import (
    ClassifierFeatures,
    FashionClassifier,
    class_consistency,
    feature_stats,
    frechet_distance,
    kernel_inception_distance,
    precision_recall,
    trace_sqrt_product,
)


def scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_stats_and_matrix_sqrt_match_scipy():
    torch.manual_seed(0)
    a = torch.randn(600, 16) @ torch.randn(16, 16)
    b = torch.randn(500, 16) * 1.5 + 0.3
    mu, sigma = feature_stats(a)
    np.testing.assert_allclose(mu.numpy(), a.double().numpy().mean(0), rtol=1e-10)
    np.testing.assert_allclose(sigma.numpy(), np.cov(a.double().numpy(), rowvar=False), rtol=1e-9, atol=1e-12)
    _, sigma_b = feature_stats(b)
    expected = np.trace(scipy.linalg.sqrtm(sigma.numpy() @ sigma_b.numpy()).real)
    assert float(trace_sqrt_product(sigma, sigma_b)) == pytest.approx(expected, rel=1e-6)
    ours = frechet_distance(*feature_stats(a), *feature_stats(b))
    assert ours == pytest.approx(scipy_fid(a.double().numpy(), b.double().numpy()), rel=1e-6)


def test_fid_kid_pr_of_a_set_against_itself():
    torch.manual_seed(0)
    x = torch.randn(400, 8)
    assert abs(frechet_distance(*feature_stats(x), *feature_stats(x))) < 1e-8
    kid, _ = kernel_inception_distance(x, x, subsets=3, subset_size=200)
    kid_shifted, _ = kernel_inception_distance(x, x + 1.0, subsets=3, subset_size=200)
    assert abs(kid) < 0.02 * kid_shifted  # unbiased: ~0 up to subset noise
    assert precision_recall(x, x) == (1.0, 1.0)
    assert class_consistency(torch.eye(3)[[0, 1, 2, 1]], torch.tensor([0, 1, 2, 2])) == 0.75


def real_test_images(n=400):
    from diffit_hf.data import load_image_tensors

    return load_image_tensors("fashion-mnist", "test", 32, grayscale=True, limit=n)


def test_fid_grows_with_noise(tmp_path):
    torch.manual_seed(0)
    FashionClassifier().save_pretrained(tmp_path / "clf")
    extractor = ClassifierFeatures(tmp_path / "clf")
    images, _ = real_test_images()
    clean = extractor(images[:200])
    reference = extractor(images[200:])
    fids = []
    for sigma in (0.0, 0.2, 0.5):
        noisy = (images[:200] + sigma * torch.randn_like(images[:200])).clamp(-1, 1)
        fids.append(frechet_distance(*feature_stats(reference), *feature_stats(extractor(noisy))))
    assert fids[0] == pytest.approx(frechet_distance(*feature_stats(reference), *feature_stats(clean)))
    assert fids[0] < fids[1] < fids[2]
