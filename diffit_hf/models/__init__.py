from .conversion import convert_diffusers_dit, convert_official_diffit, convert_official_dit
from .presets import count_macs, count_parameters, create_model, list_presets, preset_table
from .transformer_diffit import DiffiTModel
from .transformer_dit import DiTModel
from .unet_diffit import DiffiTUNetModel

__all__ = [
    "DiTModel",
    "DiffiTModel",
    "DiffiTUNetModel",
    "convert_diffusers_dit",
    "convert_official_diffit",
    "convert_official_dit",
    "count_macs",
    "count_parameters",
    "create_model",
    "list_presets",
    "preset_table",
]
