"""Many samples of a DiffiTPipeline, reproducible for any number of processes and any batch split.

Sample `i` has the label `labels[i % len(labels)]` (balanced over the given labels, or over all classes) and its
noise comes from the seed `mix_seed(seed, i)` alone, as in the evaluation protocol of DiT/ADM (`sample_ddp.py`), so
the same `N` images come out of 1 or 8 processes. `training/evaluate.py` (metrics) and `pipelines/generate.py`
(`.npz` / PNG folders) both sample through `sample_indices`.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..utils import mix_seed
from .schedules import sampling_preset


def configure_sampling(pipe, preset: str | None = None, scheduler: str | None = None, **flags) -> dict:
    """Sets `pipe`'s scheduler and returns the `__call__` sampling arguments: a paper's `sampling_preset` (which
    names its own scheduler), or `flags` (`num_inference_steps`, `guidance_scale`, ...) with `scheduler`, a
    `DiffiTPipeline.use_scheduler` short name (`None` keeps the saved scheduler)."""
    sampling = dict(flags)
    if preset:
        sampling = sampling_preset(preset, pipe.transformer.config.sample_size)
        scheduler = sampling.pop("scheduler")
    if scheduler:
        pipe.use_scheduler(scheduler)  # refuses a scheduler of another prediction type, naming the valid ones
    return sampling


def balanced_labels(indices: list[int], num_classes: int, labels: list[int] | None = None) -> list[int] | None:
    """The label of each sample index: `labels[i % len(labels)]`, or `i % num_classes` without `labels`; `None` for
    an unconditional model (`num_classes == 0`)."""
    if not num_classes:
        return None
    pool = list(labels) if labels else list(range(num_classes))
    return [pool[i % len(pool)] for i in indices]


@torch.no_grad()
def sample_indices(
    pipe,
    indices: list[int],
    labels: list[int] | None = None,
    seed: int = 0,
    batch_size: int = 64,
    progress: tqdm | bool = False,
    **sampling,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images `(N, C, H, W)` in `[0, 1]` (float32, on the CPU) and their labels `(N,)` (-1: unconditional) for the
    sample `indices`, `batch_size` per pipeline call. `labels`: the label pool (ids), see `balanced_labels`.
    `progress`: a `tqdm` bar to advance by the images done (one bar over a whole multi-process job), or `True` for
    a bar of its own. `sampling`: `DiffiTPipeline.__call__` arguments (`num_inference_steps`, `guidance_scale`,
    `guidance_schedule`, `guidance_channels`, `guidance_scale_pow`; e.g. a `sampling_preset`)."""
    ids = balanced_labels(indices, pipe.num_classes, labels)
    bar = tqdm(total=len(indices), desc="sampling", unit="img") if progress is True else progress or None
    images = []
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        generators = [torch.Generator(pipe.device).manual_seed(mix_seed(seed, i)) for i in chunk]
        if ids is None:  # unconditional: one "label" slot, one image per generator
            out = pipe(None, num_images_per_label=len(chunk), generator=generators, output_type="pt",
                       **sampling).images
        else:
            out = pipe(ids[start:start + batch_size], generator=generators, output_type="pt", **sampling).images
        images.append(out.float().cpu())
        if bar is not None:
            bar.update(len(chunk))
    if progress is True:
        bar.close()
    return torch.cat(images), torch.tensor(ids if ids is not None else [-1] * len(indices))


def output_image_shape(pipe) -> tuple[int, int, int]:
    """`(channels, height, width)` of the images `pipe` returns, from its configs (nothing is sampled)."""
    size = pipe.transformer.config.sample_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if pipe.vae is None:  # pixel space
        return pipe.transformer.config.in_channels, height, width
    factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    return pipe.vae.config.out_channels, height * factor, width * factor


def to_uint8_nhwc(images: torch.Tensor, rgb: bool = False) -> np.ndarray:
    """`(N, C, H, W)` in `[0, 1]` -> uint8 `(N, H, W, C)` as image files hold them (`rgb`: 1 channel repeated to 3,
    the layout of ADM's evaluation suite)."""
    array = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return np.repeat(array, 3, axis=3) if rgb and array.shape[3] == 1 else array
