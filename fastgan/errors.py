"""Exceptions fastgan raises for bad input.

Every error a user can cause (a wrong flag, a missing folder, a corrupt
checkpoint) is raised as a subclass of :class:`FastGANError` with a one-line
message that names what is wrong. The CLI prints that line and exits with
status 2 instead of a traceback.
"""


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
