"""Feature extractors for FID-style metrics: the project's Fashion-MNIST classifier (FID-FMNIST, offline default) or
Inception-v3 (the standard FID, as ADM, DiT and DiffiT report it).

Both take the same input: images (N, C, H, W) in [-1, 1] that lie on the uint8 grid (`quantize`), as the ADM
evaluator reads samples saved as uint8 arrays, so FID-FMNIST and Inception FID run through one code path.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F

from .classifier import FashionClassifier

# NVIDIA's TorchScript port of the TF Inception-v3 graph that the ADM evaluator (and so DiT's and DiffiT's FIDs)
# uses, with TF's resize to 299 inside; clean-fid, StyleGAN2-ADA and EDM compute FID with it.
INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = f"https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/{INCEPTION_FILE}"
DEFAULT_INCEPTION_WEIGHTS = Path.home() / ".cache" / "diffit_hf" / INCEPTION_FILE


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 [0, 255], rounded to nearest as DiT's `sample_ddp.py` saves its FID samples."""
    return (127.5 * images.float() + 128.0).clamp(0, 255).to(torch.uint8)


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] rounded to the uint8 grid (still [-1, 1] floats): what an evaluator of saved PNGs sees."""
    return to_uint8(images).float() / 127.5 - 1.0


def in_batches(fn, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """fn over images in chunks (features or logits), concatenated."""
    return torch.cat([fn(images[i:i + batch]) for i in range(0, len(images), batch)])


def file_fingerprint(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


class FeatureExtractor:
    """Callable: images (N, C, H, W) in [-1, 1] -> features (N, D) float32 on CPU; `logits` when it classifies."""

    name: str
    fingerprint: str

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, images: torch.Tensor) -> torch.Tensor | None:
        return None


class ClassifierFeatures(FeatureExtractor):
    """Features of a `FashionClassifier` (FID-FMNIST, or FID-FMNIST-spatial for a `features="spatial"` one; not
    comparable with Inception FID). `name` tells the two designs apart."""

    def __init__(self, path: str | Path, device: torch.device | str = "cpu"):
        path = Path(path)
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"No classifier at {path}; train one with `python training/train_classifier.py "
                                    f"--output-dir {path}`.")
        self.model = FashionClassifier.from_pretrained(path).to(device).eval()
        self.device = torch.device(device)
        self.fingerprint = file_fingerprint(path / "diffusion_pytorch_model.safetensors")
        self.name = "fmnist-classifier" if self.model.config.features == "global" else "fmnist-spatial"

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
    """2048-d pool features (and 1008-way probabilities, for the Inception Score) of the FID Inception-v3.

    Loaded with clean-fid's `InceptionV3W` (install it with `pip install --no-deps clean-fid`: this module does
    not import torchvision) from a local `inception-2015-12-05.pt`; images go in as 0..255 values and are resized to
    299x299 inside the network as TF's graph does (clean-fid's "legacy_tensorflow" mode, matching ADM's evaluator).
    """

    def __init__(self, weights: str | Path | None = None, device: torch.device | str = "cpu"):
        path = Path(weights).expanduser() if weights else DEFAULT_INCEPTION_WEIGHTS
        if not path.is_file():
            raise FileNotFoundError(
                f"No Inception weights at {path}. Inception FID needs NVIDIA's TorchScript FID Inception "
                f"({INCEPTION_URL}): download it where there is a connection and pass --inception-weights PATH "
                f"(or put it at {DEFAULT_INCEPTION_WEIGHTS}). Offline, use a FashionClassifier folder (FID-FMNIST)."
            )
        if path.name != INCEPTION_FILE:
            raise ValueError(f"--inception-weights {path}: clean-fid loads the file by its name; rename it to "
                             f"{INCEPTION_FILE}.")
        try:
            from cleanfid.inception_torchscript import InceptionV3W
        except ImportError as err:
            raise ImportError("Inception FID needs clean-fid: `pip install --no-deps clean-fid` (scripts/setup.sh "
                              "does; --no-deps keeps torchvision out, which this path does not use).") from err
        self.model = InceptionV3W(str(path.parent), download=False, resize_inside=True).to(device).eval()
        self.device = torch.device(device)
        self.name, self.fingerprint = "inception-v3-tf", file_fingerprint(path)

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = to_uint8(images.to(self.device)).float()  # (N, C, H, W) in 0..255
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self._prepare(images)).float().cpu()  # (N, 2048)

    @torch.no_grad()
    def class_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1008) softmax outputs without the output bias, as the TF Inception Score (and StyleGAN's) compute."""
        return self.model.base(self._prepare(images), no_output_bias=True).float().cpu()


def load_extractor(spec: str, device: torch.device | str = "cpu", inception_weights: str | Path | None = None
                   ) -> FeatureExtractor:
    """`"inception"` (weights from `inception_weights`), or the folder of a trained `FashionClassifier`."""
    if spec == "inception":
        return InceptionFeatures(inception_weights, device)
    return ClassifierFeatures(spec, device)
