"""Reading a latent cache (`cache_format.py`) for training: `LatentDataset`, and the VAE that decodes its latents.

Reading is lazy: only the shards' headers and labels are read when a cache is opened; each row's mean and std are
read from disk when the row is fetched, so a process's memory does not grow with the cache (an ImageNet-256 cache is
~10 GB in float32).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..utils import mix_seed
from .cache_format import (
    INDEX,
    REBUILD,
    SAFETENSORS_DTYPES,
    SAFETENSORS_NAMES,
    non_finite_error,
    pread_tensor,
    read_cache_index,
    read_header,
    shard_path,
    vae_fingerprint,
)


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
        self.meta = read_cache_index(cache_dir)
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
                    labels.append(pread_tensor(fd, header, data_start, "label"))  # (n,)
                    identity = _file_identity(os.fstat(fd))
                finally:
                    os.close(fd)
            except (OSError, ValueError, KeyError) as err:
                raise ValueError(f"{path} is missing or truncated ({err}): delete it and {REBUILD}.") from err
            for name in ("mean", "std", "mean_flip", "std_flip")[: 4 if random_flip else 2]:
                entry = header.get(name, {"dtype": "none", "shape": [0]})
                if entry["shape"][1:] != shape or entry["dtype"] != SAFETENSORS_NAMES[dtype] or \
                        entry["shape"][0] != len(labels[-1]):
                    raise ValueError(
                        f"{path.name} holds {SAFETENSORS_DTYPES.get(entry['dtype'], entry['dtype'])} latents of shape "
                        f"{tuple(entry['shape'][1:])}; {INDEX} says {dtype} {shape}: the index was edited or belongs "
                        f"to another cache; {REBUILD}.")
            made_from = (header.get("__metadata__") or {}).get("dataset_fingerprint")
            if self.meta.get("dataset_fingerprint") and made_from != self.meta["dataset_fingerprint"]:
                raise ValueError(f"{path.name} holds latents of another dataset (fingerprint {made_from}, {INDEX}'s "
                                 f"{self.meta['dataset_fingerprint']}): the cache mixes two encodes; delete "
                                 f"{path.name} and rerun training/encode_latents.py with the dataset "
                                 f"{self.meta.get('dataset')!r}.")
            if i < self.meta["num_shards"] - 1 and len(labels[-1]) != self.meta["shard_size"]:
                raise ValueError(f"{path.name} holds {len(labels[-1])} rows, {INDEX} says {self.meta['shard_size']} "
                                 f"per shard; {REBUILD}.")
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
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as err:
            raise ValueError(f"{path} is missing ({err}) since the cache was opened: delete it and "
                             f"{REBUILD}.") from err
        now = _file_identity(os.fstat(fd))
        if now != identity:
            os.close(fd)
            if now[1] < identity[1]:
                raise ValueError(f"{path} was truncated while this run read it ({now[1]} of {identity[1]} bytes): "
                                 f"delete it and {REBUILD}, then resume the run.")
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
            mean = pread_tensor(fd, header, data_start, f"mean{suffix}", row).float()
            std = pread_tensor(fd, header, data_start, f"std{suffix}", row).float()
        except ValueError as err:  # a short read: the file shrank between the check and the read
            raise ValueError(f"{self.shards[shard][0]} is truncated ({err} of row {row}): delete it and "
                             f"{REBUILD}.") from err
        finally:
            os.close(fd)
        if not (mean.isfinite().all() and std.isfinite().all()):
            raise non_finite_error(Path(self.shards[shard][0]), [row], shard * self.meta["shard_size"])
        return mean, std

    def read_all(self, name: str = "mean") -> torch.Tensor:
        """Tensor `name` ("mean", "std", "mean_flip", "std_flip") of every row, (N, C, h, w) in the stored dtype:
        the whole cache in memory, for small caches and tests."""
        parts = []
        for shard in range(len(self.shards)):
            fd, header, data_start = self._open_shard(shard)
            try:
                parts.append(pread_tensor(fd, header, data_start, name))
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
