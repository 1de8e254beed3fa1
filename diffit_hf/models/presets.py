"""Named model presets: `create_model("DiT-XL/2")`, `list_presets()`, and analytic parameter/MAC counts."""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.modeling_utils import ModelMixin

from .transformer_dit import ADALN_BLOCK_TYPES, DiTModel

# DiT paper Table 1: depth, heads, head dim (width = heads x head dim).
DIT_SIZES = {"S": (12, 6, 64), "B": (12, 12, 64), "L": (24, 16, 64), "XL": (28, 16, 72)}
DIT_DEFAULTS = {"sample_size": 32, "in_channels": 4, "num_classes": 1000, "learn_sigma": True}

PRESETS: dict[str, tuple[type[ModelMixin], dict[str, Any]]] = {
    f"DiT-{size}/{patch}": (
        DiTModel,
        dict(DIT_DEFAULTS, num_layers=depth, num_attention_heads=heads, attention_head_dim=head_dim, patch_size=patch),
    )
    for size, (depth, heads, head_dim) in DIT_SIZES.items()
    for patch in (2, 4, 8)
}


def list_presets() -> list[str]:
    """Names accepted by `create_model`."""
    return list(PRESETS)


def preset_config(name: str, **overrides) -> tuple[type[ModelMixin], dict[str, Any]]:
    """(model class, config dict) for a preset name, with overrides applied."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; valid names are: {', '.join(PRESETS)}.")
    cls, config = PRESETS[name]
    return cls, {**config, **overrides}


def create_model(name: str, **overrides) -> ModelMixin:
    """Builds a freshly initialised model from a preset name, e.g. `create_model("DiT-S/2", num_classes=10)`."""
    cls, config = preset_config(name, **overrides)
    return cls(**config)


def count_parameters(model: torch.nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters; the frozen positional tables are buffers and never counted."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


#################################################################################
#                       Analytic multiply-accumulate counts                      #
#################################################################################
# torch.utils.flop_counter counts zero for fused CPU attention kernels, so MACs are counted from the architecture:
# every Linear/conv GEMM plus the two attention matmuls (q k^T and attn v); norms and activations are not counted,
# as in the DiT paper. tests/models/test_presets.py checks these formulas against FlopCounterMode (math attention).


def dit_macs(config: dict[str, Any], height: int | None = None, width: int | None = None) -> int:
    """Forward multiply-accumulates of a `DiTModel` config for one (in_channels, height, width) latent."""
    size = config.get("sample_size", 32)
    height = height or (size if isinstance(size, int) else size[0])
    width = width or (size if isinstance(size, int) else size[1])
    p, depth = config["patch_size"], config["num_layers"]
    dim = config["num_attention_heads"] * config["attention_head_dim"]
    hidden = int(dim * config.get("mlp_ratio", 4.0))
    c_in = config.get("in_channels", 4)
    c_out = 2 * c_in if config.get("learn_sigma", True) else c_in
    block_type = config.get("block_type", "adaln_zero")
    n_cond = 2 if config.get("num_classes", 1000) > 0 else 1  # conditioning tokens [t, y] or [t]

    tokens = (height // p) * (width // p)
    macs = tokens * c_in * p * p * dim + 256 * dim + dim * dim  # patch embed, timestep MLP
    seq = tokens + n_cond if block_type == "in_context" else tokens
    per_block = 4 * seq * dim * dim + 2 * seq * seq * dim + 2 * seq * dim * hidden  # qkv+out, attention, MLP
    if block_type in ADALN_BLOCK_TYPES:
        per_block += (6 if block_type == "adaln_zero" else 4) * dim * dim
        macs += 2 * dim * dim  # final adaLN
    elif block_type == "cross_attn":
        per_block += 2 * seq * dim * dim + 2 * n_cond * dim * dim + 2 * seq * n_cond * dim
    macs += depth * per_block
    return macs + tokens * dim * p * p * c_out  # output projection


def count_macs(name_or_model: str | ModelMixin, height: int | None = None, width: int | None = None) -> int:
    """Forward MACs of a preset name or a model instance at its `sample_size` (or the given height/width)."""
    if isinstance(name_or_model, str):
        cls, config = preset_config(name_or_model)
    else:
        cls, config = type(name_or_model), dict(name_or_model.config)
    if cls is DiTModel:
        return dit_macs(config, height, width)
    raise TypeError(f"No MAC formula for {cls.__name__}.")


def preset_table() -> list[dict[str, Any]]:
    """One row per preset: name, trainable parameters (built on the meta device) and forward GMACs."""
    rows = []
    for name in PRESETS:
        with torch.device("meta"):
            model = create_model(name)
        rows.append({"name": name, "params": count_parameters(model), "gmacs": count_macs(name) / 1e9})
    return rows
