"""Atomic, resumable checkpoints.

A checkpoint is a folder ``RUN/checkpoints/step_XXXXXXXX/`` holding

- ``models.safetensors``: the weights and buffers of the task's networks,
  keys prefixed with each network's name (``G.``, ``D.``, ``G_ema.`` for
  noise-to-image), with metadata (fastgan version, step, the resolved config,
  generator class and constructor kwargs);
- ``state.pt``: optimiser states, random-generator states, step counter and
  loss buffer, read back with ``torch.load(weights_only=True)``, so loading a
  checkpoint never executes pickled code.

Saving and start-up recovery follow the protocol of
:mod:`fastgan.checkpoint_store`: a kill at any moment leaves every completed
checkpoint readable, a run resumes from its newest intact checkpoint (falling
back past damaged ones, with a warning naming them).
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from . import checkpoint_store as store
from .errors import CheckpointError

CKPT_DIR = "checkpoints"
MODELS_FILE = "models.safetensors"
STATE_FILE = "state.pt"
FORMAT = "fastgan-checkpoint-1"
REQUIRED_FILES = (MODELS_FILE, STATE_FILE)


def _module_tensors(prefix: str, module: Optional[torch.nn.Module]) -> dict[str, torch.Tensor]:
    if module is None:
        return {}
    return {f"{prefix}.{k}": v.detach().to("cpu", copy=True).contiguous()
            for k, v in module.state_dict().items()}


def checkpoint_dirs(run_dir: os.PathLike | str) -> list[Path]:
    """Committed checkpoint folders of a run, oldest first.

    Args:
        run_dir: the run folder.
    """
    return [p for _, p in store.committed(Path(run_dir) / CKPT_DIR)]


def latest_checkpoint(run_dir: os.PathLike | str) -> Optional[Path]:
    """The newest complete checkpoint folder of a run, or ``None``.

    Usually a committed ``step_XXXXXXXX`` folder; when an interrupted save left
    the newest complete copy in a staging folder, that folder (see
    :func:`fastgan.checkpoint_store.candidates`). Renames nothing.

    Args:
        run_dir: the run folder.
    """
    return store.latest(Path(run_dir) / CKPT_DIR, REQUIRED_FILES)


def has_resumable_checkpoint(run_dir: os.PathLike | str) -> bool:
    """True when ``run_dir`` holds a checkpoint a trainer would continue from.

    Args:
        run_dir: the run folder.
    """
    return latest_checkpoint(run_dir) is not None


def save_checkpoint(run_dir: os.PathLike | str, step: int, *, networks: Mapping[str, Optional[torch.nn.Module]],
                    state: dict[str, Any], metadata: dict[str, str], keep: int = 2) -> Path:
    """Write a checkpoint (see :func:`fastgan.checkpoint_store.commit`) and prune old ones.

    Args:
        run_dir: the run folder.
        step: training step the checkpoint holds (its folder name).
        networks: the networks by name (``None``: absent); their tensors are stored as ``name.key``.
        state: optimiser/RNG/step state; tensors, numbers, strings, lists and dicts only.
        metadata: string metadata stored in the safetensors header.
        keep: how many checkpoints to keep (the oldest beyond it are deleted; 0 keeps all).

    Returns:
        The folder of the new checkpoint.

    Raises:
        StorageError: the checkpoint could not be written (e.g. no space left);
            the earlier checkpoints are untouched.
    """
    from safetensors.torch import save as safetensors_bytes

    tensors = {k: v for name, net in networks.items() for k, v in _module_tensors(name, net).items()}
    meta = {"format": FORMAT, "step": str(step), **metadata}
    buf = io.BytesIO()
    torch.save(state, buf)
    files = {MODELS_FILE: safetensors_bytes(tensors, metadata=meta), STATE_FILE: buf.getvalue()}
    return store.commit(Path(run_dir) / CKPT_DIR, step, files, keep=max(int(keep), 0))


def clean_stale_temporaries(run_dir: os.PathLike | str) -> list[str]:
    """Recover what interrupted saves left (see :func:`fastgan.checkpoint_store.recover`).

    Complete staging copies become committed checkpoints; incomplete or
    redundant ones are deleted. Call it only while holding the run folder's lock.

    Args:
        run_dir: the run folder.

    Returns:
        One line per recovered checkpoint.
    """
    return store.recover(Path(run_dir) / CKPT_DIR, REQUIRED_FILES)


def _damage(ckpt: Path) -> Optional[str]:
    """Why a checkpoint folder cannot be resumed from, or ``None`` when it is intact."""
    reason = store.verify(ckpt, REQUIRED_FILES)
    if reason is None and store.read_manifest(ckpt) is None:  # written before manifests: read it whole
        try:
            read_models(ckpt)
            read_state(ckpt)
        except CheckpointError as e:
            return str(e)
    return reason


# A reader lists the checkpoints again when one vanished while it was checked: a trainer writing the same
# folder pruned or replaced it meanwhile (each retry means the writer committed a newer one).
_RELIST_TRIES = 5


def _first_intact(root: Path) -> tuple[Optional[Path], list[tuple[Path, str]], bool]:
    """The newest intact candidate under ``root``, the damaged newer ones with reasons, and whether a
    candidate vanished while it was being checked (then the list is stale: the caller lists again)."""
    skipped: list[tuple[Path, str]] = []
    for _, ckpt in reversed(store.candidates(root, REQUIRED_FILES)):
        reason = _damage(ckpt)
        if reason is None:
            return ckpt, skipped, False
        if not ckpt.is_dir():
            return None, skipped, True
        skipped.append((ckpt, reason))
    return None, skipped, False


def select_checkpoint(run_dir: os.PathLike | str, *, set_aside: bool = False) -> Optional[Path]:
    """The newest intact checkpoint of a run, falling back past damaged ones.

    When newer checkpoints are damaged (a checksum mismatch, a missing or
    unreadable file), one warning names each skipped folder and why. When
    every checkpoint is damaged, nothing is resumed silently: a
    :class:`CheckpointError` names them.

    Args:
        run_dir: the run folder.
        set_aside: rename damaged committed folders to ``damaged-step_XXXXXXXX``
            (kept for inspection, no longer listed); only while holding the lock.

    Returns:
        The checkpoint folder to resume from, or ``None`` when the run has none.
    """
    for _ in range(_RELIST_TRIES):
        chosen, skipped, vanished = _first_intact(Path(run_dir) / CKPT_DIR)
        if not vanished:
            break
    else:
        raise CheckpointError(f"the checkpoints in '{Path(run_dir) / CKPT_DIR}' kept changing while being read "
                              "(a trainer is writing them): try again")
    if chosen is None and skipped:
        listed = "; ".join(f"{p.name} ({why})" for p, why in skipped)
        raise CheckpointError(f"no intact checkpoint in '{Path(run_dir) / CKPT_DIR}': {listed}; "
                              "move that folder away to start the run over")
    if skipped:
        moved = [q for p, _ in skipped if set_aside and (q := store.set_aside(p)) is not None]
        listed = "; ".join(f"{p.name} ({why})" for p, why in skipped)
        kept = f", kept as {', '.join(q.name for q in moved)}" if moved else ""
        warnings.warn(f"skipped damaged checkpoint(s) {listed}{kept}; using {chosen.name}", stacklevel=2)
    return chosen


def read_models(path: os.PathLike | str) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, str]]:
    """Read a checkpoint's weights, split per network, and its metadata.

    Args:
        path: a checkpoint folder or its ``models.safetensors`` file.

    Returns:
        ``({"G": state_dict, "D": ..., "G_ema": ...}, metadata)``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    p = Path(path)
    f = p / MODELS_FILE if p.is_dir() else p
    if not f.is_file():
        raise CheckpointError(f"no checkpoint weights at '{f}'")
    try:
        with safe_open(str(f), framework="pt") as h:
            meta = dict(h.metadata() or {})
        flat = load_file(str(f))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"'{f}' is not a readable fastgan checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else 'unreadable'})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"'{f}' is a safetensors file but not a fastgan checkpoint "
                              f"(format {meta.get('format')!r}, expected {FORMAT!r})")
    nets: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in flat.items():
        net, _, key = k.partition(".")
        nets.setdefault(net, {})[key] = v
    return nets, meta


def read_state(ckpt_dir: os.PathLike | str) -> dict[str, Any]:
    """Read a checkpoint's training state with ``torch.load(weights_only=True)``.

    Args:
        ckpt_dir: a checkpoint folder.
    """
    f = Path(ckpt_dir) / STATE_FILE
    if not f.is_file():
        raise CheckpointError(f"checkpoint '{ckpt_dir}' has no {STATE_FILE}")
    try:
        state = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a file that is not a checkpoint
        raise CheckpointError(f"'{f}' is not a readable fastgan training state ({type(e).__name__})") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"'{f}' is not a fastgan training state (no step counter)")
    return state


def read_run_config(run_dir: os.PathLike | str) -> Optional[dict[str, Any]]:
    """The ``config.json`` of a run folder as a dict, or ``None`` when absent."""
    f = Path(run_dir) / "config.json"
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"'{f}' is not valid JSON ({e.msg if hasattr(e, 'msg') else e})") from None


def load_module_weights(module: torch.nn.Module, weights: dict[str, torch.Tensor], what: str) -> None:
    """Load a state dict into a module, turning shape mismatches into one-line errors.

    Args:
        module: destination network.
        weights: its state dict from a checkpoint.
        what: name used in error messages (``generator``, ``discriminator``, ...).
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {what} does not match this config: "
                              f"{len(missing)} missing and {len(unexpected)} unexpected tensors "
                              f"(e.g. {(missing or unexpected)[0]!r})")
    for k, v in own.items():
        if tuple(v.shape) != tuple(weights[k].shape):
            raise CheckpointError(f"checkpoint {what} does not match this config: {k!r} has shape "
                                  f"{tuple(weights[k].shape)}, expected {tuple(v.shape)}")
    module.load_state_dict(weights)


def load_generator(run: os.PathLike | str, device: str | torch.device = "cpu", ema: bool = True) -> torch.nn.Module:
    """Load a trained generator from a run folder or a checkpoint folder.

    Args:
        run: a run folder (its latest checkpoint is used) or one checkpoint folder.
        device: where to put the network.
        ema: use the EMA weights when the run kept them.

    Returns:
        The generator, in eval mode, with ``z_dim``, ``out_shape``, ``num_classes`` and
        ``class_names`` attributes (``fastgan_checkpoint``: the checkpoint folder read).
    """
    from .models import generator_from_arch  # the networks pull in the kernels: only when a generator is wanted

    p = Path(run)
    if not p.exists():
        raise CheckpointError(f"no run or checkpoint at '{p}'")
    if (p / MODELS_FILE).exists() or p.is_file():
        ckpt = p
        nets, meta = read_models(ckpt)
    else:
        ckpt, nets, meta = _read_newest_models(p)
    if "generator_class" not in meta:
        raise CheckpointError(f"'{ckpt}' holds a user-supplied generator: rebuild it yourself and load "
                              "its weights with fastgan.checkpoint.read_models")
    try:
        arch = json.loads(meta["generator_arch"])
    except (KeyError, json.JSONDecodeError):
        raise CheckpointError(f"'{ckpt}' has unreadable generator metadata") from None
    G = generator_from_arch(meta["generator_class"], arch)
    key = "G_ema" if ema and "G_ema" in nets else "G"
    load_module_weights(G, nets[key], "generator")
    G.fastgan_metadata = dict(meta)  # config hash etc., for exports
    G.fastgan_checkpoint = str(ckpt)  # where the weights came from (dataset manifests name it)
    G.class_names = _class_names(meta, int(getattr(G, "num_classes", 0) or 0))
    return G.to(device).eval().requires_grad_(False)


def _read_newest_models(run: Path) -> tuple[Path, dict[str, dict[str, torch.Tensor]], dict[str, str]]:
    """The newest intact checkpoint of a run and its weights; chosen again when a trainer writing the
    run pruned or replaced it between the check and the read."""
    for attempt in range(_RELIST_TRIES):
        ckpt = select_checkpoint(run)   # the newest intact one: a damaged newer one is skipped with a warning
        if ckpt is None:
            raise CheckpointError(f"'{run}' holds no checkpoint (train first: fastgan train --out {run})")
        try:
            return (ckpt, *read_models(ckpt))
        except CheckpointError:
            if ckpt.is_dir() or attempt == _RELIST_TRIES - 1:
                raise


def _class_names(meta: dict[str, str], num_classes: int) -> list[str]:
    """The class names a checkpoint stores (zero-padded indices for older checkpoints); empty when unconditional."""
    from .sampling import default_class_names

    if not num_classes:
        return []
    try:
        names = json.loads(meta.get("class_names", "null"))
    except json.JSONDecodeError:
        names = None
    if isinstance(names, list) and len(names) == num_classes and all(isinstance(n, str) for n in names):
        return names
    return default_class_names(num_classes)
