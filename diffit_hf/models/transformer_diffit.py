"""DiffiT: Diffusion Vision Transformers (Hatamizadeh et al., ECCV 2024) — TMSA and the latent DiffiT model.

The time-dependent multi-head self-attention (TMSA, paper section 3.2, Eq. 3-6) adds the time token x_t to every
spatial token's query, key and value through its own projections,

    q = x_s W_qs + x_t W_qt,   k = x_s W_ks + x_t W_kt,   v = x_s W_vs + x_t W_vt,
    Attention = softmax(q k^T / sqrt(d) + B) v,

with B a learnable 2D relative position bias. `DiffiTBlock` (x + TMSA(LN(x), x_t), x + MLP(LN(x))) is shared with
the image-space U-shaped model in `unet_diffit.py`.

TMSA conditions additively only. In softmax_j((q_i + q_t) . (k_j + k_t)) every term constant over the keys j cancels,
so the time part of the key, x_t W_kt (and the key bias), cannot change the attention: the time token acts through
q_t . k_j (one key re-weighting shared by all queries) and v_t (a shift of the output). `test_transformer_diffit`
proves it (outputs unchanged, zero gradient). The opt-in `DiffiTModel` settings `adaln_zero` (with `adaln_single`,
PixArt-alpha's shared form of it, and `adaln_label_table`, per-block label rows beside it), `final_layer_type` and
`zero_init_residual` add DiT's multiplicative, identity-at-init conditioning beside TMSA, or DiT's output layers
(docs/diffit_vs_dit.md); they are off by default and NVIDIA's weights convert without them.
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
    FeedForward,
    FinalLayer,
    PatchEmbed,
    init_conditioning_weights,
    init_vit_weights,
    modulate,
    multihead_attention,
    token_grid,
    unpatchify,
    window_merge,
    window_partition,
)
from .validation import check_config_values, check_inputs

TOKEN_MIXERS = ("attention", "pool")

#################################################################################
#                    Relative position bias and TMSA attention                  #
#################################################################################


def relative_position_index(grid: tuple[int, int], window: tuple[int, int], device=None) -> torch.Tensor:
    """(T, T) index into a ((2wh-1)(2ww-1), heads) table for the (dy, dx) offsets of a row-major `grid` of tokens,
    which must fit in `window` (|dy| < wh, |dx| < ww)."""
    (h, w), (wh, ww) = grid, window
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()  # (T,)
    dy = ys[:, None] - ys[None, :] + wh - 1  # (T, T) in [0, 2wh-2]
    dx = xs[:, None] - xs[None, :] + ww - 1
    return dy * (2 * ww - 1) + dx


class RelativePositionBias(nn.Module):
    """Learnable 2D relative position bias B (Swin-style): one value per (dy, dx) offset and head."""

    def __init__(self, window_size: tuple[int, int], num_heads: int):
        super().__init__()
        self.window_size = tuple(window_size)
        wh, ww = self.window_size
        self.table = nn.Parameter(torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads))
        self.register_buffer("index", relative_position_index(self.window_size, self.window_size), persistent=False)
        self._cached: tuple[tuple, torch.Tensor] | None = None  # (key, bias) of the last call without autograd

    def forward(self, grid: tuple[int, int]) -> torch.Tensor:
        """(heads, T, T) bias for a token grid no larger than the window. Without autograd (sampling) the gathered
        bias is kept and reused until the table changes (an optimiser step or `load_state_dict` bumps its version)
        or another grid, device or dtype is asked for: no per-step gather at inference."""
        if torch.is_grad_enabled() and self.table.requires_grad:
            return self._gather(grid)
        key = (tuple(grid), self.table.data_ptr(), self.table._version, self.table.device, self.table.dtype)
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, self._gather(grid).detach().contiguous())
        return self._cached[1]

    def _gather(self, grid: tuple[int, int]) -> torch.Tensor:
        if tuple(grid) == self.window_size:
            index = self.index
        elif grid[0] <= self.window_size[0] and grid[1] <= self.window_size[1]:
            index = relative_position_index(grid, self.window_size, self.index.device)
        else:
            raise ValueError(
                f"Token grid {grid[0]}x{grid[1]} exceeds the attention window {self.window_size[0]}x"
                f"{self.window_size[1]} the relative position bias was built for; use a smaller input or window_size."
            )
        return self.table[index].permute(2, 0, 1)  # (H, T, T)


class TMSA(nn.Module):
    """Time-dependent multi-head self-attention (DiffiT Eq. 3-6) with a relative position bias.

    Tokens `x` are (B, T, D) for B = N * windows; the time token is (N, time_dim) and is shared by a sample's windows.
    """

    def __init__(self, dim: int, num_heads: int, window_size: tuple[int, int], time_dim: int):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"hidden size {dim} is not divisible by num_attention_heads={num_heads}.")
        self.num_heads = num_heads
        self.to_qkv = nn.Linear(dim, 3 * dim)  # x_s -> [W_qs, W_ks, W_vs]
        self.to_qkv_time = nn.Linear(time_dim, 3 * dim)  # x_t -> [W_qt, W_kt, W_vt]
        self.to_out = nn.Linear(dim, dim)
        self.rel_pos_bias = RelativePositionBias(window_size, num_heads)

    def forward(self, x: torch.Tensor, time_token: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        qkv_time = self.to_qkv_time(time_token)  # (N, 3D)
        windows_per_sample = x.shape[0] // time_token.shape[0]
        if windows_per_sample > 1:
            qkv_time = qkv_time.repeat_interleave(windows_per_sample, dim=0)  # (N * nW, 3D)
        q, k, v = (self.to_qkv(x) + qkv_time[:, None]).chunk(3, dim=-1)  # Eq. 3-5: 3 x (B, T, D)
        bias = self.rel_pos_bias(grid).to(q.dtype)  # (H, T, T)
        return self.to_out(multihead_attention(q, k, v, self.num_heads, bias))  # Eq. 6


class PoolMixer(nn.Module):
    """PoolFormer token mixer `AvgPool3x3(x) - x` ("DiffiP"), kept time-dependent: the time token enters through a
    learned projection added to every token, as x_t enters TMSA's value path (softmax rows sum to one)."""

    def __init__(self, dim: int, time_dim: int):
        super().__init__()
        self.time_proj = nn.Linear(time_dim, dim)

    def forward(self, x: torch.Tensor, time_token: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        n, t, d = x.shape
        image = x.transpose(1, 2).reshape(n, d, grid[0], grid[1])  # (N, D, H, W)
        pooled = F.avg_pool2d(image, 3, stride=1, padding=1, count_include_pad=False).flatten(2).transpose(1, 2)
        return pooled - x + self.time_proj(time_token)[:, None]  # (N, T, D)


#################################################################################
#                                  DiffiT block                                 #
#################################################################################


class DiffiTBlock(nn.Module):
    """x = x + TMSA(LN(x), x_t); x = x + MLP(LN(x)). LayerNorms without affine; no adaLN (DiffiT as published).

    `window_size` is the attention window in tokens. With `global_window=True` attention spans the whole token grid
    (which may be any size up to `window_size`); otherwise the grid is split into non-overlapping windows.
    `token_mixer="pool"` swaps TMSA for the time-conditioned pooling mixer. `adaln_zero=True` (opt-in, not DiffiT)
    adds DiT's adaLN-Zero beside TMSA: shift/scale of both LayerNorms and gates of both branches regressed from
    SiLU(x_t) by a zero-initialised Linear, so the block starts as the identity. `adaln_single=True` (with
    `adaln_zero`; PixArt-alpha's adaLN-single) drops that Linear: the model regresses the six modulations once for
    all blocks and each block adds its own learned, zero-initialised (6D,) table to them (`modulation`).
    `label_rows > 0` (with `adaln_single`; opt-in, neither DiffiT nor PixArt-alpha) gives the block a zero-initialised
    (label_rows, 6D) table too, one row per class label and the null label, added to its modulations: a per-block
    label pathway, which the shared regression alone does not have.
    """

    def __init__(self, dim: int, num_heads: int, window_size: tuple[int, int], time_dim: int,
                 mlp_ratio: float = 4.0, token_mixer: str = "attention", global_window: bool = False,
                 adaln_zero: bool = False, adaln_single: bool = False, label_rows: int = 0):
        super().__init__()
        if adaln_single and not adaln_zero:
            raise ValueError("adaln_single=True is a form of adaLN-Zero: it needs adaln_zero=True.")
        if label_rows and not adaln_single:
            raise ValueError("A per-block label table (label_rows > 0) adds to adaLN-single: it needs "
                             "adaln_single=True.")
        if token_mixer not in TOKEN_MIXERS:
            raise ValueError(f"Unknown token_mixer {token_mixer!r}; valid choices are {', '.join(TOKEN_MIXERS)}.")
        self.window_size = tuple(window_size)
        self.global_window = global_window
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = TMSA(dim, num_heads, window_size, time_dim) if token_mixer == "attention" else None
        self.pool = PoolMixer(dim, time_dim) if token_mixer == "pool" else None
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ff = FeedForward(dim, mlp_ratio)
        self.adaln_linear = nn.Linear(time_dim, 6 * dim) if adaln_zero and not adaln_single else None
        self.adaln_table = nn.Parameter(torch.zeros(6 * dim)) if adaln_single else None
        self.adaln_label_table = nn.Embedding(label_rows, 6 * dim) if label_rows else None  # zero-initialised
        if self.adaln_label_table is not None:
            nn.init.zeros_(self.adaln_label_table.weight)

    def mix(self, h: torch.Tensor, time_token: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The token mixer on normalised tokens h (N, H*W, D): TMSA over the grid or its windows, or pooling."""
        if self.pool is not None:
            return self.pool(h, time_token, grid)
        if self.global_window:
            return self.attn(h, time_token, grid)
        windows = window_partition(h, grid, self.window_size)  # (N * nW, wh*ww, D)
        return window_merge(self.attn(windows, time_token, self.window_size), grid, self.window_size)

    def forward(self, x: torch.Tensor, time_token: torch.Tensor, grid: tuple[int, int],
                modulation: torch.Tensor | None = None, labels: torch.LongTensor | None = None) -> torch.Tensor:
        # x: (N, H*W, D) row-major tokens of a (H, W) grid; time_token: (N, time_dim); modulation: (N, 6D), the
        # shared adaLN-single regression (adaln_single only); labels: (N,) (a per-block label table only)
        if self.adaln_table is not None:
            if modulation is None:
                raise ValueError("An adaln_single block needs the model's shared `modulation` (N, 6 * dim).")
            mod = modulation + self.adaln_table  # (N, 6D)
            if self.adaln_label_table is not None:
                if labels is None:
                    raise ValueError("A block with a label table needs the class `labels` (N,).")
                mod = mod + self.adaln_label_table(labels)  # (N, 6D)
            mod = mod[:, None]  # (N, 1, 6D)
        elif self.adaln_linear is not None:
            mod = self.adaln_linear(F.silu(time_token))[:, None]  # (N, 1, 6D)
        else:
            x = x + self.mix(self.norm1(x), time_token, grid)
            return x + self.ff(self.norm2(x))
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=-1)
        x = torch.addcmul(x, gate_msa, self.mix(modulate(self.norm1(x), shift_msa, scale_msa), time_token, grid))
        return torch.addcmul(x, gate_mlp, self.ff(modulate(self.norm2(x), shift_mlp, scale_mlp)))


def init_diffit_weights(model: nn.Module) -> None:
    """Xavier Linears, N(0, 0.02) conditioning, trunc-normal(0.02) relative position tables."""
    init_vit_weights(model)
    init_conditioning_weights(model.cond_embed)
    for m in model.modules():
        if isinstance(m, RelativePositionBias):
            nn.init.trunc_normal_(m.table, std=0.02)


#################################################################################
#                              Latent DiffiT model                              #
#################################################################################


class DiffiTModel(ModelMixin, ConfigMixin):
    r"""
    Latent DiffiT: an isotropic ViT of DiffiT blocks (TMSA) over patchified latents (paper section 3.2 and App. H.2).

    Same forward contract and config vocabulary as [`DiTModel`]; the time token is `x_t = t_emb + y_emb`.

    Args:
        sample_size (`int` or `tuple[int, int]`, defaults to 32): Latent height/width the model is built for.
        patch_size (`int`, defaults to 2): Patch side.
        in_channels (`int`, defaults to 4): Latent channels (1 for grayscale pixels).
        num_layers (`int`, defaults to 28): Number of DiffiT blocks.
        num_attention_heads (`int`, defaults to 16): Attention heads.
        attention_head_dim (`int`, defaults to 72): Channels per head; hidden size = heads x head dim.
        mlp_ratio (`float`, defaults to 4.0): MLP width multiple.
        num_classes (`int`, defaults to 1000): Classes; label `num_classes` is the null label, `0` = unconditional.
        class_dropout_prob (`float`, defaults to 0.1): Label dropout probability in `train()` mode.
        learn_sigma (`bool`, defaults to `True`): Output `2 * in_channels` channels (epsilon and variance `v`).
        window_size (`int`, *optional*): Local attention window in tokens; `None` (default) attends over the whole
            token grid, inputs up to `sample_size`.
        token_mixer (`str`, defaults to `"attention"`): `"attention"` (TMSA) or `"pool"` (DiffiP pooling mixer).
        adaln_zero (`bool`, defaults to `False`): Opt-in, not DiffiT: DiT's adaLN-Zero modulation of every block
            beside TMSA (zero-initialised, blocks start as the identity).
        adaln_single (`bool`, defaults to `False`): Opt-in, with `adaln_zero`: PixArt-alpha's adaLN-single, one
            Linear shared by all blocks regresses the modulations and each block adds a learned (6D,) table (both
            zero-initialised): ~6D^2 parameters per block fewer.
        adaln_label_table (`bool`, defaults to `False`): Opt-in, with `adaln_single`, neither DiffiT nor PixArt-alpha:
            each block adds a learned, zero-initialised (num_classes + 1, 6D) table row of the sample's label (the
            null label has its own) to its modulations, a per-block label pathway beside the shared regression;
            (num_classes + 1) x 6D parameters per block (25K for 10 classes at D = 384, 6.9M for 1,000 at 1,152).
        final_layer_type (`str`, defaults to `"layernorm_silu"`): DiffiT's unconditioned LayerNorm -> SiLU -> Linear;
            opt-in, not DiffiT: `"layernorm"` (affine LayerNorm -> Linear, unconditioned, as DiT's in-context
            design) or `"adaln"` (DiT's adaLN final layer: shift/scale from SiLU(x_t), zero-initialised).
        zero_init_residual (`bool`, defaults to `False`): Opt-in init, not DiffiT's: zero the attention and MLP
            output projections so that every block starts as the identity (the function is unchanged).
        class_embed_std (`float`, defaults to 0.02): Init std of the label table (DiT's and DiffiT's 0.02); a larger
            one starts the label pathway stronger against the time embedding (init only, like `zero_init_residual`).
    """

    _supports_gradient_checkpointing = True
    _skip_layerwise_casting_patterns = ["pos_embed", "norm", "rel_pos_bias"]
    _no_split_modules = ["DiffiTBlock"]

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
        window_size: int | None = None,
        token_mixer: str = "attention",
        adaln_zero: bool = False,
        adaln_single: bool = False,
        adaln_label_table: bool = False,
        final_layer_type: str = "layernorm_silu",
        zero_init_residual: bool = False,
        class_embed_std: float = 0.02,
    ):
        super().__init__()
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 = unconditional), got {num_classes}.")
        if not 0 < class_embed_std < float("inf"):
            raise ValueError(f"class_embed_std must be a positive finite number, got {class_embed_std}.")
        if adaln_label_table and not (adaln_single and num_classes > 0):
            raise ValueError("adaln_label_table=True adds per-block label tables to adaLN-single: it needs "
                             f"adaln_single=True and num_classes > 0 (got adaln_single={adaln_single}, "
                             f"num_classes={num_classes}).")
        check_config_values(class_dropout_prob, patch_size=patch_size, in_channels=in_channels, num_layers=num_layers,
                            num_attention_heads=num_attention_heads, attention_head_dim=attention_head_dim,
                            window_size=window_size)
        hidden_size = num_attention_heads * attention_head_dim
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.grid_size = token_grid(sample_size, patch_size)
        window = self.grid_size if window_size is None else (window_size, window_size)
        self.gradient_checkpointing = False

        # 1. Input: patches -> tokens, frozen positions, one conditioning embedder
        self.patch_embed = PatchEmbed(in_channels, hidden_size, patch_size)
        self.register_buffer("pos_embed", get_2d_sincos_pos_embed(hidden_size, self.grid_size), persistent=False)
        self.cond_embed = TimestepLabelEmbedding(hidden_size, num_classes, class_dropout_prob)
        self.adaln_shared = nn.Linear(hidden_size, 6 * hidden_size) if adaln_single else None  # shared by all blocks

        # 2. Blocks
        self.transformer_blocks = nn.ModuleList(
            DiffiTBlock(hidden_size, num_attention_heads, window, hidden_size, mlp_ratio, token_mixer,
                        global_window=window_size is None, adaln_zero=adaln_zero, adaln_single=adaln_single,
                        label_rows=num_classes + 1 if adaln_label_table else 0)
            for _ in range(num_layers)
        )

        # 3. Output: LayerNorm -> SiLU -> Linear, unconditioned (or, opt-in, DiT's adaLN final layer)
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels, norm_type=final_layer_type)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Shared DiffiT init, and a zero-initialised output layer; the opt-in additions start at zero too."""
        init_diffit_weights(self)
        if self.cond_embed.class_embedder is not None and self.config.class_embed_std != 0.02:
            nn.init.normal_(self.cond_embed.class_embedder.weight, std=self.config.class_embed_std)
        zeroed = [self.final_layer.proj_out, self.final_layer.adaln_linear, self.adaln_shared]
        for block in self.transformer_blocks:
            zeroed.append(block.adaln_linear)
            if self.config.zero_init_residual:
                zeroed += [block.attn.to_out if block.attn is not None else None, block.ff.fc2]
        for linear in filter(None, zeroed):
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor | float | int,
        class_labels: torch.LongTensor | None = None,
        return_dict: bool = True,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        """
        The [`DiffiTModel`] forward method.

        Args:
            hidden_states (`torch.Tensor` of shape `(batch, in_channels, height, width)`):
                Noisy latents; height and width divisible by `patch_size` (and by the window, if local).
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
        p = self.config.patch_size
        timestep, class_labels = check_inputs(self.config, hidden_states, timestep, class_labels, size_multiple=p,
                                              dtype=self.dtype)
        grid_size = (hidden_states.shape[-2] // p, hidden_states.shape[-1] // p)

        # 1. Input
        pos = positional_table(self.pos_embed, self.grid_size, grid_size, self.dtype)  # (1, T, D)
        x = self.patch_embed(hidden_states) + pos  # (N, T, D)
        # (N, D), (N, D) | None, and the labels after the training-mode dropout (N,) | None
        time_emb, label_emb, labels = self.cond_embed(timestep, class_labels, dtype=x.dtype, return_labels=True)
        time_token = time_emb if label_emb is None else time_emb + label_emb  # x_t = c, no SiLU

        # 2. Blocks (adaLN-single: the modulations regressed once, shared by all blocks; `labels` read by per-block
        # label tables only)
        shared = None if self.adaln_shared is None else self.adaln_shared(F.silu(time_token))  # (N, 6D)
        for block in self.transformer_blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                x = self._gradient_checkpointing_func(block, x, time_token, grid_size, shared, labels)
            else:
                x = block(x, time_token, grid_size, shared, labels)  # (N, T, D)

        # 3. Output
        c = F.silu(time_token) if self.config.final_layer_type == "adaln" else None  # DiT's adaLN output only
        x = self.final_layer(x, c)  # (N, T, p*p*C_out)
        output = unpatchify(x, p, grid_size, self.out_channels)  # (N, C_out, H, W)

        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)
