"""DiT: Scalable Diffusion Models with Transformers (Peebles & Xie, ICCV 2023) as a diffusers model.

The four conditioning designs of the paper (section 3.2, Fig. 3) share one model class, selected by `block_type`:
`"adaln_zero"` (default, best), `"adaln"`, `"cross_attn"` and `"in_context"`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .embeddings import TimestepLabelEmbedding, get_2d_sincos_pos_embed, positional_table
from .layers import (
    Attention,
    CrossAttention,
    FeedForward,
    FinalLayer,
    PatchEmbed,
    init_conditioning_weights,
    init_vit_weights,
    modulate,
    token_grid,
    unpatchify,
)
from .validation import check_config_values, check_inputs

DIT_BLOCK_TYPES = ("adaln_zero", "adaln", "cross_attn", "in_context")
ADALN_BLOCK_TYPES = ("adaln_zero", "adaln")

#################################################################################
#                                  DiT blocks                                   #
#################################################################################


class AdaLNBlock(nn.Module):
    """DiT block conditioned by adaptive LayerNorm: shift/scale (and, when `gated`, the adaLN-Zero gates alpha)
    regressed from the conditioning vector c for the attention and MLP branches."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, gated: bool = True):
        super().__init__()
        self.gated = gated
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.ff = FeedForward(hidden_size, mlp_ratio)
        self.adaln_linear = nn.Linear(hidden_size, (6 if gated else 4) * hidden_size)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        # x: (N, T, D); c: SiLU(t_emb + y_emb), (N, D), activated once per model
        mod = self.adaln_linear(c)[:, None]  # (N, 1, 6D) or (N, 1, 4D)
        if self.gated:
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=-1)
            x = torch.addcmul(x, gate_msa, self.attn(modulate(self.norm1(x), shift_msa, scale_msa)))  # x + a * attn
            x = torch.addcmul(x, gate_mlp, self.ff(modulate(self.norm2(x), shift_mlp, scale_mlp)))  # x + a * mlp
        else:
            shift_msa, scale_msa, shift_mlp, scale_mlp = mod.chunk(4, dim=-1)
            x = x + self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
            x = x + self.ff(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class ViTBlock(nn.Module):
    """Pre-norm ViT block, optionally with cross-attention to the conditioning tokens after self-attention.

    `cross_attention=False` is DiT's in-context block (conditioning travels as extra tokens); `True` is its
    cross-attention block (attends to the length-2 sequence [t_emb, y_emb]).
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, cross_attention: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm_cross = nn.LayerNorm(hidden_size, eps=1e-6) if cross_attention else None
        self.cross_attn = CrossAttention(hidden_size, num_heads) if cross_attention else None
        self.norm2 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.ff = FeedForward(hidden_size, mlp_ratio)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))  # (N, T, D)
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.norm_cross(x), context)  # context: (N, S, D)
        return x + self.ff(self.norm2(x))


#################################################################################
#                                   DiT model                                   #
#################################################################################


class DiTModel(ModelMixin, ConfigMixin):
    r"""
    Diffusion Transformer (DiT) that denoises latents, conditioned on a timestep and an optional class label.

    The timestep/label conditioning is embedded once per forward and handed to every block; positions are a frozen
    2D sin-cos table (not in the state dict). With the same weights it computes exactly what the original DiT
    computes (see `diffit_hf.convert_official_dit`).

    Args:
        sample_size (`int` or `tuple[int, int]`, defaults to 32): Latent height/width the model is built for.
            Other sizes divisible by `patch_size` also work (the positional table is then computed on the fly).
        patch_size (`int`, defaults to 2): Side of the square patches turned into tokens.
        in_channels (`int`, defaults to 4): Latent channels.
        num_layers (`int`, defaults to 28): Number of DiT blocks.
        num_attention_heads (`int`, defaults to 16): Attention heads per block.
        attention_head_dim (`int`, defaults to 72): Channels per head; hidden size = heads x head dim.
        mlp_ratio (`float`, defaults to 4.0): MLP hidden width as a multiple of the hidden size.
        num_classes (`int`, defaults to 1000): Number of classes; label `num_classes` is the null (unconditional)
            label used for classifier-free guidance. `0` builds an unconditional model.
        class_dropout_prob (`float`, defaults to 0.1): Probability of replacing a label by the null label in
            `train()` mode.
        learn_sigma (`bool`, defaults to `True`): Also predict the variance interpolation `v`, doubling the output
            channels (`2 * in_channels`).
        block_type (`str`, defaults to `"adaln_zero"`): One of `"adaln_zero"`, `"adaln"`, `"cross_attn"`,
            `"in_context"` (DiT paper, section 3.2).
    """

    _supports_gradient_checkpointing = True
    _skip_layerwise_casting_patterns = ["pos_embed", "norm"]
    _no_split_modules = ["AdaLNBlock", "ViTBlock"]

    @register_to_config
    def __init__(
        self,
        sample_size: int | tuple[int, int] = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        num_layers: int = 28,
        num_attention_heads: int = 16,
        attention_head_dim: int = 72,
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
        class_dropout_prob: float = 0.1,
        learn_sigma: bool = True,
        block_type: str = "adaln_zero",
    ):
        super().__init__()
        if block_type not in DIT_BLOCK_TYPES:
            raise ValueError(f"Unknown block_type {block_type!r}; valid choices are {', '.join(DIT_BLOCK_TYPES)}.")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 = unconditional), got {num_classes}.")
        check_config_values(class_dropout_prob, patch_size=patch_size, in_channels=in_channels, num_layers=num_layers,
                            num_attention_heads=num_attention_heads, attention_head_dim=attention_head_dim)
        hidden_size = num_attention_heads * attention_head_dim
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.grid_size = token_grid(sample_size, patch_size)
        self.gradient_checkpointing = False

        # 1. Input: patches -> tokens, frozen positions, conditioning embedded once per model
        self.patch_embed = PatchEmbed(in_channels, hidden_size, patch_size)
        self.register_buffer("pos_embed", get_2d_sincos_pos_embed(hidden_size, self.grid_size), persistent=False)
        self.cond_embed = TimestepLabelEmbedding(hidden_size, num_classes, class_dropout_prob)

        # 2. Blocks
        if block_type in ADALN_BLOCK_TYPES:
            gated = block_type == "adaln_zero"
            blocks = [AdaLNBlock(hidden_size, num_attention_heads, mlp_ratio, gated) for _ in range(num_layers)]
        else:
            cross = block_type == "cross_attn"
            blocks = [ViTBlock(hidden_size, num_attention_heads, mlp_ratio, cross) for _ in range(num_layers)]
        self.transformer_blocks = nn.ModuleList(blocks)

        # 3. Output
        final_norm = "adaln" if block_type in ADALN_BLOCK_TYPES else "layernorm"
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels, final_norm)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier Linears, N(0, 0.02) embeddings, zero output layer for every block design (DiT, section 4);
        adaLN-Zero also zeroes its modulation (gates)."""
        init_vit_weights(self)
        init_conditioning_weights(self.cond_embed)
        if self.config.block_type == "adaln_zero":
            # Zero-out adaLN modulation layers: every block starts as the identity function.
            for block in self.transformer_blocks:
                nn.init.zeros_(block.adaln_linear.weight)
                nn.init.zeros_(block.adaln_linear.bias)
            nn.init.zeros_(self.final_layer.adaln_linear.weight)
            nn.init.zeros_(self.final_layer.adaln_linear.bias)
        # Zero-out the output layer.
        nn.init.zeros_(self.final_layer.proj_out.weight)
        nn.init.zeros_(self.final_layer.proj_out.bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor | float | int,
        class_labels: torch.LongTensor | None = None,
        return_dict: bool = True,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        """
        The [`DiTModel`] forward method.

        Args:
            hidden_states (`torch.Tensor` of shape `(batch, in_channels, height, width)`):
                Noisy latents; height and width must be divisible by `patch_size`.
            timestep (`torch.Tensor` of shape `(batch,)` or `()`, or a number):
                Diffusion timesteps (integer or continuous); a scalar is broadcast over the batch.
            class_labels (`torch.LongTensor` of shape `(batch,)`, *optional*):
                Labels in `[0, num_classes]`, where `num_classes` is the null label. `None` means all-null
                (unconditional) for a class-conditional model; must be `None` for an unconditional model.
            return_dict (`bool`, defaults to `True`):
                Return a [`~models.modeling_outputs.Transformer2DModelOutput`] instead of a plain tuple.

        Returns:
            [`~models.modeling_outputs.Transformer2DModelOutput`] or `tuple`: the prediction of shape
            `(batch, out_channels, height, width)`, with `out_channels = 2 * in_channels` when `learn_sigma`.
        """
        p = self.config.patch_size
        timestep, class_labels = check_inputs(self.config, hidden_states, timestep, class_labels, size_multiple=p,
                                              dtype=self.dtype)
        grid_size = (hidden_states.shape[-2] // p, hidden_states.shape[-1] // p)
        block_type = self.config.block_type

        # 1. Input
        pos = positional_table(self.pos_embed, self.grid_size, grid_size, self.dtype)  # (1, T, D)
        x = self.patch_embed(hidden_states) + pos  # (N, T, D)
        time_emb, label_emb = self.cond_embed(timestep, class_labels, dtype=x.dtype)  # (N, D), (N, D) | None
        cond_tokens = [time_emb] if label_emb is None else [time_emb, label_emb]
        if block_type in ADALN_BLOCK_TYPES:
            c = time_emb if label_emb is None else time_emb + label_emb  # (N, D)
            cond = F.silu(c)  # the SiLU every adaLN regressor starts with, applied once
        elif block_type == "cross_attn":
            cond = torch.stack(cond_tokens, dim=1)  # (N, 2, D)
        else:  # in_context: conditioning appended as extra tokens
            cond = None
            x = torch.cat([x, torch.stack(cond_tokens, dim=1)], dim=1)  # (N, T + 2, D)

        # 2. Blocks
        for block in self.transformer_blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                x = self._gradient_checkpointing_func(block, x, cond)
            else:
                x = block(x, cond)  # (N, T, D)

        # 3. Output
        num_tokens = grid_size[0] * grid_size[1]
        x = self.final_layer(x[:, :num_tokens], cond if block_type in ADALN_BLOCK_TYPES else None)  # (N, T, p*p*C)
        output = unpatchify(x, p, grid_size, self.out_channels)  # (N, C_out, H, W)

        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)
