"""A small Fashion-MNIST classifier whose penultimate features define FID-FMNIST (offline FID).

FID-FMNIST is computed exactly like FID, but on this network's 128-d features instead of Inception-v3's 2048-d pool
features: its values are NOT comparable with Inception FID, only with other FID-FMNIST values from the same weights.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class FashionClassifier(ModelMixin, ConfigMixin):
    r"""
    CNN for 32x32 grayscale images in [-1, 1] (the resolution and range of the demo's samples).

    Args:
        num_classes (`int`, defaults to 10): output classes.
        channels (`tuple[int, ...]`, defaults to `(16, 32, 64)`): one conv stage (two convs + 2x pool) each.
        feature_dim (`int`, defaults to 128): the penultimate width, i.e. the FID feature dimension.
        in_channels (`int`, defaults to 1).
    """

    @register_to_config
    def __init__(self, num_classes: int = 10, channels: tuple[int, ...] = (16, 32, 64), feature_dim: int = 128,
                 in_channels: int = 1):
        super().__init__()
        stages, cin = [], in_channels
        for cout in channels:
            stages += [_conv_block(cin, cout), _conv_block(cout, cout), nn.MaxPool2d(2)]
            cin = cout
        self.backbone = nn.Sequential(*stages, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_head = nn.Sequential(nn.Linear(cin, feature_dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, 32, 32) in [-1, 1] -> (N, feature_dim) penultimate activations."""
        return self.feature_head(self.backbone(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes)."""
        return self.head(self.dropout(self.features(x)))
