"""Small helpers shared across the package: atomic file writes and seed mixing (one place for each)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_SEED_PRIME = 1_000_003
_SEED_MASK = (1 << 32) - 1  # numpy's seed range, the narrowest of those accelerate's set_seed seeds


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path`; on success it replaces `path` in one `os.replace`, on error it is
    removed. Readers see the old file or the complete new one, never a half-written file.

        with atomic_path(out / "stats.safetensors") as tmp:
            save_file(tensors, str(tmp))
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes `text` to `path` atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, payload: Any) -> None:
    """Writes `payload` as indented JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def mix_seed(seed: int, *keys: int) -> int:
    """A seed for one unit of work (a step, a rank, a sample index) that depends on `(seed, *keys)` only, so that
    resumed or re-sharded work draws exactly the same random numbers: `((seed * p + k1) * p + k2) ...` with a large
    prime `p`, modulo 2**32: a seed that Python's `random`, numpy and torch all accept (accelerate's `set_seed` seeds
    the three; a wider seed made numpy refuse the seed of step 4,295 and every step of a run with seed > 0)."""
    value = seed
    for key in keys:
        value = value * _SEED_PRIME + key
    return value & _SEED_MASK
