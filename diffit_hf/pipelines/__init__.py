from .pipeline_diffit import DiffiTPipeline, dit_scheduler

__all__ = ["DiffiTPipeline", "dit_scheduler"]
