"""Sample-quality metrics on feature vectors: FID, KID, precision/recall, Inception Score, class consistency.

Written here because the reference implementations (pytorch-fid, torch-fidelity, clean-fid) pull in torchvision or
fixed extractors; these take any (N, D) features. FID's matrix square root uses a float64 eigendecomposition of the
symmetric form sqrt(S1) S2 sqrt(S1), whose trace-sqrt equals that of S1 S2 (tested against scipy).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def feature_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean (D,), unbiased covariance (D, D)) in float64."""
    x = features.double()
    mu = x.mean(0)
    centered = x - mu
    return mu, centered.T @ centered / (len(x) - 1)


def _sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def trace_sqrt_product(sigma1: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """tr(sqrtm(sigma1 @ sigma2)) for covariance matrices."""
    root1 = _sqrtm_psd(sigma1)
    inner = root1 @ sigma2 @ root1  # symmetric PSD with the same eigenvalues as sigma1 @ sigma2
    return torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 sqrt(S1 S2)) (Heusel et al. 2017)."""
    mu1, mu2, sigma1, sigma2 = (torch.as_tensor(t, dtype=torch.float64) for t in (mu1, mu2, sigma1, sigma2))
    diff = mu1 - mu2
    return float(diff @ diff + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt_product(sigma1, sigma2))


def few_samples_warning(num_samples: int, dim: int, what: str = "samples") -> str | None:
    """The warning for an FID from `num_samples` `dim`-d features when `num_samples <= dim`: the covariance is
    rank-deficient (rank at most `num_samples - 1`), so the number is biased upwards and not comparable."""
    if num_samples > dim:
        return None
    return (f"FID from {num_samples} {what} of {dim}-d features: the covariance is rank-deficient (rank <= "
            f"{num_samples - 1} < {dim}), so this FID is biased and not comparable with others; use more than "
            f"{dim} (ideally 10x as many).")


def kernel_inception_distance(real: torch.Tensor, fake: torch.Tensor, subsets: int = 10, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel (x.y / D + 1)^3, mean and std over subsets."""
    real, fake = real.double(), fake.double()
    n = min(subset_size, len(real), len(fake))
    d = real.shape[1]
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        x = real[torch.randperm(len(real), generator=generator)[:n]]
        y = fake[torch.randperm(len(fake), generator=generator)[:n]]
        kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        off = 1 - torch.eye(n, dtype=torch.float64)
        mmd = (kxx * off).sum() / (n * (n - 1)) + (kyy * off).sum() / (n * (n - 1)) - 2 * kxy.mean()
        values.append(float(mmd))
    t = torch.tensor(values)
    return float(t.mean()), float(t.std()) if len(values) > 1 else 0.0


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3, max_samples: int = 10_000):
    """Improved precision/recall (Kynkaanniemi et al. 2019): the share of fake samples inside the real manifold
    (union of k-NN balls) and of real samples inside the fake manifold."""
    real, fake = real[:max_samples].float(), fake[:max_samples].float()

    def radii(x):
        dist = torch.cdist(x, x)
        return dist.kthvalue(k + 1, dim=1).values  # +1: the point itself is at distance 0

    def coverage(support, support_radii, queries):
        inside = torch.zeros(len(queries), dtype=torch.bool)
        for start in range(0, len(queries), 1024):
            dist = torch.cdist(queries[start:start + 1024], support)
            inside[start:start + 1024] = (dist <= support_radii[None]).any(dim=1)
        return float(inside.float().mean())

    return coverage(real, radii(real), fake), coverage(fake, radii(fake), real)


def inception_score(probs: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """Inception Score (Salimans et al. 2016) as the TF and ADM evaluators compute it: per split,
    `exp(mean_x KL(p(y|x) || p(y)))` with p(y) the split's mean; mean and std over `splits` consecutive splits."""
    p = probs.double()
    scores = []
    for part in p.chunk(splits):
        kl = (part * (part.clamp(min=1e-30).log() - part.mean(0, keepdim=True).clamp(min=1e-30).log())).sum(1)
        scores.append(float(kl.mean().exp()))
    t = torch.tensor(scores, dtype=torch.float64)
    return float(t.mean()), float(t.std(unbiased=False))


def load_reference_stats(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, sigma) float64 from a reference batch `.npz` in the ADM evaluator's layout
    (`VIRTUAL_imagenet256_labeled.npz`: `mu` (2048,), `sigma` (2048, 2048), the Inception pool features' mean and
    covariance over the real images), the reference DiT and DiffiT report FID against."""
    with np.load(path) as data:
        missing = [k for k in ("mu", "sigma") if k not in data.files]
        if missing:
            raise ValueError(f"{path} has no {' or '.join(missing)} array (it has {', '.join(data.files)}); a "
                             "reference batch .npz holds the real images' feature mean 'mu' and covariance 'sigma'.")
        mu, sigma = torch.from_numpy(data["mu"]).double(), torch.from_numpy(data["sigma"]).double()
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise ValueError(f"{path}: mu {tuple(mu.shape)} and sigma {tuple(sigma.shape)} are not (D,) and (D, D).")
    return mu, sigma


def class_consistency(logits: torch.Tensor, requested: torch.Tensor) -> float:
    """How often a classifier recognises the requested class."""
    return float((logits.argmax(dim=1) == requested).double().mean())
