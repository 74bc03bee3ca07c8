"""Tiny translation data and configs shared by the translation tests (CPU runs of seconds)."""

import numpy as np
import torch
from PIL import Image

from fastgan.tasks import TranslationConfig


def image_folders(root, n: int = 8, size: int = 16, grey_a: bool = True, seed: int = 0):
    """``root/A`` and ``root/B``: n random image pairs with matching names (A grey unless told)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        rgb = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        for dom, img in (("A", Image.fromarray(rgb).convert("L") if grey_a else Image.fromarray(255 - rgb)),
                         ("B", Image.fromarray(rgb))):
            (root / dom).mkdir(parents=True, exist_ok=True)
            img.save(root / dom / f"img{i}.png")
    return str(root / "A"), str(root / "B")


def tiny_config(tmp_path, task: str, **kw) -> TranslationConfig:
    """A config of tiny networks on tiny folders: a step takes milliseconds."""
    a, b = image_folders(tmp_path / "data", grey_a=task == "pix2pix")
    base = dict(task=task, out=str(tmp_path / "run"), data=a, data_b=b, resolution=16, g_width=4, d_width=4,
                g_blocks=1, batch_size=2, steps=4, log_every=2, sample_every=0, ckpt_every=2, holdout=0.25,
                pool_size=3 if task == "cyclegan" else None, progress=False, device="cpu")
    base.update(kw)
    return TranslationConfig(**base)


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
