"""Training configuration.

One flat dataclass, :class:`TrainConfig`, so that every CLI flag of
``fastgan train`` maps 1:1 onto a field of the same name. Fields whose best
value depends on the data (latent size, widths, resolution) default to
``None`` and are resolved by :meth:`TrainConfig.resolved` once the dataset is
known; the resolved config is what a run folder and every checkpoint store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from .errors import ConfigError

LOSSES = ("ns", "lsgan", "hinge", "wgan")
MODES = ("eager", "compile", "graph", "fast")
AMPS = ("none", "bf16", "fp16")
RESOLUTIONS = (16, 32, 64, 128)
AUGMENTS = ("color", "translation", "cutout", "flip", "rot90", "scale", "shift", "rotate")
BUILTIN_DATASETS = ("digits", "digits_vectors", "stacked_digits", "grid25", "ring8")
POINT_DATASETS = ("grid25", "ring8")

DIGITS_UPSCALES = ("block", "bicubic")
# The built-in digits' own defaults over the image ones: R1 (so D has no batch norm), a 10x learning rate
# with StyleGAN's betas, and 5,000 steps (docs/quality.md has the runs behind each).
DIGITS_DEFAULTS = dict(steps=5000, lr_g=2e-3, beta1=0.0, beta2=0.99, r1_gamma=1.0, r1_every=16)
# A saved config that lacks a field (written before the field existed) gets the value that reproduces
# what that run did, so continuing it keeps training on the same data.
_LEGACY_VALUES = {"digits": {"digits_upscale": "bicubic"}}

# Fields that fix the shapes of the networks and their optimiser state, or the
# training images: a checkpoint can only be resumed by a config that agrees on all of them.
ARCH_FIELDS = (
    "data", "resolution", "z_dim", "g_width", "d_width", "g_depth", "d_depth",
    "conditional", "vector_conditional", "class_norm", "spectral_norm", "pack", "mbstd", "ema_decay", "loss",
    "digits_upscale",
)


def with_legacy_values(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved config with the values older code used for the fields it lacks.

    A run of the built-in ``digits`` saved before ``digits_upscale`` existed
    trained on the plain bicubic images, so it gets ``digits_upscale="bicubic"``.

    Args:
        saved: a saved config (``config.json`` or a checkpoint's, as a dict);
            a missing ``data`` is the default ``digits``.
    """
    data = saved.get("data", "digits")
    return {**(_LEGACY_VALUES.get(data, {}) if isinstance(data, str) else {}), **saved}


def _field(default: Any, help: str) -> Any:
    """A config field whose help text is the CLI's ``--help`` and the class docstring's ``Args:`` line."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything a training run needs; every field has a default.

    A field whose default is ``None`` is resolved per data kind (images or
    2-D points) by :meth:`resolved`.
    """

    data: str = _field("digits", "built-in dataset name (``digits``, ``digits_vectors``, ``stacked_digits``, "
                       "``grid25``, ``ring8``), a path to a folder of PNG/JPEG images, or an .npz file holding "
                       "``images`` (and ``labels`` and/or ``vectors``).")
    out: str = _field("runs/fastgan", "run folder; rerunning on an existing run resumes it.")
    steps: Optional[int] = _field(None, "number of generator updates to train for (in total, across resumes); "
                                  "``None``: 2,000 for images, 5,000 for the built-in ``digits``, 6,000 for "
                                  "2-D data.")
    batch_size: Optional[int] = _field(None, "images (or points) per batch for both D and G: the global "
                                       "batch (under torchrun each of N processes trains batch_size / N); "
                                       "``None``: 64 for images, 512 for 2-D data.")
    seed: int = _field(0, "seed of every random draw (init, data order, noise, augmentation).")
    resolution: Optional[int] = _field(None, "image side in pixels (16, 32, 64 or 128); ``None`` picks 16 for "
                                       "the built-in digits and 64 for folders. Ignored for 2-D data.")
    digits_upscale: Optional[str] = _field(None, "how the built-in ``digits`` reach ``resolution`` from 8x8: "
                                           "``block`` (bicubic, each block shifted to keep its pixel's mean, "
                                           "so an image averaged back to 8x8 is the real digit) or ``bicubic`` "
                                           "(plain, as runs saved before this field); ``None``: ``block``.")
    z_dim: Optional[int] = _field(None, "latent size; ``None`` picks 100 for images, 2 for 2-D data.")
    g_width: Optional[int] = _field(None, "generator width (channels of its last hidden layer, or hidden units "
                                    "of the MLP); ``None`` picks a default per data kind.")
    d_width: Optional[int] = _field(None, "discriminator width, as ``g_width``.")
    g_depth: int = _field(3, "hidden layers of the MLP generator (2-D data only).")
    d_depth: int = _field(3, "hidden layers of the MLP discriminator (2-D data only).")
    loss: Optional[str] = _field(None, "``ns`` (non-saturating logistic / BCE), ``lsgan`` (least squares), "
                                 "``hinge`` or ``wgan`` (Wasserstein; use with ``gp_weight``); ``None``: ``hinge`` "
                                 "for conditional image models (classes or vectors), ``ns`` otherwise.")
    gp_weight: float = _field(0.0, "WGAN gradient-penalty weight (0 = off).")
    r1_gamma: Optional[float] = _field(None, "R1 penalty weight on real data (0 = off; on, D has no batch norm); "
                                       "``None``: 0 for images, 1 for the built-in ``digits``, 0.03 for 2-D data.")
    r1_every: Optional[int] = _field(None, "apply R1 lazily every this many steps (scaled accordingly); "
                                     "``None``: 16 for images, 4 for 2-D data.")
    lr_g: Optional[float] = _field(None, "generator Adam learning rate; ``None``: 2e-4 for images (DCGAN), "
                                   "2e-3 for the built-in ``digits`` and 2-D data.")
    lr_d: Optional[float] = _field(None, "discriminator Adam learning rate; ``None``: as ``lr_g``.")
    lr_decay: Optional[float] = _field(None, "fraction of the run, at its end, over which both learning rates "
                                       "fall linearly to ``lr_decay_to`` times their value (0 = constant "
                                       "learning rates); ``None``: 0 for images, 0.5 for 2-D data.")
    lr_decay_to: float = _field(0.1, "learning-rate factor reached at the last step when ``lr_decay > 0``.")
    beta1: Optional[float] = _field(None, "Adam beta1 for both optimisers; ``None``: 0.5 for images (DCGAN), "
                                    "0 for the built-in ``digits`` and 2-D data.")
    beta2: Optional[float] = _field(None, "Adam beta2 for both optimisers; ``None``: 0.999 for images, 0.99 "
                                    "for the built-in ``digits`` and 2-D data.")
    n_critic: int = _field(1, "discriminator updates per generator update.")
    ema_decay: Optional[float] = _field(None, "decay of the generator's exponential moving average (0 = no "
                                        "EMA); ``None``: 0.999 for images, 0.99 for 2-D data.")
    augment: str = _field("", "comma-separated differentiable augmentations applied to real and fake images "
                          "before D: color, translation, cutout, flip, rot90, scale, shift, rotate (empty = none; "
                          "fastgan.augment describes each).")
    augment_p: float = _field(1.0, "probability of applying each augmentation to each image (with "
                              "``ada_target > 0`` it is adaptive instead and starts at 0).")
    ada_target: float = _field(0.0, "adaptive augmentation (ADA, Karras et al. 2020): the probability of "
                               "the ``augment`` policy follows D's overfitting signal E[sign(D(real))] "
                               "towards this target (0.6 in the paper); 0 = off (fixed ``augment_p``).")
    ada_interval: int = _field(4, "steps between updates of the adaptive probability.")
    ada_kimg: float = _field(20.0, "thousands of real images over which the adaptive probability can move "
                             "from 0 to 1 (docs/applications.md).")
    conditional: bool = _field(False, "class-conditional G and D (needs a labelled dataset).")
    class_norm: Optional[bool] = _field(None, "class-conditional images: the label drives G's batch norms "
                                        "(conditional batch norm) instead of being concatenated to z; ``None``: "
                                        "on (concatenated, the label dominated G's first batch norm and G "
                                        "ignored its noise within a class: docs/applications.md).")
    vector_conditional: bool = _field(False, "G and D conditioned on each image's vector (needs data with "
                                      "vectors: an .npz holding ``images`` and ``vectors``, or "
                                      "``digits_vectors``).")
    spectral_norm: Optional[bool] = _field(None, "spectral normalisation in D (replaces its batch norm); "
                                           "``None``: on for conditional image models, off otherwise.")
    pack: int = _field(1, "PacGAN packing degree: D judges this many samples at once.")
    mbstd: bool = _field(False, "minibatch standard-deviation feature in D.")
    log_every: int = _field(50, "steps between metric log lines (one host sync each).")
    sample_every: int = _field(500, "steps between sample grids (0 = only at the end).")
    ckpt_every: int = _field(1000, "steps between checkpoints (0 = only at the end).")
    keep_ckpts: int = _field(2, "how many checkpoints to keep in the run folder.")
    eval_every: int = _field(0, "steps between metric evaluations during training (0 = off).")
    eval_metrics: str = _field("", "comma-separated metrics for ``eval_every``.")
    device: str = _field("auto", "``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.")
    mode: str = _field("eager", "``eager``, ``compile``, ``graph`` (whole step in a CUDA graph; needs CUDA) "
                       "or ``fast`` (graph + bf16 + channels_last on a GPU, eager fp32 on a CPU).")
    amp: str = _field("none", "mixed precision: ``none``, ``bf16`` or ``fp16`` (with a scaler; needs CUDA); "
                      "``bf16`` on a GPU needs compute capability >= 8.0.")
    channels_last: bool = _field(False, "use the channels_last memory format for images.")
    kernels: str = _field("auto", "fused-kernel implementation for the models' ops: ``auto``, ``triton`` or "
                          "``ref``.")
    progress: bool = _field(True, "show a progress bar.")
    tensorboard: bool = _field(False, "also write losses, evaluation results and sample grids as TensorBoard "
                               "event files in ``RUN/tensorboard/`` (needs ``pip install 'fastgan[tensorboard]'``).")
    sync_bn: bool = _field(False, "under torchrun, batch-norm statistics over the whole global batch (every "
                           "process's share) instead of each process's own share; plain PyTorch ops in training.")
    dist_backend: str = _field("auto", "process-group backend under torchrun: ``auto`` (nccl on GPUs, gloo on "
                               "CPUs), ``nccl`` or ``gloo``.")

    # ------------------------------------------------------------------ checks
    def validate(self) -> "TrainConfig":
        """Raise :class:`ConfigError` naming the first invalid value; return self."""
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)

        self._check_types()
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in _POSITIVE_INTS:
                need(isinstance(v, int) and not isinstance(v, bool) and v > 0,
                     f"{f.name} must be a positive integer, got {v!r}")
            if f.name in _NONNEG_INTS:
                need(isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                     f"{f.name} must be a non-negative integer, got {v!r}")
            if f.name in _OPTIONAL_POSITIVE_INTS and v is not None:
                need(isinstance(v, int) and not isinstance(v, bool) and v > 0,
                     f"{f.name} must be a positive integer, got {v!r}")
            if f.name in _NONNEG_FLOATS and v is not None:
                need(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 and v == v,
                     f"{f.name} must be a non-negative number, got {v!r}")
        need(self.loss is None or self.loss in LOSSES, f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        need(self.mode in MODES, f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        need(self.amp in AMPS, f"unknown amp {self.amp!r}; choose one of {', '.join(AMPS)}")
        need(self.dist_backend in ("auto", "nccl", "gloo"),
             f"unknown dist_backend {self.dist_backend!r}; choose one of auto, nccl, gloo")
        need(self.kernels in ("auto", "triton", "ref"),
             f"unknown kernels {self.kernels!r}; choose one of auto, triton, ref")
        need(self.resolution is None or self.resolution in RESOLUTIONS,
             f"resolution {self.resolution} is not supported; choose one of "
             f"{', '.join(map(str, RESOLUTIONS))}")
        need(self.digits_upscale is None or self.digits_upscale in DIGITS_UPSCALES,
             f"unknown digits_upscale {self.digits_upscale!r}; choose one of {', '.join(DIGITS_UPSCALES)}")
        need(self.ema_decay is None or 0.0 <= self.ema_decay < 1.0,
             f"ema_decay must be in [0, 1), got {self.ema_decay}")
        need(0.0 <= self.augment_p <= 1.0, f"augment_p must be in [0, 1], got {self.augment_p}")
        need(0.0 <= self.ada_target < 1.0, f"ada_target must be in [0, 1) (0 = off), got {self.ada_target}")
        need(self.ada_kimg > 0, f"ada_kimg must be positive, got {self.ada_kimg}")
        need(not (self.conditional and self.vector_conditional),
             "conditional and vector_conditional exclude each other: condition on classes or on vectors")
        need(self.ada_target == 0 or self.augment_list(),
             "ada_target adapts the probability of the augment policy: give augmentations too "
             "(e.g. --augment translation,cutout,color)")
        for name in ("beta1", "beta2"):
            v = getattr(self, name)
            need(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v < 1.0),
                 f"{name} must be in [0, 1), got {v!r}")
        need(self.lr_decay is None or (isinstance(self.lr_decay, (int, float)) and 0.0 <= self.lr_decay <= 1.0),
             f"lr_decay must be a fraction of the run in [0, 1], got {self.lr_decay!r}")
        need(isinstance(self.lr_decay_to, (int, float)) and 0.0 <= self.lr_decay_to <= 1.0,
             f"lr_decay_to must be in [0, 1], got {self.lr_decay_to!r}")
        for name in ("lr_g", "lr_d"):
            v = getattr(self, name)
            need(v is None or v > 0, f"{name} must be positive, got {v}")
        for name in self.augment_list():
            need(name in AUGMENTS, f"unknown augmentation {name!r}; choose from {', '.join(AUGMENTS)}")
        need(self.batch_size is None or self.batch_size % self.pack == 0,
             f"batch_size ({self.batch_size}) must be a multiple of pack ({self.pack})")
        need(isinstance(self.data, str) and self.data.strip() != "", "data must name a dataset or a folder")
        need(isinstance(self.out, str) and self.out.strip() != "", "out must name a run folder")
        need(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
             f"unknown device {self.device!r}; use auto, cpu, cuda or cuda:N")
        return self

    def _check_types(self) -> None:
        """Refuse a value of the wrong type (from JSON or Python) before any range check reads it.

        ``"progress": "no"`` is a string, not false; ``augment: ["flip"]`` a list, not a string.
        """
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            v, hint = getattr(self, f.name), hints[f.name]
            optional = typing.get_origin(hint) is typing.Union
            base = typing.get_args(hint)[0] if optional else hint
            if v is None and optional:
                continue
            if base is bool:
                ok, want = isinstance(v, bool), "true or false"
            elif base is int:
                ok, want = isinstance(v, int) and not isinstance(v, bool), "an integer"
            elif base is float:
                ok, want = isinstance(v, (int, float)) and not isinstance(v, bool), "a number"
            else:
                ok, want = isinstance(v, str), "a string"
            if not ok:
                hint_text = " (comma-separated names, e.g. 'flip,translation')" if f.name in _LIST_STRINGS else ""
                raise ConfigError(f"{f.name} must be {want}{' or null' if optional else ''}{hint_text}, "
                                  f"got {type(v).__name__} {v!r:.60}")

    # ------------------------------------------------------------------ helpers
    def augment_list(self) -> list[str]:
        """The augmentation policy as a list of names (empty when off)."""
        return [a.strip() for a in self.augment.split(",") if a.strip()]

    def is_points(self) -> bool:
        """True for the built-in 2-D mixture datasets."""
        return self.data in POINT_DATASETS

    def resolved(self, *, points: Optional[bool] = None) -> "TrainConfig":
        """A copy with every ``None`` replaced by its concrete default.

        Args:
            points: whether the data are 2-D points (default: from ``data``).
        """
        points = self.is_points() if points is None else points
        c = dataclasses.replace(self)
        # the 2-D defaults are what bench/quality.py found best; docs/defaults.md has the runs
        auto = (dict(steps=6000, batch_size=512, lr_g=2e-3, lr_decay=0.5, beta1=0.0, beta2=0.99, r1_gamma=0.03,
                     r1_every=4, ema_decay=0.99) if points
                else dict(steps=2000, batch_size=64, lr_g=2e-4, lr_decay=0.0, beta1=0.5, beta2=0.999, r1_gamma=0.0,
                          r1_every=16, ema_decay=0.999))
        if not points and c.data == "digits":
            auto.update(DIGITS_DEFAULTS)
        for k, v in auto.items():
            if getattr(c, k) is None:
                setattr(c, k, v)
        if c.lr_d is None:
            c.lr_d = c.lr_g
        # conditional images: a spectral-norm D with the hinge loss, as for projection discriminators (Miyato &
        # Koyama 2018); with a batch-norm D a G conditioned through its norms did not learn the class
        # (docs/applications.md)
        conditional_images = not points and (c.conditional or c.vector_conditional)
        if c.loss is None:
            c.loss = "hinge" if conditional_images else "ns"
        if c.spectral_norm is None:
            c.spectral_norm = conditional_images
        if c.class_norm is None:
            c.class_norm = bool(c.conditional) and not points
        if points:
            c.z_dim = c.z_dim or 2
            c.g_width = c.g_width or 128
            c.d_width = c.d_width or 96
        else:
            builtin = c.data in BUILTIN_DATASETS
            # 16 px for the built-in 8x8 digits keeps the CPU demo short (docs/defaults.md)
            c.resolution = c.resolution or (16 if builtin else 64)
            if c.data == "digits":
                c.digits_upscale = c.digits_upscale or DIGITS_UPSCALES[0]
            c.z_dim = c.z_dim or 100
            c.g_width = c.g_width or (32 if builtin else 64)
            c.d_width = c.d_width or (32 if builtin else 64)
        return c.validate()

    def lr_factor(self, step: int, steps: Optional[int] = None) -> float:
        """Learning-rate multiplier for iteration ``step`` (0-based).

        1 until the last ``lr_decay`` fraction of the run, then linear down to
        ``lr_decay_to`` at its last iteration, and ``lr_decay_to`` beyond it.

        Args:
            step: the iteration about to run.
            steps: length of the run the schedule spans (default: ``self.steps``).
        """
        steps = self.steps if steps is None else steps
        if not self.lr_decay or not steps:
            return 1.0
        start = steps * (1.0 - self.lr_decay)
        if step < start:
            return 1.0
        t = min((step - start) / max(steps - 1 - start, 1.0), 1.0)
        return 1.0 - (1.0 - self.lr_decay_to) * t

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build a config from a dict (a saved one), rejecting unknown keys with a clear error.

        A field missing from a saved config of the built-in ``digits`` takes the
        value that reproduces what older code did (``digits_upscale="bicubic"``).

        Args:
            d: field: value pairs (``config.json`` as a dict).
        """
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a JSON object of field: value pairs, got a {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        d = with_legacy_values(d)
        if "class_norm" not in d and d.get("loss") is not None:
            d = {**d, "class_norm": False}   # a resolved config written before class_norm existed concatenated the label
        return cls(**d)

    def arch_hash(self) -> str:
        """Short hash of :data:`ARCH_FIELDS` (network shapes and training images)."""
        blob = json.dumps({k: getattr(self, k) for k in ARCH_FIELDS}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def config_hash(self) -> str:
        """Short hash of the whole config, minus fields that do not change results."""
        d = self.to_dict()
        for k in ("out", "progress", "device", "tensorboard", "dist_backend"):
            d.pop(k, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def incompatible_with(self, other: "TrainConfig") -> list[str]:
        """Names of the architecture fields on which two configs disagree.

        Besides :data:`ARCH_FIELDS`, turning a gradient penalty (``gp_weight``
        or ``r1_gamma``) on or off changes D (it then has no batch norm), and
        turning ADA (``ada_target``) on or off changes the training state.
        """
        diff = [k for k in ARCH_FIELDS if getattr(self, k) != getattr(other, k)]
        if self._penalised() != other._penalised():
            diff += [k for k in ("gp_weight", "r1_gamma") if getattr(self, k) != getattr(other, k)]
        if (self.ada_target > 0) != (other.ada_target > 0):  # its probability and signal are training state
            diff.append("ada_target")
        return diff

    def _penalised(self) -> bool:
        return (self.gp_weight or 0) > 0 or (self.r1_gamma or 0) > 0


_POSITIVE_INTS = {"g_depth", "d_depth", "n_critic", "pack", "log_every", "keep_ckpts", "ada_interval"}
_NONNEG_INTS = {"seed", "sample_every", "ckpt_every", "eval_every"}
_LIST_STRINGS = {"augment", "eval_metrics"}   # lists written as one comma-separated string
_OPTIONAL_POSITIVE_INTS = {"resolution", "z_dim", "g_width", "d_width", "steps", "batch_size", "r1_every"}
_NONNEG_FLOATS = {"gp_weight", "r1_gamma", "lr_g", "lr_d", "ema_decay", "augment_p", "ada_target", "ada_kimg"}


def _document_fields(cls: type) -> None:
    """Append an ``Args:`` section, one entry per field from its help metadata, to the class docstring."""
    import textwrap

    lines = ["", "    Args:"]
    for f in fields(cls):
        if not f.metadata.get("help"):
            raise TypeError(f"{cls.__name__}.{f.name} has no help text")
        lines += textwrap.wrap(f"{f.name}: {f.metadata['help']}", 100, initial_indent=" " * 8,
                               subsequent_indent=" " * 12)
    cls.__doc__ = (cls.__doc__ or "").rstrip() + "\n" + "\n".join(lines) + "\n"


_document_fields(TrainConfig)
