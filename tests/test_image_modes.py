"""Image decoding: every PIL mode to 8 bits without clipping or lost alpha, and bounded memory."""

import resource
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from fastgan import decode
from fastgan.data import load_data
from fastgan.decode import to_8bit
from fastgan.errors import DataError


def png_bytes(arr: np.ndarray, color_type: int, bit_depth: int = 16) -> bytes:
    """A PNG written by hand (PIL cannot write 16-bit colour PNGs): color_type 0 grey, 2 RGB."""
    h, w = arr.shape[:2]
    dtype = ">u2" if bit_depth == 16 else "u1"
    raw = b"".join(b"\x00" + arr[i].astype(dtype).tobytes() for i in range(h))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_16_bit_grey_ramp_keeps_its_levels(tmp_path):
    ramp = (np.arange(256, dtype=np.uint32).reshape(16, 16) * 257).astype(np.uint16)   # 0 .. 65535
    (tmp_path / "ramp.png").write_bytes(png_bytes(ramp, 0))
    assert Image.open(tmp_path / "ramp.png").mode == "I;16"
    d = load_data(tmp_path, resolution=16)
    assert d.channels == 1
    assert torch.equal(d.images[0, 0], torch.arange(256, dtype=torch.uint8).reshape(16, 16))


def test_16_bit_rgb_png(tmp_path):
    px = np.zeros((16, 16, 3), dtype=np.uint16)
    px[..., 0], px[..., 1], px[..., 2] = 65535, 32896, 0          # 255, 128, 0 in 8 bits
    (tmp_path / "rgb16.png").write_bytes(png_bytes(px, 2))
    d = load_data(tmp_path, resolution=16)
    assert d.images[0, :, 8, 8].tolist() == [255, 128, 0]


@pytest.mark.parametrize("mode, values, expect", [
    ("I;16", np.array([[0, 65535], [257, 32896]]), [[0, 255], [1, 128]]),
    ("I;16B", np.array([[0, 65535], [257, 32896]]), [[0, 255], [1, 128]]),        # big-endian (TIFF)
    ("I", np.array([[0, 65535], [257, 32896]]), [[0, 255], [1, 128]]),          # 16-bit content in 32 bits
    ("I", np.array([[0, 255], [1, 128]]), [[0, 255], [1, 128]]),                # 8-bit content
    ("I", np.array([[-1000, 1000], [0, 500]]), [[0, 255], [128, 191]]),         # other ranges: stretched
    ("F", np.array([[0.0, 1.0], [0.5, 0.25]]), [[0, 255], [128, 64]]),           # [0, 1] floats
    ("F", np.array([[0.0, 255.0], [128.0, 7.0]]), [[0, 255], [128, 7]]),         # [0, 255] floats
    ("F", np.array([[-2.0, 2.0], [0.0, 1.0]]), [[0, 255], [128, 191]]),
])
def test_high_bit_depth_grey_modes(mode, values, expect):
    dtype = {"I;16": "<u2", "I;16B": ">u2", "I": np.int32, "F": np.float32}[mode]
    im = Image.fromarray(values.astype(dtype), mode=mode) if not mode.startswith("I;16") else \
        Image.frombytes(mode, (2, 2), values.astype(dtype).tobytes())
    assert im.mode == mode
    out = to_8bit(im)
    assert out.mode == "L" and np.asarray(out).tolist() == expect


def test_non_finite_float_image_is_refused():
    with pytest.raises(DataError, match="NaN or infinite"):
        to_8bit(Image.fromarray(np.array([[0.0, np.nan]], dtype=np.float32), mode="F"))


@pytest.mark.parametrize("mode, colour, expect", [
    ("RGBA", (255, 0, 0, 0), (255, 255, 255)),          # fully transparent: the white page
    ("RGBA", (255, 0, 0, 255), (255, 0, 0)),
    ("RGBX", (255, 0, 0, 0), (255, 0, 0)),              # padding byte, not alpha
    ("RGBA", (0, 0, 255, 128), (127, 127, 255)),         # half transparent blue over white
    ("LA", (0, 128), (127,)),
    ("La", (0, 128), (127,)),                            # premultiplied
    ("RGBa", (0, 0, 128, 128), (127, 127, 255)),
    ("PA", (0, 0), (255, 255, 255)),                     # palette entry 0 fully transparent
    ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
    ("YCbCr", (76, 85, 255), (254, 0, 0)),
    ("HSV", (85, 255, 255), (0, 255, 0)),
    ("LAB", (255, 128, 128), (254, 255, 254)),
    ("1", 1, (255,)),
])
def test_colour_and_alpha_modes(mode, colour, expect):
    im = Image.new(mode, (4, 4), colour)
    out = to_8bit(im)
    assert out.mode == ("L" if len(expect) == 1 else "RGB")
    got = out.getpixel((1, 1))
    assert tuple(got if isinstance(got, tuple) else (got,)) == expect


def test_palette_with_a_transparent_entry_and_without(tmp_path):
    pal = Image.new("P", (16, 16), 1)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.save(tmp_path / "opaque.png")
    pal.save(tmp_path / "clear.png", transparency=1)
    d = load_data(tmp_path, resolution=16)
    assert d.images[:, :, 8, 8].tolist() == [[255, 255, 255], [10, 200, 30]]   # clear.png, opaque.png


def test_cmyk_jpeg_and_alpha_png_from_a_folder(tmp_path):
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(tmp_path / "a.jpg")
    Image.new("RGBA", (32, 32), (0, 0, 255, 0)).save(tmp_path / "b.png")
    d = load_data(tmp_path, resolution=16)
    red, white = d.images[0, :, 8, 8].tolist(), d.images[1, :, 8, 8].tolist()
    assert red[0] > 240 and red[1] < 15 and red[2] < 15
    assert white == [255, 255, 255]


def test_pil_items_of_a_dataset_use_the_same_conversion():
    ramp = Image.frombytes("I;16", (16, 16), (np.arange(256, dtype="<u2") * 257).tobytes())

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return ramp
    d = load_data(Items(), resolution=16)
    assert torch.equal(d.images[0, 0], torch.arange(256, dtype=torch.uint8).reshape(16, 16))


def test_a_long_strip_is_never_enlarged_whole(tmp_path):
    """A 1 x 300,000 PNG (under 1 KB) once made the loader allocate gigabytes: the short side was
    enlarged to the resolution before cropping. Cropping first keeps memory at the decoded size."""
    Image.new("L", (300_000, 1), 200).save(tmp_path / "strip.png")
    assert (tmp_path / "strip.png").stat().st_size < 2000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss   # KiB on Linux
    d = load_data(tmp_path, resolution=64)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert d.images.shape == (1, 1, 64, 64) and int(d.images.float().mean().round()) == 200
    assert grown_mib < 100, f"peak memory grew by {grown_mib:.0f} MiB"


def test_images_over_the_decoded_pixel_limit_are_skipped_naming_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(decode, "MAX_DECODED_PIXELS", 1000)
    Image.new("RGB", (20, 20), (1, 2, 3)).save(tmp_path / "small.png")
    Image.new("RGB", (100, 40), (1, 2, 3)).save(tmp_path / "big.png")
    with pytest.warns(UserWarning, match=r"skipped 1 of 2 .*100 x 40 = 4,000 pixels, over the limit of 1,000"):
        d = load_data(tmp_path, resolution=16)
    assert len(d) == 1
    (tmp_path / "small.png").unlink()
    with pytest.raises(DataError, match=r"over the limit of 1,000 decoded pixels"):
        load_data(tmp_path, resolution=16)


def test_decompression_bomb_is_skipped_naming_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)   # PIL refuses twice this at open
    Image.new("L", (20, 20)).save(tmp_path / "a.png")
    with pytest.raises(DataError, match=r"larger than the limit of [\d,]+ decoded pixels"):
        load_data(tmp_path, resolution=16)
