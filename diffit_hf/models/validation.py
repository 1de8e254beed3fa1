"""Input checks for the shared forward contract `forward(hidden_states, timestep, class_labels)`."""

from __future__ import annotations

import torch


def check_config_values(class_dropout_prob: float, **positive: int | None) -> None:
    """`ValueError` naming the first config argument out of range: `class_dropout_prob` in [0, 1), and every keyword
    in `positive` (sizes and counts; None = unset) >= 1."""
    if not 0.0 <= class_dropout_prob < 1.0:
        raise ValueError(f"class_dropout_prob must lie in [0, 1), got {class_dropout_prob}.")
    for name, value in positive.items():
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}.")


def check_inputs(
    config, hidden_states: torch.Tensor, timestep, class_labels: torch.Tensor | None, size_multiple: int,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.LongTensor | None]:
    """Validates a forward call and returns (timestep (N,), class_labels (N,) or None), raising clear ValueErrors.

    `class_labels=None` on a class-conditional model means "all null labels" (unconditional generation). `dtype`
    (the model's) must match `hidden_states` outside autocast.
    """
    if hidden_states.ndim != 4:
        raise ValueError(
            f"hidden_states must be (batch, channels, height, width), got shape {tuple(hidden_states.shape)}."
        )
    if not hidden_states.is_floating_point():
        raise ValueError(f"hidden_states must be a floating-point tensor (the model is {dtype}), got "
                         f"{hidden_states.dtype}.")
    device_type = hidden_states.device.type
    autocast = device_type in ("cpu", "cuda", "xpu", "mps") and torch.is_autocast_enabled(device_type)
    if dtype is not None and hidden_states.dtype != dtype and not autocast:
        raise ValueError(f"hidden_states is {hidden_states.dtype} but the model is {dtype}: cast the input "
                         "(hidden_states.to(model.dtype)) or the model, or run under torch.autocast.")
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
    # The range check reads values, a graph break under torch.compile: compiled graphs skip it (an id outside the
    # label table still fails in the embedding lookup).
    if (n > 0 and not class_labels.is_meta and not torch.compiler.is_compiling()
            and (class_labels.min() < 0 or class_labels.max() > config.num_classes)):
        raise ValueError(
            f"class_labels must lie in [0, {config.num_classes}] ({config.num_classes} = null label), got values in "
            f"[{int(class_labels.min())}, {int(class_labels.max())}]."
        )
    return timestep, class_labels.long()
