"""The on-disk format of a latent cache: its index, its safetensors shards, what they record, and reading them row by
row without a memory map. `cache_encode.py` writes caches, `latent_cache.py` reads them for training.

Layout of a cache folder:

    index.json                  VAE id and config hash, scaling factor, resolution, shapes, counts, class names,
                                storage dtype, whether flipped images were encoded too, the dataset's source, split,
                                columns and fingerprint (row count, labels, a few images)
    shard-00000.safetensors     rows [0, shard_size): "mean", "std" (N, C, h, w) in the cache's dtype (float32 by
                                default, or bfloat16 / float16), "label" (N,) int64, "start" (); with
                                `random_flip`, also "mean_flip", "std_flip": the encodings of the mirrored images

A shard is written to a temporary name and renamed when complete, so a partial shard is never taken for a complete
one. Every shard records the VAE, resolution and dataset it was made from, so an interrupted encode is never
finished with another dataset.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ..utils import atomic_path

INDEX = "index.json"
REBUILD = "rebuild it with training/encode_latents.py (complete shards are kept)"
# --dtype spellings -> the storage dtype's name in the index -> torch dtype and safetensors' header name
STORAGE_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SAFETENSORS_NAMES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}
SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "I64": torch.int64}
LEGACY_DEFAULTS = {"dtype": "float32", "random_flip": False}  # caches written before these options
# what a shard and the run that reads or completes it must agree on (the shards also record "dataset", the source)
SHARD_KEYS = ("vae_fingerprint", "resolution", "grayscale", "dtype", "random_flip", "dataset_fingerprint", "split",
              "image_column", "label_column")


def storage_dtype(name: str) -> str:
    """The index's name of a storage dtype (`float32`, `bfloat16`, `float16`) from `--dtype` (`fp32`, `bf16`, `fp16`)
    or the index's own spelling; `ValueError` listing the choices otherwise."""
    if name in TORCH_DTYPES:
        return name
    if name not in STORAGE_DTYPES:
        raise ValueError(f"Unknown latent storage dtype {name!r}; choose one of {', '.join(STORAGE_DTYPES)}.")
    return STORAGE_DTYPES[name]


def read_cache_index(cache_dir: str | Path) -> dict:
    """The metadata of a complete latent cache, from its `index.json`: the VAE (`vae`, `vae_fingerprint`,
    `scaling_factor`), `latent_shape`, `num_samples`, `class_names`, `dtype`, `random_flip`, and the data it encoded
    (`dataset`, `split`, columns, fingerprint), with the defaults of options older caches predate.
    `FileNotFoundError` if the cache has no index (missing, or its encode has not finished); `ValueError` if the index
    is corrupt."""
    path = Path(cache_dir) / INDEX
    if not path.exists():
        raise FileNotFoundError(f"{cache_dir} has no {INDEX}: the cache is missing or incomplete.")
    try:
        return {**LEGACY_DEFAULTS, **json.loads(path.read_text())}
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is corrupt ({err}): delete it and {REBUILD}.") from err


#################################################################################
#                     Fingerprints: what a cache was made from                  #
#################################################################################


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


#################################################################################
#                         Shards: reading, checking, writing                    #
#################################################################################


def shard_path(cache_dir: Path, index: int) -> Path:
    return cache_dir / f"shard-{index:05d}.safetensors"


def non_finite_error(path: Path, rows: list[int], start: int) -> ValueError:
    """The error naming a shard's rows (and their sample numbers) whose latents hold NaN/inf."""
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
        raise non_finite_error(path, bad.nonzero().flatten().tolist(), int(shard["start"]) if "start" in shard else 0)


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


def pread_tensor(fd: int, header: dict, data_start: int, name: str, row: int | None = None) -> torch.Tensor:
    """Tensor `name` (or its row `row`) of a safetensors file opened as `fd`, read with one `pread`."""
    entry = header[name]
    dtype = SAFETENSORS_DTYPES[entry["dtype"]]
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
    meta = {**LEGACY_DEFAULTS, **meta}
    return {key: str(meta.get(key)) for key in (*SHARD_KEYS, "dataset")}


def shard_problem(path: Path, meta: dict, start: int, count: int) -> str | None:
    """Why `path` does not hold exactly rows [start, start + count) of the cache described by `meta`, or None. Reads
    the header and one number, not the latents; ValueError if the shard was made with another VAE, resolution, dtype
    or flip setting (a foreign cache is refused, never mixed or overwritten)."""
    try:
        header, data_start = read_header(path)
        stored = {**{k: str(v) for k, v in LEGACY_DEFAULTS.items()}, **(header.get("__metadata__") or {})}
        fd = os.open(path, os.O_RDONLY)
        try:
            stored_start = int(pread_tensor(fd, header, data_start, "start")) if "start" in header else None
        finally:
            os.close(fd)
    except (OSError, ValueError, KeyError) as err:
        return f"it is missing or truncated ({err})"
    wanted = _shard_meta(meta)
    changed = [f"{k} {stored.get(k)} -> {wanted[k]}" for k in SHARD_KEYS if stored.get(k) != wanted[k]]
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
        if header[name]["shape"] != shape or header[name]["dtype"] != SAFETENSORS_NAMES[meta["dtype"]]:
            return (f"it holds {name} as {header[name]['dtype']} {header[name]['shape']}, expected "
                    f"{SAFETENSORS_NAMES[meta['dtype']]} {shape}")
    return None


def shard_rows(meta: dict, index: int) -> tuple[int, int]:
    """The rows [start, end) of shard `index` of the cache described by `meta`."""
    return index * meta["shard_size"], min((index + 1) * meta["shard_size"], meta["num_samples"])


def incomplete_shards(cache_dir: Path, meta: dict, shards: list[int] | None = None) -> list[int]:
    """The shards (of `shards`, default all) that are missing, partial or stale: to encode, or to wait for."""
    found = []
    for i in range(meta["num_shards"]) if shards is None else shards:
        start, end = shard_rows(meta, i)
        if shard_problem(shard_path(cache_dir, i), meta, start, end - start):
            found.append(i)
    return found


def write_shard(cache_dir: Path, index: int, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Writes shard `index` of the cache described by `meta` (its index dict): `tensors` holds "mean", "std"
    (and "mean_flip", "std_flip") as (n, C, h, w) floats, cast here to the cache's dtype, and "label" (n,); refused
    if any row is not finite (fp16 can overflow to inf); atomic: a shard is either complete or absent."""
    tensors = {name: value.to(TORCH_DTYPES[meta["dtype"]]).contiguous() for name, value in tensors.items()
               if name != "label"} | {"label": tensors["label"].long(),
                                      "start": torch.tensor(index * meta["shard_size"])}
    check_finite_rows(tensors, shard_path(cache_dir, index))
    with atomic_path(shard_path(cache_dir, index)) as tmp:
        save_file(tensors, str(tmp), metadata=_shard_meta(meta))
