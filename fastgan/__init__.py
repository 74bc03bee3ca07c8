"""fastgan: a GAN training engine for PyTorch, built for speed on GPUs.

Public entry points::

    import fastgan
    cfg = fastgan.TrainConfig(data="digits", out="runs/digits")
    trainer = fastgan.Trainer(cfg)
    trainer.fit()
    x = trainer.sample(16)
    G = fastgan.load_generator("runs/digits")
    fastgan.Trainer(fastgan.TranslationConfig(task="pix2pix", out="runs/p2p")).fit()   # docs/translation.md
    fastgan.translate("runs/p2p", "photos/", "out/")

Heavy modules (the trainer, export, benchmark) are imported lazily so that
``import fastgan`` stays light.
"""

from .config import TrainConfig
from .errors import CheckpointError, ConfigError, DataError, FastGANError, StorageError, TrainingError
from .version import __version__

__all__ = [
    "TrainConfig", "Trainer", "load_generator", "TranslationConfig", "translate", "load_translator",
    "FastGANError", "ConfigError", "DataError", "CheckpointError", "TrainingError", "StorageError", "__version__",
]


def __getattr__(name):  # PEP 562: the trainer and checkpoint reader load torch's heavier parts on first use
    if name == "Trainer":
        from .train import Trainer
        return Trainer
    if name == "load_generator":
        from .checkpoint import load_generator
        return load_generator
    if name in ("translate", "load_translator"):   # pix2pix / CycleGAN deployment
        from . import translator
        return getattr(translator, name)
    if name == "TranslationConfig":
        from .tasks.translation import TranslationConfig
        return TranslationConfig
    raise AttributeError(f"module 'fastgan' has no attribute {name!r}")
