"""What a training run shows of its model while it runs: validation grids (saved and sent to the trackers) and the
progress GIF made of them."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from PIL import Image

from ..pipelines.grid import labelled_grid
from ..pipelines.pipeline_diffit import DiffiTPipeline
from .distributed import ema_weights

logger = logging.getLogger(__name__)
_WARNED_TRACKERS: set[str] = set()


@torch.no_grad()
def validation_grid(pipe, per_class: int, num_inference_steps: int, guidance_scale: float, seed: int) -> Image.Image:
    """Samples of a pipeline from a fixed seed, one row per class (or one row, unconditional), labelled."""
    num_classes = pipe.num_classes
    labels = list(range(num_classes)) if num_classes else None
    generator = torch.Generator(pipe.device).manual_seed(seed)
    images = pipe(labels, num_images_per_label=per_class, guidance_scale=guidance_scale,
                  num_inference_steps=num_inference_steps, generator=generator).images
    id2label = pipe.config.id2label or {}
    captions = [id2label.get(i, str(i)) for i in labels] if labels else ["unconditional"]
    return labelled_grid(images, captions, per_class, rows=True)


@torch.no_grad()
def log_validation(cfg, accelerator, transformer, ema, scheduler, vae, id2label: dict, step: int) -> None:
    """Samples the validation grid with the EMA weights on the main process, saves it as `samples/step-*.png` in
    `cfg.output_dir` and sends it to the trackers. `cfg` is the run's config (its `validation_*` fields and `seed`).
    Every process calls it (under FSDP the EMA shards are gathered from all)."""
    with ema_weights(transformer, ema, accelerator.is_main_process, accelerator.device) as ema_transformer:
        if not accelerator.is_main_process:
            return
        pipe = DiffiTPipeline(transformer=ema_transformer, scheduler=scheduler, vae=vae, id2label=id2label)
        pipe.set_progress_bar_config(disable=True)
        with accelerator.autocast():
            grid = validation_grid(pipe, cfg.validation_per_class, cfg.validation_inference_steps,
                                   cfg.validation_guidance_scale, cfg.seed)
    (Path(cfg.output_dir) / "samples").mkdir(parents=True, exist_ok=True)
    grid.save(Path(cfg.output_dir) / "samples" / f"step-{step:07d}.png")
    log_image(accelerator, "samples", grid, step)


def log_image(accelerator, name: str, image: Image.Image, step: int) -> None:
    """Sends an image to every tracker of `accelerator`: tensorboard (`add_image`), wandb (`wandb.Image`), and any
    other tracker with accelerate's `log_images` (aim, clearml, swanlab, custom `GeneralTracker`s); a tracker that
    takes no images is named in a warning once."""
    import numpy as np

    array = np.asarray(image.convert("RGB"))  # (H, W, 3) uint8
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image(name, array, step, dataformats="HWC")
        elif tracker.name == "wandb":
            import wandb

            tracker.log({name: wandb.Image(image, caption=f"{name}, step {step}")}, step=step)
        elif tracker.name == "aim":  # aim's log_images takes one image per key
            tracker.log_images({name: image}, step=step)
        elif hasattr(tracker, "log_images"):
            tracker.log_images({name: [array]}, step=step)
        elif tracker.name not in _WARNED_TRACKERS:
            _WARNED_TRACKERS.add(tracker.name)
            logger.warning(f"the {tracker.name} tracker takes no images: {name} is only saved to disk")


def write_progress_gif(frames_dir: str | Path, path: str | Path, duration_ms: int = 500) -> list[Path]:
    """An animated GIF of the `step-*.png` grids in `frames_dir`, oldest first; returns the frames used."""
    frames = sorted(Path(frames_dir).glob("step-*.png"))
    if frames:
        images = [Image.open(p).convert("RGB") for p in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return frames
