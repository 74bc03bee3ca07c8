"""Writing files so that a reader never sees half of one: the one atomic-write helper, and folder fsync."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import BinaryIO, Callable, Union

Content = Union[bytes, str, Callable[[BinaryIO], None]]


def atomic_write(path: Union[str, os.PathLike], content: Content) -> Path:
    """Write a file through a temporary sibling, fsync it and rename it into place.

    A crash at any moment leaves either the old file or the new one, never a
    torn one; the temporary file is removed when writing fails.

    Args:
        path: the file to write (its folder must exist).
        content: bytes, text (written as UTF-8), or a function that writes
            into the binary file object it is given.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    # unique per writer, so two threads or processes never share a temporary file
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "xb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def fsync_dir(path: Union[str, os.PathLike]) -> None:
    """Flush a folder's entries to disk, so a rename or a new file in it survives a power loss.

    Args:
        path: the folder.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
