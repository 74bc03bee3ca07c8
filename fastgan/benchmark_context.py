"""What every ``fastgan bench`` recipe shares: the workloads, the per-run context, a built recipe.

The recipes themselves live in :mod:`fastgan.benchmark_plain` (plain PyTorch)
and :mod:`fastgan.benchmark_recipes` (fastgan's modes, and the table of all).
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn

from .errors import ConfigError

DATA_SIZE = 2048                 # synthetic images (or points) held on the device


class RecipeSkipped(Exception):
    """A recipe cannot run on this device (the message says why)."""


@dataclass(frozen=True)
class Preset:
    """A benchmark workload.

    Args:
        name: preset name (``dcgan64`` ...).
        kind: ``"image"`` or ``"points"``.
        img_size: image side (0 for points).
        channels: image channels (2 = point dimension for points).
        z_dim: latent size.
        width: DCGAN ngf = ndf, or MLP hidden units (translation: ngf = ndf).
        depth: MLP hidden layers (points only; translation: CycleGAN's residual blocks).
        task: ``pix2pix`` or ``cyclegan`` for a ``"translation"`` preset, else empty.
        batch_sizes: this preset's default batch sizes (empty: the runner's).
    """

    name: str
    kind: str
    img_size: int
    channels: int
    z_dim: int
    width: int
    depth: int = 3
    task: str = ""
    batch_sizes: tuple[int, ...] = ()


PRESETS = {p.name: p for p in (
    Preset("dcgan16", "image", 16, 3, 100, 64),
    Preset("dcgan32", "image", 32, 3, 100, 64),
    Preset("dcgan64", "image", 64, 3, 100, 64),
    Preset("dcgan128", "image", 128, 3, 100, 64),
    Preset("mlp2d", "points", 0, 2, 2, 128, 3),
)}
# Image-to-image translation at the papers' size and widths, trained by fastgan's tasks and, as the plain
# recipe, by the reference repository's loop (fastgan.benchmark_translation); batch 1 is the papers' setting.
TRANSLATION_PRESETS = {p.name: p for p in (
    Preset("pix2pix256", "translation", 256, 3, 0, 64, task="pix2pix", batch_sizes=(1, 16)),
    Preset("cyclegan256", "translation", 256, 3, 0, 64, depth=9, task="cyclegan", batch_sizes=(1, 4)),
)}
TRANSLATION_DATA_SIZE = 128      # synthetic 256 px image pairs held on the device


def get_preset(name: str, width: Optional[int] = None, z_dim: Optional[int] = None) -> Preset:
    """The preset called ``name``, optionally with another width / latent size.

    Args:
        name: dcgan16, dcgan32, dcgan64, dcgan128, mlp2d, pix2pix256 or cyclegan256.
        width: override of the network width.
        z_dim: override of the latent size.
    """
    every = {**PRESETS, **TRANSLATION_PRESETS}
    if name not in every:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(every)}")
    p = every[name]
    changes: dict[str, Any] = {}
    if width is not None:
        changes["width"] = width
    if z_dim is not None:
        changes["z_dim"] = z_dim
    return dataclasses.replace(p, **changes) if changes else p


@dataclass
class BenchContext:
    """What every recipe of one (preset, batch) shares.

    Args:
        preset: the workload.
        batch_size: samples per step.
        device: where everything runs.
        data: (N, C, H, W) uint8 images or (N, 2) float points on ``device``.
        workdir: scratch folder (Trainer run folders; nothing is written there).
        cudnn_benchmark: cuDNN algorithm search on (handed to fastgan's engine too).
        cache: per-context memo (FLOP counts shared by recipes with the same maths).
    """

    preset: Preset
    batch_size: int
    device: torch.device
    data: torch.Tensor
    workdir: str
    cudnn_benchmark: bool = True
    cache: dict = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        """True on a CUDA device."""
        return self.device.type == "cuda"

    def bf16_ok(self) -> bool:
        """bf16 autocast is fast here (CPU, or a GPU of compute capability >= 8.0)."""
        return not self.cuda or torch.cuda.get_device_capability(self.device) >= (8, 0)


@dataclass
class Built:
    """A recipe ready to time.

    Args:
        run: ``run(n)`` queues ``n`` training steps.
        eager_step: one step in eager mode with the same maths (FLOP counting).
        networks: the (G, D) pair the recipe trains (its parameter shapes go into the JSON).
        info: recipe details for the JSON (resolved plan, settings).
        flops_key: recipes with equal keys share one FLOP count.
    """

    run: Callable[[int], None]
    eager_step: Callable[[], None]
    networks: tuple[nn.Module, nn.Module]
    info: dict = field(default_factory=dict)
    flops_key: Optional[str] = None


def needs_cuda(ctx: BenchContext, why: str = "") -> None:
    """Skip the recipe on a device other than CUDA.

    Args:
        ctx: the shared context.
        why: what in the recipe needs CUDA (added to the reason in brackets).
    """
    if not ctx.cuda:
        raise RecipeSkipped("needs CUDA" + (f" ({why})" if why else ""))


def needs_bf16(ctx: BenchContext) -> None:
    """Skip the recipe on a GPU without fast bf16 (compute capability < 8.0).

    Args:
        ctx: the shared context.
    """
    if not ctx.bf16_ok():
        cap = ".".join(map(str, torch.cuda.get_device_capability(ctx.device)))
        raise RecipeSkipped(f"needs bf16 (compute capability >= 8.0; this GPU is {cap})")


def network_signature(G: nn.Module, D: nn.Module) -> dict[str, Any]:
    """Parameter counts and a digest of the parameter sizes, in order, of a (G, D) pair.

    Two recipes with equal signatures train networks whose parameters have the
    same sizes in the same order. Sizes (numel), not shapes, are digested: the
    discriminator's last layer is a 4x4 convolution weight that fastgan applies
    as a linear layer, and a plain ``nn.Linear`` holds the same weights as a
    (1, C*16) matrix.

    Args:
        G: the generator.
        D: the discriminator.
    """
    sizes = {k: [p.numel() for p in net.parameters()] for k, net in (("G", G), ("D", D))}
    digest = hashlib.sha1(repr(sizes).encode()).hexdigest()[:12]
    return {"g_params": sum(sizes["G"]), "d_params": sum(sizes["D"]), "g_tensors": len(sizes["G"]),
            "d_tensors": len(sizes["D"]), "digest": digest}


def synthetic_data(preset: Preset, device: torch.device, seed: int = 0) -> torch.Tensor:
    """Random uint8 images (N, C, S, S), or points from 25 Gaussians, on ``device``.

    Args:
        preset: the workload.
        device: where the data live.
        seed: data seed.
    """
    g = torch.Generator().manual_seed(seed)
    if preset.kind == "points":
        centres = torch.cartesian_prod(*(torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0]),) * 2)     # (25, 2)
        k = torch.randint(0, 25, (DATA_SIZE,), generator=g)
        return (centres[k] + 0.05 * torch.randn(DATA_SIZE, 2, generator=g)).to(device)
    n = TRANSLATION_DATA_SIZE if preset.kind == "translation" else DATA_SIZE
    shape = (n, preset.channels, preset.img_size, preset.img_size)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=g).to(device)


def scratch_dir() -> tempfile.TemporaryDirectory:
    """A temporary folder for Trainer run folders (the benchmark writes nothing there)."""
    return tempfile.TemporaryDirectory(prefix="fastgan-bench-")
