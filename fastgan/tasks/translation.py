"""What pix2pix and CycleGAN share: their config, data, optimisers, sample figures, metrics and metadata.

:class:`TranslationConfig` is one flat dataclass for both tasks (``task``
picks one), carrying the loop's fields, so ``fastgan train --task pix2pix``
flags map 1:1 onto its fields. :class:`TranslationTask` is the
:class:`~fastgan.tasks.Task` base of :class:`~fastgan.tasks.Pix2Pix` and
:class:`~fastgan.tasks.CycleGAN`: each subclass builds its networks and
writes its capturable step; everything else is here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..config import AMPS, LOSSES, MODES, TrainConfig, _document_fields, _field
from ..errors import ConfigError
from ..images import save_image_grid
from ..models.patchgan import min_patch_input
from ..stats import RunningStats
from ..translation_data import PAIRED_DEMOS, UNPAIRED_DEMOS, TranslationData, load_translation_data, to_float
from .base import Task

TASKS = ("pix2pix", "cyclegan")
# The built-in demos train on a CPU in minutes (docs/translation.md: CycleGAN's two ResNets are narrower);
# folders get the papers' settings. pix2pix's demo is the one whose output the input leaves open (colours from
# edges), where its adversarial term pays; on edges2digits an L1-only U-Net does better (docs/translation.md).
DEFAULT_DEMOS = {"pix2pix": "edges2photo", "cyclegan": "digits2bold"}
DEMO_DEFAULTS = {"pix2pix": dict(steps=1500, resolution=32, g_width=32, d_width=32, batch_size=8, holdout=0.2),
                 "cyclegan": dict(steps=1000, resolution=32, g_width=16, d_width=16, g_blocks=4, batch_size=4,
                                  holdout=0.2)}
FOLDER_DEFAULTS = dict(steps=2000, resolution=256, g_width=64, d_width=64, batch_size=1, holdout=0.1)
GRID_EXAMPLES = 8           # examples in a sample figure (held-out ones when there are enough)
EVAL_BATCH = 64             # images per forward pass when evaluating or translating

# Fields that fix network shapes and the task's saved state: a checkpoint resumes only under a config that agrees.
ARCH_FIELDS = ("task", "data", "data_b", "resolution", "g_width", "d_width", "g_blocks", "d_layers", "dropout",
               "pool_size", "loss")


@dataclass
class TranslationConfig:
    """Everything an image-to-image translation run needs; every field has a default.

    A field whose default is ``None`` is resolved by :meth:`resolved` from the
    task (pix2pix / cyclegan) and the data (a built-in demo or folders).
    """

    task: str = _field("pix2pix", "``pix2pix`` (paired: U-Net G, PatchGAN D on input + output, adversarial + "
                       "L1) or ``cyclegan`` (unpaired: two ResNet Gs, two PatchGAN Ds, LSGAN + cycle + identity).")
    data: Optional[str] = _field(None, "built-in demo (paired: ``edges2digits``, ``edges2photo``, ``grey2colour``; "
                                 "unpaired: ``digits2bold``, ``china2flower``), the domain A folder, or a folder of "
                                 "side-by-side A|B pairs; ``None``: the task's demo (edges2photo, digits2bold).")
    data_b: str = _field("", "the domain B folder (pix2pix: the same file names as in data); empty for demos and "
                         "side-by-side pairs.")
    out: str = _field("runs/translation", "run folder; rerunning on an existing run resumes it.")
    steps: Optional[int] = _field(None, "training iterations (in total, across resumes); ``None``: 1,000 for the "
                                  "demos, 2,000 for folders.")
    batch_size: Optional[int] = _field(None, "images per domain per step; ``None``: 8 (pix2pix) or 4 (cyclegan) for "
                                       "the demos, 1 for folders (the papers' setting).")
    seed: int = _field(0, "seed of every random draw (init, data order, flips, dropout, history buffer).")
    resolution: Optional[int] = _field(None, "training image side in pixels (a multiple of the networks' "
                                       "down-sampling); ``None``: 32 for the demos, 256 for folders.")
    g_width: Optional[int] = _field(None, "generator width (ngf); ``None``: 32 (pix2pix) or 16 (cyclegan) for the "
                                    "demos, 64 for folders.")
    d_width: Optional[int] = _field(None, "discriminator width (ndf); ``None``: as g_width's default.")
    g_blocks: Optional[int] = _field(None, "residual blocks of the CycleGAN generators; ``None``: 4 for the demos, "
                                     "9 from 256 px, else 6.")
    d_layers: Optional[int] = _field(None, "strided layers of the PatchGAN discriminator (3: 70x70 patches); "
                                     "``None``: 3, fewer for tiny images.")
    loss: Optional[str] = _field(None, "adversarial loss (``ns``, ``lsgan``, ``hinge``); ``None``: ``ns`` for "
                                 "pix2pix, ``lsgan`` for cyclegan (the papers').")
    lambda_l1: float = _field(100.0, "pix2pix: weight of the L1 loss to the target.")
    lambda_cycle: float = _field(10.0, "cyclegan: weight of each cycle-consistency L1 loss.")
    lambda_identity: float = _field(0.5, "cyclegan: identity-loss weight, as a fraction of lambda_cycle (0 = off).")
    pool_size: Optional[int] = _field(None, "cyclegan: generated images kept in each history buffer that D "
                                      "also sees (0 = off); ``None``: 50 for cyclegan, 0 for pix2pix.")
    dropout: float = _field(0.5, "pix2pix: dropout probability in the U-Net decoder (its noise).")
    flip: bool = _field(True, "random horizontal flips of the training images (a pair flips together).")
    holdout: Optional[float] = _field(None, "fraction of the data held out for evaluation; ``None``: 0.2 for "
                                      "the demos, 0.1 for folders.")
    lr_g: float = _field(2e-4, "generator Adam learning rate.")
    lr_d: float = _field(2e-4, "discriminator Adam learning rate.")
    beta1: float = _field(0.5, "Adam beta1.")
    beta2: float = _field(0.999, "Adam beta2.")
    lr_decay: float = _field(0.0, "fraction of the run, at its end, over which the learning rates fall linearly "
                             "to ``lr_decay_to`` times their value (the papers: 0.5 to 0).")
    lr_decay_to: float = _field(0.0, "learning-rate factor reached at the last step when ``lr_decay > 0``.")
    log_every: int = _field(50, "steps between metric log lines (one host sync each).")
    sample_every: int = _field(500, "steps between sample figures (0 = only at the end).")
    ckpt_every: int = _field(1000, "steps between checkpoints (0 = only at the end).")
    keep_ckpts: int = _field(2, "how many checkpoints to keep in the run folder.")
    eval_every: int = _field(0, "steps between evaluations on the held-out images (0 = only at the end).")
    device: str = _field("auto", "``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.")
    mode: str = _field("eager", "``eager``, ``compile``, ``graph`` (whole step in a CUDA graph; needs CUDA) or "
                       "``fast``.")
    amp: str = _field("none", "mixed precision: ``none``, ``bf16`` or ``fp16`` (needs CUDA).")
    channels_last: bool = _field(False, "use the channels_last memory format for images.")
    kernels: str = _field("auto", "fused-kernel implementation: ``auto``, ``triton`` or ``ref``.")
    progress: bool = _field(True, "show a progress bar.")
    tensorboard: bool = _field(False, "also write losses, metrics and sample figures as TensorBoard events in "
                               "RUN/tensorboard/ (needs the tensorboard package).")

    # ------------------------------------------------------------------ checks
    def validate(self) -> "TranslationConfig":
        """Raise :class:`ConfigError` naming the first invalid value; return self."""
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)

        TrainConfig._check_types(self)   # the same type rules as TrainConfig's, from Python and JSON
        for name in ("steps", "batch_size", "resolution", "g_width", "d_width", "d_layers"):
            v = getattr(self, name)
            need(v is None or (isinstance(v, int) and not isinstance(v, bool) and v > 0),
                 f"{name} must be a positive integer, got {v!r}")
        for name in ("seed", "log_every", "keep_ckpts", "sample_every", "ckpt_every", "eval_every"):
            v = getattr(self, name)
            low = 1 if name in ("log_every", "keep_ckpts") else 0
            need(isinstance(v, int) and not isinstance(v, bool) and v >= low,
                 f"{name} must be an integer >= {low}, got {v!r}")
        for name in ("g_blocks", "pool_size"):
            v = getattr(self, name)
            need(v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0),
                 f"{name} must be a non-negative integer, got {v!r}")
        for name in ("lambda_l1", "lambda_cycle", "lambda_identity", "lr_g", "lr_d"):
            v = getattr(self, name)
            need(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 and v == v,
                 f"{name} must be a non-negative number, got {v!r}")
        need(self.lr_g > 0 and self.lr_d > 0, "lr_g and lr_d must be positive")
        need(self.task in TASKS, f"unknown task {self.task!r}; choose pix2pix or cyclegan")
        need(self.loss is None or self.loss in LOSSES and self.loss != "wgan",
             f"unknown loss {self.loss!r}; choose ns, lsgan or hinge")
        need(self.mode in MODES, f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        need(self.amp in AMPS, f"unknown amp {self.amp!r}; choose one of {', '.join(AMPS)}")
        need(self.kernels in ("auto", "triton", "ref"), f"unknown kernels {self.kernels!r}; choose auto, triton, ref")
        need(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        need(self.holdout is None or 0.0 <= self.holdout < 1.0, f"holdout must be in [0, 1), got {self.holdout}")
        for name in ("beta1", "beta2", "lr_decay", "lr_decay_to"):
            v = getattr(self, name)
            need(isinstance(v, (int, float)) and 0.0 <= v <= 1.0 and not (name.startswith("beta") and v == 1.0),
                 f"{name} must be in [0, 1], got {v!r}")
        need(self.data is None or (isinstance(self.data, str) and self.data.strip() != ""),
             "data must name a built-in demo or a folder")
        need(isinstance(self.out, str) and self.out.strip() != "", "out must name a run folder")
        need(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
             f"unknown device {self.device!r}; use auto, cpu, cuda or cuda:N")
        if self.task == "pix2pix":
            need(not self.pool_size, "pool_size (the history buffer) is CycleGAN's; pix2pix uses none")
        return self

    def is_demo(self) -> bool:
        """True for a built-in demo (resolved ``data``)."""
        return (self.data or self.default_demo()) in PAIRED_DEMOS + UNPAIRED_DEMOS

    def default_demo(self) -> str:
        """The built-in demo of the task."""
        return DEFAULT_DEMOS["pix2pix" if self.task == "pix2pix" else "cyclegan"]

    def resolved(self) -> "TranslationConfig":
        """A copy with every ``None`` replaced by its concrete value, checked."""
        c = dataclasses.replace(self).validate()
        c.data = c.data or c.default_demo()
        for k, v in (DEMO_DEFAULTS[c.task] if c.is_demo() else FOLDER_DEFAULTS).items():
            if getattr(c, k) is None:
                setattr(c, k, v)
        c.g_blocks = (9 if c.resolution >= 256 else 6) if c.g_blocks is None else c.g_blocks
        if c.d_layers is None:   # 3 (70x70 patches) unless the image is too small for its instance norms
            c.d_layers = next((n for n in (3, 2, 1) if min_patch_input(n) <= c.resolution), 1)
        c.loss = c.loss or ("ns" if c.task == "pix2pix" else "lsgan")
        c.pool_size = (50 if c.task == "cyclegan" else 0) if c.pool_size is None else c.pool_size
        return c.validate()

    # ------------------------------------------------------------------ what the loop uses
    def lr_factor(self, step: int, steps: Optional[int] = None) -> float:
        """Learning-rate multiplier for iteration ``step``: the schedule of :meth:`TrainConfig.lr_factor`.

        Args:
            step: the iteration about to run.
            steps: length of the run the schedule spans (default: ``self.steps``).
        """
        return TrainConfig.lr_factor(self, step, steps)   # reads steps, lr_decay and lr_decay_to only

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TranslationConfig":
        """Build a config from a dict, rejecting unknown keys with a clear error.

        Args:
            d: a dict as :meth:`to_dict` writes it.
        """
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a JSON object of field: value pairs, got a {type(d).__name__}")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        return cls(**d)

    def config_hash(self) -> str:
        """Short hash of the whole config, minus fields that do not change results."""
        d = self.to_dict()
        for k in ("out", "progress", "device"):
            d.pop(k, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def incompatible_with(self, other: "TranslationConfig") -> list[str]:
        """Names of the fields fixing networks and saved state on which two configs disagree.

        Args:
            other: the config a checkpoint was written with.
        """
        return [k for k in ARCH_FIELDS if getattr(self, k) != getattr(other, k)]


_document_fields(TranslationConfig)


def is_translation_config(d: dict[str, Any]) -> bool:
    """True when a saved run config (``config.json``) is a translation run's.

    Args:
        d: the config dict.
    """
    return isinstance(d, dict) and d.get("task") in TASKS   # anything else: the noise-to-image path reports it


# ---------------------------------------------------------------------------- the shared task
class TranslationTask(Task):
    """Shared parts of the translation tasks; subclasses build networks in :meth:`build` and write the step.

    Args:
        cfg: the config (resolved here).
        engine: the engine that runs the steps.
        data: optional :class:`~fastgan.translation_data.TranslationData` instead of ``cfg.data``.
    """

    task_name = ""
    paired = True
    data_parallel = False   # its networks are not wrapped for gradient averaging nor its draws sharded
    stat_names: tuple[str, ...] = ()

    def __init__(self, cfg: TranslationConfig, engine, *, data: Optional[TranslationData] = None) -> None:
        if not isinstance(cfg, TranslationConfig):
            raise ConfigError(f"{type(self).__name__} trains a TranslationConfig, got {type(cfg).__name__}")
        if cfg.task != self.task_name:
            raise ConfigError(f"config task {cfg.task!r} given to the {self.task_name} task")
        self.engine = engine
        self.device = device = engine.device
        cfg = cfg.resolved()
        if data is not None:
            if not isinstance(data, TranslationData) or data.paired != self.paired:
                raise ConfigError(f"{self.task_name} needs {'paired' if self.paired else 'unpaired'} "
                                  "TranslationData (fastgan.translation_data.load_translation_data)")
            self.data = data
            cfg = dataclasses.replace(cfg, data="<custom>", resolution=data.resolution)
        else:
            self.data = load_translation_data(cfg.data, cfg.data_b, paired=self.paired, resolution=cfg.resolution,
                                              holdout=cfg.holdout, seed=cfg.seed, device=device, flip=cfg.flip)
        self.cfg = cfg
        if cfg.resolution < min_patch_input(cfg.d_layers):
            raise ConfigError(f"resolution {cfg.resolution} is too small for a PatchGAN with d_layers="
                              f"{cfg.d_layers} (needs >= {min_patch_input(cfg.d_layers)})")
        torch.manual_seed(cfg.seed)
        self.build()
        nets = [n for n in self.networks().values() if n is not None]
        for G in self.translators().values():
            if cfg.resolution % G.size_multiple:
                raise ConfigError(f"resolution {cfg.resolution} must be a multiple of {G.size_multiple} for "
                                  f"{type(G).__name__}")
        engine.prepare_networks(*nets)
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(cfg.seed)
        self.stats = RunningStats({"train": self.stat_names}, device)
        self._grid_inputs = self._pick_examples()

    # ---------------------------------------------------------------- subclass hooks
    def build(self) -> None:
        """Build the networks, optimisers and scalers (the global RNG is seeded)."""
        raise NotImplementedError

    def translators(self) -> dict[str, nn.Module]:
        """The generators by direction (``AtoB``, and ``BtoA`` for CycleGAN)."""
        raise NotImplementedError

    def generator_keys(self) -> dict[str, str]:
        """Direction -> the generator's name in :meth:`networks` (checkpoint key)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- helpers for the steps
    def make_optimizers(self, g_params, d_params) -> None:
        """``opt_g`` / ``opt_d`` (Adam as the engine makes it) and their fp16 scalers.

        Args:
            g_params: every generator parameter (one optimiser, as the reference trains them).
            d_params: every discriminator parameter.
        """
        cfg, engine = self.cfg, self.engine
        scheduled = bool(cfg.lr_decay)
        self.opt_g = engine.make_optimizer(g_params, lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2), scheduled=scheduled)
        self.opt_d = engine.make_optimizer(d_params, lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2), scheduled=scheduled)
        self.scaler_g = engine.make_scaler()
        self.scaler_d = engine.make_scaler()

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """``opt_g`` (every generator) and ``opt_d`` (every discriminator)."""
        return {"opt_g": self.opt_g, "opt_d": self.opt_d}

    def scalers(self) -> dict[str, Optional[torch.amp.GradScaler]]:
        """``scaler_g`` and ``scaler_d`` (``None`` unless fp16)."""
        return {"scaler_g": self.scaler_g, "scaler_d": self.scaler_d}

    def train(self) -> None:
        """Every network in training mode."""
        for net in self.networks().values():
            net.train()

    def state_dict(self) -> dict[str, Any]:
        """The step generator's state."""
        return {"gen_state": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the step generator.

        Args:
            state: the checkpoint's training state.
        """
        self.gen.set_state(state["gen_state"])

    def checkpoint_metadata(self) -> dict[str, str]:
        """What :func:`fastgan.translator.load_translator` needs to rebuild each generator."""
        gens = {d: {"network": self.generator_keys()[d], "class": type(G).__name__, "arch": G.arch_config()}
                for d, G in self.translators().items()}
        info = {"task": self.task_name, "resolution": self.cfg.resolution, "generators": gens,
                "channels": {"A": self.data.channels_a, "B": self.data.channels_b}}
        return {"translation": json.dumps(info)}

    # ---------------------------------------------------------------- outputs
    @torch.no_grad()
    def translate(self, x: torch.Tensor, direction: str = "AtoB") -> torch.Tensor:
        """Translate images with the current weights (eval mode: no dropout), on the CPU.

        Args:
            x: (N, C, H, W) images in [-1, 1] (any device).
            direction: ``AtoB`` or ``BtoA`` (CycleGAN).
        """
        G = self.translators()[direction]
        was = G.training
        G.eval()
        try:
            out = [G(self.engine.to_layout(x[i:i + EVAL_BATCH].to(self.device))).float().cpu()
                   for i in range(0, len(x), EVAL_BATCH)]
        finally:
            G.train(was)
        return torch.cat(out) if out else x.new_zeros(0)

    def _pick_examples(self) -> dict[str, torch.Tensor]:
        """Fixed examples for sample figures (held-out ones when there are enough); pairs stay pairs."""
        d = self.data
        held_out = min(len(d.test_a), len(d.test_b)) >= GRID_EXAMPLES
        a_src, b_src = (d.test_a, d.test_b) if held_out else (d.a.cpu(), d.b.cpu())
        g = torch.Generator().manual_seed(self.cfg.seed)
        ia = torch.randperm(len(a_src), generator=g)[:GRID_EXAMPLES].sort().values
        ib = ia if d.paired else torch.randperm(len(b_src), generator=g)[:GRID_EXAMPLES].sort().values
        return {"A": to_float(a_src[ia]), "B": to_float(b_src[ib])}

    def save_samples(self, path: Path) -> None:
        """A grid of example rows (the subclass chooses the columns).

        Args:
            path: the PNG file.
        """
        columns = self.sample_columns()
        rows = torch.stack([as_rgb(c) for c in columns], dim=1)          # (N, K, 3, H, W)
        save_image_grid(rows.flatten(0, 1), path, nrow=len(columns) * 2 if len(rows) > 4 else len(columns))

    def sample_columns(self) -> list[torch.Tensor]:
        """The figure's columns, each (N, C, H, W) in [-1, 1]."""
        raise NotImplementedError


def as_rgb(x: torch.Tensor) -> torch.Tensor:
    """Grey images repeated to three channels (figures mix grey inputs and colour outputs).

    Args:
        x: (N, 1 or 3, H, W).
    """
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def set_requires_grad(params: list[torch.Tensor], flag: bool) -> None:
    """Switch gradient tracking of parameters (a frozen D during a G update).

    Args:
        params: the parameters.
        flag: track gradients or not.
    """
    for p in params:
        p.requires_grad_(flag)
