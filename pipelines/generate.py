"""Generate a labelled image grid with a saved DiffiTPipeline (local folder or Hub repo id).

    python pipelines/generate.py --model PATH_OR_REPO --labels Sneaker Bag "Ankle boot" --guidance-scale 4 \
        --steps 50 --scheduler dpm --seed 0 --num-per-label 4 --out grid.png

One column per label (ids or names), `--num-per-label` rows; the label name is written under each column.
`--preset dit-paper|diffit-paper` samples as the paper does (`SAMPLING_PRESETS`: scheduler, steps, guidance scale,
schedule and channels), e.g. `--model diffit-256 --labels "golden retriever" --preset diffit-paper`. Every flag
is a field of `GenerateConfig` (`--num-per-label` or `--num_per_label`, or a key of `--config file.yaml`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from diffit_hf import DiffiTPipeline
from diffit_hf.pipelines.grid import labelled_grid
from diffit_hf.pipelines.pipeline_diffit import GUIDANCE_SCHEDULES, SAMPLING_PRESETS, SCHEDULERS, sampling_preset
from diffit_hf.training.config import parse_config, refuse_preset_overrides


@dataclass
class GenerateConfig:
    """Generate a labelled image grid with a saved DiffiTPipeline (see pipelines/generate.py)."""

    model: str | None = field(default=None, metadata={"help": "pipeline folder or Hub repo id (required)"})
    labels: list[str] | None = field(default=None, metadata={
        "help": "class ids or names (omit for unconditional)"})
    num_per_label: int = field(default=4, metadata={"help": "images per label: the grid's rows"})
    guidance_scale: float = field(default=4.0, metadata={"help": "classifier-free guidance scale"})
    guidance_schedule: str = field(default="constant", metadata={"choices": list(GUIDANCE_SCHEDULES),
                                                                 "help": "guidance scale over the sampling steps"})
    steps: int = field(default=50, metadata={"help": "number of inference steps"})
    scheduler: str | None = field(default=None, metadata={"choices": sorted(SCHEDULERS),
                                                          "help": "default: the saved one"})
    seed: int = field(default=0, metadata={"help": "seed of the sampling noise"})
    preset: str | None = field(default=None, metadata={
        "choices": list(SAMPLING_PRESETS),
        "help": "sample as a paper does: sets the scheduler, steps and guidance (scale, schedule, first 3 channels)"})
    device: str | None = field(default=None, metadata={"help": "default: cuda if available, else cpu"})
    out: str = field(default="grid.png", metadata={"help": "the grid image to write"})

    def __post_init__(self):
        if self.model is None:
            raise ValueError("--model is required: a saved pipeline folder or Hub repo id.")
        refuse_preset_overrides(self, self.preset, ("steps", "scheduler", "guidance_scale", "guidance_schedule"))
        out = Path(self.out)
        if not out.parent.is_dir():
            raise ValueError(f"--out {out}: the folder {out.parent} does not exist.")
        if out.suffix.lower() not in Image.registered_extensions():
            raise ValueError(f"--out {out}: unknown image extension {out.suffix!r}; use e.g. .png or .jpg.")
        model = Path(self.model).expanduser()
        owner = self.model.split("/")[0] if "/" in self.model else None  # "outputs/run": a folder, not an owner
        hub_id = re.fullmatch(r"[\w.-]+(/[\w.-]+)?", self.model) and not (owner and Path(owner).is_dir())
        if not model.exists() and not hub_id:  # a missing local folder, not a Hub repo id to look up
            raise ValueError(f"--model {self.model}: no such pipeline folder.")


def main(cfg: GenerateConfig) -> None:
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = DiffiTPipeline.from_pretrained(cfg.model).to(device)
    sampling = dict(num_inference_steps=cfg.steps, guidance_scale=cfg.guidance_scale,
                    guidance_schedule=cfg.guidance_schedule)
    scheduler = cfg.scheduler
    if cfg.preset:
        sampling = sampling_preset(cfg.preset, pipe.transformer.config.sample_size)
        scheduler = sampling.pop("scheduler")
        print(f"preset {cfg.preset}: scheduler {scheduler}, " + ", ".join(f"{k} {v}" for k, v in sampling.items()))
    if scheduler:
        # only DDPM samples with the learned variance; the others take epsilon alone
        pipe.use_scheduler(scheduler)
    labels = None
    if cfg.labels:
        labels = [int(x) if x.isdigit() else x for x in cfg.labels]
    generator = torch.Generator(device).manual_seed(cfg.seed)
    images = pipe(labels, num_images_per_label=cfg.num_per_label, generator=generator, **sampling).images
    if labels is None:
        captions = ["unconditional"]
    else:
        id2label = {int(k): v for k, v in pipe.config.id2label.items()}
        ids = [x if isinstance(x, int) else pipe.get_label_ids(x)[0] for x in labels]
        captions = [id2label.get(i, str(i)) for i in ids]
    labelled_grid(images, captions, cfg.num_per_label).save(cfg.out)
    print(f"wrote {cfg.out} ({len(images)} images)")


if __name__ == "__main__":
    main(parse_config(GenerateConfig))
