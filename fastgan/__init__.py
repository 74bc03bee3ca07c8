"""fastgan: a GAN training engine for PyTorch, built for speed on GPUs.

Public entry points::

    import fastgan
    cfg = fastgan.TrainConfig(data="digits", out="runs/digits")
    trainer = fastgan.Trainer(cfg)
    trainer.fit()
    x = trainer.sample(16)
    G = fastgan.load_generator("runs/digits")

Heavy modules (the trainer, export, benchmark) are imported lazily so that
``import fastgan`` stays light.
"""

from .config import TrainConfig
from .errors import CheckpointError, ConfigError, DataError, FastGANError, TrainingError

__version__ = "0.1.0"

__all__ = [
    "TrainConfig", "Trainer", "load_generator", "FastGANError", "ConfigError",
    "DataError", "CheckpointError", "TrainingError", "__version__",
]


def __getattr__(name):  # PEP 562: lazy access to the trainer
    if name in ("Trainer", "load_generator"):
        from . import train
        return getattr(train, name)
    raise AttributeError(f"module 'fastgan' has no attribute {name!r}")
