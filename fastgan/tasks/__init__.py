"""Model families the training loop can run: one :class:`Task` per family (docs/architecture.md)."""

from .base import Step, Task
from .cyclegan import CycleGAN
from .noise_to_image import NoiseToImage
from .pix2pix import Pix2Pix
from .translation import TranslationConfig

__all__ = ["Task", "Step", "NoiseToImage", "Pix2Pix", "CycleGAN", "TranslationConfig", "task_for"]

# The task a config names in its ``task`` field (TranslationConfig); a TrainConfig has none.
_NAMED = {"pix2pix": Pix2Pix, "cyclegan": CycleGAN}


def task_for(cfg) -> type:
    """The :class:`Task` class that trains ``cfg`` (what :class:`fastgan.Trainer` builds by default).

    Args:
        cfg: a config with a ``default_task()`` method (a family of its own), a TranslationConfig
            (pix2pix or CycleGAN by its ``task``) or a TrainConfig (noise to image).
    """
    if hasattr(cfg, "default_task"):
        return cfg.default_task()
    return _NAMED.get(getattr(cfg, "task", None), NoiseToImage)
