from .pipeline_diffit import DiffiTPipeline

__all__ = ["DiffiTPipeline"]
