"""A resumable cache of VAE latent distributions (mean, std) and labels, as safetensors shards plus a JSON index.

Layout of a cache folder:

    index.json                  VAE id and config hash, scaling factor, resolution, shapes, counts, class names
    shard-00000.safetensors     rows [0, shard_size): "mean", "std" (N, C, h, w) float32, "label" (N,) int64

Shards are assigned round-robin to processes, written to a temporary name and renamed when complete, so a partial
shard is never taken for a complete one; a rerun skips the shards that load and match the index. A cache made with
another VAE or resolution is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from ..utils import atomic_path, atomic_write_json, mix_seed
from .images import load_image_dataset, preprocess_image

logger = logging.getLogger(__name__)

INDEX = "index.json"


def vae_fingerprint(vae) -> str:
    """sha256 of the VAE's architecture config and weights' shapes and a few values: changes when another VAE is
    used, not with the path it was loaded from (`_name_or_path` and other `_` keys are left out)."""
    config = {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(vae.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().float().flatten()[:16].cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def shard_path(cache_dir: Path, index: int) -> Path:
    return cache_dir / f"shard-{index:05d}.safetensors"


def check_finite_rows(shard: dict[str, torch.Tensor], path: Path) -> None:
    """`ValueError` naming the shard and its first rows whose latent mean or std holds NaN/inf."""
    bad = ~(shard["mean"].flatten(1).isfinite().all(1) & shard["std"].flatten(1).isfinite().all(1))  # (N,)
    if bad.any():
        rows = bad.nonzero().flatten().tolist()
        start = int(shard["start"]) if "start" in shard else 0
        raise ValueError(
            f"{path.name} holds non-finite latents in rows {rows[:5]}{' ...' if len(rows) > 5 else ''} (samples "
            f"{[start + r for r in rows[:5]]}): check those images and the VAE (e.g. encode in float32), then delete "
            "the shard and rerun encode_latents.py to rebuild it."
        )


def _shard_meta(meta: dict) -> dict[str, str]:
    return {key: str(meta[key]) for key in ("vae_fingerprint", "resolution", "grayscale")}


def _shard_ok(path: Path, meta: dict, start: int, count: int) -> bool:
    """True if the shard loads and holds exactly rows [start, start + count); ValueError if it was made with another
    VAE or resolution (a foreign cache is refused, never mixed or overwritten)."""
    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            stored = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError):
        return False  # partial or corrupt: re-encode
    if stored != _shard_meta(meta):
        raise ValueError(f"{path} was made with {stored}, this run has {_shard_meta(meta)}: refusing to mix caches.")
    shape = (count, *meta["latent_shape"])
    return (
        set(tensors) == {"mean", "std", "label", "start"}
        and int(tensors["start"]) == start
        and tuple(tensors["mean"].shape) == shape
        and tuple(tensors["std"].shape) == shape
        and tuple(tensors["label"].shape) == (count,)
    )


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
    dataset_name: str | None = None,
    split: str | None = None,
) -> dict:
    """Encodes `dataset` (`image` and optional `label` columns) into `cache_dir`; returns the index dict.
    `dataset_name` and `split` (what was encoded: a name, folder or Hub id) are recorded in the index for model cards.

    Each process encodes the shards `i` with `i % num_processes == process_index`; the index is written by process 0
    only once every shard is present (call again after all processes finish, or use `training/encode_latents.py`).
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
        "dataset": dataset_name,
        "split": split,
    }
    index_path = cache_dir / INDEX
    if index_path.exists():
        old = json.loads(index_path.read_text())
        for key in ("vae_fingerprint", "resolution", "grayscale", "num_samples", "shard_size", "latent_shape"):
            if old.get(key) != meta[key]:
                raise ValueError(
                    f"{cache_dir} holds a cache made with {key}={old.get(key)!r}, this run has {meta[key]!r} "
                    f"(VAE {old.get('vae')!r} vs {vae_id!r}). Use another folder or delete it."
                )

    mine = [i for i in range(meta["num_shards"]) if i % num_processes == process_index]
    todo = [i for i in mine if not _shard_ok(shard_path(cache_dir, i), meta, i * shard_size,
                                             min(shard_size, len(dataset) - i * shard_size))]
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="encoding shards", disable=not progress)
    for i in todo:
        start, stop = i * shard_size, min((i + 1) * shard_size, len(dataset))
        means, stds, labels = [], [], []
        for b in range(start, stop, batch_size):
            rows = dataset[b:min(b + batch_size, stop)]
            pixels = torch.stack([preprocess_image(img, resolution, grayscale) for img in rows["image"]])
            with torch.no_grad():
                dist = vae.encode(pixels.to(device=device, dtype=vae.dtype)).latent_dist
            means.append(dist.mean.float().cpu().contiguous())
            stds.append(dist.std.float().cpu().contiguous())
            labels.extend(rows["label"] if "label" in rows else [-1] * len(pixels))
        tensors = {"mean": torch.cat(means), "std": torch.cat(stds), "label": torch.tensor(labels, dtype=torch.long),
                   "start": torch.tensor(start)}
        check_finite_rows(tensors, shard_path(cache_dir, i))  # before it is written
        with atomic_path(shard_path(cache_dir, i)) as tmp:  # a shard is either complete or absent
            save_file(tensors, str(tmp), metadata=_shard_meta(meta))
        bar.update(1)
    bar.close()

    complete = all(_shard_ok(shard_path(cache_dir, i), meta, i * shard_size,
                             min(shard_size, len(dataset) - i * shard_size)) for i in range(meta["num_shards"]))
    if process_index == 0 and complete:
        atomic_write_json(index_path, meta)
    return meta


def encode_dataset(accelerator, vae_path: str, dataset: str, out: str | Path, resolution: int,
                   grayscale: bool = False, split: str = "train", image_column: str = "image",
                   label_column: str = "label", vae_subfolder: str | None = None, shard_size: int = 1024,
                   batch_size: int = 64) -> dict:
    """`encode_to_cache` across accelerate processes: every process encodes its shards, then the main process
    verifies them all and writes the index. Returns the cache's index."""
    from diffusers import AutoencoderKL

    if vae_subfolder is None and (Path(vae_path) / "model_index.json").is_file():
        raise ValueError(f"{vae_path} is a pipeline folder, not a VAE: pass --vae-subfolder vae (or --vae "
                         f"{Path(vae_path) / 'vae'}).")
    vae = AutoencoderKL.from_pretrained(vae_path, subfolder=vae_subfolder).to(accelerator.device).eval()
    data = load_image_dataset(dataset, split, image_column, label_column)
    # a local VAE is recorded by its absolute path: training from another folder finds the same one
    vae_id = str(Path(vae_path).resolve()) if Path(vae_path).is_dir() else vae_path
    kwargs = dict(vae_id=vae_id, vae_subfolder=vae_subfolder, shard_size=shard_size, batch_size=batch_size,
                  dataset_name=dataset, split=split)
    with torch.no_grad():
        meta = encode_to_cache(vae, data, out, resolution, grayscale, process_index=accelerator.process_index,
                               num_processes=accelerator.num_processes, progress=accelerator.is_local_main_process,
                               **kwargs)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:  # every shard is there now: verify them all and write the index
            meta = encode_to_cache(vae, data, out, resolution, grayscale, progress=False, **kwargs)
            logger.info(f"cache {out}: {meta['num_samples']} latents of shape {meta['latent_shape']} "
                        f"in {meta['num_shards']} shards, scaling factor {meta['scaling_factor']}")
    accelerator.wait_for_everyone()
    return meta


def load_cache_vae(meta: dict, vae: str | None = None):
    """The `AutoencoderKL` that decodes a cache's latents (`meta` is its index): the cache's own, or `vae`, which
    must be the same weights (same fingerprint) with the cache's latent channels; `ValueError` otherwise."""
    from diffusers import AutoencoderKL

    reference, subfolder = (vae, None) if vae else (meta.get("vae"), meta.get("vae_subfolder"))
    if not reference:
        raise ValueError("The latent cache records no VAE; pass the one that encoded it with --vae.")
    model = AutoencoderKL.from_pretrained(reference, subfolder=subfolder).eval()
    if model.config.latent_channels != meta["latent_shape"][0]:
        raise ValueError(f"The VAE {reference} has {model.config.latent_channels} latent channels; the cache's "
                         f"latents have {meta['latent_shape'][0]}.")
    if vae_fingerprint(model) != meta["vae_fingerprint"]:
        raise ValueError(
            f"The VAE {reference} did not encode this cache (fingerprint {vae_fingerprint(model)}, the cache's "
            f"{meta['vae_fingerprint']}): it would decode its latents wrongly. Use the cache's own VAE "
            f"({meta.get('vae')}), or encode the dataset again with this one (training/encode_latents.py)."
        )
    return model


class LatentDataset(Dataset):
    """Rows of a latent cache as `(latents * scaling_factor, label)`.

    With `resample=True` each access draws `mean + std * noise` from the stored distribution (a fresh sample per
    epoch, as training on images would); `random_flip` flips the latent grid horizontally with probability 1/2.
    With a `seed`, that randomness is a function of (seed, epoch, index) alone (call `set_epoch`), never of the
    global RNG: batches are then the same whatever the order of fetching (prefetching, workers, a resumed run).
    """

    def __init__(self, cache_dir: str | Path, resample: bool = True, random_flip: bool = False,
                 seed: int | None = None):
        cache_dir = Path(cache_dir)
        if not (cache_dir / INDEX).exists():
            raise FileNotFoundError(f"{cache_dir} has no {INDEX}: the cache is missing or incomplete.")
        rebuild = "rebuild it with training/encode_latents.py (complete shards are kept)"
        try:
            self.meta = json.loads((cache_dir / INDEX).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{cache_dir / INDEX} is corrupt ({err}): delete it and {rebuild}.") from err
        shards = []
        for i in range(self.meta["num_shards"]):
            path = shard_path(cache_dir, i)
            try:
                shards.append(load_file(str(path)))
            except (OSError, SafetensorError) as err:
                raise ValueError(f"{path} is missing or truncated ({err}): delete it and {rebuild}.") from err
            shape = tuple(shards[-1]["mean"].shape[1:])
            if shape != tuple(self.meta["latent_shape"]) or shards[-1]["mean"].dtype != torch.float32:
                raise ValueError(f"{path.name} holds {shards[-1]['mean'].dtype} latents of shape {shape}; "
                                 f"{INDEX} says float32 {self.meta['latent_shape']}: the index was edited or belongs "
                                 f"to another cache; {rebuild}.")
            check_finite_rows(shards[-1], path)
        self.mean = torch.cat([s["mean"] for s in shards])  # (N, C, h, w)
        self.std = torch.cat([s["std"] for s in shards])
        self.labels = torch.cat([s["label"] for s in shards])  # (N,)
        if len(self.mean) != self.meta["num_samples"]:
            raise ValueError(
                f"{cache_dir}: shards hold {len(self.mean)} rows, the index says {self.meta['num_samples']}."
            )
        self.scaling_factor = self.meta["scaling_factor"]
        self.resample, self.random_flip = resample, random_flip
        self.seed, self.epoch = seed, 0

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return tuple(self.meta["latent_shape"])

    @property
    def class_names(self) -> list[str] | None:
        return self.meta.get("class_names")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.mean)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        generator = None
        if self.seed is not None:
            generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, i))
        latent = self.mean[i]
        if self.resample:
            latent = latent + self.std[i] * torch.randn(latent.shape, generator=generator)
        if self.random_flip and torch.rand((), generator=generator) < 0.5:
            latent = latent.flip(-1)
        return latent * self.scaling_factor, int(self.labels[i])
