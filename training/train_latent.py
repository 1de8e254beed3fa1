"""Train a DiT / DiffiT denoiser with accelerate on cached VAE latents (or on pixels), ending in a DiffiTPipeline.

    # offline demo: trains the Fashion-MNIST VAE and builds the latent cache if absent, then a small DiT
    accelerate launch training/train_latent.py
    # a cluster: ImageNet latents (encode_latents.py with stabilityai/sd-vae-ft-ema), DiT-XL/2, bf16, 8 GPUs
    accelerate launch --multi_gpu --num_processes 8 training/train_latent.py --latents latents-in1k-256 \
        --model DiT-XL/2 --mixed-precision bf16 --batch-size 32 --max-steps 400000 --output-dir dit-xl-2
    # pixel space: the U-shaped DiffiT on images, no VAE
    accelerate launch training/train_latent.py --dataset fashion-mnist --resolution 32 --grayscale \
        --model DiffiT-CIFAR10 --model-config '{"num_classes": 10}'

Every field of `TrainConfig` is a flag (`--max-steps 500`, `--no-ema-warmup`), or comes from `--config file.yaml`.
Writes to OUTPUT_DIR: `checkpoints/checkpoint-{step:07d}/` (accelerate state plus `transformer/` and
`transformer_ema/` save_pretrained folders), `samples/step-*.png` validation grids (EMA weights, one row per class),
`training_progress.gif`, `loss_curve.png`, `logs/` (loss CSV, tensorboard), `train_config.json`, and at the end the
pipeline (EMA transformer, VAE, scheduler, class names, model card): `DiffiTPipeline.from_pretrained(OUTPUT_DIR)`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from diffusers import AutoencoderKL, DDPMScheduler
from diffusers.optimization import SchedulerType, get_scheduler
from diffusers.training_utils import EMAModel
from PIL import Image
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from diffit_hf import DiffiTPipeline
from diffit_hf.data import LatentDataset, image_transform, load_image_dataset
from diffit_hf.models.presets import preset_config
from diffit_hf.pipelines.grid import labelled_grid
from diffit_hf.training.checkpoints import (
    checkpoint_step,
    latest_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from diffit_hf.training.config import parse_config, save_config
from diffit_hf.training.losses import diffusion_loss
from diffit_hf.training.runtime import enable_tf32, set_cpu_threads

DEMO_VAE = "outputs/vae-fmnist"
DEMO_LATENTS = "outputs/latents-fmnist-32"
LR_SCHEDULES = [s.value for s in SchedulerType]
LOSS_KEYS = ("loss", "mse", "vb")


@dataclass
class TrainConfig:
    """Train a DiT / DiffiT model (see training/train_latent.py)."""

    # 1. Data
    latents: str | None = field(default=None, metadata={
        "help": "latent cache from encode_latents.py; with neither --latents nor --dataset: the offline "
                "Fashion-MNIST demo (its VAE and cache are built under outputs/ if absent)"})
    dataset: str | None = field(default=None, metadata={"help": "pixel-space training: fashion-mnist, a folder..."})
    resolution: int = field(default=32, metadata={"help": "pixel-space resolution"})
    grayscale: bool = field(default=False, metadata={"help": "pixel space: 1 channel"})
    vae: str | None = field(default=None, metadata={"help": "VAE for samples/export (default: the cache's VAE)"})
    random_flip: bool = False
    # 2. Model
    model: str = field(default="DiT-S/2", metadata={"help": "any preset (python -m diffit_hf presets)"})
    model_config: str = field(default="{}", metadata={"help": "JSON overrides of the preset, e.g. "
                                                      "'{\"num_layers\": 6}'; in/out shape and classes come from "
                                                      "the data"})
    # 3. Optimisation (DiT: AdamW lr 1e-4, no weight decay, constant lr, no clipping)
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    lr_scheduler: str = field(default="constant_with_warmup", metadata={"choices": LR_SCHEDULES})
    lr_warmup_steps: int = 0
    max_grad_norm: float = field(default=0.0, metadata={"help": "gradient clipping; 0 disables"})
    batch_size: int = field(default=32, metadata={"help": "per process and accumulation step"})
    gradient_accumulation_steps: int = 1
    max_steps: int = 2000
    mixed_precision: str = field(default="no", metadata={"choices": ["no", "bf16", "fp16"]})
    gradient_checkpointing: bool = False
    compile: bool = field(default=False, metadata={"help": "torch.compile the model (40-60 s cold start)"})
    allow_tf32: bool = True
    class_dropout_prob: float = field(default=0.1, metadata={"help": "label dropout for classifier-free guidance"})
    num_workers: int = 0
    cpu_threads: int | None = field(default=None, metadata={"help": "CPU threads per process (None: cores/procs)"})
    seed: int = 0
    # 4. EMA (DiT: 0.9999; warmup ramps the decay up so that short runs get a usable average)
    ema_decay: float = 0.9999
    ema_warmup: bool = True
    ema_power: float = field(default=2 / 3, metadata={"help": "warmup: decay = 1 - (1 + step) ** -power"})
    # 5. Checkpoints and logging
    output_dir: str = "outputs/dit-fmnist"
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = 3
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "'latest' or a checkpoint folder"})
    log_every: int = 50
    report_to: str | None = field(default=None, metadata={"help": "tensorboard, wandb, ... (accelerate trackers)"})
    # 6. Validation samples (EMA weights, fixed seed, one row per class)
    validation_steps: int = 500
    validation_per_class: int = 8
    validation_inference_steps: int = 50
    validation_guidance_scale: float = 4.0
    # 7. Export
    push_to_hub: bool = False
    hub_repo_id: str | None = None
    hub_private: bool = False
    # 8. Learning-rate finder (sweeps the lr over real batches, writes lr_finder.csv/.png, then exits)
    lr_finder: bool = False
    lr_finder_min: float = 1e-7
    lr_finder_max: float = 1.0
    lr_finder_steps: int = 100


#################################################################################
#                         Configuration and data checks                         #
#################################################################################


def check_config(cfg: TrainConfig) -> dict:
    """Raises ValueError for a config that cannot run, before any work; returns the model overrides."""
    if cfg.latents and cfg.dataset:
        raise ValueError("Pass --latents (latent training) or --dataset (pixel space), not both.")
    if cfg.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ValueError("mixed_precision='fp16' needs a GPU (fp16 on CPU is ~100x slower); use 'bf16' or 'no'.")
    try:
        overrides = json.loads(cfg.model_config) if isinstance(cfg.model_config, str) else dict(cfg.model_config)
    except json.JSONDecodeError as err:
        raise ValueError(f"--model-config must be a JSON object, got {cfg.model_config!r} ({err}).") from err
    if not isinstance(overrides, dict):
        raise ValueError(f"--model-config must be a JSON object, got {cfg.model_config!r}.")
    preset_config(cfg.model)  # unknown preset -> ValueError listing the valid names
    for name in ("max_steps", "batch_size", "gradient_accumulation_steps", "checkpointing_steps", "log_every",
                 "validation_steps", "validation_per_class", "validation_inference_steps", "lr_finder_steps"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}.")
    if cfg.push_to_hub and not cfg.hub_repo_id:
        raise ValueError("--push-to-hub needs --hub-repo-id.")
    if not 0.0 <= cfg.ema_decay < 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1), got {cfg.ema_decay}.")
    return overrides


def build_model(cfg: TrainConfig, overrides: dict, data_shape: tuple[int, int, int], num_classes: int):
    """The preset with the data's shape and classes; ValueError if the data does not fit the model."""
    channels, height, width = data_shape
    derived = {"in_channels": channels, "sample_size": height if height == width else (height, width),
               "num_classes": num_classes, "class_dropout_prob": cfg.class_dropout_prob}
    for key, value in derived.items():
        if key in overrides and overrides[key] != value and key != "class_dropout_prob":
            raise ValueError(f"--model-config sets {key}={overrides[key]!r} but the data gives {value!r}.")
    cls, config = preset_config(cfg.model, **{**derived, **overrides})
    with torch.device("meta"):  # a shape-only forward finds every misfit (patch/window/downsampling sizes)
        x = torch.zeros(1, channels, height, width)
        t = torch.zeros(1, dtype=torch.long)
        y = torch.zeros(1, dtype=torch.long) if num_classes else None
        try:
            cls(**config)(x, t, y)
        except ValueError as err:
            raise ValueError(f"Data of shape {data_shape} does not fit {cfg.model}: {err}") from err
    return cls(**config)


def prepare_demo_data(cfg: TrainConfig, accelerator: Accelerator) -> dict[str, float]:
    """The offline default: Fashion-MNIST -> our VAE -> latent cache, each built only if absent; returns the seconds
    each stage that ran took."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from encode_latents import encode_dataset
    from train_vae import VAETrainConfig
    from train_vae import main as train_vae

    seconds = {}
    if not (Path(DEMO_VAE) / "config.json").exists():
        accelerator.print(f"demo: training the Fashion-MNIST VAE into {DEMO_VAE} (once)")
        start = time.time()
        train_vae(VAETrainConfig(output_dir=DEMO_VAE, mixed_precision=cfg.mixed_precision, seed=cfg.seed,
                                 cpu_threads=cfg.cpu_threads))
        seconds["vae"] = time.time() - start
    accelerator.wait_for_everyone()
    if not (Path(DEMO_LATENTS) / "index.json").exists():
        accelerator.print(f"demo: encoding Fashion-MNIST train into {DEMO_LATENTS} (once)")
        start = time.time()
        encode_dataset(accelerator, DEMO_VAE, "fashion-mnist", DEMO_LATENTS, resolution=32, grayscale=True)
        seconds["cache"] = time.time() - start
    cfg.latents = DEMO_LATENTS
    return seconds


def make_dataset(cfg: TrainConfig):
    """(dataset of (x, label) rows, collate_fn, data shape (C, H, W), class names, VAE id or None)."""
    if cfg.latents:
        data = LatentDataset(cfg.latents, resample=True, random_flip=cfg.random_flip, seed=cfg.seed)
        return data, None, data.latent_shape, data.class_names, cfg.vae or data.meta.get("vae") or None
    data = load_image_dataset(cfg.dataset, "train")
    data.set_transform(image_transform(cfg.resolution, cfg.grayscale, random_flip=cfg.random_flip, seed=cfg.seed))

    def collate(rows):
        return torch.stack([r["pixel_values"] for r in rows]), torch.tensor([r["label"] for r in rows])

    names = getattr(data.features.get("label"), "names", None)
    return data, collate, (1 if cfg.grayscale else 3, cfg.resolution, cfg.resolution), names, None


def noise_scheduler_for(model) -> DDPMScheduler:
    """DiT's diffusion: 1000 steps, linear betas 1e-4..0.02; learned-range variance when the model learns sigma."""
    learned = model.out_channels == 2 * model.config.in_channels
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                         variance_type="learned_range" if learned else "fixed_small", clip_sample=False)


#################################################################################
#                                 Training pieces                               #
#################################################################################


def compute_loss(model, batch, noise_scheduler: DDPMScheduler, accelerator: Accelerator) -> dict[str, torch.Tensor]:
    x0, labels = batch  # (N, C, H, W), (N,)
    noise = torch.randn_like(x0)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (x0.shape[0],), device=x0.device)
    x_t = noise_scheduler.add_noise(x0, noise, t)
    labels = labels if accelerator.unwrap_model(model).config.num_classes > 0 else None
    with accelerator.autocast():
        out = model(x_t, t, labels).sample  # (N, C or 2C, H, W)
    return diffusion_loss(out.float(), noise, x0, x_t, t, noise_scheduler)


def step_seed(seed: int, micro_step: int, rank: int) -> int:
    """Each micro-step's randomness (noise, timesteps, label dropout) depends on (seed, step, rank) only: a resumed
    run draws exactly what an uninterrupted one draws."""
    return (seed * 1_000_003 + micro_step) * 4099 + rank


@torch.no_grad()
def render_samples(cfg: TrainConfig, accelerator, model, ema, vae, noise_scheduler, id2label, path: Path):
    """A grid from the EMA weights (one row per class, fixed seed), saved to `path` and logged; returns it."""
    net = accelerator.unwrap_model(model)
    was_training = net.training
    ema.store(net.parameters())
    ema.copy_to(net.parameters())
    net.eval()
    try:
        pipe = DiffiTPipeline(transformer=net, scheduler=noise_scheduler, vae=vae, id2label=id2label)
        pipe.set_progress_bar_config(disable=True)
        num_classes = net.config.num_classes
        labels = list(range(num_classes)) if num_classes else None
        generator = torch.Generator(accelerator.device).manual_seed(cfg.seed)
        with accelerator.autocast():
            images = pipe(labels, num_images_per_label=cfg.validation_per_class,
                          guidance_scale=cfg.validation_guidance_scale,
                          num_inference_steps=cfg.validation_inference_steps, generator=generator).images
    finally:
        ema.restore(net.parameters())
        net.train(was_training)
    captions = [id2label.get(i, str(i)) for i in labels] if labels else ["unconditional"]
    grid = labelled_grid(images, captions, cfg.validation_per_class, rows=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return grid


def plot_curve(xs, ys, path: Path, xlabel: str, ylabel: str, log_x: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, ys)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log_x:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_lr_finder(cfg: TrainConfig, accelerator, model, optimizer, loader, noise_scheduler) -> dict:
    """Exponential lr sweep over real training batches (Smith 2015); stops when the smoothed loss diverges."""
    lrs = torch.logspace(math.log10(cfg.lr_finder_min), math.log10(cfg.lr_finder_max), cfg.lr_finder_steps).tolist()
    rows, smoothed, best = [], 0.0, float("inf")
    batches = iter(loader)
    for i, lr in enumerate(tqdm(lrs, desc="lr finder", disable=not accelerator.is_local_main_process)):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        set_seed(step_seed(cfg.seed, i, accelerator.process_index))
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = compute_loss(model, batch, noise_scheduler, accelerator)["loss"]
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        value = accelerator.reduce(loss.detach(), "mean").item()
        smoothed = 0.98 * smoothed + 0.02 * value
        debiased = smoothed / (1 - 0.98 ** (i + 1))
        rows.append((lr, value, debiased))
        best = min(best, debiased)
        if not math.isfinite(value) or debiased > 4 * best:
            break
    # suggestion: the steepest descent of the smoothed loss against log(lr), before the minimum
    stop = min(range(len(rows)), key=lambda k: rows[k][2]) + 1
    slopes = [(rows[k + 1][2] - rows[k][2]) / math.log(rows[k + 1][0] / rows[k][0]) for k in range(stop - 1)]
    suggestion = rows[min(range(len(slopes)), key=slopes.__getitem__)][0] if slopes else rows[0][0]
    out = Path(cfg.output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "lr_finder.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["lr", "loss", "smoothed_loss"])
            writer.writerows(rows)
        plot_curve([r[0] for r in rows], [r[2] for r in rows], out / "lr_finder.png", "learning rate",
                   "smoothed loss", log_x=True)
        print(f"lr finder: suggested learning rate {suggestion:.3g} (steepest descent); see {out / 'lr_finder.png'}")
    return {"suggested_lr": suggestion, "rows": rows}


#################################################################################
#                                      Main                                     #
#################################################################################


def main(cfg: TrainConfig) -> dict:
    # 1. Config and processes
    overrides = check_config(cfg)
    out = Path(cfg.output_dir)
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        log_with=cfg.report_to,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),  # shuffle order = f(seed, epoch)
    )
    set_cpu_threads(accelerator, cfg.cpu_threads)
    if cfg.allow_tf32:
        enable_tf32()
    run_start, demo_seconds = time.time(), {}
    if not cfg.latents and not cfg.dataset:
        demo_seconds = prepare_demo_data(cfg, accelerator)
    set_seed(cfg.seed)

    # 2. Data, model, diffusion, optimiser, EMA
    data, collate, data_shape, class_names, vae_id = make_dataset(cfg)
    num_classes = len(class_names) if class_names else overrides.get("num_classes", 0)
    model = build_model(cfg, overrides, data_shape, num_classes)
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    model_cls = type(model)
    noise_scheduler = noise_scheduler_for(model)
    id2label = dict(enumerate(class_names)) if class_names and model.config.num_classes else {}
    loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=True, drop_last=True, collate_fn=collate,
                        num_workers=cfg.num_workers, generator=torch.Generator().manual_seed(cfg.seed))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    lr_scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.lr_warmup_steps,
                                 num_training_steps=cfg.max_steps)
    ema = EMAModel(model.parameters(), decay=cfg.ema_decay, use_ema_warmup=cfg.ema_warmup, inv_gamma=1.0,
                   power=cfg.ema_power, model_cls=model_cls, model_config=model.config)
    if cfg.compile:
        model = torch.compile(model)
    model, optimizer, loader, lr_scheduler = accelerator.prepare(model, optimizer, loader, lr_scheduler)
    ema.to(accelerator.device)
    if len(loader) == 0:
        raise ValueError(f"{len(data)} examples give no full batch of {cfg.batch_size} per process.")

    if cfg.lr_finder:
        return run_lr_finder(cfg, accelerator, model, optimizer, loader, noise_scheduler)

    # save_state writes the model and its EMA as save_pretrained folders (diffusers' examples' hooks)
    def save_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            for m in models:
                accelerator.unwrap_model(m).save_pretrained(Path(output_dir) / "transformer")
            ema.save_pretrained(Path(output_dir) / "transformer_ema")
        while weights:
            weights.pop()

    def load_hook(models, input_dir):
        loaded = EMAModel.from_pretrained(str(Path(input_dir) / "transformer_ema"), model_cls)
        ema.load_state_dict(loaded.state_dict())
        ema.to(accelerator.device)
        while models:
            m = models.pop()
            saved = model_cls.from_pretrained(input_dir, subfolder="transformer")
            accelerator.unwrap_model(m).load_state_dict(saved.state_dict())

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)

    # 3. Resume
    step, ckpt_dir = 0, out / "checkpoints"
    if cfg.resume_from_checkpoint:
        if cfg.resume_from_checkpoint == "latest" and latest_checkpoint(ckpt_dir) is None:
            accelerator.print(f"no checkpoint in {ckpt_dir}: starting from scratch")
        else:
            path = resolve_checkpoint(cfg.resume_from_checkpoint, ckpt_dir)
            accelerator.load_state(str(path))
            step = checkpoint_step(path)
            accelerator.print(f"resumed from {path} at step {step}")
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "train_config.json")
        (out / "logs").mkdir(exist_ok=True)
        history = _read_history(out / "logs" / "loss.csv", step)
    if cfg.report_to:
        accelerator.init_trackers("diffit_hf", config={k: v for k, v in dataclasses.asdict(cfg).items()
                                                       if isinstance(v, (int, float, str, bool))})
    vae = None
    if vae_id and accelerator.is_main_process:
        vae = AutoencoderKL.from_pretrained(vae_id).to(accelerator.device).eval()

    # 4. Train
    accum = cfg.gradient_accumulation_steps
    accelerator.print(f"training {cfg.model} ({sum(p.numel() for p in model.parameters()):,} parameters) on "
                      f"{len(data):,} examples of shape {data_shape}, {accelerator.num_processes} process(es), "
                      f"batch {cfg.batch_size} x {accum} accumulation x {accelerator.num_processes}")
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not accelerator.is_local_main_process, desc="train")
    start_time, start_step, running = time.time(), step, []
    model.train()
    while step < cfg.max_steps:
        epoch, skip = divmod(step * accum, len(loader))
        loader.set_epoch(epoch)
        if hasattr(data, "set_epoch"):
            data.set_epoch(epoch)  # latent resampling noise = f(seed, epoch, index)
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        micro = 0
        for batch in batches:
            set_seed(step_seed(cfg.seed, step * accum + micro, accelerator.process_index))
            micro = (micro + 1) % accum
            with accelerator.accumulate(model):
                losses = compute_loss(model, batch, noise_scheduler, accelerator)
                # the mean over ranks, identical on every rank: all stop together on a bad loss
                reduced = accelerator.reduce(torch.stack([losses[k].detach() for k in LOSS_KEYS]), "mean").tolist()
                if not math.isfinite(reduced[0]):
                    last = latest_checkpoint(ckpt_dir)
                    raise FloatingPointError(
                        f"Loss is {reduced[0]} at step {step + 1}; stopping before the update. The last good "
                        f"checkpoint is {last or 'none'} (resume with --resume-from-checkpoint latest)."
                    )
                accelerator.backward(losses["loss"])
                if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            running.append(dict(zip(LOSS_KEYS, reduced)))
            if not accelerator.sync_gradients:
                continue

            # one optimiser step done
            step += 1
            ema.step(accelerator.unwrap_model(model).parameters())
            logs = {k: sum(r[k] for r in running) / len(running) for k in running[0]}
            logs["lr"] = lr_scheduler.get_last_lr()[0]
            running = []
            bar.update(1)
            accelerator.log(logs, step=step)
            if accelerator.is_main_process:
                history.append((step, logs["loss"], logs["mse"], logs["vb"], logs["lr"]))
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}")
                rate = (step - start_step) / max(time.time() - start_time, 1e-9)
                if accelerator.is_main_process:
                    tqdm.write(f"step {step}/{cfg.max_steps} loss {logs['loss']:.4f} (mse {logs['mse']:.4f}, "
                               f"vb {logs['vb']:.4f}) lr {logs['lr']:.2e} {rate:.2f} steps/s")
                    _write_history(out / "logs" / "loss.csv", history)
            if step % cfg.checkpointing_steps == 0 or step == cfg.max_steps:
                save_checkpoint(accelerator, ckpt_dir, step, cfg.checkpoints_total_limit)
            if step % cfg.validation_steps == 0 or step == cfg.max_steps:
                if accelerator.is_main_process:
                    grid = render_samples(cfg, accelerator, model, ema, vae, noise_scheduler, id2label,
                                          out / "samples" / f"step-{step:07d}.png")
                    _log_image(accelerator, grid, step)
                accelerator.wait_for_everyone()
            if step >= cfg.max_steps:
                break
    bar.close()
    steps_per_s = (step - start_step) / max(time.time() - start_time, 1e-9)

    # 5. Export: the pipeline with EMA weights, progress GIF, loss curve, model card, optional push
    accelerator.wait_for_everyone()
    checksums = accelerator.gather(weight_checksum(accelerator.unwrap_model(model), accelerator.device)).tolist()
    result = {"steps": step, "steps_per_s": steps_per_s, "num_processes": accelerator.num_processes,
              "params": sum(p.numel() for p in accelerator.unwrap_model(model).parameters()),
              "demo_data_seconds": demo_seconds, "train_seconds": time.time() - start_time,
              "rank_weight_checksums": [f"{c:014x}" for c in checksums]}
    if accelerator.is_main_process:
        _write_history(out / "logs" / "loss.csv", history)
        final = model_cls.from_config(accelerator.unwrap_model(model).config)
        ema.copy_to(final.parameters())
        pipe = DiffiTPipeline(transformer=final.eval(), scheduler=noise_scheduler, vae=vae, id2label=id2label)
        pipe.save_pretrained(out)
        grids = sorted((out / "samples").glob("step-*.png"))
        if grids:
            frames = [Image.open(p).convert("RGB") for p in grids]
            frames[0].save(out / "training_progress.gif", save_all=True, append_images=frames[1:], duration=500,
                           loop=0)
            Image.open(grids[-1]).save(out / "samples.png")
        if history:
            plot_curve([h[0] for h in history], [h[1] for h in history], out / "loss_curve.png", "step", "loss")
        from diffit_hf.pipelines.hub import write_model_card

        write_model_card(out, train_config=dataclasses.asdict(cfg), base_model=None)
        result.update(final_loss=history[-1][1] if history else None, output_dir=str(out), model=cfg.model,
                      total_seconds=time.time() - run_start)
        (out / "train_results.json").write_text(json.dumps(result, indent=2) + "\n")
        accelerator.print(f"saved the pipeline to {out} ({steps_per_s:.2f} steps/s)")
        if cfg.push_to_hub:
            from diffit_hf.pipelines.hub import push_to_hub

            push_to_hub(out, cfg.hub_repo_id, private=cfg.hub_private)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result


def weight_checksum(model, device) -> torch.Tensor:
    """(1,) int64 digest of the model's weights, to check that DDP kept every rank identical."""
    import hashlib

    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().float().cpu().numpy().tobytes())
    return torch.tensor([int(h.hexdigest()[:14], 16)], device=device)


def _read_history(path: Path, upto_step: int) -> list[tuple]:
    """Loss rows already logged (a resumed run keeps those up to its checkpoint)."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = [tuple(float(v) for v in row) for row in list(csv.reader(f))[1:]]
    return [(int(r[0]), *r[1:]) for r in rows if r[0] <= upto_step]


def _write_history(path: Path, history: list[tuple]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "loss", "mse", "vb", "lr"])
        writer.writerows(history)
    tmp.replace(path)


def _log_image(accelerator, grid: Image.Image, step: int) -> None:
    import numpy as np

    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image("samples", np.asarray(grid), step, dataformats="HWC")


if __name__ == "__main__":
    main(parse_config(TrainConfig))
