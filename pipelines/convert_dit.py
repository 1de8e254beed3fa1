"""Convert DiT weights to a diffit_hf `DiTModel` folder (config.json + safetensors).

    # official facebookresearch/DiT checkpoint (256 px -> 32x32 latents; use --latent-size 64 for 512 px)
    python pipelines/convert_dit.py --official DiT-XL-2-256x256.pt --preset DiT-XL/2 --out dit-xl-2-256
    # diffusers DiT (a local folder or Hub id holding a `transformer` subfolder)
    python pipelines/convert_dit.py --diffusers facebook/DiT-XL-2-256 --out dit-xl-2-256

The folder also gets `provenance.json` (source facebookresearch/DiT, base model): model cards of pipelines built from
it carry the weights' CC BY-NC 4.0 license and never apache-2.0. Here `--config` is a DiTModel config.json (a field of
`ConvertConfig`), not a file of flag values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers.utils.logging import get_logger

from diffit_hf import convert_diffusers_dit, convert_official_dit, list_presets
from diffit_hf.models.presets import preset_config
from diffit_hf.pipelines.hub import PROVENANCE
from diffit_hf.training.config import parse_config
from diffit_hf.utils import atomic_write_json

logger = get_logger("diffit_hf.convert_dit")  # shown by parse_config (show_library_logs)


@dataclass
class ConvertConfig:
    """Convert an official or a diffusers DiT checkpoint to a DiTModel folder (see pipelines/convert_dit.py)."""

    official: str | None = field(default=None, metadata={
        "help": "path to an official .pt checkpoint (loaded with weights_only=True)"})
    diffusers: str | None = field(default=None, metadata={"help": "diffusers DiT pipeline folder or Hub id"})
    preset: str = field(default="DiT-XL/2", metadata={"choices": [n for n in list_presets() if n.startswith("DiT-")],
                                                      "help": "the architecture of an official checkpoint"})
    config: str | None = field(default=None, metadata={
        "help": "a DiTModel config.json to use instead of --preset (custom architectures)"})
    latent_size: int = field(default=32, metadata={"help": "latent side: image size / 8"})
    num_classes: int = field(default=1000, metadata={"help": "classes of an official checkpoint"})
    out: str | None = field(default=None, metadata={"help": "the DiTModel folder to write (required)"})

    def __post_init__(self):
        if (self.official is None) == (self.diffusers is None):
            raise ValueError("Pass exactly one of --official or --diffusers.")
        if self.out is None:
            raise ValueError("--out is required: the DiTModel folder to write.")


def main(cfg: ConvertConfig) -> None:
    if cfg.official:
        state_dict = torch.load(cfg.official, map_location="cpu", weights_only=True)
        if cfg.config:
            config = json.loads(Path(cfg.config).read_text())
            config = {k: v for k, v in config.items() if not k.startswith("_")}
        else:
            _, config = preset_config(cfg.preset, sample_size=cfg.latent_size, num_classes=cfg.num_classes)
        model = convert_official_dit(state_dict, config)
    else:
        from diffusers import DiTTransformer2DModel

        model = convert_diffusers_dit(DiTTransformer2DModel.from_pretrained(cfg.diffusers, subfolder="transformer"))
    model.save_pretrained(cfg.out)
    # where the weights come from: pipelines built from this folder keep the source's license in their model card
    if cfg.official:
        hub_twin = {32: "facebook/DiT-XL-2-256", 64: "facebook/DiT-XL-2-512"}.get(cfg.latent_size)
        base_model = hub_twin if cfg.preset == "DiT-XL/2" and not cfg.config else None
    else:
        base_model = None if Path(cfg.diffusers).exists() else cfg.diffusers
    atomic_write_json(Path(cfg.out) / PROVENANCE, {"source": "facebookresearch/DiT", "base_model": base_model,
                                                   "converted_from": cfg.official or cfg.diffusers})
    logger.info(f"wrote {cfg.out}: {sum(p.numel() for p in model.parameters()):,} parameters")


if __name__ == "__main__":
    main(parse_config(ConvertConfig))
