"""Train a DiT / DiffiT denoiser with accelerate on cached VAE latents (or on pixels), ending in a DiffiTPipeline.

    accelerate launch training/train_latent.py  # offline: Fashion-MNIST VAE and latent cache if absent, then DiT
    # a cluster: ImageNet latents (encode_latents.py with stabilityai/sd-vae-ft-ema), DiT-XL/2, bf16, 8 GPUs
    accelerate launch --multi_gpu --num_processes 8 training/train_latent.py --latents latents-in1k-256 \
        --model DiT-XL/2 --mixed-precision bf16 --batch-size 32 --max-steps 400000 --output-dir dit-xl-2
    # pixel space, no VAE: the U-shaped DiffiT on Fashion-MNIST pixels with EDM
    accelerate launch training/train_latent.py --config training/configs/fmnist_pixels_edm.yaml

Every field of `TrainConfig` is a flag (`--max-steps 500`, `--no-ema-warmup`), or comes from `--config file.yaml`.
Writes to OUTPUT_DIR: `checkpoints/checkpoint-{step:07d}/` (accelerate state plus `transformer/` and
`transformer_ema/` save_pretrained folders), `samples/step-*.png` validation grids (EMA weights, one row per class),
`training_progress.gif`, `loss_curve.png`, `logs/` (loss CSV, tensorboard), `train_config.json`, with
`--snapshot-steps K` the raw weights every K steps in `snapshots/` (for training/posthoc_ema.py), and at the end the
pipeline (EMA transformer, VAE, scheduler, class names, model card): `DiffiTPipeline.from_pretrained(OUTPUT_DIR)`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from diffit_hf import DiffiTPipeline
from diffit_hf.data import load_cache_vae, load_training_data
from diffit_hf.models.presets import create_model_for_data, preset_value
from diffit_hf.pipelines.model_card import license_fields
from diffit_hf.pipelines.push import push_to_hub
from diffit_hf.training.checkpoints import check_finite_loss, resume_from_checkpoint, save_checkpoint
from diffit_hf.training.config import check_positive, json_object, parse_config
from diffit_hf.training.demo import prepare_demo_latents
from diffit_hf.training.distributed import (
    ema_weights,
    fsdp_plugin_from_env,
    register_checkpoint_hooks,
    set_fsdp_wrap_units,
    weight_digest,
)
from diffit_hf.training.ema import SNAPSHOT_DIR, make_ema, save_snapshot
from diffit_hf.training.export import export_pipeline
from diffit_hf.training.init_weights import init_from_pretrained, source_provenance
from diffit_hf.training.loss_log import LossHistory, PendingLosses
from diffit_hf.training.lr_finder import lr_range_test
from diffit_hf.training.objectives import (
    LOSS_KEYS,
    OBJECTIVES,
    TIMESTEP_SAMPLING,
    Objective,
    make_objective,
    model_overrides_for,
)
from diffit_hf.training.previews import log_validation
from diffit_hf.training.runtime import (
    LR_SCHEDULE_FIELDS,
    LR_SCHEDULES,
    adamw,
    check_lr_schedule,
    end_run,
    lr_schedule,
    mixed_precision_field,
    record_run,
    resolve_mixed_precision,
    start_run,
    timed,
)
from diffit_hf.utils import atomic_write_json, mix_seed

RUN_OUTPUTS = ("checkpoints", "train_config.json", "model_index.json", "transformer", "samples", "logs", SNAPSHOT_DIR)
RESUME_MAY_CHANGE = {  # everything else is restored from the checkpoint or changes what it holds: refused on resume
    "max_steps", "checkpointing_steps", "checkpoints_total_limit", "resume_from_checkpoint", "overwrite_output_dir",
    "log_every", "report_to", "validation_steps", "validation_per_class", "validation_inference_steps",
    "validation_guidance_scale", "push_to_hub", "hub_repo_id", "hub_private", "hub_license", "num_workers",
    "cpu_threads", "compile", "allow_tf32", "gradient_checkpointing", "output_dir", "vae", "lr_finder",
    "lr_finder_min", "lr_finder_max", "lr_finder_steps", "tracker_project_name", "snapshot_steps",
    *LR_SCHEDULE_FIELDS}  # the lr schedule may change where it continues the run (check_lr_resume)


@dataclass
class TrainConfig:
    """Train a DiT / DiffiT model (see training/train_latent.py)."""

    # 1. Data
    latents: str | None = field(default=None, metadata={
        "help": "latent cache from encode_latents.py; with neither --latents nor --dataset: the offline "
                "Fashion-MNIST demo (its VAE and cache are built under outputs/ if absent)"})
    dataset: str | None = field(default=None, metadata={"help": "pixel-space training: fashion-mnist, a folder..."})
    image_column: str = field(default="image", metadata={"help": "pixel space: the dataset's image column"})
    label_column: str = field(default="label", metadata={
        "help": "pixel space: the dataset's label column; 'none': unconditional"})
    resolution: int = field(default=32, metadata={"help": "pixel-space resolution"})
    grayscale: bool = field(default=False, metadata={"help": "pixel space: 1 channel"})
    vae: str | None = field(default=None, metadata={"help": "VAE for samples/export (default: the cache's VAE)"})
    random_flip: bool = field(default=False, metadata={
        "help": "horizontal flips; a latent cache must hold both orientations (encode_latents.py --random-flip)"})
    # 2. Model
    model: str = field(default="DiT-S/2", metadata={"help": "any preset (python -m diffit_hf presets)"})
    init_from: str | None = field(default=None, metadata={
        "help": "fine-tune: a saved model or pipeline folder, an official DiT .pt, or a Hub id (another class count "
                "rebuilds the label table, keeping the null row)"})
    model_config: str = field(default="{}", metadata={"help": "JSON overrides of the preset, e.g. "
                                                      "'{\"num_layers\": 6}'; in/out shape and classes come from "
                                                      "the data"})
    # 3. Objective and optimisation (DiT: epsilon + learned sigma; AdamW lr 1e-4, no weight decay, constant lr,
    #    no clipping)
    objective: str = field(default="epsilon", metadata={
        "choices": list(OBJECTIVES),
        "help": "epsilon (DiT: DDPM + learned sigma), v_prediction, flow (SiT) or edm (Karras et al. 2022)"})
    timestep_sampling: str = field(default="uniform", metadata={
        "choices": list(TIMESTEP_SAMPLING), "help": "flow: t uniform or logit-normal (SD3)"})
    logit_mean: float = field(default=0.0, metadata={
        "help": "flow with --timestep-sampling logit_normal only: the normal's mean"})
    logit_std: float = field(default=1.0, metadata={
        "help": "flow with --timestep-sampling logit_normal only: the normal's std"})
    snr_gamma: float | None = field(default=None, metadata={
        "help": "min-SNR weighting (DDPM objectives), e.g. 5; weights the loss, the logged mse stays unweighted"})
    edm_sigma_data: float | None = field(default=None, metadata={
        "help": "edm: the data's std sigma_data, saved in the pipeline's scheduler (default: 1.0 for latent caches, "
                "scaled to std ~1; 0.5 for pixels in [-1, 1], EDM's)"})
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2 (DiT: 0.999; 0.95 is common for ViTs)"})
    lr_scheduler: str = field(default="constant_with_warmup", metadata={
        "choices": LR_SCHEDULES, "help": "a diffusers schedule, or wsd: warmup, constant, linear decay to 0 over the "
                                         "last --lr-decay-steps"})
    lr_warmup_steps: int = 0
    lr_decay_steps: int = field(default=0, metadata={"help": "wsd: the steps of the final decay"})
    max_grad_norm: float = field(default=0.0, metadata={"help": "gradient clipping; 0 disables"})
    batch_size: int = field(default=32, metadata={"help": "per process and accumulation step"})
    gradient_accumulation_steps: int = 1
    max_steps: int = 2000
    mixed_precision: str = mixed_precision_field()
    gradient_checkpointing: bool = False
    compile: bool = field(default=False, metadata={
        "help": "torch.compile: ~1 min cold start, then 1.0-1.2x on 2 CPU cores, 1.4-1.5x for XL on an H200"})
    allow_tf32: bool = True
    class_dropout_prob: float = field(default=0.1, metadata={"help": "label dropout for classifier-free guidance"})
    num_workers: int = 0
    cpu_threads: int | None = field(default=None, metadata={"help": "CPU threads per process (None: cores/procs)"})
    seed: int = 0
    # 4. EMA (DiT: 0.9999; warmup ramps the decay up so that short runs get a usable average)
    ema_decay: float = 0.9999
    ema_warmup: bool = field(default=True, metadata={
        "help": "ramp the decay up (short runs); --no-ema-warmup: DiT's constant decay from the first step"})
    ema_power: float = field(default=2 / 3, metadata={"help": "warmup: decay = 1 - (1 + step) ** -power"})
    snapshot_steps: int | None = field(default=None, metadata={
        "help": "also save the raw weights every N steps to snapshots/ (fp32, one model's size each), for any EMA "
                "computed after training: training/posthoc_ema.py"})
    # 5. Checkpoints and logging
    output_dir: str = "outputs/dit-fmnist"
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "replace the run already in output_dir (without it, a new run there is refused)"})
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = 3
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "'latest' or a checkpoint folder"})
    log_every: int = 50
    report_to: str | None = field(default=None, metadata={"help": "tensorboard, wandb, ... (accelerate trackers)"})
    tracker_project_name: str = field(default="diffit_hf", metadata={"help": "the trackers' project (wandb project)"})
    # 6. Validation samples (EMA weights, fixed seed, one row per class)
    validation_steps: int = 500
    validation_per_class: int = 8
    validation_inference_steps: int = 50
    validation_guidance_scale: float = 4.0
    # 7. Export
    push_to_hub: bool = False
    hub_repo_id: str | None = None
    hub_private: bool = False
    hub_license: str | None = field(default=None, metadata={
        "help": "the card's license (default apache-2.0; weights fine-tuned from DiT/DiffiT keep their license)"})
    # 8. Learning-rate finder (sweeps the lr over real batches, writes lr_finder.csv/.png, then exits)
    lr_finder: bool = False
    lr_finder_min: float = 1e-7
    lr_finder_max: float = 1.0
    lr_finder_steps: int = 100

    def __post_init__(self):
        self.mixed_precision = resolve_mixed_precision(self.mixed_precision)  # "auto" -> what this machine has


#################################################################################
#                                    Helpers                                    #
#################################################################################


def edm_sigma_data(cfg: TrainConfig) -> float | None:
    """--edm-sigma-data, or for the edm objective the data's default: 1.0 for latent caches (scaled to std ~1), 0.5
    for pixels in [-1, 1] (EDM's; with 0.5 on unit-variance latents c_in x reaches std 2 at low noise)."""
    if cfg.objective != "edm" or cfg.edm_sigma_data is not None:
        return cfg.edm_sigma_data  # (make_objective refuses it for the other objectives)
    return 1.0 if cfg.latents else 0.5


def check_config(cfg: TrainConfig) -> tuple[dict, Objective]:
    """Raises ValueError for a config that cannot run, before any work; returns the model overrides and objective."""
    if cfg.latents and cfg.dataset:
        raise ValueError("Pass --latents (latent training) or --dataset (pixel space), not both.")
    if cfg.vae and cfg.dataset:
        raise ValueError("--vae applies to latent training (--latents); pixel-space models have no VAE.")
    if cfg.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ValueError("mixed_precision='fp16' needs a GPU (fp16 on CPU is ~100x slower); use 'bf16' or 'no'.")
    check_lr_schedule(cfg.lr_scheduler, cfg.lr_warmup_steps, cfg.max_steps, cfg.lr_decay_steps)
    if cfg.snapshot_steps is not None and cfg.snapshot_steps < 1:
        raise ValueError(f"--snapshot-steps must be a positive number of steps (or none), got {cfg.snapshot_steps}.")
    check_positive(cfg, ("max_steps", "batch_size", "gradient_accumulation_steps", "checkpointing_steps", "log_every",
                         "validation_steps", "validation_per_class", "validation_inference_steps", "lr_finder_steps"))
    if cfg.lr_finder and not 0 < cfg.lr_finder_min < cfg.lr_finder_max:
        raise ValueError(f"--lr-finder-min must lie below --lr-finder-max, got {cfg.lr_finder_min} and "
                         f"{cfg.lr_finder_max}.")
    if cfg.push_to_hub and not cfg.hub_repo_id:
        raise ValueError("--push-to-hub needs --hub-repo-id.")
    for name in ("ema_decay", "adam_beta1", "adam_beta2"):
        if not 0.0 <= getattr(cfg, name) < 1.0:
            raise ValueError(f"{name} must lie in [0, 1), got {getattr(cfg, name)}.")
    overrides = {**model_overrides_for(cfg.objective), **json_object(cfg.model_config, "--model-config")}
    learn_sigma = preset_value(cfg.model, "learn_sigma", overrides)  # unknown preset -> ValueError naming the valid
    if cfg.hub_license and cfg.init_from:  # weights fine-tuned from DiT/DiffiT keep their non-commercial license
        source = source_provenance(cfg.init_from)["source"]
        license_fields(source, cfg.hub_license)
    objective = make_objective(cfg.objective, learn_sigma, cfg.snr_gamma, cfg.timestep_sampling, cfg.logit_mean,
                               cfg.logit_std, edm_sigma_data(cfg))  # options that do not go together -> ValueError
    return overrides, objective


#################################################################################
#                                      Main                                     #
#################################################################################


def main(cfg: TrainConfig) -> dict:
    # 1. Config and processes
    overrides, objective = check_config(cfg)
    out, ckpt_dir = Path(cfg.output_dir), Path(cfg.output_dir) / "checkpoints"
    # the processes, once the output folder is known to be this run's; FSDP2: accelerate launch --use_fsdp
    accelerator = start_run(cfg, () if cfg.lr_finder else RUN_OUTPUTS, RESUME_MAY_CHANGE,
                            cfg.gradient_accumulation_steps, fsdp_plugin_from_env(), cfg.allow_tf32)
    run_start, latents, demo_seconds = time.time(), cfg.latents, {}
    if not cfg.latents and not cfg.dataset:  # the offline demo: Fashion-MNIST -> our VAE -> latent cache
        latents, demo_seconds = prepare_demo_latents(accelerator, cfg.mixed_precision, cfg.seed, cfg.cpu_threads)
    set_seed(cfg.seed)

    # 2. Data
    data = load_training_data(latents, cfg.dataset, cfg.resolution, cfg.grayscale, cfg.random_flip, cfg.seed,
                              cfg.image_column, cfg.label_column)
    # the VAE that made the latents (checked by fingerprint) decodes validation grids and ships with the pipeline
    vae = load_cache_vae(data.cache_meta, cfg.vae).to(accelerator.device) if data.cache_meta else None
    loader = DataLoader(data.dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                        collate_fn=data.collate_fn, num_workers=cfg.num_workers,
                        generator=torch.Generator().manual_seed(cfg.seed))
    num_classes = data.num_classes(overrides.pop("num_classes", 0))
    id2label = dict(enumerate(data.class_names)) if data.class_names and num_classes else {}

    # 3. Model (shape and classes from the data)
    transformer = create_model_for_data(cfg.model, data.shape, num_classes,
                                        **{"class_dropout_prob": cfg.class_dropout_prob, **overrides})
    if cfg.init_from:  # fine-tuning (a resumed run then loads its checkpoint over these weights)
        init_from_pretrained(transformer, cfg.init_from, log=accelerator.print)
    provenance = source_provenance(cfg.init_from) if cfg.init_from else None  # for the card: license, base model
    if cfg.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()

    # 4. Optimiser, EMA; checkpoints hold `transformer/` and `transformer_ema/` save_pretrained folders
    optimizer = adamw(transformer.parameters(), cfg.learning_rate, cfg.weight_decay, (cfg.adam_beta1, cfg.adam_beta2))
    lr_scheduler = lr_schedule(accelerator, cfg.lr_scheduler, optimizer, cfg.lr_warmup_steps, cfg.max_steps,
                               cfg.lr_decay_steps)
    model_cls = type(transformer)
    set_fsdp_wrap_units(accelerator, transformer)  # FSDP: one unit per block
    model, optimizer, loader, lr_scheduler = accelerator.prepare(
        torch.compile(transformer) if cfg.compile else transformer, optimizer, loader, lr_scheduler)
    # the EMA of the prepared parameters: under FSDP each rank averages its own shards (see training/distributed.py)
    ema = make_ema(transformer, cfg.ema_decay, cfg.ema_warmup, cfg.ema_power, model_cls=model_cls)
    ema.to(accelerator.device)
    checkpoint_parts = register_checkpoint_hooks(accelerator, transformer, ema, name="transformer")
    if len(loader) == 0:
        raise ValueError(f"{len(data.dataset)} examples give no full batch of {cfg.batch_size} per process.")

    def training_losses(micro_step: int, batch) -> dict[str, torch.Tensor]:
        """The losses of one micro-batch; its randomness depends on (seed, micro-step, rank) only: exact resume."""
        set_seed(mix_seed(cfg.seed, micro_step, accelerator.process_index))
        x_start, labels = batch  # (N, C, H, W), (N,)
        with accelerator.autocast():
            return objective.training_losses(model, x_start, labels if num_classes else None)

    if cfg.lr_finder:
        return lr_range_test(lambda i, batch: training_losses(i, batch)["loss"], optimizer, loader, accelerator,
                             cfg.lr_finder_min, cfg.lr_finder_max, cfg.lr_finder_steps, output_dir=out)

    # 5. Resume; the config is saved and the trackers start once every check has passed
    step = resume_from_checkpoint(accelerator, cfg.resume_from_checkpoint, ckpt_dir, checkpoint_parts,
                                  batch_per_process=cfg.batch_size * cfg.gradient_accumulation_steps)
    record_run(accelerator, cfg, step)  # after checking that a changed lr schedule continues the run

    # 6. Train (the loss history continues from the resumed step)
    history = LossHistory(out / "logs" / "loss.csv", (*LOSS_KEYS, "lr"), resume_step=step,
                          is_main_process=accelerator.is_main_process)
    accum = cfg.gradient_accumulation_steps
    # accelerate also steps at the end of every epoch, so an epoch is ceil(batches / accum) steps (its last one
    # shorter when accum does not divide the loader): the position in the epoch counts steps, not step * accum
    steps_per_epoch = -(-len(loader) // accum)
    accelerator.print(f"training {cfg.model} ({sum(p.numel() for p in transformer.parameters()):,} parameters, "
                      f"{cfg.objective}) on {len(data.dataset):,} examples of shape {data.shape}, "
                      f"{accelerator.num_processes} process(es), batch {cfg.batch_size} x {accum} accumulation")
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not accelerator.is_local_main_process, desc="train")
    start_time, start_step, micro_losses, pending = time.time(), step, [], PendingLosses(LOSS_KEYS)
    seconds = {"checkpoints": 0.0, "validation": 0.0, "snapshots": 0.0}  # the loop's time besides training steps
    snapshots = out / SNAPSHOT_DIR
    if cfg.snapshot_steps and step == 0:
        with timed(seconds, "snapshots"):
            save_snapshot(transformer, snapshots, 0, accelerator.is_main_process)
    model.train()
    while step < cfg.max_steps:
        epoch, skip = divmod(step, steps_per_epoch)
        skip *= accum  # the batches of this epoch's steps done (a resumed run continues mid-epoch)
        loader.set_epoch(epoch)
        if hasattr(data.dataset, "set_epoch"):
            data.dataset.set_epoch(epoch)  # latent resampling noise = f(seed, epoch, index)
        for batch in accelerator.skip_first_batches(loader, skip) if skip else loader:
            with accelerator.accumulate(model):
                losses = training_losses(step * accum + len(micro_losses), batch)
                accelerator.backward(losses["loss"])
                if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            micro_losses.append(losses)
            if not accelerator.sync_gradients:
                continue

            # one optimiser step done; its losses stay on the device until the next logging step or checkpoint
            step = step + 1
            ema.step(transformer.parameters())
            if cfg.snapshot_steps and (step % cfg.snapshot_steps == 0 or step == cfg.max_steps):
                with timed(seconds, "snapshots"):
                    save_snapshot(transformer, snapshots, step, accelerator.is_main_process)
            pending.add(step, micro_losses, lr_scheduler.get_last_lr()[0])
            micro_losses = []
            bar.update(1)
            if step % cfg.log_every and step % cfg.checkpointing_steps and step % cfg.validation_steps \
                    and step < cfg.max_steps:
                continue
            for pending_step, logs in pending.collect(accelerator):  # the mean over ranks: all stop together
                check_finite_loss(logs["loss"], pending_step, ckpt_dir, checked_at=step)
                history.append(pending_step, logs)
                accelerator.log(logs, step=pending_step)
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                rate = (step - start_step) / max(time.time() - start_time, 1e-9)
                bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}")
                if accelerator.is_main_process:
                    tqdm.write(f"step {step}/{cfg.max_steps} loss {logs['loss']:.4f} (mse {logs['mse']:.4f}, "
                               f"vb {logs['vb']:.4f}) lr {logs['lr']:.2e} {rate:.2f} steps/s")
            checkpointing = step % cfg.checkpointing_steps == 0 or step == cfg.max_steps
            if checkpointing:
                with timed(seconds, "checkpoints"):
                    save_checkpoint(accelerator, ckpt_dir, step, cfg.checkpoints_total_limit,
                                    batch_per_process=cfg.batch_size * accum)
            if checkpointing or step % cfg.log_every == 0:
                history.flush()  # on logging steps, and after each checkpoint: the CSV never lags behind it
            if step % cfg.validation_steps == 0 or step == cfg.max_steps:
                with timed(seconds, "validation"):
                    log_validation(cfg, accelerator, transformer, ema, objective.pipeline_scheduler(), vae, id2label,
                                   step)
                    accelerator.wait_for_everyone()
            if step >= cfg.max_steps:
                break
    bar.close()
    train_seconds = time.time() - start_time

    # 7. Export: the pipeline with the EMA weights, progress GIF, loss curve, model card, optional push
    accelerator.wait_for_everyone()
    digests = accelerator.gather(torch.tensor([weight_digest(transformer)], device=accelerator.device)).tolist()
    result = {"steps": step, "steps_per_s": (step - start_step) / max(train_seconds, 1e-9),
              "num_processes": accelerator.num_processes, "params": sum(p.numel() for p in transformer.parameters()),
              "demo_data_seconds": demo_seconds, "train_seconds": train_seconds,
              "checkpoint_seconds": seconds["checkpoints"], "validation_seconds": seconds["validation"],
              "snapshot_seconds": seconds["snapshots"],
              "rank_weight_checksums": [f"{d:014x}" for d in digests]}
    with ema_weights(transformer, ema, accelerator.is_main_process, accelerator.device) as ema_transformer:
        if accelerator.is_main_process:
            export_pipeline(out, ema_transformer, None, objective.pipeline_scheduler(), vae, id2label,
                            {**dataclasses.asdict(cfg), "latents": latents}, provenance)  # the demo's cache too
    if accelerator.is_main_process:
        history.flush()
        history.plot(out / "loss_curve.png")
        result.update(final_loss=history.rows[-1][1] if history.rows else None, output_dir=str(out),
                      model=cfg.model, total_seconds=time.time() - run_start)
        atomic_write_json(out / "train_results.json", result)
        accelerator.print(f"saved the pipeline to {out} ({result['steps_per_s']:.2f} steps/s)")
        if cfg.push_to_hub:
            push_to_hub(out, cfg.hub_repo_id, private=cfg.hub_private, license=cfg.hub_license,
                        pipeline_class=DiffiTPipeline)
    end_run(accelerator)  # a final barrier, then trackers and process group
    return result


if __name__ == "__main__":
    main(parse_config(TrainConfig))
