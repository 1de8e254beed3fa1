"""Input checks for the shared forward contract `forward(hidden_states, timestep, class_labels)`."""

from __future__ import annotations

import torch


def check_inputs(
    config, hidden_states: torch.Tensor, timestep, class_labels: torch.Tensor | None, size_multiple: int
) -> tuple[torch.Tensor, torch.LongTensor | None]:
    """Validates a forward call and returns (timestep (N,), class_labels (N,) or None), raising clear ValueErrors.

    `class_labels=None` on a class-conditional model means "all null labels" (unconditional generation).
    """
    if hidden_states.ndim != 4:
        raise ValueError(
            f"hidden_states must be (batch, channels, height, width), got shape {tuple(hidden_states.shape)}."
        )
    n, c, h, w = hidden_states.shape
    if c != config.in_channels:
        raise ValueError(f"hidden_states has {c} channels but the model expects in_channels={config.in_channels}.")
    if h % size_multiple or w % size_multiple:
        raise ValueError(f"Spatial size {h}x{w} is not divisible by {size_multiple} (the patch/window size).")

    timestep = torch.as_tensor(timestep, device=hidden_states.device)
    if timestep.ndim == 0:
        timestep = timestep.expand(n)
    elif timestep.ndim != 1 or timestep.shape[0] not in (1, n):
        raise ValueError(f"timestep must be a scalar or have shape ({n},), got shape {tuple(timestep.shape)}.")
    elif timestep.shape[0] == 1:
        timestep = timestep.expand(n)

    if config.num_classes == 0:
        if class_labels is not None:
            raise ValueError("This model is unconditional (num_classes=0); pass class_labels=None.")
        return timestep, None
    if class_labels is None:
        return timestep, torch.full((n,), config.num_classes, dtype=torch.long, device=hidden_states.device)
    class_labels = torch.as_tensor(class_labels, device=hidden_states.device)
    if class_labels.shape != (n,):
        raise ValueError(f"class_labels must have shape ({n},), got {tuple(class_labels.shape)}.")
    if class_labels.is_floating_point():
        raise ValueError("class_labels must be integer class ids.")
    if n > 0 and not class_labels.is_meta and (class_labels.min() < 0 or class_labels.max() > config.num_classes):
        raise ValueError(
            f"class_labels must lie in [0, {config.num_classes}] ({config.num_classes} = null label), got values in "
            f"[{int(class_labels.min())}, {int(class_labels.max())}]."
        )
    return timestep, class_labels.long()
