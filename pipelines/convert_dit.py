"""Convert DiT or DiffiT weights to a runnable diffit_hf pipeline folder (transformer, SD VAE, scheduler, class names).

    # official facebookresearch/DiT checkpoint (256 px -> 32x32 latents; use --latent-size 64 for 512 px)
    python pipelines/convert_dit.py --official DiT-XL-2-256x256.pt --preset DiT-XL/2 --out dit-xl-2-256
    # NVIDIA's latent DiffiT release (.safetensors or .pt; 256 or 512 px, read from the checkpoint)
    python pipelines/convert_dit.py --official-diffit diffit_256.safetensors --out diffit-256
    # diffusers DiT (a local folder or Hub id holding a `transformer` subfolder)
    python pipelines/convert_dit.py --diffusers facebook/DiT-XL-2-256 --out dit-xl-2-256
    # then sample as the paper does
    python pipelines/generate.py --model diffit-256 --labels "golden retriever" --preset diffit-paper

The folder holds the converted transformer, the VAE (`--vae`: `stabilityai/sd-vae-ft-ema`, as both papers, or a
local AutoencoderKL folder; `none` writes the transformer folder alone), DiT's DDPM scheduler (`dit_scheduler`), the
ImageNet-1k class names as `id2label` for 1000-class models, and `provenance.json` (source, base model): model cards
of pipelines built from it carry the weights' non-commercial license (CC BY-NC 4.0 for facebookresearch/DiT,
NVIDIA's for NVlabs/DiffiT), never apache-2.0. Here `--config` is a model config.json (a field of
`ConvertConfig`), not a file of flag values.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from diffusers import DiTTransformer2DModel
from diffusers.utils.logging import get_logger

from diffit_hf import convert_diffusers_dit, convert_official_diffit, convert_official_dit, list_presets
from diffit_hf.models.conversion import load_checkpoint_file
from diffit_hf.models.presets import preset_config
from diffit_hf.pipelines.converted import SD_VAE, converted_pipeline, load_vae
from diffit_hf.pipelines.model_card import PROVENANCE
from diffit_hf.training.config import parse_config
from diffit_hf.utils import atomic_write_json

logger = get_logger("diffit_hf.convert_dit")  # shown by parse_config (show_library_logs)

DIT_PRESETS = [n for n in list_presets() if n.startswith("DiT-")]
DIFFIT_PRESETS = [n for n in list_presets() if n.startswith("DiffiT-") and n.endswith("/2")]


@dataclass
class ConvertConfig:
    """Convert an official DiT / DiffiT or a diffusers DiT checkpoint to a pipeline folder (see convert_dit.py)."""

    official: str | None = field(default=None, metadata={
        "help": "path to an official facebookresearch/DiT checkpoint (.pt, loaded with weights_only=True)"})
    official_diffit: str | None = field(default=None, metadata={
        "help": "path to an NVlabs/DiffiT latent checkpoint (.safetensors, or .pt loaded with weights_only=True)"})
    diffusers: str | None = field(default=None, metadata={"help": "diffusers DiT pipeline folder or Hub id"})
    preset: str | None = field(default=None, metadata={
        "choices": DIT_PRESETS + DIFFIT_PRESETS,
        "help": "an official checkpoint's architecture (default: DiT-XL/2, or DiffiT-XL/2 for --official-diffit)"})
    config: str | None = field(default=None, metadata={
        "help": "a model config.json to use instead of --preset (custom architectures)"})
    latent_size: int | None = field(default=None, metadata={
        "help": "latent side, image size / 8 (default: 32 for DiT; read from a DiffiT checkpoint)"})
    num_classes: int = field(default=1000, metadata={"help": "classes of an official checkpoint"})
    vae: str = field(default=SD_VAE, metadata={
        "help": "the VAE to ship: Hub id or local AutoencoderKL folder; 'none' writes the transformer folder alone"})
    out: str | None = field(default=None, metadata={"help": "the pipeline folder to write (required, new)"})

    def __post_init__(self):
        sources = [x for x in (self.official, self.official_diffit, self.diffusers) if x is not None]
        if len(sources) != 1:
            raise ValueError("Pass exactly one of --official, --official-diffit or --diffusers.")
        if self.out is None:
            raise ValueError("--out is required: the pipeline folder to write.")
        if Path(self.out).exists() and any(Path(self.out).iterdir()):
            raise ValueError(f"--out {self.out} exists and is not empty; choose a new folder.")
        valid = DIFFIT_PRESETS if self.official_diffit else DIT_PRESETS
        if self.preset is not None and self.preset not in valid:
            raise ValueError(f"--preset {self.preset} does not describe this checkpoint; valid choices are "
                             f"{', '.join(valid)}.")
        self.preset = self.preset or ("DiffiT-XL/2" if self.official_diffit else "DiT-XL/2")


def model_config(cfg: ConvertConfig) -> dict | str:
    """The config of an official checkpoint: --config, or --preset with --latent-size / --num-classes (a DiffiT
    preset without --latent-size stays a name, so the converter reads the latent size from the checkpoint)."""
    if cfg.config:
        config = json.loads(Path(cfg.config).read_text())
        return {k: v for k, v in config.items() if not k.startswith("_")}
    if cfg.official_diffit and cfg.latent_size is None and cfg.num_classes == 1000:
        return cfg.preset
    _, config = preset_config(cfg.preset, sample_size=cfg.latent_size or 32, num_classes=cfg.num_classes)
    return config


def check_diffusers_dit(source: str) -> None:
    """`ValueError` unless `source` holds a diffusers `DiTTransformer2DModel` in `transformer/` (one of our own
    pipelines needs no conversion)."""
    found = DiTTransformer2DModel.load_config(source, subfolder="transformer").get("_class_name")
    if found != "DiTTransformer2DModel":
        ours = found in ("DiTModel", "DiffiTModel", "DiffiTUNetModel")
        raise ValueError(f"--diffusers {source} holds a {found}, not a diffusers DiTTransformer2DModel" + (
            ": it is already a diffit_hf pipeline and needs no conversion; load it with "
            "DiffiTPipeline.from_pretrained." if ours else "."))


def main(cfg: ConvertConfig) -> None:
    for path in (cfg.official, cfg.official_diffit):
        if path is not None and not Path(path).is_file():
            raise ValueError(f"No checkpoint file {path}.")
    # the source is checked first, then the VAE (a download) before the conversion: fail fast offline
    if cfg.diffusers:
        check_diffusers_dit(cfg.diffusers)
    else:
        flag = "--official" if cfg.official else "--official-diffit"
        state = load_checkpoint_file(cfg.official or cfg.official_diffit, flag)
    vae = None if cfg.vae.lower() == "none" else load_vae(cfg.vae)
    if cfg.official:
        model = convert_official_dit(state, model_config(cfg))
    elif cfg.official_diffit:
        model = convert_official_diffit(state, model_config(cfg))
    else:
        model = convert_diffusers_dit(DiTTransformer2DModel.from_pretrained(cfg.diffusers, subfolder="transformer"))
    # where the weights come from: the folder's model card keeps the source's license and names the base model
    if cfg.official:
        hub_twin = {32: "facebook/DiT-XL-2-256", 64: "facebook/DiT-XL-2-512"}.get(cfg.latent_size or 32)
        model.provenance["base_model"] = hub_twin if cfg.preset == "DiT-XL/2" and not cfg.config else None
    model.provenance["converted_from"] = cfg.official or cfg.official_diffit or cfg.diffusers
    params = f"{sum(p.numel() for p in model.parameters()):,} parameters"
    out = Path(cfg.out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")  # written beside --out, renamed when complete
    try:
        if vae is None:
            model.save_pretrained(tmp)
            atomic_write_json(tmp / PROVENANCE, model.provenance)
            what = f"the transformer alone ({params}); not a runnable pipeline (--vae none)"
        else:
            converted_pipeline(model, vae).save_pretrained(tmp)  # writes provenance.json (model_card.carry_provenance)
            what = f"pipeline with a {type(model).__name__} ({params}), VAE {cfg.vae}"
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info(f"wrote {out}: {what}")


if __name__ == "__main__":
    main(parse_config(ConvertConfig))
