"""diffit_hf: DiT and DiffiT diffusion transformers as Hugging Face diffusers models."""

__version__ = "0.1.0"

from .models import (
    DiffiTModel,
    DiffiTUNetModel,
    DiTModel,
    convert_diffusers_dit,
    convert_official_diffit,
    convert_official_dit,
    count_macs,
    count_parameters,
    create_model,
    list_presets,
    preset_table,
)
from .pipelines import DiffiTPipeline, dit_scheduler

__all__ = [
    "DiffiTPipeline",
    "DiTModel",
    "DiffiTModel",
    "DiffiTUNetModel",
    "convert_diffusers_dit",
    "convert_official_diffit",
    "convert_official_dit",
    "count_macs",
    "count_parameters",
    "create_model",
    "dit_scheduler",
    "list_presets",
    "preset_table",
]
