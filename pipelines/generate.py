"""Generate images with a saved DiffiTPipeline (local folder or Hub repo id): a labelled grid, a folder of PNGs, or an
`.npz` in the layout of the ADM evaluation suite (what DiT, SiT and DiffiT report FID with).

    # a grid (the default for an --out ending in an image extension): one column per label
    python pipelines/generate.py --model PATH_OR_REPO --labels Sneaker Bag "Ankle boot" --guidance-scale 4 \
        --steps 50 --scheduler dpm --seed 0 --num-per-label 4 --out grid.png
    # 50,000 samples balanced over the classes for FID (arr_0: uint8 NHWC RGB, arr_1: labels), on 8 GPUs
    accelerate launch --multi_gpu --num_processes 8 pipelines/generate.py --model PATH_OR_REPO \
        --num-samples 50000 --batch-size 125 --dtype bf16 --guidance-scale 1.5 --out samples.npz
    # individual PNGs (000000.png, ...) and labels.json, balanced over the given labels
    python pipelines/generate.py --model PATH_OR_REPO --labels Bag Sneaker --num-samples 100 --out samples/

`--preset dit-paper|diffit-paper` samples as the paper does (`SAMPLING_PRESETS`: scheduler, steps, guidance scale,
schedule and channels), e.g. `--model diffit-256 --labels "golden retriever" --preset diffit-paper`.
Sample `i` has the label `i % len(labels)` of the labels (all classes by default) and the noise of seed
`(seed, i)`: the same N images for any number of processes (`diffit_hf.pipelines.sampling`, shared with
`training/evaluate.py`). Every flag is a field of `GenerateConfig` (`--num-per-label` or `--num_per_label`, or a
key of `--config file.yaml`).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from diffusers.utils.logging import get_logger
from PIL import Image
from tqdm.auto import tqdm

from diffit_hf import DiffiTPipeline
from diffit_hf.pipelines.grid import labelled_grid
from diffit_hf.pipelines.sampling import configure_sampling, sample_indices, to_uint8_nhwc
from diffit_hf.pipelines.schedules import (
    EDM_SCHEDULERS,
    FLOW_SCHEDULERS,
    GUIDANCE_SCHEDULES,
    SAMPLING_PRESETS,
    SCHEDULERS,
    check_guidance_interval,
)
from diffit_hf.training.config import parse_config, refuse_preset_overrides
from diffit_hf.utils import atomic_path, atomic_write_json

logger = get_logger("diffit_hf.generate")  # shown by parse_config (show_library_logs)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SCHEDULER_NAMES = sorted({*SCHEDULERS, *FLOW_SCHEDULERS, *EDM_SCHEDULERS})  # the pipeline checks the model's kind
SAMPLE_FILE = re.compile(r"\d{6,}\.png|labels\.json")  # what a folder output holds


@dataclass
class GenerateConfig:
    """Generate images with a saved DiffiTPipeline (see pipelines/generate.py)."""

    # 1. Model and sampler
    model: str | None = field(default=None, metadata={"help": "pipeline folder or Hub repo id (required)"})
    scheduler: str | None = field(default=None, metadata={"choices": SCHEDULER_NAMES,
                                                          "help": "default: the saved one"})
    steps: int = field(default=50, metadata={"help": "number of inference steps"})
    guidance_scale: float = field(default=4.0, metadata={"help": "classifier-free guidance scale"})
    guidance_schedule: str = field(default="constant", metadata={"choices": list(GUIDANCE_SCHEDULES),
                                                                 "help": "guidance scale over the sampling steps"})
    guidance_interval: tuple[float, ...] | None = field(default=None, metadata={
        "help": "SIGMA_LOW SIGMA_HIGH: guide only the steps at noise levels sigma = 1/sqrt(SNR) in (low, high] (inf "
                "allowed); the others skip the unconditional pass (Kynkaanniemi et al. 2024); default: every step"})
    preset: str | None = field(default=None, metadata={
        "choices": list(SAMPLING_PRESETS),
        "help": "sample as a paper does: sets the scheduler, steps and guidance (scale, schedule, first 3 channels)"})
    # 2. What to sample
    labels: list[str] | None = field(default=None, metadata={
        "help": "class ids or names (omit: every class, or unconditional)"})
    num_per_label: int = field(default=4, metadata={"help": "grid: images per label (the grid's rows)"})
    num_samples: int | None = field(default=None, metadata={
        "help": ".npz / folder: images in all, balanced over the labels (required for those outputs)"})
    seed: int = field(default=0, metadata={"help": "seed of the sampling noise (sample i: seed (seed, i))"})
    # 3. Hardware
    batch_size: int = field(default=64, metadata={"help": "images per pipeline call (per process)"})
    dtype: str = field(default="fp32", metadata={"choices": list(DTYPES), "help": "weights and activations"})
    device: str | None = field(default=None, metadata={
        "help": "default: accelerate's device for this process (cuda if available, else cpu)"})
    # 4. Output
    out: str = field(default="grid.png", metadata={
        "help": "a grid image (.png, .jpg), an .npz (ADM layout), or a folder (ending in /) for PNGs"})
    overwrite: bool = field(default=False, metadata={
        "help": "replace an existing .npz, or a folder of earlier samples (a folder with other files is refused)"})

    def __post_init__(self):
        if self.model is None:
            raise ValueError("--model is required: a saved pipeline folder or Hub repo id.")
        refuse_preset_overrides(self, self.preset, ("steps", "scheduler", "guidance_scale", "guidance_schedule",
                                                    "guidance_interval"))
        self.guidance_interval = check_guidance_interval(self.guidance_interval)
        out = Path(self.out)
        if not out.parent.is_dir():
            raise ValueError(f"--out {out}: the folder {out.parent} does not exist.")
        kind = self.output_kind
        if kind == "grid" and out.suffix.lower() not in Image.registered_extensions():
            raise ValueError(f"--out {out}: unknown image extension {out.suffix!r}; use e.g. .png or .jpg for a grid, "
                             ".npz for an array, or a folder name ending in / for PNGs.")
        if kind == "grid" and self.num_samples is not None:
            raise ValueError(f"--num-samples writes an .npz or a folder of PNGs, not the grid {out}; pass --out "
                             "samples.npz or --out samples/ (a grid takes --num-per-label).")
        if kind != "grid" and (self.num_samples is None or self.num_samples < 1):
            raise ValueError(f"--out {out} needs --num-samples N (N >= 1): the images to write.")
        if kind == "npz" and out.exists() and not self.overwrite:
            raise FileExistsError(f"--out {out} exists; pass --overwrite to replace it, or another --out.")
        if kind == "folder":
            check_samples_folder(out, self.overwrite)
        for name in ("steps", "num_per_label", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}.")
        if self.dtype == "fp16" and (self.device or ("cuda" if torch.cuda.is_available() else "cpu")) == "cpu":
            raise ValueError("--dtype fp16 needs a GPU (fp16 on CPU is very slow); use bf16 or fp32.")
        model = Path(self.model).expanduser()
        owner = self.model.split("/")[0] if "/" in self.model else None  # "outputs/run": a folder, not an owner
        hub_id = re.fullmatch(r"[\w.-]+(/[\w.-]+)?", self.model) and not (owner and Path(owner).is_dir())
        if not model.exists() and not hub_id:  # a missing local folder, not a Hub repo id to look up
            raise ValueError(f"--model {self.model}: no such pipeline folder.")

    @property
    def output_kind(self) -> str:
        """`"npz"`, `"folder"` (an existing folder or a name ending in /) or `"grid"`."""
        if self.out.endswith(".npz"):
            return "npz"
        if self.out.endswith(("/", "\\")) or Path(self.out).is_dir():
            return "folder"
        return "grid"


def check_samples_folder(out: Path, overwrite: bool) -> None:
    """`FileExistsError` unless `out` is absent, empty, or (with `overwrite`) holds only earlier samples."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file, not a folder for PNGs; pass another --out.")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    others = [name for name in held if not SAMPLE_FILE.fullmatch(name)]
    if others:
        raise FileExistsError(f"--out {out} holds files that are not samples ({', '.join(others[:5])}"
                              f"{', ...' if len(others) > 5 else ''}); pass a new or empty folder.")
    if held and not overwrite:
        raise FileExistsError(f"--out {out} already holds {len(held)} files of earlier samples; pass --overwrite to "
                              "replace them, or another --out.")


def load_pipeline(cfg: GenerateConfig, device: torch.device | str) -> tuple[DiffiTPipeline, dict]:
    """The pipeline in `cfg.dtype` on `device` with its scheduler (`--scheduler`, or the preset's), no per-call
    progress bars, and the `__call__` sampling arguments (from the flags, or from `--preset`)."""
    pipe = DiffiTPipeline.from_pretrained(cfg.model, torch_dtype=DTYPES[cfg.dtype]).to(device)
    pipe.set_progress_bar_config(disable=True)  # the script shows one bar over the whole job
    sampling = configure_sampling(pipe, cfg.preset, cfg.scheduler, num_inference_steps=cfg.steps,
                                  guidance_scale=cfg.guidance_scale, guidance_schedule=cfg.guidance_schedule,
                                  guidance_interval=cfg.guidance_interval)
    if cfg.preset:
        logger.info(f"preset {cfg.preset}: scheduler {type(pipe.scheduler).__name__}, "
                    + ", ".join(f"{k} {v}" for k, v in sampling.items()))
    return pipe, sampling


def label_ids(pipe: DiffiTPipeline, labels: list[str] | None) -> list[int] | None:
    """Class ids of `--labels` (ids or names; refused with the valid names)."""
    if not labels:
        return None
    return [int(x) if x.isdigit() else pipe.get_label_ids(x)[0] for x in labels]


def write_grid(cfg: GenerateConfig, pipe: DiffiTPipeline, sampling: dict) -> None:
    ids = label_ids(pipe, cfg.labels)
    generator = torch.Generator(pipe.device).manual_seed(cfg.seed)
    pipe.set_progress_bar_config(disable=False, desc="grid")
    images = pipe(ids, num_images_per_label=cfg.num_per_label, generator=generator, **sampling).images
    id2label = {int(k): v for k, v in (pipe.config.id2label or {}).items()}
    captions = [id2label.get(i, str(i)) for i in ids] if ids is not None else ["unconditional"]
    labelled_grid(images, captions, cfg.num_per_label).save(cfg.out)
    logger.info(f"wrote {cfg.out} ({len(images)} images)")


def write_samples(cfg: GenerateConfig, pipe: DiffiTPipeline, sampling: dict, accelerator: Accelerator) -> None:
    """`cfg.num_samples` images over the processes (sample i on process i % P), written by the main process."""
    mine = list(range(accelerator.process_index, cfg.num_samples, accelerator.num_processes))
    bar = tqdm(total=cfg.num_samples, desc="sampling", unit="img", disable=not accelerator.is_main_process)

    class JobBar:  # each process advances the one bar by what all processes did (they run in lockstep)
        def update(self, n: int) -> None:
            bar.update(min(n * accelerator.num_processes, bar.total - bar.n))

    images, labels = sample_indices(pipe, mine, label_ids(pipe, cfg.labels), seed=cfg.seed,
                                    batch_size=cfg.batch_size, progress=JobBar(), **sampling)
    bar.close()
    parts = accelerator.gather_for_metrics([{"index": torch.tensor(mine), "images": to_uint8_nhwc(images),
                                             "labels": labels}], use_gather_object=True)
    if not accelerator.is_main_process:
        return
    order = torch.cat([p["index"] for p in parts]).argsort().numpy()
    array = np.concatenate([p["images"] for p in parts])[order]  # (N, H, W, C) uint8, sample order
    label_array = torch.cat([p["labels"] for p in parts]).numpy()[order]
    out = Path(cfg.out)
    if cfg.output_kind == "npz":  # ADM's layout: arr_0 = uint8 NHWC RGB images, arr_1 = class labels
        rgb = np.repeat(array, 3, axis=3) if array.shape[3] == 1 else array
        with atomic_path(out) as tmp, open(tmp, "wb") as f:
            np.savez(f, rgb, label_array)
    else:  # written beside `out`, then moved in: labels.json, moved last, lists exactly the PNGs of one job
        check_samples_folder(out, cfg.overwrite)  # again: nothing else was put there while sampling
        tmp = out.resolve().with_name(f".{out.resolve().name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for i, image in enumerate(array):
            Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(tmp / f"{i:06d}.png")
        id2label = {int(k): v for k, v in (pipe.config.id2label or {}).items()}
        atomic_write_json(tmp / "labels.json", {f"{i:06d}.png": {"label": int(y), "name": id2label.get(int(y))}
                                                for i, y in enumerate(label_array)})
        out.mkdir(parents=True, exist_ok=True)
        for old in sorted(out.iterdir(), key=lambda p: p.name != "labels.json"):  # earlier samples (--overwrite)
            old.unlink()
        for new in sorted(tmp.iterdir(), key=lambda p: p.name == "labels.json"):
            os.replace(new, out / new.name)
        tmp.rmdir()
    logger.info(f"wrote {out} ({len(array)} images of {array.shape[1]}x{array.shape[2]}x{array.shape[3]})")


def main(cfg: GenerateConfig) -> None:
    accelerator = Accelerator(cpu=cfg.device == "cpu")
    if cfg.device and accelerator.num_processes > 1:
        raise ValueError("--device picks the device of a single process; under accelerate launch each process uses "
                         "its own (leave --device out).")
    pipe, sampling = load_pipeline(cfg, cfg.device or accelerator.device)
    if cfg.output_kind == "grid":
        if accelerator.is_main_process:
            write_grid(cfg, pipe, sampling)
    else:
        write_samples(cfg, pipe, sampling, accelerator)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(parse_config(GenerateConfig))
