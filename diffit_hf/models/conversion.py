"""Load existing weights: official facebookresearch/DiT checkpoints and diffusers' DiT into `DiTModel`, and NVIDIA's
released latent DiffiT checkpoints (NVlabs/DiffiT, 256 px and 512 px) into `DiffiTModel`.

All conversions are pure key renames (plus concatenating diffusers' separate q/k/v); our models keep the original
computations, so an official checkpoint gives the original's outputs exactly. Frozen tables stored in the official
checkpoints (the sin-cos `pos_embed`, DiffiT's `relative_position_index`) are checked against the ones our models
compute, then dropped.
"""

from __future__ import annotations

import math
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .embeddings import get_2d_sincos_pos_embed
from .presets import preset_config
from .transformer_diffit import DiffiTModel, relative_position_index
from .transformer_dit import DiTModel

# the embedders and the final Linear: the same names in facebookresearch/DiT and NVlabs/DiffiT
_SHARED_RENAMES = [
    (r"^x_embedder\.proj\.", "patch_embed.proj."),
    (r"^t_embedder\.mlp\.0\.", "cond_embed.timestep_embedder.linear_1."),
    (r"^t_embedder\.mlp\.2\.", "cond_embed.timestep_embedder.linear_2."),
    (r"^y_embedder\.embedding_table\.", "cond_embed.class_embedder."),
    (r"^final_layer\.linear\.", "final_layer.proj_out."),
]

# official key (regex) -> our key
_OFFICIAL_RENAMES = _SHARED_RENAMES + [
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"transformer_blocks.\1.attn.to_qkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"transformer_blocks.\1.attn.to_out."),
    (r"^blocks\.(\d+)\.mlp\.fc(\d)\.", r"transformer_blocks.\1.ff.fc\2."),
    (r"^blocks\.(\d+)\.adaLN_modulation\.1\.", r"transformer_blocks.\1.adaln_linear."),
    (r"^final_layer\.adaLN_modulation\.1\.", "final_layer.adaln_linear."),
]


# NVlabs/DiffiT latent model: official key (regex) -> our key. Same embedders and final Linear names as DiT; per
# block `attn.qkv` (x_s -> q, k, v), `attn.qkv_temb` (x_t -> q, k, v), `attn.proj`, the relative position bias table
# ((2w-1)^2, heads) with w = the token grid side, and a timm `Mlp` (fc1, fc2). The final layer has no adaLN.
_OFFICIAL_DIFFIT_RENAMES = _SHARED_RENAMES + [
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"transformer_blocks.\1.attn.to_qkv."),
    (r"^blocks\.(\d+)\.attn\.qkv_temb\.", r"transformer_blocks.\1.attn.to_qkv_time."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"transformer_blocks.\1.attn.to_out."),
    (r"^blocks\.(\d+)\.attn\.relative_position_bias_table$", r"transformer_blocks.\1.attn.rel_pos_bias.table"),
    (r"^blocks\.(\d+)\.mlp\.fc(\d)\.", r"transformer_blocks.\1.ff.fc\2."),
]


def load_checkpoint_file(path: str | Path, flag: str = "--official") -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file: `.safetensors`, or a torch pickle restricted to tensors (`weights_only=True`;
    DiT's `{"model", "ema", ...}` dicts keep their nesting). `ValueError` naming `flag` and the file when it is not
    such a checkpoint; torch's own message is not passed on, as it advises `weights_only=False`, which runs any code
    the file holds."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        state = load_file(str(path)) if path.suffix == ".safetensors" else \
            torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, pickle.UnpicklingError, OSError, EOFError, RuntimeError, ValueError) as err:
        raise ValueError(
            f"{flag} {path}: not a checkpoint of tensors, or a damaged one ({type(err).__name__}). Pass an official "
            "checkpoint (.pt / .safetensors) or a save_pretrained folder. It is read with weights_only=True on "
            "purpose: never load a file you do not trust with weights_only=False (it can run any code)."
        ) from None
    if not isinstance(state, Mapping):
        raise ValueError(f"{flag} {path}: holds {type(state).__name__}, not a state dict of tensors.")
    return dict(state)


def _rename(key: str, renames: list[tuple[str, str]]) -> str:
    for pattern, repl in renames:
        key = re.sub(pattern, repl, key)
    return key


def _check_pos_embed(tensor: torch.Tensor, model: DiTModel | DiffiTModel) -> None:
    """The official checkpoints store the frozen sin-cos table: it must be the one our model computes."""
    ours = get_2d_sincos_pos_embed(tensor.shape[-1], model.grid_size)
    if tensor.numel() != ours.numel() or tensor.reshape(ours.shape).sub(ours).abs().max() > 1e-4:
        raise ValueError(
            f"Official pos_embed of shape {tuple(tensor.shape)} is not the 2D sin-cos table for "
            f"sample_size={model.config.sample_size}, patch_size={model.config.patch_size}."
        )


def _with_null_row(converted: dict[str, torch.Tensor], num_classes: int) -> None:
    table = converted.get("cond_embed.class_embedder.weight")
    if table is not None and table.shape[0] == num_classes:
        # Trained without label dropout: no null row; add a zero row so the model keeps one (CFG then = a no-op).
        converted["cond_embed.class_embedder.weight"] = torch.cat([table, table.new_zeros(1, table.shape[1])])


def _load_strict(model: DiTModel | DiffiTModel, state_dict: dict[str, torch.Tensor], source: str) -> DiTModel:
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{source} checkpoint does not match the model config: missing {missing[:8]}, unexpected {unexpected[:8]}."
        )
    for key, tensor in state_dict.items():
        if tensor.shape != model.state_dict()[key].shape:
            raise ValueError(
                f"{source} checkpoint: {key} has shape {tuple(tensor.shape)}, the model config expects "
                f"{tuple(model.state_dict()[key].shape)}."
            )
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def _with_provenance(model: DiTModel | DiffiTModel, source: str, base_model: str | None = None
                     ) -> DiTModel | DiffiTModel:
    """Marks converted weights with their source (`"facebookresearch/DiT"`: CC BY-NC 4.0, `"NVlabs/DiffiT"`: NVIDIA's
    non-commercial license): pipelines saved with them keep that license in their model card
    (`diffit_hf.pipelines.model_card.carry_provenance`)."""
    model.provenance = {"source": source, "base_model": base_model}
    return model


def convert_official_dit(
    state_dict: Mapping[str, torch.Tensor], preset_or_config: str | dict[str, Any] = "DiT-XL/2"
) -> DiTModel:
    """Builds a `DiTModel` from a facebookresearch/DiT state dict (e.g. `DiT-XL-2-256x256.pt`).

    Args:
        state_dict (`Mapping[str, torch.Tensor]`): The official state dict; a training checkpoint holding `"ema"`
            (and `"model"`) entries uses the EMA weights, as the official sampler does.
        preset_or_config (`str` or `dict`, defaults to `"DiT-XL/2"`): Preset name (see `list_presets()`) or a full
            `DiTModel` config matching the checkpoint.

    Returns:
        `DiTModel` in eval mode.
    """
    if "ema" in state_dict:
        state_dict = state_dict["ema"]
    if isinstance(preset_or_config, str):
        _, config = preset_config(preset_or_config)
    else:
        config = dict(preset_or_config)
    model = DiTModel(**config)

    converted = {}
    for key, tensor in state_dict.items():
        if key == "pos_embed":  # frozen table: check it is the one we compute, then drop it
            _check_pos_embed(tensor, model)
            continue
        converted[_rename(key, _OFFICIAL_RENAMES)] = tensor
    _with_null_row(converted, model.config.num_classes)
    return _with_provenance(_load_strict(model, converted, "Official DiT"), "facebookresearch/DiT")


def convert_official_diffit(
    state_dict: Mapping[str, torch.Tensor], preset_or_config: str | dict[str, Any] = "DiffiT-XL/2"
) -> DiffiTModel:
    """Builds a `DiffiTModel` from an NVlabs/DiffiT latent checkpoint (ImageNet 256 px: 32x32x4 latents, 512 px:
    64x64x4; the released `Diffit` model: 28 blocks, width 1152, 16 heads, patch 2, learned sigma).

    Their attention spans the whole token grid (window = latent size / patch size), with one relative position bias
    table per block: our `window_size=None` (global attention). With a preset name the latent size is read from the
    checkpoint's `pos_embed` (or bias table), so one preset converts both resolutions.

    Args:
        state_dict (`Mapping[str, torch.Tensor]`): The official state dict; one holding `"ema"` (and `"model"`)
            entries uses the EMA weights.
        preset_or_config (`str` or `dict`, defaults to `"DiffiT-XL/2"`): Preset name (see `list_presets()`) or a full
            `DiffiTModel` config matching the checkpoint (with `window_size=None`).

    Returns:
        `DiffiTModel` in eval mode.
    """
    if "ema" in state_dict:
        state_dict = state_dict["ema"]
    if isinstance(preset_or_config, str):
        model_class, config = preset_config(preset_or_config)
        if model_class is not DiffiTModel:
            raise ValueError(f"Preset {preset_or_config!r} is not a latent DiffiT model; use a 'DiffiT-*/2' preset.")
        tokens = _official_token_count(state_dict)
        if tokens is not None:
            config["sample_size"] = math.isqrt(tokens) * config["patch_size"]
    else:
        config = dict(preset_or_config)
    if config.get("window_size") is not None:
        raise ValueError(f"Official DiffiT attends over the whole token grid; use window_size=None, not "
                         f"{config['window_size']}.")
    model = DiffiTModel(**config)
    grid = model.grid_size

    converted = {}
    for key, tensor in state_dict.items():
        if key == "pos_embed":
            _check_pos_embed(tensor, model)
            continue
        if key.endswith(".attn.relative_position_index"):  # frozen index: must be ours for the same window
            ours = relative_position_index(grid, grid)
            if tensor.shape != ours.shape or not torch.equal(tensor.long(), ours):
                raise ValueError(
                    f"Official {key} of shape {tuple(tensor.shape)} is not the relative position index of a "
                    f"{grid[0]}x{grid[1]} token grid (sample_size={model.config.sample_size}, "
                    f"patch_size={model.config.patch_size})."
                )
            continue
        converted[_rename(key, _OFFICIAL_DIFFIT_RENAMES)] = tensor
    _with_null_row(converted, model.config.num_classes)
    return _with_provenance(_load_strict(model, converted, "Official DiffiT"), "NVlabs/DiffiT")


def _official_token_count(state_dict: Mapping[str, torch.Tensor]) -> int | None:
    """Tokens T of the official model's grid: from `pos_embed` (1, T, D), else a bias table ((2w-1)^2, heads)."""
    if "pos_embed" in state_dict:
        return state_dict["pos_embed"].shape[-2]
    table = state_dict.get("blocks.0.attn.relative_position_bias_table")
    if table is None:
        return None
    side = (math.isqrt(table.shape[0]) + 1) // 2
    return side * side


def convert_diffusers_dit(model: torch.nn.Module) -> DiTModel:
    """Builds a `DiTModel` with the weights of a diffusers `DiTTransformer2DModel`.

    diffusers keeps one timestep/label embedder per block; they must be identical copies (as in every converted
    official checkpoint) and collapse to our single embedder. Our model computes the original DiT (timestep
    frequency shift 0, MLP LayerNorm eps 1e-6), so outputs differ from diffusers' own forward by ~0.1 unless that
    model is configured the same way.

    Args:
        model (`diffusers.DiTTransformer2DModel`): The source model.

    Returns:
        `DiTModel` in eval mode.
    """
    cfg = model.config
    if cfg.norm_type != "ada_norm_zero":
        raise ValueError(f"Only norm_type='ada_norm_zero' DiT models convert, got {cfg.norm_type!r}.")
    embedder = model.transformer_blocks[0].norm1.emb
    for i, block in enumerate(model.transformer_blocks[1:], start=1):
        for (name, a), b in zip(embedder.state_dict().items(), block.norm1.emb.state_dict().values()):
            if not torch.equal(a, b):
                raise ValueError(
                    f"diffusers block {i} has its own embedder weights ({name}) different from block 0's; "
                    "DiTModel has one shared embedder, so this model cannot be converted without loss."
                )
    out_channels = cfg.out_channels or cfg.in_channels
    if out_channels not in (cfg.in_channels, 2 * cfg.in_channels):
        raise ValueError(f"out_channels={out_channels} must equal in_channels or 2 * in_channels.")
    num_classes = cfg.num_embeds_ada_norm
    dropout = embedder.class_embedder.dropout_prob
    ours = DiTModel(
        sample_size=cfg.sample_size,
        patch_size=cfg.patch_size,
        in_channels=cfg.in_channels,
        num_layers=cfg.num_layers,
        num_attention_heads=cfg.num_attention_heads,
        attention_head_dim=cfg.attention_head_dim,
        num_classes=num_classes,
        class_dropout_prob=dropout,
        learn_sigma=out_channels == 2 * cfg.in_channels,
    )

    sd = model.state_dict()
    table = sd["transformer_blocks.0.norm1.emb.class_embedder.embedding_table.weight"]
    if table.shape[0] == num_classes:  # no null row (dropout 0): add a zero row
        table = torch.cat([table, table.new_zeros(1, table.shape[1])])
    converted = {
        "patch_embed.proj.weight": sd["pos_embed.proj.weight"],
        "patch_embed.proj.bias": sd["pos_embed.proj.bias"],
        "cond_embed.class_embedder.weight": table,
        "final_layer.adaln_linear.weight": sd["proj_out_1.weight"],
        "final_layer.adaln_linear.bias": sd["proj_out_1.bias"],
        "final_layer.proj_out.weight": sd["proj_out_2.weight"],
        "final_layer.proj_out.bias": sd["proj_out_2.bias"],
    }
    for j in (1, 2):
        for kind in ("weight", "bias"):
            src = f"transformer_blocks.0.norm1.emb.timestep_embedder.linear_{j}.{kind}"
            converted[f"cond_embed.timestep_embedder.linear_{j}.{kind}"] = sd[src]
    for i in range(cfg.num_layers):
        src, dst = f"transformer_blocks.{i}.", f"transformer_blocks.{i}."
        for kind in ("weight", "bias"):
            qkv = [sd[f"{src}attn1.to_{x}.{kind}"] for x in "qkv"]
            converted[f"{dst}attn.to_qkv.{kind}"] = torch.cat(qkv)
            converted[f"{dst}attn.to_out.{kind}"] = sd[f"{src}attn1.to_out.0.{kind}"]
            converted[f"{dst}adaln_linear.{kind}"] = sd[f"{src}norm1.linear.{kind}"]
            converted[f"{dst}ff.fc1.{kind}"] = sd[f"{src}ff.net.0.proj.{kind}"]
            converted[f"{dst}ff.fc2.{kind}"] = sd[f"{src}ff.net.2.{kind}"]
    origin = str(model.config.get("_name_or_path") or "")  # a Hub id when loaded from one
    base_model = origin if re.fullmatch(r"[\w.-]+/[\w.-]+", origin) and not Path(origin).exists() else None
    return _with_provenance(_load_strict(ours, converted, "diffusers DiT"), "facebookresearch/DiT", base_model)
