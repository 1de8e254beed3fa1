"""Image-space DiffiT: a U-shaped denoiser of DiffiT ResBlocks with windowed TMSA (paper section 3.2, App. H.1/I.1).

    conv tokenizer -> [DiffiT ResBlocks -> downsample] x levels -> decoder [upsample, skip concat, ResBlocks]
    -> head (GroupNorm, SiLU, Conv3x3)

A DiffiT ResBlock is `x_hat = Conv3x3(SiLU(GN(x)))`, `x = DiffiTBlock(x_hat, x_t) + x`, with TMSA inside
non-overlapping local windows. Lightweight variants: `token_mixer="pool"` (DiffiP) and
`conv="depthwise_separable"`; grayscale is simply `in_channels=1`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .embeddings import TimestepLabelEmbedding
from .transformer_diffit import DiffiTBlock, init_diffit_weights
from .validation import check_config_values, check_inputs

CONV_TYPES = ("standard", "depthwise_separable")


def conv3x3(in_channels: int, out_channels: int, conv: str = "standard", stride: int = 1) -> nn.Module:
    """3x3 convolution, or its depthwise-separable factorisation (depthwise 3x3 then pointwise 1x1)."""
    if conv == "standard":
        return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)
    if conv == "depthwise_separable":
        return nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, stride=stride, padding=1, groups=in_channels),
            nn.Conv2d(in_channels, out_channels, 1),
        )
    raise ValueError(f"Unknown conv {conv!r}; valid choices are {', '.join(CONV_TYPES)}.")


class DiffiTResBlock(nn.Module):
    """x_hat = Conv3x3(SiLU(GN(x))); x = DiffiTBlock(x_hat, x_t) + x, on (N, C, H, W) feature maps."""

    def __init__(self, channels: int, num_heads: int, window_size: int, time_dim: int, mlp_ratio: float,
                 norm_num_groups: int, token_mixer: str, conv: str):
        super().__init__()
        self.norm = nn.GroupNorm(norm_num_groups, channels, eps=1e-6)
        self.conv = conv3x3(channels, channels, conv)
        self.transformer = DiffiTBlock(channels, num_heads, (window_size, window_size), time_dim, mlp_ratio,
                                       token_mixer)

    def forward(self, x: torch.Tensor, time_token: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        x_hat = self.conv(F.silu(self.norm(x)))  # (N, C, H, W)
        tokens = self.transformer(x_hat.flatten(2).transpose(1, 2), time_token, (h, w))  # (N, H*W, C)
        return tokens.transpose(1, 2).reshape(n, c, h, w) + x


class DiffiTUNetModel(ModelMixin, ConfigMixin):
    r"""
    Image-space U-shaped DiffiT (pixels or small latents), with the same forward contract as [`DiTModel`].

    Args:
        sample_size (`int`, defaults to 32): Image side the model is built for; inputs of any height/width divisible
            by `window_size * 2 ** (levels - 1)` work.
        in_channels (`int`, defaults to 3): Image channels (1 = grayscale).
        block_out_channels (`tuple[int, ...]`, defaults to `(128, 256, 256)`): Channels per resolution level.
        layers_per_block (`tuple[int, ...]`, defaults to `(2, 2, 2)`): DiffiT ResBlocks per level (encoder and
            decoder alike); the deepest level is the bottleneck.
        window_size (`int`, defaults to 4): TMSA window side in pixels of each level's feature map.
        attention_head_dim (`int`, defaults to 64): Channels per head (heads = channels / head dim).
        mlp_ratio (`float`, defaults to 4.0): MLP width multiple inside the DiffiT blocks.
        time_embed_dim (`int`, *optional*): Width of the time token x_t; defaults to `4 * block_out_channels[0]`.
        num_classes (`int`, defaults to 0): Classes (label `num_classes` = null label); `0` = unconditional.
        class_dropout_prob (`float`, defaults to 0.1): Label dropout probability in `train()` mode.
        learn_sigma (`bool`, defaults to `False`): Output `2 * in_channels` channels.
        norm_num_groups (`int`, defaults to 32): GroupNorm groups; must divide every level's channels.
        token_mixer (`str`, defaults to `"attention"`): `"attention"` (TMSA) or `"pool"` (DiffiP).
        conv (`str`, defaults to `"standard"`): `"standard"` or `"depthwise_separable"` 3x3 convolutions.
    """

    _supports_gradient_checkpointing = True
    _skip_layerwise_casting_patterns = ["norm", "rel_pos_bias"]
    _no_split_modules = ["DiffiTResBlock"]

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        in_channels: int = 3,
        block_out_channels: tuple[int, ...] = (128, 256, 256),
        layers_per_block: tuple[int, ...] = (2, 2, 2),
        window_size: int = 4,
        attention_head_dim: int = 64,
        mlp_ratio: float = 4.0,
        time_embed_dim: int | None = None,
        num_classes: int = 0,
        class_dropout_prob: float = 0.1,
        learn_sigma: bool = False,
        norm_num_groups: int = 32,
        token_mixer: str = "attention",
        conv: str = "standard",
    ):
        super().__init__()
        check_config_values(class_dropout_prob, in_channels=in_channels, window_size=window_size,
                            attention_head_dim=attention_head_dim, norm_num_groups=norm_num_groups,
                            time_embed_dim=time_embed_dim)
        channels, depths = list(block_out_channels), list(layers_per_block)
        if len(channels) != len(depths) or not channels:
            raise ValueError(
                f"block_out_channels {channels} and layers_per_block {depths} must be non-empty and of equal length."
            )
        for c in channels:
            if c % norm_num_groups or c % attention_head_dim:
                raise ValueError(
                    f"Channels {c} must be divisible by norm_num_groups={norm_num_groups} and "
                    f"attention_head_dim={attention_head_dim}."
                )
        if conv not in CONV_TYPES:
            raise ValueError(f"Unknown conv {conv!r}; valid choices are {', '.join(CONV_TYPES)}.")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 = unconditional), got {num_classes}.")
        time_dim = time_embed_dim or 4 * channels[0]
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.size_multiple = window_size * 2 ** (len(channels) - 1)
        if sample_size % self.size_multiple:
            raise ValueError(
                f"sample_size {sample_size} is not divisible by window_size * 2**(levels-1) = {self.size_multiple}."
            )
        self.gradient_checkpointing = False

        def res_blocks(c: int, n: int) -> nn.ModuleList:
            return nn.ModuleList(
                DiffiTResBlock(c, c // attention_head_dim, window_size, time_dim, mlp_ratio, norm_num_groups,
                               token_mixer, conv)
                for _ in range(n)
            )

        # 1. Input: conv tokenizer, one conditioning embedder giving the time token x_t
        self.cond_embed = TimestepLabelEmbedding(time_dim, num_classes, class_dropout_prob)
        self.conv_in = conv3x3(in_channels, channels[0])

        # 2. Encoder (the deepest level is the bottleneck) and decoder
        self.down_blocks = nn.ModuleList(res_blocks(c, n) for c, n in zip(channels, depths))
        self.downsamplers = nn.ModuleList(
            conv3x3(c_in, c_out, conv, stride=2) for c_in, c_out in zip(channels[:-1], channels[1:])
        )
        self.upsamplers = nn.ModuleList(conv3x3(c_out, c_in, conv) for c_in, c_out in zip(channels[:-1], channels[1:]))
        self.skip_fuse = nn.ModuleList(nn.Conv2d(2 * c, c, 1) for c in channels[:-1])
        self.up_blocks = nn.ModuleList(res_blocks(c, n) for c, n in zip(channels[:-1], depths[:-1]))

        # 3. Output head
        self.norm_out = nn.GroupNorm(norm_num_groups, channels[0], eps=1e-6)
        self.conv_out = conv3x3(channels[0], self.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Shared DiffiT init (xavier Linears, N(0, 0.02) conditioning, trunc-normal bias tables); convs keep
        PyTorch's default; the output conv is zero-initialised so the model starts by predicting zero."""
        init_diffit_weights(self)
        for m in self.conv_out.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)

    def _run(self, block: nn.Module, x: torch.Tensor, time_token: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return self._gradient_checkpointing_func(block, x, time_token)
        return block(x, time_token)

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor | float | int,
        class_labels: torch.LongTensor | None = None,
        return_dict: bool = True,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        """
        The [`DiffiTUNetModel`] forward method.

        Args:
            hidden_states (`torch.Tensor` of shape `(batch, in_channels, height, width)`):
                Noisy images; height and width divisible by `window_size * 2 ** (levels - 1)`.
            timestep (`torch.Tensor` of shape `(batch,)` or `()`, or a number):
                Diffusion timesteps; a scalar is broadcast over the batch.
            class_labels (`torch.LongTensor` of shape `(batch,)`, *optional*):
                Labels in `[0, num_classes]` (`num_classes` = null label); `None` = all null. Must be `None` for an
                unconditional model.
            return_dict (`bool`, defaults to `True`):
                Return a [`~models.modeling_outputs.Transformer2DModelOutput`] instead of a plain tuple.

        Returns:
            [`~models.modeling_outputs.Transformer2DModelOutput`] or `tuple`: the prediction, shape
            `(batch, out_channels, height, width)`.
        """
        timestep, class_labels = check_inputs(self.config, hidden_states, timestep, class_labels,
                                              size_multiple=self.size_multiple, dtype=self.dtype)

        # 1. Input
        time_emb, label_emb = self.cond_embed(timestep, class_labels, dtype=hidden_states.dtype)
        time_token = time_emb if label_emb is None else time_emb + label_emb  # x_t: (N, time_dim)
        x = self.conv_in(hidden_states)  # (N, C0, H, W)

        # 2. Encoder: ResBlocks per level, keep the skip, downsample
        skips = []
        for level, blocks in enumerate(self.down_blocks):
            for block in blocks:
                x = self._run(block, x, time_token)
            if level < len(self.downsamplers):
                skips.append(x)  # (N, C_l, H_l, W_l)
                x = self.downsamplers[level](x)  # (N, C_l+1, H_l / 2, W_l / 2)

        #    Decoder: upsample, fuse the skip, ResBlocks
        for level in reversed(range(len(self.up_blocks))):
            x = self.upsamplers[level](F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (N, C_l, H_l, W_l)
            x = self.skip_fuse[level](torch.cat([x, skips.pop()], dim=1))
            for block in self.up_blocks[level]:
                x = self._run(block, x, time_token)

        # 3. Output head
        output = self.conv_out(F.silu(self.norm_out(x)))  # (N, C_out, H, W)

        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)
