"""Model families the training loop can run: one :class:`Task` per family (docs/architecture.md)."""

from .base import Step, Task
from .cyclegan import CycleGAN
from .noise_to_image import NoiseToImage
from .pix2pix import Pix2Pix
from .translation import TranslationConfig

__all__ = ["Task", "Step", "NoiseToImage", "Pix2Pix", "CycleGAN", "TranslationConfig"]
