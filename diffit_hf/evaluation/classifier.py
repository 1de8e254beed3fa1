"""Small Fashion-MNIST classifiers whose features define the offline FIDs: FID-FMNIST and FID-FMNIST-spatial.

FID-FMNIST is computed exactly like FID, but on this network's features instead of Inception-v3's 2048-d pool
features: its values are NOT comparable with Inception FID, only with other values from the same weights.

Two designs, trained independently (`training/train_classifier.py`), so that no quality claim rests on one of them:
- `features="global"` (FID-FMNIST): two convs per stage, global average pooling, then a 128-d ReLU layer. Pooling
  over the whole image makes it blind to much spatial detail (blur, broken shapes).
- `features="spatial"` (FID-FMNIST-spatial): other widths, one conv per stage, and features that keep the 4x4
  spatial map (a 1x1 conv to 32 channels, flattened: 512-d), trained from another seed with random shifts.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

FEATURE_TYPES = ("global", "spatial")


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class FashionClassifier(ModelMixin, ConfigMixin):
    r"""
    CNN for 32x32 grayscale images in [-1, 1] (the resolution and range of the demo's samples).

    Args:
        num_classes (`int`, defaults to 10): output classes.
        channels (`tuple[int, ...]`, defaults to `(16, 32, 64)`): one conv stage (convs + 2x pool) each.
        feature_dim (`int`, defaults to 128): the feature width: the penultimate Linear (`"global"`), or the
            channels of the 1x1 conv whose flattened map is the feature vector (`"spatial"`: `feature_dim x 4 x 4`
            for three stages at 32 px).
        in_channels (`int`, defaults to 1).
        features (`str`, defaults to `"global"`): `"global"` (average-pooled, then a Linear) or `"spatial"`.
        convs_per_stage (`int`, defaults to 2): 3x3 convs before each pooling.
    """

    @register_to_config
    def __init__(self, num_classes: int = 10, channels: tuple[int, ...] = (16, 32, 64), feature_dim: int = 128,
                 in_channels: int = 1, features: str = "global", convs_per_stage: int = 2):
        super().__init__()
        if features not in FEATURE_TYPES:
            raise ValueError(f"Unknown features {features!r}; valid choices are {', '.join(FEATURE_TYPES)}.")
        stages, cin = [], in_channels
        for cout in channels:
            for i in range(convs_per_stage):
                stages.append(_conv_block(cin if i == 0 else cout, cout))
            stages.append(nn.MaxPool2d(2))
            cin = cout
        if features == "global":
            self.backbone = nn.Sequential(*stages, nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.feature_head = nn.Sequential(nn.Linear(cin, feature_dim), nn.ReLU(inplace=True))
            head_in = feature_dim
        else:
            side = 32 // 2 ** len(channels)
            self.backbone = nn.Sequential(*stages)
            self.feature_head = nn.Sequential(nn.Conv2d(cin, feature_dim, 1), nn.ReLU(inplace=True), nn.Flatten())
            head_in = feature_dim * side * side
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(head_in, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, 32, 32) in [-1, 1] -> (N, D) features: D = feature_dim (global) or feature_dim x 4 x 4 (spatial)."""
        return self.feature_head(self.backbone(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes)."""
        return self.head(self.dropout(self.features(x)))
