"""Training a diffusers `AutoencoderKL` with accelerate: reconstruction (L1 or MSE) plus a small KL term, as latent
diffusion's first stage. `training/train_vae.py` is its command line; the offline demo chain calls `train_vae` too.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from diffusers import AutoencoderKL
from diffusers.training_utils import EMAModel
from PIL import Image
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data import image_transform, load_image_dataset
from ..utils import atomic_write_json
from .checkpoints import resume_from_checkpoint, save_checkpoint
from .distributed import register_checkpoint_hooks
from .previews import log_image
from .runtime import adamw, end_run, lr_schedule, mixed_precision_field, record_run, resolve_mixed_precision, start_run

logger = logging.getLogger(__name__)

VAE_RUN_OUTPUTS = ("checkpoints", "train_config.json", "config.json", "diffusion_pytorch_model.safetensors")
VAE_RESUME_MAY_CHANGE = {"max_steps", "lr_scheduler", "lr_warmup_steps", "checkpointing_steps",
                         "checkpoints_total_limit", "resume_from_checkpoint", "overwrite_output_dir", "log_every",
                         "num_workers", "cpu_threads", "output_dir", "eval_split", "eval_samples", "scaling_samples",
                         "report_to", "tracker_project_name"}  # the lr schedule: where it continues (check_lr_resume)


@dataclass
class VAETrainConfig:
    """Train an AutoencoderKL (see `train_vae`)."""

    dataset: str = field(default="fashion-mnist", metadata={"help": "fashion-mnist, image folder, saved data, Hub id"})
    train_split: str = "train"
    eval_split: str = field(default="test", metadata={"help": "split for PSNR; empty string to skip"})
    image_column: str = "image"
    resolution: int = 32
    grayscale: bool = True
    random_flip: bool = False
    block_out_channels: tuple[int, ...] = field(
        default=(16, 32), metadata={"help": "one entry per resolution; downsampling = 2 ** (len - 1)"})
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 16
    loss: str = field(default="l1", metadata={"choices": ["l1", "mse"], "help": "reconstruction loss"})
    kl_weight: float = field(default=1e-6, metadata={"help": "weight of KL(sum over latent) per pixel, as LDM"})
    learning_rate: float = 1e-3
    lr_scheduler: str = field(default="constant", metadata={"help": "a diffusers schedule (constant, cosine, ...)"})
    lr_warmup_steps: int = 100
    batch_size: int = field(default=64, metadata={"help": "per process"})
    max_steps: int = 1500
    ema_decay: float = field(default=0.0, metadata={"help": "0 disables EMA; EMA uses warmup (EMAModel)"})
    mixed_precision: str = mixed_precision_field()
    checkpointing_steps: int = 500
    checkpoints_total_limit: int = 2
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "a checkpoint folder or 'latest'"})
    output_dir: str = "outputs/vae"
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "replace the VAE/run already in output_dir (without it, a new run there is refused)"})
    scaling_samples: int = field(default=5000, metadata={"help": "training images used to measure latent std"})
    eval_samples: int = field(default=10_000, metadata={"help": "eval images for PSNR (at most the split)"})
    num_workers: int = 0
    cpu_threads: int | None = field(default=None, metadata={"help": "CPU threads per process (None: cores/procs)"})
    seed: int = 0
    log_every: int = 50
    report_to: str | None = field(default=None, metadata={
        "help": "tensorboard, wandb, ... (accelerate trackers): losses, lr, PSNR and the reconstructions"})
    tracker_project_name: str = field(default="diffit_hf-vae", metadata={"help": "the trackers' project"})

    def __post_init__(self):
        self.mixed_precision = resolve_mixed_precision(self.mixed_precision)  # "auto" -> what this machine has


def build_vae(cfg: VAETrainConfig) -> AutoencoderKL:
    channels = 1 if cfg.grayscale else 3
    levels = len(cfg.block_out_channels)
    return AutoencoderKL(
        in_channels=channels, out_channels=channels, latent_channels=cfg.latent_channels,
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
        norm_num_groups=cfg.norm_num_groups, sample_size=cfg.resolution,
    )


class AutoencoderWithKL(torch.nn.Module):
    """One forward (encode -> sample -> decode) so DistributedDataParallel sees, and syncs, the whole step."""

    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = self.vae.encode(x).latent_dist
        return self.vae.decode(posterior.sample()).sample, posterior.kl()  # (N, C, H, W), (N,)


def make_loader(cfg: VAETrainConfig, split: str, shuffle: bool, flip: bool, limit: int | None = None) -> DataLoader:
    data = load_image_dataset(cfg.dataset, split, cfg.image_column, label_column=None)
    if limit is not None and limit < len(data):
        data = data.select(range(limit))
    data.set_transform(image_transform(cfg.resolution, cfg.grayscale, random_flip=flip, seed=cfg.seed))

    def collate(rows):
        return torch.stack([r["pixel_values"] for r in rows])

    # its own generator: creating an iterator then draws no number from the global RNG (exact resume)
    return DataLoader(data, batch_size=cfg.batch_size, shuffle=shuffle, drop_last=shuffle, collate_fn=collate,
                      num_workers=cfg.num_workers, generator=torch.Generator().manual_seed(cfg.seed))


@torch.no_grad()
def evaluate_psnr(vae: AutoencoderKL, loader: DataLoader, device) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Mean per-image PSNR (dB, images in [0, 1]) reconstructing from the posterior mean; and a first batch."""
    psnrs, first = [], None
    for x in loader:
        x = x.to(device)
        rec = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        mse = ((rec - x) / 2).square().flatten(1).mean(1)  # in [0, 1] units
        psnrs.append(10 * torch.log10(1.0 / mse.clamp_min(1e-10)))
        if first is None:
            first = (x[:8].cpu(), rec[:8].cpu())
    return torch.cat(psnrs).mean().item(), *first


@torch.no_grad()
def measure_scaling_factor(vae: AutoencoderKL, loader: DataLoader, device) -> float:
    """1 / std of sampled latents over training images (how SD's 0.18215 was derived)."""
    total, sq, n = 0.0, 0.0, 0
    for x in loader:
        z = vae.encode(x.to(device)).latent_dist.sample().double()
        total, sq, n = total + z.sum().item(), sq + z.square().sum().item(), n + z.numel()
    return 1.0 / math.sqrt(sq / n - (total / n) ** 2)


def save_grid(originals: torch.Tensor, recons: torch.Tensor, path: Path) -> None:
    """Two rows: originals on top, reconstructions below."""
    images = torch.cat([originals, recons]).add(1).div(2).clamp(0, 1)  # (2k, C, H, W)
    k, (c, h, w) = len(originals), images.shape[1:]
    grid = images.view(2, k, c, h, w).permute(0, 3, 1, 4, 2).reshape(2 * h, k * w, c)
    array = (grid.numpy() * 255).round().astype(np.uint8)
    Image.fromarray(array[..., 0] if c == 1 else array).save(path)


def train_vae(cfg: VAETrainConfig) -> dict:
    """Trains, exports (EMA weights if used, with the measured scaling factor) and evaluates a VAE; returns the
    metrics written to `OUTPUT_DIR/metrics.json`."""
    out, run_start = Path(cfg.output_dir), time.time()
    if cfg.resolution % 2 ** (len(cfg.block_out_channels) - 1):
        raise ValueError(f"--resolution {cfg.resolution} is not divisible by the VAE's downsampling "
                         f"{2 ** (len(cfg.block_out_channels) - 1)} (2 ** (len(block_out_channels) - 1)).")
    set_seed(cfg.seed)
    accelerator = start_run(cfg, VAE_RUN_OUTPUTS, VAE_RESUME_MAY_CHANGE)

    # 1. Data and model
    loader = make_loader(cfg, cfg.train_split, shuffle=True, flip=cfg.random_flip)
    vae = build_vae(cfg)
    optimizer = adamw(vae.parameters(), cfg.learning_rate)
    lr_scheduler = lr_schedule(accelerator, cfg.lr_scheduler, optimizer, cfg.lr_warmup_steps, cfg.max_steps)
    model, optimizer, loader, lr_scheduler = accelerator.prepare(AutoencoderWithKL(vae), optimizer, loader,
                                                                 lr_scheduler)
    ema = None
    if cfg.ema_decay > 0:
        ema = EMAModel(vae.parameters(), decay=cfg.ema_decay, use_ema_warmup=True, model_cls=AutoencoderKL,
                       model_config=vae.config)
        ema.to(accelerator.device)
    parts = register_checkpoint_hooks(accelerator, vae, ema, name="vae")  # checkpoint-*/vae/ and vae_ema/

    # 2. Resume; the config is saved once every check has passed
    ckpt_dir = out / "checkpoints"
    step = resume_from_checkpoint(accelerator, cfg.resume_from_checkpoint, ckpt_dir, parts)
    record_run(accelerator, cfg, step)  # after checking that a changed lr schedule continues the run

    # 3. Train
    pixels_per_image = (1 if cfg.grayscale else 3) * cfg.resolution**2
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not accelerator.is_local_main_process, desc="vae")
    start_time, start_step = time.time(), step
    while step < cfg.max_steps:
        epoch, skip = divmod(step, len(loader))
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        batches = accelerator.skip_first_batches(loader, skip) if skip else loader
        for x in batches:
            rec, kl = model(x)
            rec_loss = F.l1_loss(rec.float(), x.float()) if cfg.loss == "l1" else F.mse_loss(rec.float(), x.float())
            kl = kl.mean() / pixels_per_image
            loss = rec_loss + cfg.kl_weight * kl
            accelerator.backward(loss)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.step(vae.parameters())
            step += 1
            bar.update(1)
            if step % cfg.log_every == 0:
                bar.set_postfix(rec=f"{rec_loss.item():.4f}", kl=f"{kl.item():.3g}")
                accelerator.log({"loss": loss.item(), "reconstruction": rec_loss.item(), "kl": kl.item(),
                                 "lr": lr_scheduler.get_last_lr()[0]}, step=step)
            if step % cfg.checkpointing_steps == 0 or step == cfg.max_steps:
                save_checkpoint(accelerator, ckpt_dir, step, cfg.checkpoints_total_limit)
            if step >= cfg.max_steps:
                break
    bar.close()
    steps_per_s = (step - start_step) / max(time.time() - start_time, 1e-9)

    # 4. Export (EMA weights if used), scaling factor, PSNR, reconstruction grid
    accelerator.wait_for_everyone()
    metrics = {}
    if accelerator.is_main_process:
        vae = accelerator.unwrap_model(model).vae
        if ema is not None:
            ema.copy_to(vae.parameters())
        vae.eval()
        scale_loader = make_loader(cfg, cfg.train_split, shuffle=False, flip=False, limit=cfg.scaling_samples)
        vae.register_to_config(scaling_factor=measure_scaling_factor(vae, scale_loader, accelerator.device))
        vae.save_pretrained(out)
        latent_side = cfg.resolution // 2 ** (len(cfg.block_out_channels) - 1)
        metrics = {"steps": step, "train_steps_per_s": steps_per_s, "scaling_factor": vae.config.scaling_factor,
                   "latent_shape": [cfg.latent_channels, latent_side, latent_side], "config": dataclasses.asdict(cfg)}
        if cfg.eval_split:
            eval_loader = make_loader(cfg, cfg.eval_split, shuffle=False, flip=False, limit=cfg.eval_samples)
            psnr, originals, recons = evaluate_psnr(vae, eval_loader, accelerator.device)
            save_grid(originals, recons, out / "reconstructions.png")
            metrics.update(psnr_db=psnr, eval_split=cfg.eval_split, eval_images=len(eval_loader.dataset))
            accelerator.log({"psnr_db": psnr}, step=step)
            log_image(accelerator, "reconstructions", Image.open(out / "reconstructions.png"), step)
            logger.info(f"{cfg.eval_split} PSNR: {psnr:.2f} dB over {len(eval_loader.dataset)} images")
        metrics["seconds"] = time.time() - run_start  # training, scaling factor and PSNR
        atomic_write_json(out / "metrics.json", metrics)
        logger.info(f"saved {out} (scaling_factor {vae.config.scaling_factor:.4f})")
    end_run(accelerator)  # a final barrier, then trackers and process group
    return metrics

