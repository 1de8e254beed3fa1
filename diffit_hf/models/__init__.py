from .conversion import convert_diffusers_dit, convert_official_dit
from .presets import count_macs, count_parameters, create_model, list_presets, preset_table
from .transformer_dit import DiTModel

__all__ = [
    "DiTModel",
    "convert_diffusers_dit",
    "convert_official_dit",
    "count_macs",
    "count_parameters",
    "create_model",
    "list_presets",
    "preset_table",
]
