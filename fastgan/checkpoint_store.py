"""How checkpoint folders reach the disk, survive a kill at any moment, and are recovered.

Folders under ``RUN/checkpoints/``:

==============================  ============================================================
``step_XXXXXXXX/``              committed checkpoints (the only names readers list)
``.tmp-step_XXXXXXXX-PID/``     a checkpoint being written (complete once it holds a manifest)
``.old-step_XXXXXXXX-PID/``     a committed checkpoint moved aside while its step is re-saved
``.del-NAME/``                  a folder being deleted (renamed first, so never half a checkpoint)
``damaged-step_XXXXXXXX/``      a committed checkpoint found damaged at start-up, kept to inspect
==============================  ============================================================

:func:`commit` writes every file into the ``.tmp`` folder (each fsynced), then
``manifest.json`` (names, sizes, SHA-256) last: a folder with a valid manifest
is complete, whatever its name. The folder is then renamed into place and the
parent fsynced. Re-saving a step that is already committed moves the old copy
to ``.old-...`` first; between the two renames both copies are complete, and
:func:`latest` and :func:`recover` find them (the swap is not skipped for equal
content: safetensors writes its metadata in no fixed order, so two saves of
one state rarely match byte for byte). Deleting renames a folder to ``.del-...`` before
removing files, so a kill never leaves a half-deleted folder under a name that
looks like a checkpoint. At every step boundary the protocol calls
:func:`_fault_point`, where the fault-injection tests kill the process.

:func:`recover` (run at start-up by the process that holds the run folder's
lock) promotes the newest complete staging copy of any step that has no
committed folder, and removes everything incomplete or redundant.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Optional

from .errors import storage_error
from .files import fsync_dir

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "fastgan-checkpoint-manifest-1"
FAULT_ENV = "FASTGAN_FAULT_KILL_AT"   # tests: SIGKILL this process at the k-th protocol step
_COMMITTED_RE = re.compile(r"^step_(?P<step>\d{8,})$")
_STAGING_RE = re.compile(r"^\.(?P<kind>tmp|old)-step_(?P<step>\d{8,})-\d+$")
_STAGING_RANK = {"tmp": 0, "old": 1}   # the newer copy first: a .tmp was written after the .old it replaces

_fault_count = 0
fault_trace: Optional[list[str]] = None   # tests set a list here to record the steps a save passes


def _fault_point(label: str) -> None:
    """A step boundary of the protocol; with ``FASTGAN_FAULT_KILL_AT=k`` the k-th one kills this process."""
    global _fault_count
    _fault_count += 1
    if fault_trace is not None:
        fault_trace.append(label)
    if os.environ.get(FAULT_ENV) == str(_fault_count):
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


def step_name(step: int) -> str:
    """Folder name of the committed checkpoint of ``step`` (``step_XXXXXXXX``).

    Args:
        step: training step.
    """
    return f"step_{int(step):08d}"


def step_of(folder: os.PathLike | str) -> int:
    """The step a checkpoint folder holds, from its name (committed or staging).

    Args:
        folder: e.g. ``RUN/checkpoints/step_00000008`` or ``.tmp-step_00000008-41``.
    """
    name = Path(folder).name
    m = _COMMITTED_RE.match(name) or _STAGING_RE.match(name)
    if m is None:
        raise ValueError(f"'{name}' is not a checkpoint folder name")
    return int(m.group("step"))


def _write_file(path: Path, data: bytes) -> None:
    """Write ``data`` in two halves (a kill between them leaves a torn file, as a real crash can), fsync."""
    half = len(data) // 2
    with open(path, "wb") as f:
        f.write(data[:half])
        f.flush()
        _fault_point(f"half-wrote {path.name}")
        f.write(data[half:])
        f.flush()
        _fault_point(f"wrote {path.name}")
        os.fsync(f.fileno())
    _fault_point(f"fsynced {path.name}")


def _rename(src: Path, dst: Path, label: str) -> None:
    os.rename(src, dst)
    _fault_point(label)


def _remove(path: Path) -> None:
    """Delete a folder: rename it to ``.del-...`` (atomic), then remove its files one by one."""
    if not path.exists():
        return
    if not path.name.startswith(".del-"):
        trash = path.with_name(f".del-{path.name}")
        if trash.exists():
            _remove(trash)
        _rename(path, trash, f"renamed {path.name} to be deleted")
        path = trash
    for child in sorted(path.iterdir()):
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
        _fault_point(f"deleted {path.name}/{child.name}")
    path.rmdir()
    _fault_point(f"removed {path.name}")


def read_manifest(folder: os.PathLike | str) -> Optional[dict]:
    """The parsed manifest of a checkpoint folder, or ``None`` when absent or unreadable.

    Args:
        folder: a checkpoint folder (committed or staging).
    """
    try:
        m = json.loads((Path(folder) / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(m, dict) and m.get("format") == MANIFEST_FORMAT and isinstance(m.get("files"), dict)
    return m if ok else None


def _has_manifested_files(folder: Path, manifest: Optional[dict]) -> bool:
    """Cheap completeness: a manifest and every file it lists at its listed size."""
    if manifest is None:
        return False
    try:
        return all((folder / name).stat().st_size == int(info["bytes"]) for name, info in manifest["files"].items())
    except (OSError, KeyError, TypeError, ValueError):
        return False


def verify(folder: os.PathLike | str, required: tuple[str, ...] = ()) -> Optional[str]:
    """Check a checkpoint folder's files against its manifest (sizes and SHA-256).

    Folders written before manifests existed pass when the ``required`` files are present.

    Args:
        folder: a checkpoint folder.
        required: file names every checkpoint holds.

    Returns:
        ``None`` when intact, else a short reason (e.g. ``"state.pt: checksum mismatch"``).
    """
    p = Path(folder)
    manifest = read_manifest(p)
    if manifest is None:
        if (p / MANIFEST_FILE).exists():
            return f"{MANIFEST_FILE}: unreadable"
        missing = [n for n in required if not (p / n).is_file()]
        return f"{missing[0]}: missing" if missing else None
    for name in required:
        if name not in manifest["files"]:
            return f"{name}: not in {MANIFEST_FILE}"
    for name, info in manifest["files"].items():
        f = p / name
        try:
            data = f.read_bytes()
        except OSError as e:
            return f"{name}: {e.strerror or 'unreadable'}"
        if len(data) != info.get("bytes"):
            return f"{name}: {len(data)} bytes, expected {info.get('bytes')}"
        if hashlib.sha256(data).hexdigest() != info.get("sha256"):
            return f"{name}: checksum mismatch"
    return None


def committed(root: os.PathLike | str) -> list[tuple[int, Path]]:
    """Committed checkpoint folders ``(step, path)`` under ``root``, oldest first.

    Args:
        root: the ``checkpoints`` folder of a run.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group("step")), p) for p in root.iterdir() if (m := _COMMITTED_RE.match(p.name)) and p.is_dir()]
    return sorted(found)


def _staging(root: Path) -> list[tuple[int, int, Path]]:
    """Staging folders ``(step, rank, path)``: rank 0 for ``.tmp``, 1 for ``.old``."""
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = _STAGING_RE.match(p.name)
        if m and p.is_dir():
            out.append((int(m.group("step")), _STAGING_RANK[m.group("kind")], p))
    return sorted(out)


def _complete_staging(root: Path, required: tuple[str, ...]) -> dict[int, Path]:
    """For each step, its best complete staging copy (a ``.tmp`` before an ``.old``).

    A ``.tmp`` counts only with its manifest; an ``.old`` (a committed folder
    moved aside) also counts without one, as folders written before manifests did.
    """
    best: dict[int, Path] = {}
    for step, rank, p in _staging(root):
        if step in best:
            continue
        manifest = read_manifest(p)
        if _has_manifested_files(p, manifest) or (
                rank == _STAGING_RANK["old"] and manifest is None and not (p / MANIFEST_FILE).exists()
                and all((p / n).is_file() for n in required)):
            best[step] = p
    return best


def candidates(root: os.PathLike | str, required: tuple[str, ...] = ()) -> list[tuple[int, Path]]:
    """Every checkpoint a reader may load, newest last: committed folders, plus the
    complete staging copy of any step an interrupted save left uncommitted.

    Reading never renames anything, so several processes may call this at once.

    Args:
        root: the ``checkpoints`` folder of a run.
        required: file names every checkpoint holds.
    """
    root = Path(root)
    found = dict(committed(root))
    for step, p in _complete_staging(root, required).items():
        found.setdefault(step, p)
    return sorted(found.items())


def latest(root: os.PathLike | str, required: tuple[str, ...] = ()) -> Optional[Path]:
    """The newest checkpoint a reader may load (see :func:`candidates`), or ``None``.

    Args:
        root: the ``checkpoints`` folder of a run.
        required: file names every checkpoint holds.
    """
    found = candidates(root, required)
    return found[-1][1] if found else None


def recover(root: os.PathLike | str, required: tuple[str, ...] = ()) -> list[str]:
    """Finish or undo whatever an interrupted save or deletion left behind.

    Only the process holding the run folder's lock may call this: it renames
    and deletes staging folders, which would destroy another live process's
    checkpoint in progress.

    Args:
        root: the ``checkpoints`` folder of a run.
        required: file names every checkpoint holds.

    Returns:
        One short line per checkpoint recovered (e.g. ``"step_00000006 from .tmp-step_00000006-41"``).
    """
    root = Path(root)
    if not root.is_dir():
        return []
    for p in root.iterdir():
        if p.name.startswith(".del-") and p.is_dir():
            _remove(p)
    done = {step for step, _ in committed(root)}
    promote = {s: p for s, p in _complete_staging(root, required).items() if s not in done}
    recovered = []
    for step, p in sorted(promote.items()):
        _rename(p, root / step_name(step), f"recovered {p.name}")
        recovered.append(f"{step_name(step)} from {p.name}")
    for _, _, p in _staging(root):
        _remove(p)
    if recovered:
        fsync_dir(root)
    return recovered


def commit(root: os.PathLike | str, step: int, files: dict[str, bytes], keep: int = 0) -> Path:
    """Write a checkpoint folder so that a kill at any moment loses no completed checkpoint.

    Args:
        root: the ``checkpoints`` folder of a run (created when missing).
        step: training step; the folder becomes ``step_XXXXXXXX``.
        files: file name -> content.
        keep: committed checkpoints to keep; older ones are deleted (0 keeps all).
            The one just written is always kept.

    Returns:
        The committed folder.

    Raises:
        StorageError: a write failed (no space, permissions, ...). The staging
            folder is removed and earlier checkpoints are untouched.
    """
    root = Path(root)
    final = root / step_name(step)
    tmp = root / f".tmp-{step_name(step)}-{os.getpid()}"
    manifest = {"format": MANIFEST_FORMAT, "step": int(step),
                "files": {n: {"bytes": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in files.items()}}
    try:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():  # left by an earlier process with our pid
            _remove(tmp)
        tmp.mkdir()
        _fault_point("made staging folder")
        for name, data in files.items():
            _write_file(tmp / name, data)
        _write_file(tmp / MANIFEST_FILE, (json.dumps(manifest, indent=1) + "\n").encode())
        fsync_dir(tmp)
        _fault_point("fsynced staging folder")
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)  # incomplete: nothing in it is worth keeping
        raise storage_error(e, f"write checkpoint {final.name} in", root) from None
    try:
        if not final.exists():
            _rename(tmp, final, f"committed {final.name}")
        else:
            old = root / f".old-{step_name(step)}-{os.getpid()}"
            if old.exists():
                _remove(old)
            _rename(final, old, f"moved {final.name} aside")
            _rename(tmp, final, f"committed {final.name}")
            fsync_dir(root)
            _fault_point("fsynced checkpoints folder")
            _remove(old)
        fsync_dir(root)
        _fault_point("fsynced checkpoints folder")
        prune(root, keep, protect=final)
    except OSError as e:
        raise storage_error(e, f"commit checkpoint {final.name} in", root) from None
    return final


def prune(root: os.PathLike | str, keep: int, protect: Optional[Path] = None) -> None:
    """Delete the oldest committed checkpoints beyond ``keep`` (each one whole or not at all).

    Args:
        root: the ``checkpoints`` folder of a run.
        keep: how many to keep (0 keeps all).
        protect: a folder never deleted (the checkpoint just written).
    """
    if keep <= 0:
        return
    others = [p for _, p in committed(root) if p != protect]
    spare = keep - (1 if protect is not None else 0)
    for p in others[:max(len(others) - spare, 0)]:
        _remove(p)
    fsync_dir(Path(root))


def set_aside(folder: os.PathLike | str) -> Optional[Path]:
    """Rename a damaged committed checkpoint to ``damaged-step_XXXXXXXX`` (a free name), out of the list.

    Args:
        folder: a committed checkpoint folder.

    Returns:
        Its new path, or ``None`` when ``folder`` is not a committed checkpoint.
    """
    p = Path(folder)
    if not _COMMITTED_RE.match(p.name) or not p.is_dir():
        return None
    dest, n = p.with_name(f"damaged-{p.name}"), 1
    while dest.exists():
        n += 1
        dest = p.with_name(f"damaged-{p.name}-{n}")
    os.rename(p, dest)
    fsync_dir(p.parent)
    return dest
