"""Sample quality of a DiffiTPipeline: FID, KID, precision/recall and class consistency, next to the real-data floor.

    # offline: FID-FMNIST and the independent FID-FMNIST-spatial with the project's two classifiers
    # (python training/train_classifier.py; python training/train_classifier.py --features spatial)
    accelerate launch training/evaluate.py --pipeline outputs/dit-fmnist --num-samples 10000
    # the standard: Inception FID against a reference split
    accelerate launch training/evaluate.py --pipeline you/dit-repo --extractor inception --dataset imagenet-1k \
        --inception-weights inception-2015-12-05.pt --reference-split validation --resolution 256 --no-grayscale \
        --second-extractor none
    # as DiT and DiffiT report: against ADM's reference batch statistics, 50K samples, the paper's sampler
    accelerate launch training/evaluate.py --pipeline diffit-256 --extractor inception --classifier none \
        --inception-weights inception-2015-12-05.pt --reference-stats VIRTUAL_imagenet256_labeled.npz \
        --num-samples 50000 --preset diffit-paper --floor-split none --second-extractor none

Samples are balanced over classes (sample i has class i % num_classes) and sample i's noise comes from seed
(seed, i) alone, so the samples are the same for any number of processes. Samples are rounded to uint8 before any
feature extractor sees them, as the ADM evaluator reads saved samples. The floor is the same metric between
`--num-samples` real training images and the reference (split, or `--reference-stats`: FID only). With
`--extractor inception` the Inception Score comes too. Reference features are cached on disk, keyed by
extractor weights, dataset, split, resolution and count. A second, independent extractor (`--second-extractor`,
by default the FID-FMNIST-spatial classifier) is scored the same way, with its own floor and class consistency,
under `second_evaluator` in eval.json: no quality claim should rest on one evaluator. Writes eval.json and
eval_samples.png.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers.utils.logging import get_logger
from safetensors.torch import load_file, save_file

from diffit_hf import DiffiTPipeline
from diffit_hf.data import load_image_tensors
from diffit_hf.evaluation import (
    class_consistency,
    feature_stats,
    few_samples_warning,
    frechet_distance,
    in_batches,
    inception_score,
    kernel_inception_distance,
    load_extractor,
    load_reference_stats,
    precision_recall,
    quantize,
)
from diffit_hf.evaluation.extractors import DEFAULT_INCEPTION_WEIGHTS, INCEPTION_FILE
from diffit_hf.pipelines.grid import labelled_grid
from diffit_hf.pipelines.sampling import configure_sampling, output_image_shape, sample_indices
from diffit_hf.pipelines.schedules import GUIDANCE_SCHEDULES, SAMPLING_PRESETS, SCHEDULERS, check_guidance_interval
from diffit_hf.training.config import parse_config, refuse_preset_overrides
from diffit_hf.training.runtime import set_cpu_threads
from diffit_hf.utils import atomic_path, atomic_write_json

logger = get_logger("diffit_hf.evaluate")  # shown by parse_config (show_library_logs)

GRID_PER_CLASS = 8
SECOND_EXTRACTOR = "outputs/classifier-fmnist-spatial"


@dataclass
class EvalConfig:
    """Evaluate a DiffiTPipeline (see training/evaluate.py)."""

    pipeline: str = field(default="outputs/dit-fmnist", metadata={"help": "pipeline folder or Hub repo id"})
    num_samples: int = field(default=10_000, metadata={"help": "generated images, balanced over the classes"})
    batch_size: int = field(default=250, metadata={"help": "images per pipeline call (per process)"})
    num_inference_steps: int = field(default=50, metadata={"help": "sampling steps"})
    scheduler: str | None = field(default=None, metadata={"choices": sorted(SCHEDULERS),
                                                          "help": "default: the pipeline's own"})
    guidance_scale: float = field(default=1.5, metadata={"help": "classifier-free guidance scale"})
    guidance_schedule: str = field(default="constant", metadata={"choices": list(GUIDANCE_SCHEDULES),
                                                                 "help": "guidance scale over the sampling steps"})
    guidance_interval: tuple[float, ...] | None = field(default=None, metadata={
        "help": "SIGMA_LOW SIGMA_HIGH: guide only the steps at noise levels sigma = 1/sqrt(SNR) in (low, high] (inf "
                "allowed); the others skip the unconditional pass (Kynkaanniemi et al. 2024); default: every step"})
    preset: str | None = field(default=None, metadata={
        "choices": list(SAMPLING_PRESETS),
        "help": "sample as a paper does (replaces the scheduler, steps and guidance settings)"})
    extractor: str = field(default="outputs/classifier-fmnist", metadata={
        "help": "a FashionClassifier folder (FID-FMNIST) or 'inception' (Inception-v3 FID)"})
    inception_weights: str | None = field(default=None, metadata={
        "help": f"the FID Inception file {INCEPTION_FILE} (default: {DEFAULT_INCEPTION_WEIGHTS})"})
    reference_stats: str | None = field(default=None, metadata={
        "help": "an ADM reference batch .npz (mu, sigma), e.g. VIRTUAL_imagenet256_labeled.npz, instead of a split"})
    classifier: str | None = field(default="outputs/classifier-fmnist", metadata={
        "help": "FashionClassifier for class consistency (None: skip)"})
    second_extractor: str | None = field(default=SECOND_EXTRACTOR, metadata={
        "help": "a second, independent FashionClassifier folder scored beside --extractor (FID, KID, P/R, class "
                "consistency, floors; train it with `train_classifier.py --features spatial`); none: skip"})
    dataset: str = field(default="fashion-mnist", metadata={"help": "the real images: a dataset name, folder or id"})
    image_column: str = field(default="image", metadata={"help": "the dataset's image column"})
    label_column: str = field(default="label", metadata={"help": "the dataset's label column; 'none': unlabelled"})
    reference_split: str = field(default="test", metadata={"help": "the split the samples are compared with"})
    reference_limit: int | None = field(default=None, metadata={"help": "first N reference images (None: all)"})
    floor_split: str | None = field(default="train", metadata={
        "help": "real images compared with the reference: the floor (none: skip)"})
    resolution: int = field(default=32, metadata={"help": "real images are resized to it"})
    grayscale: bool = field(default=True, metadata={"help": "real images as 1 channel"})
    cache_dir: str = field(default="outputs/fid-stats", metadata={"help": "cache of reference features"})
    output: str | None = field(default=None, metadata={"help": "eval.json path (default: in the pipeline folder)"})
    seed: int = field(default=0, metadata={"help": "sample i's noise comes from (seed, i)"})
    cpu_threads: int | None = field(default=None, metadata={"help": "CPU threads per process (None: cores/procs)"})

    def __post_init__(self):
        refuse_preset_overrides(self, self.preset,
                                ("num_inference_steps", "scheduler", "guidance_scale", "guidance_schedule",
                                 "guidance_interval"))
        self.guidance_interval = check_guidance_interval(self.guidance_interval)
        if self.second_extractor and self.reference_stats:
            raise ValueError("--reference-stats holds statistics for --extractor only; the second evaluator compares "
                             "with a reference split: pass --second-extractor none (or drop --reference-stats).")



def reference_features(cfg: EvalConfig, extractor, split: str, limit: int | None) -> torch.Tensor:
    """Features of a real split, cached on disk (atomic write) under a key of everything they depend on."""
    key = json.dumps([extractor.name, extractor.fingerprint, cfg.dataset, split, cfg.resolution, cfg.grayscale,
                      limit] + ([cfg.image_column] if cfg.image_column != "image" else []))
    path = Path(cfg.cache_dir) / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.safetensors"
    if path.exists():
        return load_file(str(path))["features"]
    images, _ = load_image_tensors(cfg.dataset, split, cfg.resolution, cfg.grayscale, limit=limit,
                                   image_column=cfg.image_column, label_column=None)
    feats = in_batches(extractor, images)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({"features": feats.contiguous()}, str(tmp), metadata={"key": key})
    return feats


def compare(real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    mu_r, sigma_r = feature_stats(real)
    mu_f, sigma_f = feature_stats(fake)
    kid, kid_std = kernel_inception_distance(real, fake)
    precision, recall = precision_recall(real, fake)
    return {"fid": frechet_distance(mu_r, sigma_r, mu_f, sigma_f), "kid": kid, "kid_std": kid_std,
            "precision": precision, "recall": recall}


def score(cfg: EvalConfig, extractor, fake: torch.Tensor, logits: torch.Tensor | None, requested: torch.Tensor,
          ref_labelled: tuple[torch.Tensor, torch.Tensor] | None) -> dict:
    """One evaluator's metrics against the reference split, its real-data floor, and (when it classifies) class
    consistency of the samples and of the labelled reference images."""
    real = reference_features(cfg, extractor, cfg.reference_split, cfg.reference_limit)
    result = compare(real, fake)
    if cfg.floor_split:
        floor_real = reference_features(cfg, extractor, cfg.floor_split, cfg.num_samples)
        result.update({f"floor_{k}": v for k, v in compare(real, floor_real).items()})
    if logits is not None and ref_labelled is not None:
        result["class_consistency"] = class_consistency(logits, requested)
        result["floor_class_consistency"] = class_consistency(in_batches(extractor.logits, ref_labelled[0]),
                                                              ref_labelled[1])
    return result


def generate(cfg: EvalConfig, pipe: DiffiTPipeline, indices: list[int], progress: bool, sampling: dict
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images `(N, C, H, W)` in [-1, 1] on the uint8 grid (what an evaluator of saved PNGs reads, as ADM's) and their
    labels, for the given sample indices (`sample_indices`: the same images for any number of processes)."""
    images, labels = sample_indices(pipe, indices, seed=cfg.seed, batch_size=cfg.batch_size, progress=progress,
                                    **sampling)
    return quantize(images * 2 - 1), labels


def main(cfg: EvalConfig) -> dict:
    if cfg.second_extractor and not (Path(cfg.second_extractor) / "config.json").exists():
        raise FileNotFoundError(
            f"No second evaluator at {cfg.second_extractor}: train it with `python training/train_classifier.py "
            f"--features spatial --output-dir {cfg.second_extractor}`, or pass --second-extractor none to report "
            "one evaluator only.")
    accelerator = Accelerator()
    set_cpu_threads(accelerator, cfg.cpu_threads)
    start_time = time.time()
    pipe = DiffiTPipeline.from_pretrained(cfg.pipeline).to(accelerator.device)
    pipe.set_progress_bar_config(disable=True)
    sampling = configure_sampling(pipe, cfg.preset, cfg.scheduler, num_inference_steps=cfg.num_inference_steps,
                                  guidance_scale=cfg.guidance_scale, guidance_schedule=cfg.guidance_schedule,
                                  guidance_interval=cfg.guidance_interval)
    extractor = load_extractor(cfg.extractor, accelerator.device, cfg.inception_weights)
    classifier = load_extractor(cfg.classifier, accelerator.device) if cfg.classifier else None
    second = load_extractor(cfg.second_extractor, accelerator.device) if cfg.second_extractor else None
    reference_stats = load_reference_stats(cfg.reference_stats) if cfg.reference_stats else None
    dim = extractor(torch.zeros(1, 3, 32, 32)).shape[1]
    if reference_stats is not None:  # before sampling: statistics of another extractor are useless
        if len(reference_stats[0]) != dim:
            raise ValueError(f"{cfg.reference_stats} holds {len(reference_stats[0])}-d statistics, the extractor "
                             f"{extractor.name} gives {dim}-d features: use the extractor they were made with.")
    # samples and real images alike: the extractors resize both, so a mismatch would be scored without a word
    shape, real_shape = output_image_shape(pipe), (1 if cfg.grayscale else 3, cfg.resolution, cfg.resolution)
    if shape != real_shape and (reference_stats is None or cfg.floor_split):
        raise ValueError(
            f"{cfg.pipeline} samples {'x'.join(map(str, shape))} images (channels x height x width); the real "
            f"images are read as {'x'.join(map(str, real_shape))}: the extractor would compare resized, unlike "
            f"images. Pass --resolution {shape[1]} and {'--grayscale' if shape[0] == 1 else '--no-grayscale'} to "
            "read the real images as the pipeline samples.")
    warnings = [w for w in (few_samples_warning(cfg.num_samples, dim),
                            few_samples_warning(cfg.reference_limit or dim + 1, dim, "reference images")) if w]
    for warning in warnings:
        logger.warning(warning)

    # 1. Samples: each process its share of the indices; gathered on every process
    mine = list(range(accelerator.process_index, cfg.num_samples, accelerator.num_processes))
    images, labels = generate(cfg, pipe, mine, accelerator.is_local_main_process, sampling)
    in_grid = [k for k, i in enumerate(mine) if i < GRID_PER_CLASS * max(pipe.num_classes, 1)]
    local = {"features": in_batches(extractor, images), "labels": labels, "index": torch.tensor(mine),
             "grid": images[in_grid], "grid_index": torch.tensor([mine[k] for k in in_grid], dtype=torch.long)}
    if classifier is not None:
        local["logits"] = in_batches(classifier.logits, images)
    if second is not None:
        local["second_features"] = in_batches(second, images)
        local["second_logits"] = in_batches(second.logits, images)
    if hasattr(extractor, "class_probabilities"):  # Inception: the Inception Score
        local["probs"] = in_batches(extractor.class_probabilities, images)
    parts = accelerator.gather_for_metrics([local], use_gather_object=True)
    order = torch.cat([p["index"] for p in parts]).argsort()
    fake = torch.cat([p["features"] for p in parts])[order]
    requested = torch.cat([p["labels"] for p in parts])[order]
    sample_seconds = time.time() - start_time

    result: dict = {}
    if accelerator.is_main_process:
        # 2. Metrics against the reference (a split's features, or a reference batch's statistics: FID only), and
        #    the real-data floor with the same extractor and count
        if reference_stats is not None:
            result = {"fid": frechet_distance(*reference_stats, *feature_stats(fake))}
            if cfg.floor_split:
                floor_real = reference_features(cfg, extractor, cfg.floor_split, cfg.num_samples)
                result["floor_fid"] = frechet_distance(*reference_stats, *feature_stats(floor_real))
        else:  # class consistency of the first extractor comes from --classifier below
            result = score(cfg, extractor, fake, None, requested, None)
        if "probs" in parts[0]:
            probs = torch.cat([p["probs"] for p in parts])[order]
            result["inception_score"], result["inception_score_std"] = inception_score(probs)
        ref_labelled = None
        if pipe.num_classes and (classifier is not None or second is not None):
            ref_labelled = load_image_tensors(cfg.dataset, cfg.reference_split, cfg.resolution, cfg.grayscale,
                                              limit=cfg.reference_limit, image_column=cfg.image_column,
                                              label_column=cfg.label_column)
        if classifier is not None and pipe.num_classes:
            logits = torch.cat([p["logits"] for p in parts])[order]
            result["class_consistency"] = class_consistency(logits, requested)
            ref_logits = in_batches(classifier.logits, ref_labelled[0])
            result["floor_class_consistency"] = class_consistency(ref_logits, ref_labelled[1])
        if second is not None:
            second_logits = torch.cat([p["second_logits"] for p in parts])[order] if pipe.num_classes else None
            second_fake = torch.cat([p["second_features"] for p in parts])[order]
            result["second_evaluator"] = {"extractor": second.name, "extractor_fingerprint": second.fingerprint,
                                          **score(cfg, second, second_fake, second_logits, requested, ref_labelled)}
        result.update(extractor=extractor.name, extractor_fingerprint=extractor.fingerprint,
                      num_samples=cfg.num_samples,
                      reference=cfg.reference_stats or f"{cfg.dataset}:{cfg.reference_split}",
                      floor=f"{cfg.dataset}:{cfg.floor_split}[:{cfg.num_samples}] vs reference" if cfg.floor_split
                      else None, sampling={"scheduler": pipe.scheduler.__class__.__name__, **sampling},
                      sampling_seconds=sample_seconds, total_seconds=time.time() - start_time,
                      num_processes=accelerator.num_processes, device=str(accelerator.device),
                      config=dataclasses.asdict(cfg), **({"warnings": warnings} if warnings else {}))
        out = Path(cfg.output) if cfg.output else (Path(cfg.pipeline) / "eval.json" if Path(cfg.pipeline).is_dir()
                                                   else Path("eval.json"))
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, result)
        # a grid of the first samples (indices < per * classes hold `per` samples of every class)
        num_rows = max(pipe.num_classes, 1)
        per = min(GRID_PER_CLASS, cfg.num_samples // num_rows)
        grid = torch.cat([p["grid"] for p in parts])[torch.cat([p["grid_index"] for p in parts]).argsort()]
        grid = grid[:per * num_rows]
        by_class = grid.view(per, num_rows, *grid.shape[1:]).transpose(0, 1).flatten(0, 1)  # class-major
        pil = pipe.numpy_to_pil(((by_class + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1).numpy())
        names = {int(k): v for k, v in (pipe.config.id2label or {}).items()}
        captions = [names.get(c, str(c)) for c in range(pipe.num_classes)] or ["unconditional"]
        if per:
            labelled_grid(pil, captions, per, rows=True).save(out.with_name(f"{out.stem}_samples.png"))
        summary = ", ".join(f"{k} {result[k]:.4g}" for k in ("fid", "floor_fid", "kid", "precision", "recall",
                                                             "inception_score", "class_consistency") if k in result)
        logger.info(f"{extractor.name}: {summary}; wrote {out}")
        if second is not None:
            ev = result["second_evaluator"]
            logger.info(f"{second.name}: " + ", ".join(f"{k} {ev[k]:.4g}" for k in (
                "fid", "floor_fid", "kid", "precision", "recall", "class_consistency", "floor_class_consistency")
                if k in ev))
    accelerator.wait_for_everyone()
    return result


if __name__ == "__main__":
    main(parse_config(EvalConfig))
