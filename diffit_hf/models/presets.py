"""Named model presets: `create_model("DiT-XL/2")`, `list_presets()`, and analytic parameter/MAC counts."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from diffusers.models.modeling_utils import ModelMixin
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from .transformer_diffit import DiffiTModel
from .transformer_dit import DiTModel
from .unet_diffit import DiffiTUNetModel

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
# Latent DiffiT at the DiT widths (paper App. H.2: XL/2 = 28 blocks, 1152 wide, 16 heads, global window).
PRESETS.update({
    f"DiffiT-{size}/2": (
        DiffiTModel,
        dict(DIT_DEFAULTS, num_layers=depth, num_attention_heads=heads, attention_head_dim=head_dim, patch_size=2),
    )
    for size, (depth, heads, head_dim) in DIT_SIZES.items()
})
# Image-space U-shaped DiffiT (paper App. H.1/I.1), unconditional by default.
DIFFIT_CIFAR10 = dict(sample_size=32, in_channels=3, block_out_channels=(128, 256, 256), layers_per_block=(2, 2, 2),
                      window_size=4)
DIFFIT_FFHQ64 = dict(sample_size=64, in_channels=3, block_out_channels=(128, 256, 256, 256),
                     layers_per_block=(1, 2, 2, 2), window_size=8)
DIFFIP = dict(token_mixer="pool", conv="depthwise_separable")  # lightweight "DiffiP" variant, same channels
PRESETS.update({
    "DiffiT-CIFAR10": (DiffiTUNetModel, DIFFIT_CIFAR10),
    "DiffiT-FFHQ64": (DiffiTUNetModel, DIFFIT_FFHQ64),
    "DiffiP-CIFAR10": (DiffiTUNetModel, {**DIFFIT_CIFAR10, **DIFFIP}),
    "DiffiP-FFHQ64": (DiffiTUNetModel, {**DIFFIT_FFHQ64, **DIFFIP}),
    "DiffiP-S/2": (DiffiTModel, {**PRESETS["DiffiT-S/2"][1], "token_mixer": "pool"}),
})


def list_presets() -> list[str]:
    """Names accepted by `create_model`."""
    return list(PRESETS)


def preset_config(name: str, **overrides) -> tuple[type[ModelMixin], dict[str, Any]]:
    """(model class, config dict) for a preset name, with overrides applied."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; valid names are: {', '.join(PRESETS)}.")
    cls, config = PRESETS[name]
    valid = [k for k in inspect.signature(cls.__init__).parameters if k != "self"]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"Unknown {cls.__name__} config keys {unknown} for {name}; valid keys are "
                         f"{', '.join(valid)}.")
    return cls, {**config, **overrides}


def preset_value(name: str, key: str, overrides: dict[str, Any]) -> Any:
    """The value of config `key` in a model built from preset `name` with `overrides`: the override, else the
    preset's value, else the model class's default."""
    cls, config = preset_config(name)
    return {**config, **overrides}.get(key, inspect.signature(cls.__init__).parameters[key].default)


def create_model(name: str, **overrides) -> ModelMixin:
    r"""
    Builds a freshly initialised model from a preset name (`list_presets()`, or `python -m diffit_hf presets`).

    Args:
        name (`str`):
            A preset: `"DiT-S/2"` ... `"DiT-XL/8"`, `"DiffiT-S/2"` ... `"DiffiT-XL/2"`, `"DiffiT-CIFAR10"`, ...
        overrides:
            Config values replacing the preset's (`num_classes`, `sample_size`, `in_channels`, `num_layers`, ...);
            unknown keys are refused, naming the valid ones.

    Returns:
        A `DiTModel`, `DiffiTModel` or `DiffiTUNetModel` (diffusers `ModelMixin`s) with the shared forward contract
        `model(hidden_states, timestep, class_labels).sample`.

    Examples:

    ```py
    >>> import torch
    >>> from diffit_hf import create_model

    >>> model = create_model("DiT-S/2", num_classes=10, num_layers=2)  # 2 of DiT-S's 12 blocks, for a quick look
    >>> x = torch.randn(2, 4, 32, 32)  # (batch, latent channels, height, width)
    >>> out = model(x, timestep=torch.tensor([10, 500]), class_labels=torch.tensor([3, 10])).sample  # 10: null class
    >>> out.shape  # epsilon and the learned variance
    torch.Size([2, 8, 32, 32])
    >>> model.save_pretrained("dit-s2")  # doctest: +SKIP
    ```
    """
    cls, config = preset_config(name, **overrides)
    return cls(**config)


def create_model_for_data(name: str, data_shape: tuple[int, int, int], num_classes: int, **overrides) -> ModelMixin:
    """`create_model` with the input channels, sample size and classes taken from the data `(C, H, W)`; a
    `ValueError` before any weights are made if an override contradicts the data or the data does not fit the model
    (patch, window or downsampling sizes: found by a shape-only forward on the meta device)."""
    channels, height, width = data_shape
    derived = {"in_channels": channels, "sample_size": height if height == width else (height, width),
               "num_classes": num_classes}
    for key, value in derived.items():
        if key in overrides and overrides[key] != value:
            raise ValueError(f"The model config sets {key}={overrides[key]!r} but the data gives {value!r}.")
    cls, config = preset_config(name, **{**overrides, **derived})
    with torch.device("meta"):
        x = torch.zeros(1, channels, height, width)
        t = torch.zeros(1, dtype=torch.long)
        y = torch.zeros(1, dtype=torch.long) if num_classes else None
        try:
            cls(**config)(x, t, y)
        except ValueError as err:
            raise ValueError(f"Data of shape {tuple(data_shape)} does not fit {name}: {err}") from err
    return cls(**config)


def count_parameters(model: torch.nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters; the frozen positional tables are buffers and never counted."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


#################################################################################
#                       Analytic multiply-accumulate counts                      #
#################################################################################


def count_macs(
    name_or_model: str | ModelMixin, height: int | None = None, width: int | None = None,
    include_attention: bool = True,
) -> int:
    """Forward multiply-accumulates for one sample, from shapes alone.

    The model is rebuilt on the `meta` device (no memory, any size) and traced under `FlopCounterMode` with the math
    attention backend, so every Linear/conv GEMM and the attention matmuls (q k^T, attn v) are counted; norms and
    activations are not, as in the papers. (On CPU tensors the fused attention kernels would count zero.)
    `include_attention=False` leaves out the attention matmuls, the convention behind DiffiT's reported 114 GMACs.
    """
    if isinstance(name_or_model, str):
        cls, config = preset_config(name_or_model)
    else:
        cls, config = type(name_or_model), dict(name_or_model.config)
    size = config.get("sample_size", 32)
    height = height or (size if isinstance(size, int) else size[0])
    width = width or (size if isinstance(size, int) else size[1])
    with torch.device("meta"):
        model = cls.from_config(config).eval()
        x = torch.zeros(1, config["in_channels"], height, width)
        t = torch.zeros(1, dtype=torch.long)
    y = torch.zeros(1, dtype=torch.long, device="meta") if config.get("num_classes", 0) > 0 else None
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x, t, y)
    flops = counter.get_total_flops()
    if not include_attention:  # the math backend's attention matmuls are the only batched matmuls in our models
        flops -= sum(v for op, v in counter.get_flop_counts()["Global"].items() if "bmm" in str(op))
    return flops // 2


def preset_table() -> list[dict[str, Any]]:
    """One row per preset: name, input shape, trainable parameters (built on the meta device) and forward GMACs."""
    rows = []
    for name in PRESETS:
        with torch.device("meta"):
            model = create_model(name)
        size = model.config.sample_size
        h, w = (size, size) if isinstance(size, int) else size
        rows.append({"name": name, "input": f"{model.config.in_channels}x{h}x{w}", "params": count_parameters(model),
                     "gmacs": count_macs(name) / 1e9})
    return rows
