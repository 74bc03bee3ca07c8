"""InceptionV3 features with the FID-standard weights, from a file the user supplies.

The reference FID network is TensorFlow's 2015-12-05 Inception graph. NVIDIA
publishes a direct TorchScript translation of it (used by StyleGAN2-ADA and
clean-fid), which needs neither torchvision nor any architecture code here:
``torch.jit.load`` rebuilds it. fastgan never downloads anything; when the
file is absent the error says where to get it and where to put it.

The TorchScript model takes (N, 3, H, W) floats in [0, 255], resizes to 299
itself, and with ``return_features=True`` returns the (N, 2048) pool
features.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from ..errors import ConfigError
from .cache import cache_dir

INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_DIM = 2048


def inception_path() -> Path:
    """Where fastgan looks for the Inception file: ``$FASTGAN_INCEPTION``, else the cache folder."""
    explicit = os.environ.get("FASTGAN_INCEPTION")
    return Path(explicit).expanduser() if explicit else cache_dir() / INCEPTION_FILE


def inception_available(path: Union[str, os.PathLike, None] = None) -> bool:
    """True when the Inception file exists.

    Args:
        path: file to check (default :func:`inception_path`).
    """
    return Path(path or inception_path()).is_file()


class InceptionFeatures(nn.Module):
    """Callable feature extractor: (N, C, H, W) images in [-1, 1] -> (N, 2048) features.

    Args:
        path: the TorchScript file (default :func:`inception_path`).
        device: where to run it.
    """

    def __init__(self, path: Union[str, os.PathLike, None] = None, device="cpu"):
        super().__init__()
        p = Path(path) if path is not None else inception_path()
        if not p.is_file():
            raise ConfigError(
                f"Inception weights not found at '{p}': download {INCEPTION_URL} and save it there "
                "(or point FASTGAN_INCEPTION at the file)")
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated, but it is the format of this file
                warnings.simplefilter("ignore", DeprecationWarning)
                self.net = torch.jit.load(str(p), map_location=device).eval()
        except Exception as e:  # not TorchScript, truncated download, ...
            raise ConfigError(f"'{p}' is not a loadable TorchScript Inception file ({type(e).__name__}); "
                              f"download it again from {INCEPTION_URL}") from None
        self.device = torch.device(device)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, batch_size: int = 100) -> torch.Tensor:
        """Pool features of images in [-1, 1]; grey images are repeated to RGB.

        Args:
            x: (N, 1 or 3, H, W) float images in [-1, 1].
            batch_size: images per forward pass.
        """
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ConfigError(f"Inception features need (N, 1 or 3, H, W) images, got shape {tuple(x.shape)}")
        out = []
        for s in range(0, len(x), batch_size):
            b = x[s:s + batch_size].to(self.device, torch.float32)
            if b.shape[1] == 1:
                b = b.expand(-1, 3, -1, -1)
            b = ((b + 1) * 127.5).clamp(0, 255)
            out.append(self.net(b, return_features=True).reshape(len(b), -1).float().cpu())
        return torch.cat(out)


def load_inception(path: Union[str, os.PathLike, None] = None, device="cpu") -> Optional[InceptionFeatures]:
    """Build :class:`InceptionFeatures` (raises a one-line ConfigError when the file is missing).

    Args:
        path: the TorchScript file (default :func:`inception_path`).
        device: where to run it.
    """
    return InceptionFeatures(path, device)
