"""Decoding image files for training: any mode PIL opens, to 8 bits, with bounded memory.

:func:`read_image` turns one file into an (R, R, 1|3) uint8 array: decoded
(JPEGs at reduced size), refused beyond :data:`MAX_DECODED_PIXELS`, converted
by :func:`to_8bit`, centre-cropped in its own pixels and then resized, so no
intermediate image is larger than the decoded one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .errors import DataError

# Decoded pixels allowed per image (8192 x 8192): a decoded RGBA image is then at most 256 MiB, times
# the loader's worker threads (JPEGs decode at reduced size first, so large photos stay far below it).
MAX_DECODED_PIXELS = 1 << 26
ALPHA_BACKGROUND = 255           # transparent pixels are composited onto white


def read_image(path: Path, resolution: int, box: Optional[tuple[int, int, int, int]] = None
               ) -> tuple[Optional[np.ndarray], Optional[str]]:
    """Decode, centre-crop to a square, resize (LANCZOS): (R, R, 1|3) uint8 or (None, why).

    Args:
        path: the image file.
        resolution: side of the square result.
        box: (left, upper, right, lower) in the displayed image's pixels: only that region is
            used (one half of a side-by-side image pair); ``None``: the whole image.

    Cropping comes first, in the source's pixels, so no intermediate image is
    larger than the decoded one (a 1 x 300,000 strip is never enlarged to
    64 x 19,200,000); the decoded size is bounded by :data:`MAX_DECODED_PIXELS`.
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            if box is None:   # a box is in full-size pixels: no reduced-size decoding then
                im.draft(None, (2 * resolution, 2 * resolution))   # JPEG: decode at reduced size
            check_decoded_size(im.size)
            im = to_8bit(ImageOps.exif_transpose(im))
            x0, y0, x1, y1 = box or (0, 0, *im.size)
            w, h = x1 - x0, y1 - y0
            s = min(w, h)
            left, top = x0 + (w - s) // 2, y0 + (h - s) // 2
            im = im.resize((resolution, resolution), Image.Resampling.LANCZOS,
                           box=(left, top, left + s, top + s), reducing_gap=3.0)
            arr = np.asarray(im, dtype=np.uint8)
    except Image.DecompressionBombError:
        return None, f"larger than the limit of {MAX_DECODED_PIXELS:,} decoded pixels"
    except Exception as e:   # any decoding failure: the file is skipped and counted
        return None, f"{type(e).__name__}: {e}"
    return (arr[..., None] if arr.ndim == 2 else arr), None


def check_decoded_size(size: tuple[int, int]) -> None:
    """Raise :class:`DataError` when an image of ``size`` (width, height) exceeds :data:`MAX_DECODED_PIXELS`.

    Args:
        size: width and height in pixels.
    """
    w, h = size
    if w * h > MAX_DECODED_PIXELS:
        raise DataError(f"image of {w} x {h} = {w * h:,} pixels, over the limit of {MAX_DECODED_PIXELS:,} decoded "
                         "pixels per image (fastgan.decode.MAX_DECODED_PIXELS)")


def to_8bit(im):
    """Convert a PIL image of any mode to 8-bit ``L`` (grey) or ``RGB``, keeping its look.

    - 16-bit grey (``I;16*``) is scaled by 255 / 65535, not clipped; 32-bit
      ``I`` likewise when its values fit 16 bits (as they kept when 8 bits),
      else stretched from its minimum..maximum; float ``F`` is read as [0, 1]
      or [0, 255] when it fits, else stretched likewise.
    - Transparency (``LA``, ``RGBA``, premultiplied ``La``/``RGBa``, ``PA``, a
      palette with a transparent entry) is composited onto white, as a viewer
      shows it on a page.
    - Palette, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV`` and ``1`` go through PIL's
      own conversions.

    Args:
        im: a PIL image.

    Raises:
        DataError: a float image with NaN or infinite values.
    """
    from PIL import Image

    mode = im.mode
    if mode in ("L", "RGB"):
        return im
    if mode == "1":
        return im.convert("L")
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_grey_to_uint8(np.asarray(im), mode), mode="L")
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("PA", "RGBa"):
        im = im.convert("RGBA")
    elif mode == "La":
        im = im.convert("LA")
    if im.mode in ("LA", "RGBA"):
        base = im.mode[:-1]
        page = Image.new(base, im.size, (ALPHA_BACKGROUND,) * len(base))
        page.paste(im.convert(base), mask=im.getchannel("A"))
        return page
    return im if im.mode in ("L", "RGB") else im.convert("RGB")


def _grey_to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    """A high-bit-depth grey array (``I;16*``, ``I``, ``F``) as uint8, scaled as :func:`to_8bit` says."""
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise DataError(f"the {mode} image holds NaN or infinite values")
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if mode.startswith("I;16") or (mode == "I" and lo >= 0 and 255 < hi <= 65535):
        a = a * (255.0 / 65535.0)
    elif mode == "F" and lo >= 0 and hi <= 1:
        a = a * 255.0
    elif (lo < 0 or hi > 255) and hi > lo:
        a = (a - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)
