"""An independent, deliberately plain re-statement of the latent DiffiT model (paper section 3.2, Eq. 3-6; App. H.2)
in the key layout of NVIDIA's released checkpoints (`x_embedder.proj`, `pos_embed`, `t_embedder.mlp`,
`y_embedder.embedding_table`, `blocks.N.attn.{qkv, qkv_temb, proj, relative_position_bias_table,
relative_position_index}`, `blocks.N.mlp.fc1/fc2`, `final_layer.linear`).

Written for the tests from the paper's equations, not from NVIDIA's (non-commercial) code: explicit softmax
attention, the relative position index built by a Python loop over token pairs, no shared helpers from diffit_hf.
"""

import math

import torch
from torch import nn

from .reference_dit import RefLabel, RefMlp, RefPatch, RefTimestep, mae_pos_embed


def loop_relative_index(side: int) -> torch.Tensor:
    """(T, T) index of the (dy, dx) offset between tokens i and j of a side x side grid, row-major offsets."""
    coords = [(r, c) for r in range(side) for c in range(side)]
    index = torch.empty(len(coords), len(coords), dtype=torch.long)
    for i, (ri, ci) in enumerate(coords):
        for j, (rj, cj) in enumerate(coords):
            index[i, j] = (ri - rj + side - 1) * (2 * side - 1) + (ci - cj + side - 1)
    return index


class RefTMSA(nn.Module):
    """q = x_s W_qs + x_t W_qt (same for k, v); softmax(q k^T / sqrt(d) + B) v; B from a relative bias table."""

    def __init__(self, dim, heads, side):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)  # x_s -> (q, k, v)
        self.qkv_temb = nn.Linear(dim, 3 * dim)  # x_t -> (q, k, v)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * side - 1) ** 2, heads))
        self.register_buffer("relative_position_index", loop_relative_index(side))

    def forward(self, x, x_t):
        n, t, d = x.shape
        qkv = self.qkv(x) + self.qkv_temb(x_t)[:, None]  # (N, T, 3D)
        qkv = qkv.reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (N, H, T, d)
        bias = self.relative_position_bias_table[self.relative_position_index].permute(2, 0, 1)  # (H, T, T)
        attn = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads) + bias[None]
        out = attn.softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(n, t, d))


class RefDiffiTBlock(nn.Module):
    def __init__(self, dim, heads, side):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = RefTMSA(dim, heads, side)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = RefMlp(dim)

    def forward(self, x, x_t):
        x = x + self.attn(self.norm1(x), x_t)
        return x + self.mlp(self.norm2(x))


class RefFinal(nn.Module):
    """LayerNorm -> SiLU -> Linear, unconditioned."""

    def __init__(self, dim, p, c):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, p * p * c)

    def forward(self, x):
        return self.linear(nn.functional.silu(self.norm_final(x)))


class ReferenceDiffiT(nn.Module):
    def __init__(self, input_size=16, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4,
                 num_classes=10, learn_sigma=True):
        super().__init__()
        self.p, self.c_out = patch_size, 2 * in_channels if learn_sigma else in_channels
        side = input_size // patch_size  # attention over the whole token grid
        self.x_embedder = RefPatch(in_channels, hidden_size, patch_size)
        self.t_embedder = RefTimestep(hidden_size)
        self.y_embedder = RefLabel(num_classes, hidden_size)
        pos = torch.from_numpy(mae_pos_embed(hidden_size, side)).float()[None]
        self.pos_embed = nn.Parameter(pos, requires_grad=False)
        self.blocks = nn.ModuleList([RefDiffiTBlock(hidden_size, num_heads, side) for _ in range(depth)])
        self.final_layer = RefFinal(hidden_size, patch_size, self.c_out)
        for p in self.parameters():  # random everything (no zero-init), so parity is non-trivial
            if p.requires_grad:
                nn.init.normal_(p, std=0.1)

    def forward(self, x, t, y):
        x = self.x_embedder(x) + self.pos_embed
        x_t = self.t_embedder(t) + self.y_embedder(y)  # time token: t_emb + y_emb, no SiLU
        for block in self.blocks:
            x = block(x, x_t)
        x = self.final_layer(x)
        n, t_, _ = x.shape
        h = w = int(t_**0.5)
        x = x.reshape(n, h, w, self.p, self.p, self.c_out)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(n, self.c_out, h * self.p, w * self.p)
