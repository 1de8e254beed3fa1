"""ImageNet-1k class names, shipped with the package (no download): `id2label` for converted ImageNet pipelines."""

from __future__ import annotations

from pathlib import Path

# One line per class id 0..999: comma-separated synonyms, each naming one class only (written and checked by
# scripts/make_imagenet_classes.py from timm's WordNet lemma files).
IMAGENET_CLASSES_FILE = Path(__file__).with_name("imagenet_classes.txt")


def imagenet_id2label() -> dict[int, str]:
    """{class id: "name, synonym, ..."} for the 1000 ImageNet-1k classes, in the standard (sorted WordNet id) order."""
    lines = IMAGENET_CLASSES_FILE.read_text(encoding="utf-8").splitlines()
    if len(lines) != 1000:
        raise ValueError(f"{IMAGENET_CLASSES_FILE} holds {len(lines)} class names, not 1000: the package is damaged.")
    return dict(enumerate(lines))
