"""The metadata of a latent cache (its `index.json`, see `latent_cache.py`), read without opening the shards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .latent_cache import INDEX


def read_cache_meta(cache_dir: str | Path) -> dict[str, Any] | None:
    """The index of the latent cache in `cache_dir` (VAE, resolution, shapes, counts, class names, and the dataset's
    source and split: `dataset`, `split`, `dataset_id`), or `None` when the folder has no index."""
    path = Path(cache_dir) / INDEX
    return json.loads(path.read_text()) if path.is_file() else None
