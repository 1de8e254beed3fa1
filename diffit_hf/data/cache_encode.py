"""Encoding an image dataset into a latent cache (`cache_format.py`), resumably and across processes.

Shards are assigned round-robin to processes; a rerun skips the shards that load and match the index. A cache made
with another VAE, resolution or dataset is refused. The index, which makes the cache loadable, is written once every
shard is complete: by `finalize_cache` after all processes have finished (`encode_dataset` calls it).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..utils import atomic_write_json
from .cache_format import (
    INDEX,
    dataset_fingerprint,
    incomplete_shards,
    read_cache_index,
    shard_rows,
    storage_dtype,
    vae_fingerprint,
    write_shard,
)
from .images import load_image_dataset, preprocess_image

logger = logging.getLogger(__name__)

# what a rerun into an existing cache must agree on with the index
_INDEX_KEYS = ("vae_fingerprint", "resolution", "grayscale", "num_samples", "shard_size", "latent_shape", "dtype",
               "random_flip", "dataset_fingerprint", "split", "image_column", "label_column", "class_names")


class _PreprocessedImages(Dataset):
    """Rows of an image dataset as `{"pixels", "label"[, "flipped"]}`: images decoded and preprocessed here, i.e. in
    the encoding DataLoader's workers, not in the process that runs the VAE."""

    def __init__(self, dataset, resolution: int, grayscale: bool, random_flip: bool):
        self.dataset, self.resolution, self.grayscale, self.random_flip = dataset, resolution, grayscale, random_flip

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        row = self.dataset[int(i)]
        label = row.get("label")
        out = {"pixels": preprocess_image(row["image"], self.resolution, self.grayscale),  # (C, res, res)
               "label": -1 if label is None else int(label)}
        if self.random_flip:  # DiT flips the image, then encodes it: a mirrored latent grid is not the same
            out["flipped"] = preprocess_image(row["image"], self.resolution, self.grayscale, flip=True)
        return out


def encode_to_cache(
    vae,
    dataset,
    cache_dir: str | Path,
    resolution: int,
    grayscale: bool = False,
    vae_id: str = "",
    vae_subfolder: str | None = None,
    shard_size: int = 1024,
    batch_size: int = 64,
    process_index: int = 0,
    num_processes: int = 1,
    progress: bool = True,
    dtype: str = "fp32",
    random_flip: bool = False,
    num_workers: int = 0,
    dataset_name: str | None = None,
    split: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
) -> dict:
    """Encodes `dataset` (`image` and optional `label` columns) into `cache_dir`; returns the index dict.
    `dataset_name`, `split` and the columns (what was encoded: a name, folder or Hub id) are recorded in the index
    (for model cards) and in every shard, with the dataset's fingerprint: a cache of another dataset is refused.

    Each process encodes the shards `i` with `i % num_processes == process_index`. Process 0 writes the index if
    every shard is complete when it is done (always, with one process); with several, call `finalize_cache` once all
    have finished (`encode_dataset` does). `dtype` (`fp32`, `bf16`, `fp16`) is the storage precision of mean and
    std; `random_flip` also encodes every image mirrored left-right (`LatentDataset(random_flip=True)` then picks one
    per sample and epoch); images are decoded and preprocessed in `num_workers` DataLoader workers (0: in this
    process).
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    device = next(vae.parameters()).device
    channels = 1 if grayscale else 3
    if vae.config.in_channels != channels:
        raise ValueError(f"The VAE takes {vae.config.in_channels} channels; grayscale={grayscale} gives {channels}.")
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    if resolution % factor:
        raise ValueError(f"resolution {resolution} is not divisible by the VAE's downsampling factor {factor}.")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}.")
    names = getattr(dataset.features.get("label"), "names", None)
    meta = {
        "vae": vae_id,
        "vae_subfolder": vae_subfolder,
        "vae_fingerprint": vae_fingerprint(vae),
        "scaling_factor": float(vae.config.scaling_factor),
        "resolution": resolution,
        "grayscale": grayscale,
        "latent_shape": [vae.config.latent_channels, resolution // factor, resolution // factor],
        "num_samples": len(dataset),
        "shard_size": shard_size,
        "num_shards": (len(dataset) + shard_size - 1) // shard_size,
        "class_names": names,
        "dtype": storage_dtype(dtype),
        "random_flip": random_flip,
        "dataset": dataset_name,
        "split": split,
        "image_column": image_column,
        "label_column": label_column,
        "dataset_fingerprint": dataset_fingerprint(dataset),
    }
    if (cache_dir / INDEX).exists():
        old = read_cache_index(cache_dir)
        for key in _INDEX_KEYS:
            if old.get(key) != meta[key]:
                raise ValueError(
                    f"{cache_dir} holds a cache made with {key}={old.get(key)!r}, this run has {meta[key]!r} "
                    f"(VAE {old.get('vae')!r} vs {vae_id!r}, dataset {old.get('dataset')!r} vs {dataset_name!r}). "
                    "Encode into another --out, or delete the folder to encode it anew."
                )

    mine = [i for i in range(meta["num_shards"]) if i % num_processes == process_index]
    todo = incomplete_shards(cache_dir, meta, mine)
    bar = tqdm(total=len(todo), desc="encoding shards", disable=not progress)
    # batches never cross a shard: the loader yields them in order, and a shard is written once its last batch is in
    batches = [list(range(b, min(b + batch_size, shard_rows(meta, i)[1]))) for i in todo
               for b in range(*shard_rows(meta, i), batch_size)]
    loader = DataLoader(_PreprocessedImages(dataset, resolution, grayscale, random_flip), batch_sampler=batches,
                        num_workers=num_workers) if batches else []
    parts: dict[str, list[torch.Tensor]] = {}
    for indices, batch in zip(batches, loader):
        with torch.no_grad():
            dists = {"": vae.encode(batch["pixels"].to(device=device, dtype=vae.dtype)).latent_dist}
            if random_flip:
                dists["_flip"] = vae.encode(batch["flipped"].to(device=device, dtype=vae.dtype)).latent_dist
        for suffix, dist in dists.items():
            parts.setdefault(f"mean{suffix}", []).append(dist.mean.float().cpu())  # (B, C, h, w)
            parts.setdefault(f"std{suffix}", []).append(dist.std.float().cpu())
        parts.setdefault("label", []).append(batch["label"].long())
        i = indices[0] // shard_size
        if indices[-1] + 1 < shard_rows(meta, i)[1]:
            continue
        write_shard(cache_dir, i, {name: torch.cat(values) for name, values in parts.items()}, meta)
        parts = {}
        bar.update(1)
    bar.close()

    if process_index == 0 and not incomplete_shards(cache_dir, meta):  # every shard is in: the cache is complete
        atomic_write_json(cache_dir / INDEX, meta)
    return meta


def finalize_cache(cache_dir: str | Path, meta: dict) -> dict:
    """Checks every shard of the cache described by `meta` (the index `encode_to_cache` returned) and writes its
    index, which makes it loadable; returns `meta`. `ValueError` naming the shards that are missing or incomplete."""
    missing = incomplete_shards(Path(cache_dir), meta)
    if missing:
        raise ValueError(f"{cache_dir}: shards {missing[:5]}{' ...' if len(missing) > 5 else ''} of "
                         f"{meta['num_shards']} are missing or incomplete after every process finished (on several "
                         "machines, --out must be a folder they all see); rerun encode_latents.py to encode them "
                         "(complete shards are kept).")
    atomic_write_json(Path(cache_dir) / INDEX, meta)
    return meta


def encode_dataset(accelerator, vae_path: str, dataset: str, out: str | Path, resolution: int,
                   grayscale: bool = False, split: str = "train", image_column: str = "image",
                   label_column: str | None = "label", vae_subfolder: str | None = None, shard_size: int = 1024,
                   batch_size: int = 64, dtype: str = "fp32", random_flip: bool = False,
                   num_workers: int = 0) -> dict:
    """`encode_to_cache` across accelerate processes: every process encodes its shards, then the main process
    checks them all and writes the index (`finalize_cache`). Returns the cache's index."""
    from diffusers import AutoencoderKL

    storage_dtype(dtype)  # a bad --dtype is named before the VAE loads
    if vae_subfolder is None and (Path(vae_path) / "model_index.json").is_file():
        raise ValueError(f"{vae_path} is a pipeline folder, not a VAE: pass --vae-subfolder vae (or --vae "
                         f"{Path(vae_path) / 'vae'}).")
    data = load_image_dataset(dataset, split, image_column, label_column)
    vae = AutoencoderKL.from_pretrained(vae_path, subfolder=vae_subfolder).to(accelerator.device).eval()
    # a local VAE is recorded by its absolute path: training from another folder finds the same one
    vae_id = str(Path(vae_path).resolve()) if Path(vae_path).is_dir() else vae_path
    meta = encode_to_cache(vae, data, out, resolution, grayscale, vae_id=vae_id, vae_subfolder=vae_subfolder,
                           shard_size=shard_size, batch_size=batch_size, process_index=accelerator.process_index,
                           num_processes=accelerator.num_processes, progress=accelerator.is_local_main_process,
                           dtype=dtype, random_flip=random_flip, num_workers=num_workers, dataset_name=dataset,
                           split=split, image_column=image_column, label_column=label_column)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:  # every shard is there now
        finalize_cache(out, meta)
        logger.info(f"cache {out}: {meta['num_samples']} latents of shape {meta['latent_shape']} ({meta['dtype']}"
                    f"{', and of the mirrored images' if random_flip else ''}) in {meta['num_shards']} shards, "
                    f"scaling factor {meta['scaling_factor']}")
    accelerator.wait_for_everyone()
    return meta
