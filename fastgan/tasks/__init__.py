"""Model families the training loop can run: one :class:`Task` per family (docs/architecture.md)."""

from .base import Step, Task
from .noise_to_image import NoiseToImage

__all__ = ["Task", "Step", "NoiseToImage"]
