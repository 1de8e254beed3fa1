"""Positional and conditioning embeddings shared by DiT and DiffiT."""

from __future__ import annotations

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps, get_2d_sincos_pos_embed_from_grid
from torch import nn

#################################################################################
#                     Fixed 2D sine-cosine positional table                     #
#################################################################################


def get_2d_sincos_pos_embed(embed_dim: int, grid_size: tuple[int, int], device: torch.device | None = None):
    """MAE-style frozen 2D sin-cos table of shape (grid_h * grid_w, embed_dim), tokens in row-major order.

    The first half of the channels encodes the column (x) index and the second half the row (y) index, exactly as
    the original DiT table; unlike diffusers' `get_2d_sincos_pos_embed`, positions are plain integer indices for any
    (grid_h, grid_w), so non-square grids get the same table a square grid of that size would have.
    """
    grid_h, grid_w = grid_size
    rows = torch.arange(grid_h, dtype=torch.float32, device=device)
    cols = torch.arange(grid_w, dtype=torch.float32, device=device)
    grid = torch.stack(torch.meshgrid(cols, rows, indexing="xy"))  # (2, grid_h, grid_w): [x index, y index]
    return get_2d_sincos_pos_embed_from_grid(embed_dim, grid).float()  # (grid_h * grid_w, D)


def positional_table(stored: torch.Tensor, stored_grid: tuple[int, int], grid: tuple[int, int],
                     dtype: torch.dtype) -> torch.Tensor:
    """(1, T, D) table for a token grid in `dtype` (the model's parameters' dtype: the buffer is not cast by
    `from_pretrained(torch_dtype=...)`, being no weight): the model's stored buffer, or one computed for another
    input size."""
    if tuple(grid) == tuple(stored_grid):
        return stored[None].to(dtype)
    return get_2d_sincos_pos_embed(stored.shape[-1], grid, device=stored.device).to(dtype)[None]


#################################################################################
#               Timestep + class-label conditioning (one per model)             #
#################################################################################


class TimestepLabelEmbedding(nn.Module):
    """Embeds timesteps and class labels into two (N, D) vectors, built once per model.

    Timesteps use the original DiT sinusoid (256 channels, `cos` first, frequency shift 0) followed by
    `Linear -> SiLU -> Linear`. Labels use a table with one extra row, `num_classes`: the null label for
    classifier-free guidance. In `train()` mode each label is replaced by the null label with probability
    `class_dropout_prob`. `num_classes=0` gives an unconditional embedder (`label_emb` is `None`).
    """

    def __init__(self, hidden_size: int, num_classes: int = 1000, class_dropout_prob: float = 0.1,
                 frequency_embedding_size: int = 256):
        super().__init__()
        self.num_classes = num_classes
        self.class_dropout_prob = class_dropout_prob
        self.time_proj = Timesteps(frequency_embedding_size, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.timestep_embedder = TimestepEmbedding(frequency_embedding_size, hidden_size)
        self.class_embedder = nn.Embedding(num_classes + 1, hidden_size) if num_classes > 0 else None

    @property
    def null_class_id(self) -> int | None:
        return self.num_classes if self.num_classes > 0 else None

    def drop_labels(self, class_labels: torch.LongTensor) -> torch.LongTensor:
        """Replaces each label by the null label with probability `class_dropout_prob` (CFG training)."""
        drop = torch.rand(class_labels.shape[0], device=class_labels.device) < self.class_dropout_prob
        return torch.where(drop, self.num_classes, class_labels)

    def forward(
        self, timestep: torch.Tensor, class_labels: torch.LongTensor | None, dtype: torch.dtype,
        return_labels: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None] | tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(time_emb, label_emb), both (N, D) (`label_emb` None when unconditional); with `return_labels`, also the
        labels embedded, after the training-mode dropout (N,), for a model whose blocks read the labels too."""
        t_freq = self.time_proj(timestep).to(dtype)  # (N, 256)
        time_emb = self.timestep_embedder(t_freq)  # (N, D)
        if self.class_embedder is None:
            return (time_emb, None, None) if return_labels else (time_emb, None)
        if self.training and self.class_dropout_prob > 0:
            class_labels = self.drop_labels(class_labels)
        label_emb = self.class_embedder(class_labels)  # (N, D)
        return (time_emb, label_emb, class_labels) if return_labels else (time_emb, label_emb)
