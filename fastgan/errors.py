"""Exceptions fastgan raises for bad input.

Every error a user can cause (a wrong flag, a missing folder, a corrupt
checkpoint) is raised as a subclass of :class:`FastGANError` with a one-line
message that names what is wrong. The CLI prints that line and exits with
status 2 instead of a traceback.
"""

import errno


class FastGANError(Exception):
    """Base class of every error fastgan raises for bad input."""


class ConfigError(FastGANError, ValueError):
    """A configuration value is invalid (unknown loss, negative steps, ...)."""


class DataError(FastGANError, ValueError):
    """A dataset cannot be loaded (unknown name, empty folder, corrupt images, ...)."""


class CheckpointError(FastGANError, RuntimeError):
    """A checkpoint is unreadable, not a fastgan checkpoint, or from an incompatible config."""


class TrainingError(FastGANError, RuntimeError):
    """Training cannot go on (e.g. the losses became NaN); the last checkpoint is kept."""


class StorageError(FastGANError, OSError):
    """A file or folder cannot be written or read (no space, permissions, read-only file system)."""


_OS_HINTS = {
    errno.ENOSPC: "free some space and rerun",
    errno.EDQUOT: "free some space (disk quota) and rerun",
    errno.EROFS: "the file system is read-only: choose a writable location",
    errno.EACCES: "fix its permissions or choose another location",
    errno.EPERM: "fix its permissions or choose another location",
    errno.ENOTDIR: "a part of that path is a file, not a folder: choose another location",
    errno.EISDIR: "that path is a folder: name a file",
    errno.EEXIST: "a file of that name is in the way: choose another location",
    errno.ENAMETOOLONG: "choose a shorter path",
}


def storage_error(exc: OSError, doing: str, path=None) -> StorageError:
    """One-line :class:`StorageError` for an ``OSError``: what failed, where, why, and what to do.

    Args:
        exc: the operating system's error.
        doing: what was being done, e.g. ``"write checkpoint step_00000008 in"``.
        path: the file or folder to name (default: the one the error names).
    """
    where = path if path is not None else (exc.filename if exc.filename is not None else "?")
    reason = exc.strerror or type(exc).__name__
    hint = _OS_HINTS.get(exc.errno, "check that location")
    return StorageError(f"could not {doing} '{where}': {reason}; {hint}")
