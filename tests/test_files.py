import os

import pytest

from fastgan.files import atomic_write


def test_atomic_write_bytes_text_and_writer(tmp_path):
    p = tmp_path / "f.bin"
    atomic_write(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    atomic_write(p, "héllo")
    assert p.read_text(encoding="utf-8") == "héllo"
    atomic_write(p, lambda f: f.write(b"abc"))
    assert p.read_bytes() == b"abc"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    p = tmp_path / "f.txt"
    atomic_write(p, "old")

    def dies(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(p, dies)
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_the_file_mode_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644
