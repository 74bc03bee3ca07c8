"""Where fastgan keeps files it builds once per machine (the digits classifier)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The fastgan cache folder (not created here).

    ``$FASTGAN_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/fastgan``, else
    ``~/.cache/fastgan``.
    """
    explicit = os.environ.get("FASTGAN_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "fastgan"
