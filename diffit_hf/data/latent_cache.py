"""A resumable cache of VAE latent distributions (mean, std) and labels, as safetensors shards plus a JSON index.

Layout of a cache folder:

    index.json                  VAE id and config hash, scaling factor, resolution, shapes, counts, class names,
                                storage dtype, whether flipped images were encoded too, the dataset's source, split,
                                columns and fingerprint (row count, labels, a few images)
    shard-00000.safetensors     rows [0, shard_size): "mean", "std" (N, C, h, w) in the cache's dtype (float32 by
                                default, or bfloat16 / float16), "label" (N,) int64, "start" (); with
                                `random_flip`, also "mean_flip", "std_flip": the encodings of the mirrored images

Shards are assigned round-robin to processes, written to a temporary name and renamed when complete, so a partial
shard is never taken for a complete one; a rerun skips the shards that load and match the index. A cache made with
another VAE, resolution or dataset is refused (every shard records them too, so an interrupted encode is never
finished with another dataset).

Reading is lazy (`LatentDataset`): only the shards' headers and labels are read when a cache is opened; each row's
mean and std are read from disk when the row is fetched, so a process's memory does not grow with the cache (an
ImageNet-256 cache is ~10 GB in float32).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import struct
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset

from ..utils import atomic_path, atomic_write_json, mix_seed
from .images import load_image_dataset, preprocess_image

logger = logging.getLogger(__name__)

INDEX = "index.json"
# --dtype spellings -> the storage dtype's name in the index -> torch dtype and safetensors' header name
STORAGE_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
_TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_ST_NAMES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}
_ST_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "I64": torch.int64}
_LEGACY = {"dtype": "float32", "random_flip": False}  # caches written before these options
# what a shard and the run that reads or completes it must agree on (the shards also record "dataset", the source)
_SHARD_KEYS = ("vae_fingerprint", "resolution", "grayscale", "dtype", "random_flip", "dataset_fingerprint", "split",
               "image_column", "label_column")


def storage_dtype(name: str) -> str:
    """The index's name of a storage dtype (`float32`, `bfloat16`, `float16`) from `--dtype` (`fp32`, `bf16`, `fp16`)
    or the index's own spelling; `ValueError` listing the choices otherwise."""
    if name in _TORCH_DTYPES:
        return name
    if name not in STORAGE_DTYPES:
        raise ValueError(f"Unknown latent storage dtype {name!r}; choose one of {', '.join(STORAGE_DTYPES)}.")
    return STORAGE_DTYPES[name]


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


def dataset_fingerprint(dataset, num_images: int = 16) -> str:
    """sha256 of a dataset's row count, every label and the pixels of `num_images` evenly spaced images: changes
    with another dataset, split or column, and reads the label column and a few images, not the whole dataset."""
    n = len(dataset)
    h = hashlib.sha256(str(n).encode())
    if "label" in dataset.column_names:
        h.update(json.dumps([int(y) for y in dataset["label"]]).encode())
    for i in sorted({k * (n - 1) // max(num_images - 1, 1) for k in range(num_images)}) if n else []:
        pixels = np.asarray(dataset[i]["image"])
        h.update(f"{pixels.shape}{pixels.dtype}".encode())
        h.update(pixels.tobytes())
    return h.hexdigest()[:16]


def shard_path(cache_dir: Path, index: int) -> Path:
    return cache_dir / f"shard-{index:05d}.safetensors"


def _non_finite_error(path: Path, rows: list[int], start: int) -> ValueError:
    return ValueError(
        f"{path.name} holds non-finite latents in rows {rows[:5]}{' ...' if len(rows) > 5 else ''} (samples "
        f"{[start + r for r in rows[:5]]}): check those images and the VAE (e.g. encode in float32), then delete "
        "the shard and rerun encode_latents.py to rebuild it."
    )


def check_finite_rows(shard: dict[str, torch.Tensor], path: Path) -> None:
    """`ValueError` naming the shard and its first rows whose latent mean or std (either orientation) holds NaN/inf."""
    names = [name for name in ("mean", "std", "mean_flip", "std_flip") if name in shard]
    bad = ~torch.stack([shard[name].flatten(1).isfinite().all(1) for name in names]).all(0)  # (N,)
    if bad.any():
        raise _non_finite_error(path, bad.nonzero().flatten().tolist(), int(shard["start"]) if "start" in shard else 0)


def read_header(path: str | Path) -> tuple[dict, int]:
    """A safetensors file's header and the byte offset where its data begins, without reading the data.

    Written by hand: safetensors' API reads tensors through a memory map, whose touched pages count in the process's
    resident memory (growing towards the cache's size over an epoch); `LatentDataset` reads rows with `pread`
    instead, so it needs the documented layout: a little-endian u64 header size, the JSON header
    (`{name: {dtype, shape, data_offsets}}`, `__metadata__`), then the data. `ValueError` for a truncated file.
    """
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("no safetensors header")
        (size,) = struct.unpack("<Q", head)
        if size > 100_000_000:
            raise ValueError("not a safetensors file")
        try:
            header = json.loads(f.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"unreadable header: {err}") from err
        file_size = os.fstat(f.fileno()).st_size
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + size + end > file_size:
        raise ValueError(f"the file has {file_size} bytes, its header describes {8 + size + end}")
    return header, 8 + size


def _pread_tensor(fd: int, header: dict, data_start: int, name: str, row: int | None = None) -> torch.Tensor:
    """Tensor `name` (or its row `row`) of a safetensors file opened as `fd`, read with one `pread`."""
    entry = header[name]
    dtype = _ST_DTYPES[entry["dtype"]]
    shape = entry["shape"] if row is None else entry["shape"][1:]
    nbytes = math.prod(shape) * dtype.itemsize
    offset = data_start + entry["data_offsets"][0] + (0 if row is None else row * nbytes)
    buffer = bytearray(nbytes)
    if os.preadv(fd, [buffer], offset) != nbytes:
        raise ValueError("short read")
    return torch.frombuffer(buffer, dtype=dtype).reshape(shape) if nbytes else torch.empty(shape, dtype=dtype)


def _tensor_names(meta: dict) -> set[str]:
    flips = {"mean_flip", "std_flip"} if meta.get("random_flip") else set()
    return {"mean", "std", "label", "start", *flips}


def _shard_meta(meta: dict) -> dict[str, str]:
    meta = {**_LEGACY, **meta}
    return {key: str(meta.get(key)) for key in (*_SHARD_KEYS, "dataset")}


def _shard_problem(path: Path, meta: dict, start: int, count: int) -> str | None:
    """Why `path` does not hold exactly rows [start, start + count) of the cache described by `meta`, or None. Reads
    the header and one number, not the latents; ValueError if the shard was made with another VAE, resolution, dtype
    or flip setting (a foreign cache is refused, never mixed or overwritten)."""
    try:
        header, data_start = read_header(path)
        stored = {**{k: str(v) for k, v in _LEGACY.items()}, **(header.get("__metadata__") or {})}
        fd = os.open(path, os.O_RDONLY)
        try:
            stored_start = int(_pread_tensor(fd, header, data_start, "start")) if "start" in header else None
        finally:
            os.close(fd)
    except (OSError, ValueError, KeyError) as err:
        return f"it is missing or truncated ({err})"
    wanted = _shard_meta(meta)
    changed = [f"{k} {stored.get(k)} -> {wanted[k]}" for k in _SHARD_KEYS if stored.get(k) != wanted[k]]
    if changed:
        raise ValueError(f"{path} was made by another encode ({', '.join(changed)}; dataset "
                         f"{stored.get('dataset')} -> {wanted['dataset']}): refusing to mix caches. Encode into "
                         "another --out, or delete the folder to encode it anew.")
    shape = [count, *meta["latent_shape"]]
    names = set(header) - {"__metadata__"}
    if names != _tensor_names(meta):  # e.g. a shard encoded with(out) flips
        return f"it holds the tensors {sorted(names)}, expected {sorted(_tensor_names(meta))}"
    if stored_start != start or header["label"]["shape"] != [count]:
        return f"it holds {header['label']['shape'][0]} rows from {stored_start}, expected {count} from {start}"
    for name in names - {"label", "start"}:
        if header[name]["shape"] != shape or header[name]["dtype"] != _ST_NAMES[meta["dtype"]]:
            return (f"it holds {name} as {header[name]['dtype']} {header[name]['shape']}, expected "
                    f"{_ST_NAMES[meta['dtype']]} {shape}")
    return None


def write_shard(cache_dir: Path, index: int, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Writes shard `index` of the cache described by `meta` (its index dict): `tensors` holds "mean", "std"
    (and "mean_flip", "std_flip") as (n, C, h, w) floats, cast here to the cache's dtype, and "label" (n,); refused
    if any row is not finite (fp16 can overflow to inf); atomic: a shard is either complete or absent."""
    tensors = {name: value.to(_TORCH_DTYPES[meta["dtype"]]).contiguous() for name, value in tensors.items()
               if name != "label"} | {"label": tensors["label"].long(),
                                      "start": torch.tensor(index * meta["shard_size"])}
    check_finite_rows(tensors, shard_path(cache_dir, index))
    with atomic_path(shard_path(cache_dir, index)) as tmp:
        save_file(tensors, str(tmp), metadata=_shard_meta(meta))


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

    Each process encodes the shards `i` with `i % num_processes == process_index`; the index is written by process 0
    only once every shard is present (call again after all processes finish, or use `training/encode_latents.py`).
    `dtype` (`fp32`, `bf16`, `fp16`) is the storage precision of mean and std; `random_flip` also encodes every
    image mirrored left-right (`LatentDataset(random_flip=True)` then picks one per sample and epoch); images are
    decoded and preprocessed in `num_workers` DataLoader workers (0: in this process).
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
    index_path = cache_dir / INDEX
    if index_path.exists():
        old = {"dtype": "float32", "random_flip": False, **json.loads(index_path.read_text())}
        for key in ("vae_fingerprint", "resolution", "grayscale", "num_samples", "shard_size", "latent_shape",
                    "dtype", "random_flip", "dataset_fingerprint", "split", "image_column", "label_column",
                    "class_names"):
            if old.get(key) != meta[key]:
                raise ValueError(
                    f"{cache_dir} holds a cache made with {key}={old.get(key)!r}, this run has {meta[key]!r} "
                    f"(VAE {old.get('vae')!r} vs {vae_id!r}, dataset {old.get('dataset')!r} vs {dataset_name!r}). "
                    "Encode into another --out, or delete the folder to encode it anew."
                )

    def rows(i: int) -> tuple[int, int]:
        return i * shard_size, min((i + 1) * shard_size, len(dataset))

    mine = [i for i in range(meta["num_shards"]) if i % num_processes == process_index]
    todo = [i for i in mine if _shard_problem(shard_path(cache_dir, i), meta, rows(i)[0], rows(i)[1] - rows(i)[0])]
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="encoding shards", disable=not progress)
    # batches never cross a shard: the loader yields them in order, and a shard is written once its last batch is in
    batches = [list(range(b, min(b + batch_size, rows(i)[1]))) for i in todo for b in range(*rows(i), batch_size)]
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
        if indices[-1] + 1 < rows(i)[1]:
            continue
        write_shard(cache_dir, i, {name: torch.cat(values) for name, values in parts.items()}, meta)
        parts = {}
        bar.update(1)
    bar.close()

    complete = not any(_shard_problem(shard_path(cache_dir, i), meta, rows(i)[0], rows(i)[1] - rows(i)[0])
                       for i in range(meta["num_shards"]))
    if process_index == 0 and complete:
        atomic_write_json(index_path, meta)
    return meta


def encode_dataset(accelerator, vae_path: str, dataset: str, out: str | Path, resolution: int,
                   grayscale: bool = False, split: str = "train", image_column: str = "image",
                   label_column: str | None = "label", vae_subfolder: str | None = None, shard_size: int = 1024,
                   batch_size: int = 64, dtype: str = "fp32", random_flip: bool = False,
                   num_workers: int = 0) -> dict:
    """`encode_to_cache` across accelerate processes: every process encodes its shards, then the main process
    verifies them all and writes the index. Returns the cache's index."""
    from diffusers import AutoencoderKL

    storage_dtype(dtype)  # a bad --dtype is named before the VAE loads
    if vae_subfolder is None and (Path(vae_path) / "model_index.json").is_file():
        raise ValueError(f"{vae_path} is a pipeline folder, not a VAE: pass --vae-subfolder vae (or --vae "
                         f"{Path(vae_path) / 'vae'}).")
    data = load_image_dataset(dataset, split, image_column, label_column)
    vae = AutoencoderKL.from_pretrained(vae_path, subfolder=vae_subfolder).to(accelerator.device).eval()
    # a local VAE is recorded by its absolute path: training from another folder finds the same one
    vae_id = str(Path(vae_path).resolve()) if Path(vae_path).is_dir() else vae_path
    kwargs = dict(vae_id=vae_id, vae_subfolder=vae_subfolder, shard_size=shard_size, batch_size=batch_size,
                  dtype=dtype, random_flip=random_flip, dataset_name=dataset, split=split, image_column=image_column,
                  label_column=label_column)
    with torch.no_grad():
        meta = encode_to_cache(vae, data, out, resolution, grayscale, process_index=accelerator.process_index,
                               num_processes=accelerator.num_processes, progress=accelerator.is_local_main_process,
                               num_workers=num_workers, **kwargs)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:  # every shard is there now: verify them all and write the index
            meta = encode_to_cache(vae, data, out, resolution, grayscale, progress=False, **kwargs)
            logger.info(f"cache {out}: {meta['num_samples']} latents of shape {meta['latent_shape']} ({meta['dtype']}"
                        f"{', and of the mirrored images' if random_flip else ''}) in {meta['num_shards']} shards, "
                        f"scaling factor {meta['scaling_factor']}")
    accelerator.wait_for_everyone()
    return meta


def load_cache_vae(meta: dict, vae: str | None = None):
    """The `AutoencoderKL` that decodes a cache's latents (`meta` is its index): the cache's own, or `vae`, which
    must be the same weights (same fingerprint) with the cache's latent channels; `ValueError` otherwise."""
    from diffusers import AutoencoderKL

    reference, subfolder = (vae, None) if vae else (meta.get("vae"), meta.get("vae_subfolder"))
    if not reference:
        raise ValueError("The latent cache records no VAE; pass the one that encoded it with --vae.")
    local = Path(reference).is_absolute() or reference.startswith((".", "~")) or reference.count("/") > 1
    if local and not (Path(reference).expanduser() / (subfolder or "")).is_dir():  # not a Hub id: never looked up
        raise ValueError(f"--vae {reference}: no such folder." if vae else
                         f"The cache's VAE at {reference} is missing (moved or deleted): pass the VAE that encoded "
                         f"the cache with --vae (its fingerprint is checked).")
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


def _file_identity(stat: os.stat_result) -> tuple[int, int, int]:
    """(inode, size, modification time): changes when a file is replaced, truncated or rewritten."""
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


class LatentDataset(Dataset):
    """Rows of a latent cache as `(latents * scaling_factor, label)`, read lazily from the shards.

    Opening a cache reads the shards' headers and labels only; each access reads that row's mean and std (a few KB)
    with `pread`: no memory map, so a process's resident memory holds its batches and not the cache, whatever its
    size; the operating system's page cache, shared by every process of a node, keeps hot shards in memory. The
    dataset holds no open file, so it pickles cheaply into DataLoader workers. Rows of a half-precision cache are
    returned in float32.

    With `resample=True` each access draws `mean + std * noise` from the stored distribution (a fresh sample per
    epoch, as training on images would); `random_flip` picks, with probability 1/2, the encoding of the mirrored
    image (the cache must have been encoded with `random_flip`: DiT flips images before the VAE, and a mirrored
    latent grid is not the latent of the mirrored image). With a `seed`, that randomness is a function of
    (seed, epoch, index) alone (call `set_epoch`), never of the global RNG: batches are then the same whatever the
    order of fetching (prefetching, workers, a resumed run).
    """

    def __init__(self, cache_dir: str | Path, resample: bool = True, random_flip: bool = False,
                 seed: int | None = None):
        cache_dir = Path(cache_dir)
        if not (cache_dir / INDEX).exists():
            raise FileNotFoundError(f"{cache_dir} has no {INDEX}: the cache is missing or incomplete.")
        rebuild = "rebuild it with training/encode_latents.py (complete shards are kept)"
        try:
            self.meta = {**_LEGACY, **json.loads((cache_dir / INDEX).read_text())}
        except json.JSONDecodeError as err:
            raise ValueError(f"{cache_dir / INDEX} is corrupt ({err}): delete it and {rebuild}.") from err
        if random_flip and not self.meta["random_flip"]:
            raise ValueError(
                f"{cache_dir} holds no latents of mirrored images, so --random-flip cannot flip: DiT flips the image "
                "before the VAE, which mirroring the latent grid does not reproduce. Encode the dataset again with "
                "encode_latents.py --random-flip (both orientations are stored), or train without --random-flip."
            )
        shape, dtype = list(self.meta["latent_shape"]), self.meta["dtype"]
        # (path, safetensors header, data offset, file identity) per shard
        self.shards: list[tuple[str, dict, int, tuple[int, int, int]]] = []
        labels = []
        for i in range(self.meta["num_shards"]):
            path = shard_path(cache_dir, i)
            try:
                header, data_start = read_header(path)
                fd = os.open(path, os.O_RDONLY)
                try:
                    labels.append(_pread_tensor(fd, header, data_start, "label"))  # (n,)
                    identity = _file_identity(os.fstat(fd))
                finally:
                    os.close(fd)
            except (OSError, ValueError, KeyError) as err:
                raise ValueError(f"{path} is missing or truncated ({err}): delete it and {rebuild}.") from err
            for name in ("mean", "std", "mean_flip", "std_flip")[: 4 if random_flip else 2]:
                entry = header.get(name, {"dtype": "none", "shape": [0]})
                if entry["shape"][1:] != shape or entry["dtype"] != _ST_NAMES[dtype] or \
                        entry["shape"][0] != len(labels[-1]):
                    raise ValueError(
                        f"{path.name} holds {_ST_DTYPES.get(entry['dtype'], entry['dtype'])} latents of shape "
                        f"{tuple(entry['shape'][1:])}; {INDEX} says {dtype} {shape}: the index was edited or belongs "
                        f"to another cache; {rebuild}.")
            made_from = (header.get("__metadata__") or {}).get("dataset_fingerprint")
            if self.meta.get("dataset_fingerprint") and made_from != self.meta["dataset_fingerprint"]:
                raise ValueError(f"{path.name} holds latents of another dataset (fingerprint {made_from}, {INDEX}'s "
                                 f"{self.meta['dataset_fingerprint']}): the cache mixes two encodes; delete "
                                 f"{path.name} and rerun training/encode_latents.py with the dataset "
                                 f"{self.meta.get('dataset')!r}.")
            if i < self.meta["num_shards"] - 1 and len(labels[-1]) != self.meta["shard_size"]:
                raise ValueError(f"{path.name} holds {len(labels[-1])} rows, {INDEX} says {self.meta['shard_size']} "
                                 f"per shard; {rebuild}.")
            self.shards.append((str(path), header, data_start, identity))
        self.labels = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)  # (N,)
        if len(self.labels) != self.meta["num_samples"]:
            raise ValueError(
                f"{cache_dir}: shards hold {len(self.labels)} rows, the index says {self.meta['num_samples']}."
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
        return len(self.labels)

    def _open_shard(self, shard: int) -> tuple[int, dict, int]:
        """(file descriptor, header, data offset) of shard `shard`, checked to be the file whose header was read when
        the cache was opened: `ValueError` naming the shard if it was truncated, replaced or rewritten since."""
        path, header, data_start, identity = self.shards[shard]
        rebuild = "delete it and rebuild it with training/encode_latents.py (complete shards are kept)"
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as err:
            raise ValueError(f"{path} is missing ({err}) since the cache was opened: {rebuild}.") from err
        now = _file_identity(os.fstat(fd))
        if now != identity:
            os.close(fd)
            if now[1] < identity[1]:
                raise ValueError(f"{path} was truncated while this run read it ({now[1]} of {identity[1]} bytes): "
                                 f"{rebuild}, then resume the run.")
            raise ValueError(f"{path} was replaced or rewritten while this run read it (its rows may have changed): "
                             "let the encode finish, then resume the run from its latest checkpoint.")
        return fd, header, data_start

    def read_row(self, i: int, flipped: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The stored latent mean and std of row `i` (of the mirrored image where `flipped`), (C, h, w) each, in
        float32; `ValueError` naming the shard and row if they are not finite, or if the shard changed on disk."""
        shard, row = divmod(i, self.meta["shard_size"])
        suffix = "_flip" if flipped else ""
        fd, header, data_start = self._open_shard(shard)
        try:
            mean = _pread_tensor(fd, header, data_start, f"mean{suffix}", row).float()
            std = _pread_tensor(fd, header, data_start, f"std{suffix}", row).float()
        except ValueError as err:  # a short read: the file shrank between the check and the read
            raise ValueError(f"{self.shards[shard][0]} is truncated ({err} of row {row}): delete it and rebuild it "
                             "with training/encode_latents.py (complete shards are kept).") from err
        finally:
            os.close(fd)
        if not (mean.isfinite().all() and std.isfinite().all()):
            raise _non_finite_error(Path(self.shards[shard][0]), [row], shard * self.meta["shard_size"])
        return mean, std

    def read_all(self, name: str = "mean") -> torch.Tensor:
        """Tensor `name` ("mean", "std", "mean_flip", "std_flip") of every row, (N, C, h, w) in the stored dtype:
        the whole cache in memory, for small caches and tests."""
        parts = []
        for shard in range(len(self.shards)):
            fd, header, data_start = self._open_shard(shard)
            try:
                parts.append(_pread_tensor(fd, header, data_start, name))
            finally:
                os.close(fd)
        return torch.cat(parts)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"row {i} of a cache of {len(self)}")
        i = i % len(self)
        generator = None
        if self.seed is not None:
            generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, i))
        # the draws in a fixed order (noise, then the orientation): a row's randomness is f(seed, epoch, index)
        noise = torch.randn(self.latent_shape, generator=generator) if self.resample else None
        flipped = bool(self.random_flip and torch.rand((), generator=generator) < 0.5)
        latent, std = self.read_row(i, flipped)  # (C, h, w)
        if noise is not None:
            latent = latent + std * noise
        return latent * self.scaling_factor, int(self.labels[i])
