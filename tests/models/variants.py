"""Tiny configs of every model family and variant, shared by the contract and precision tests (not a test module)."""

import torch

from diffit_hf import DiffiTModel, DiffiTUNetModel, DiTModel

DIT = dict(sample_size=8, patch_size=2, in_channels=4, num_layers=2, num_attention_heads=2, attention_head_dim=8,
           num_classes=10)
UNET = dict(sample_size=16, in_channels=3, block_out_channels=(32, 64), layers_per_block=(1, 2), window_size=4,
            attention_head_dim=16, norm_num_groups=8, time_embed_dim=32, num_classes=10)

# name -> (class, config, (height, width) inputs it must accept)
VARIANTS = {
    **{f"dit-{bt}": (DiTModel, {**DIT, "block_type": bt}, [(8, 8), (8, 12)])
       for bt in ("adaln_zero", "adaln", "cross_attn", "in_context")},
    "diffit-global": (DiffiTModel, DIT, [(8, 8), (8, 4)]),
    "diffit-window": (DiffiTModel, {**DIT, "window_size": 2}, [(8, 8), (8, 12)]),
    "diffit-pool": (DiffiTModel, {**DIT, "token_mixer": "pool"}, [(8, 8), (8, 12)]),
    # the DiffiT demo config's opt-in conditioning (adaLN-single beside TMSA, DiT's adaLN output layer)
    "diffit-adaln-single": (DiffiTModel, {**DIT, "adaln_zero": True, "adaln_single": True,
                                          "final_layer_type": "adaln"}, [(8, 8), (8, 4)]),
    # ... with a per-block label table beside the shared regression (opt-in ablation)
    "diffit-adaln-label-table": (DiffiTModel, {**DIT, "adaln_zero": True, "adaln_single": True,
                                               "adaln_label_table": True, "final_layer_type": "adaln"}, [(8, 8)]),
    "unet": (DiffiTUNetModel, UNET, [(16, 16), (16, 8)]),
    "unet-diffip": (DiffiTUNetModel, {**UNET, "token_mixer": "pool", "conv": "depthwise_separable"}, [(16, 24)]),
    "unet-grayscale": (DiffiTUNetModel, {**UNET, "in_channels": 1, "num_classes": 0}, [(16, 16)]),
}


def build(name, **overrides):
    cls, config, _ = VARIANTS[name]
    model = cls(**{**config, **overrides})
    with torch.no_grad():  # perturb zero-initialised layers so every path matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def inputs(model, n=3, hw=None):
    cfg = model.config
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    h, w = hw or (size, size)
    y = torch.randint(0, cfg.num_classes + 1, (n,)) if cfg.num_classes else None
    return torch.randn(n, cfg.in_channels, h, w), torch.randint(0, 1000, (n,)), y
