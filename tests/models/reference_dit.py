"""An independent, deliberately plain re-statement of the original DiT architecture in the official key layout
(`x_embedder.proj`, `t_embedder.mlp`, `y_embedder.embedding_table`, `blocks.N.attn.qkv`, `adaLN_modulation.1`, ...).

Written for the tests from the paper's equations (see shared NOTES.md), not from the official (CC BY-NC) code:
explicit softmax attention, numpy float64 MAE positional table, no shared helpers from diffit_hf.
"""

import math

import numpy as np
import torch
from torch import nn


def mae_pos_embed(dim: int, grid: int) -> np.ndarray:
    def one_d(d, pos):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    gh = np.arange(grid, dtype=np.float32)
    gw = np.arange(grid, dtype=np.float32)
    mesh = np.stack(np.meshgrid(gw, gh), axis=0)  # w first
    return np.concatenate([one_d(dim // 2, mesh[0]), one_d(dim // 2, mesh[1])], axis=1)


class RefAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)
        out = attn.softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(n, t, d))


class RefMlp(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x):
        return self.fc2(nn.functional.gelu(self.fc1(x), approximate="tanh"))


class RefBlock(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = RefAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = RefMlp(dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x, c):
        s1, sc1, g1, s2, sc2, g2 = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + g1[:, None] * self.attn(self.norm1(x) * (1 + sc1[:, None]) + s1[:, None])
        x = x + g2[:, None] * self.mlp(self.norm2(x) * (1 + sc2[:, None]) + s2[:, None])
        return x


class RefTimestep(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(256, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t):
        freqs = torch.exp(-math.log(10000) * torch.arange(0, 128, dtype=torch.float32) / 128)
        args = t[:, None].float() * freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=-1))


class RefLabel(nn.Module):
    def __init__(self, num_classes, dim):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, dim)

    def forward(self, y):
        return self.embedding_table(y)


class RefPatch(nn.Module):
    def __init__(self, c, dim, p):
        super().__init__()
        self.proj = nn.Conv2d(c, dim, p, p)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class RefFinal(nn.Module):
    def __init__(self, dim, p, c):
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, p * p * c)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(self.norm_final(x) * (1 + scale[:, None]) + shift[:, None])


class ReferenceDiT(nn.Module):
    def __init__(self, input_size=32, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4,
                 num_classes=10, learn_sigma=True):
        super().__init__()
        self.p, self.c_out = patch_size, 2 * in_channels if learn_sigma else in_channels
        self.x_embedder = RefPatch(in_channels, hidden_size, patch_size)
        self.t_embedder = RefTimestep(hidden_size)
        self.y_embedder = RefLabel(num_classes, hidden_size)
        grid = input_size // patch_size
        pos = torch.from_numpy(mae_pos_embed(hidden_size, grid)).float()[None]
        self.pos_embed = nn.Parameter(pos, requires_grad=False)
        self.blocks = nn.ModuleList([RefBlock(hidden_size, num_heads) for _ in range(depth)])
        self.final_layer = RefFinal(hidden_size, patch_size, self.c_out)
        for p in self.parameters():  # random everything (no zero-init), so parity is non-trivial
            if p.requires_grad:
                nn.init.normal_(p, std=0.1)

    def forward(self, x, t, y):
        x = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y)
        for block in self.blocks:
            x = block(x, c)
        x = self.final_layer(x, c)
        n, t_, _ = x.shape
        h = w = int(t_**0.5)
        x = x.reshape(n, h, w, self.p, self.p, self.c_out)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(n, self.c_out, h * self.p, w * self.p)
