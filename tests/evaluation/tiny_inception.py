"""A tiny, randomly initialised stand-in with the interface of NVIDIA's TorchScript FID Inception
(`inception-2015-12-05.pt`): float images in 0..255 of any size, resized to 299 inside;
`forward(x, return_features=True)` -> (N, 2048) pool features, `forward(x, no_output_bias=True)` -> (N, 1008) softmax
probabilities; a `layers` module computing the features from normalised 299x299 inputs (what clean-fid reads)."""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class TinyInception(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.AvgPool2d(13), nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(),
                                    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2048))
        self.output = nn.Linear(2048, 1008)

    def forward(self, x: torch.Tensor, return_features: bool = False, use_fp16: bool = False,
                no_output_bias: bool = False) -> torch.Tensor:
        x = F.interpolate(x.float(), size=(299, 299), mode="bilinear", align_corners=False)
        features = self.layers((x - 128) / 128)
        if return_features:
            return features
        logits = features @ self.output.weight.T
        if not no_output_bias:
            logits = logits + self.output.bias
        return logits.softmax(dim=1)


def save_tiny_inception(folder: Path, seed: int = 0) -> Path:
    """Scripts a seeded `TinyInception` into `folder/inception-2015-12-05.pt`; returns the path."""
    torch.manual_seed(seed)
    model = TinyInception().eval()
    with torch.no_grad():
        model.output.weight.mul_(20)  # peaked class probabilities, so the Inception Score is not trivially 1
    path = Path(folder) / "inception-2015-12-05.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    return path
