"""Feature extractors for FID-style metrics: the project's Fashion-MNIST classifier (offline default) or
Inception-v3 (the standard; pytorch-fid's FID weights, whenever they can be loaded)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F

from .classifier import FashionClassifier


class FeatureExtractor:
    """Callable: images (N, C, H, W) in [-1, 1] -> features (N, D) float32 on CPU; `logits` when it classifies."""

    name: str
    fingerprint: str

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, images: torch.Tensor) -> torch.Tensor | None:
        return None


class ClassifierFeatures(FeatureExtractor):
    """Penultimate features of a `FashionClassifier` (FID-FMNIST; not comparable with Inception FID)."""

    def __init__(self, path: str | Path, device: torch.device | str = "cpu"):
        path = Path(path)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"No classifier at {path}; train one with `python training/train_classifier.py "
                                    f"--output-dir {path}`.")
        self.model = FashionClassifier.from_pretrained(path).to(device).eval()
        self.device = torch.device(device)
        weights = path / "diffusion_pytorch_model.safetensors"
        self.fingerprint = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
        self.name = "fmnist-classifier"

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, torch.float32)
        if x.shape[1] == 3:
            x = x.mean(dim=1, keepdim=True)  # luminance-like average for RGB inputs
        if x.shape[-2:] != (32, 32):
            x = F.interpolate(x, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
        return x

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.features(self._prepare(images)).float().cpu()

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self._prepare(images)).float().cpu()


class InceptionFeatures(FeatureExtractor):
    """2048-d pool features of the FID Inception-v3 (pytorch-fid's port of the TF weights, as ADM's evaluator)."""

    def __init__(self, device: torch.device | str = "cpu"):
        try:
            from pytorch_fid.inception import InceptionV3
        except ImportError as err:
            raise ImportError(
                "Inception FID needs pytorch-fid (`pip install pytorch-fid`, which also installs torchvision) and its "
                "weights (downloaded on first use into TORCH_HOME). Offline, use the default extractor "
                "'fmnist-classifier' (FID-FMNIST)."
            ) from err
        self.model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(device).eval()  # loads the FID weights
        self.device = torch.device(device)
        self.name, self.fingerprint = "inception-v3-fid", "pt_inception-2015-12-05"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, torch.float32)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x + 1) / 2  # pytorch-fid takes [0, 1] and resizes to 299 itself
        return self.model(x)[0].flatten(1).float().cpu()


def load_extractor(spec: str, device: torch.device | str = "cpu") -> FeatureExtractor:
    """`"inception"`, or the folder of a trained `FashionClassifier`."""
    if spec == "inception":
        return InceptionFeatures(device)
    return ClassifierFeatures(spec, device)
