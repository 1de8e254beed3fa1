"""Load existing DiT weights into `DiTModel`: official facebookresearch/DiT checkpoints and diffusers' DiT.

Both conversions are pure key renames (plus concatenating diffusers' separate q/k/v); our model keeps the original
DiT computation, so an official checkpoint gives the original's outputs exactly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .embeddings import get_2d_sincos_pos_embed
from .presets import preset_config
from .transformer_dit import DiTModel

# official key (regex) -> our key
_OFFICIAL_RENAMES = [
    (r"^x_embedder\.proj\.", "patch_embed.proj."),
    (r"^t_embedder\.mlp\.0\.", "cond_embed.timestep_embedder.linear_1."),
    (r"^t_embedder\.mlp\.2\.", "cond_embed.timestep_embedder.linear_2."),
    (r"^y_embedder\.embedding_table\.", "cond_embed.class_embedder."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"transformer_blocks.\1.attn.to_qkv."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"transformer_blocks.\1.attn.to_out."),
    (r"^blocks\.(\d+)\.mlp\.fc(\d)\.", r"transformer_blocks.\1.ff.fc\2."),
    (r"^blocks\.(\d+)\.adaLN_modulation\.1\.", r"transformer_blocks.\1.adaln_linear."),
    (r"^final_layer\.linear\.", "final_layer.proj_out."),
    (r"^final_layer\.adaLN_modulation\.1\.", "final_layer.adaln_linear."),
]


def _load_strict(model: DiTModel, state_dict: dict[str, torch.Tensor], source: str) -> DiTModel:
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


def _with_provenance(model: DiTModel, base_model: str | None = None) -> DiTModel:
    """Marks converted weights with their source: pipelines saved with them keep its CC BY-NC 4.0 license in their
    model card (`diffit_hf.pipelines.hub.carry_provenance`)."""
    model.provenance = {"source": "facebookresearch/DiT", "base_model": base_model}
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
            ours = get_2d_sincos_pos_embed(tensor.shape[-1], model.grid_size)
            if tensor.numel() != ours.numel() or tensor.reshape(ours.shape).sub(ours).abs().max() > 1e-4:
                raise ValueError(
                    f"Official pos_embed of shape {tuple(tensor.shape)} is not the 2D sin-cos table for "
                    f"sample_size={model.config.sample_size}, patch_size={model.config.patch_size}."
                )
            continue
        new_key = key
        for pattern, repl in _OFFICIAL_RENAMES:
            new_key = re.sub(pattern, repl, new_key)
        converted[new_key] = tensor
    table = converted.get("cond_embed.class_embedder.weight")
    if table is not None and table.shape[0] == model.config.num_classes:
        # Trained without label dropout: no null row; add a zero row so the model keeps one (CFG then = a no-op).
        converted["cond_embed.class_embedder.weight"] = torch.cat([table, table.new_zeros(1, table.shape[1])])
    return _with_provenance(_load_strict(model, converted, "Official DiT"))


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
    return _with_provenance(_load_strict(ours, converted, "diffusers DiT"), base_model)
