from .pipeline_diffit import DiffiTPipeline
from .schedules import dit_scheduler

__all__ = ["DiffiTPipeline", "dit_scheduler"]
