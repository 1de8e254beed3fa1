"""Labelled image grids for sampling scripts, validation during training and model cards."""

from __future__ import annotations

from PIL import Image, ImageDraw


def labelled_grid(images: list[Image.Image], captions: list[str], per_label: int, rows: bool = False) -> Image.Image:
    """`images` hold `per_label` consecutive images per caption. `rows=False`: one column per caption with the caption
    under it; `rows=True`: one row per caption with the caption on its left."""
    w, h = images[0].size
    if rows:
        margin = 6 * max(len(c) for c in captions) + 4
        grid = Image.new("RGB", (margin + per_label * w, len(captions) * h), "white")
        draw = ImageDraw.Draw(grid)
        for r, caption in enumerate(captions):
            for c in range(per_label):
                grid.paste(images[r * per_label + c].convert("RGB"), (margin + c * w, r * h))
            draw.text((2, r * h + max(0, h // 2 - 6)), caption, fill="black")
        return grid
    strip = 12
    grid = Image.new("RGB", (len(captions) * w, per_label * h + strip), "white")
    draw = ImageDraw.Draw(grid)
    for c, caption in enumerate(captions):
        for r in range(per_label):
            grid.paste(images[c * per_label + r].convert("RGB"), (c * w, r * h))
        draw.text((c * w + 2, per_label * h), caption[: max(1, w // 6)], fill="black")
    return grid
