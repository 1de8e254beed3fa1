"""Known-good and known-bad image sets for checking that an evaluator can fail (before ranking anything with it).

An evaluator is trusted only after it has scored, through exactly the samples' preprocessing (uint8 rounding),
real images (the floor), a blurred copy of them, the same images under wrong labels, and a VAE's reconstructions
(the ceiling a latent model can reach), and ranked the bad sets clearly worse than the real ones
(`benchmarks/bench_evaluators.py`, `tests/scripts/test_train_classifier.py`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .extractors import FeatureExtractor, in_batches, quantize
from .metrics import class_consistency, feature_stats, frechet_distance, kernel_inception_distance


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) images (reflect-padded, kernel radius 3 sigma)."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    out = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)  # along width
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)  # along height


def shifted_labels(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Every label replaced by the next class: the images stay real, the requested classes are all wrong."""
    return (labels + 1) % num_classes


@torch.no_grad()
def score_image_set(extractor: FeatureExtractor, reference: torch.Tensor, images: torch.Tensor,
                    labels: torch.Tensor | None = None) -> dict[str, float]:
    """FID and KID of `images` against `reference` features, and class consistency with `labels` when the extractor
    classifies; images go through `quantize` as generated samples do."""
    features = in_batches(extractor, quantize(images))
    kid, _ = kernel_inception_distance(reference, features)
    result = {"fid": frechet_distance(*feature_stats(reference), *feature_stats(features)), "kid": kid}
    if labels is not None and extractor.logits(quantize(images[:1])) is not None:
        result["class_consistency"] = class_consistency(in_batches(extractor.logits, quantize(images)), labels)
    return result
