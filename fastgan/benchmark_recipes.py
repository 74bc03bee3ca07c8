"""The training recipes ``fastgan bench`` times side by side.

Plain PyTorch baselines, written the way people write them:

- ``pytorch-eager-fp32``: pytorch/examples' DCGAN loop (``nn.BatchNorm2d``,
  Sigmoid + ``nn.BCELoss``, plain Adam, the fake batch reused for the G step,
  D's gradients from the G step left to be zeroed next iteration). The
  example's per-iteration ``.item()`` logging is left out.
- ``pytorch-eager-bf16``: the same networks with bf16 autocast, channels_last,
  fused Adam, logits + ``binary_cross_entropy_with_logits``, D frozen during
  the G step.
- ``pytorch-graph-bf16``: the previous step captured whole by hand in one CUDA
  graph (fused capturable Adam), as DESIGN.md's fastest measured recipe.

and fastgan's own modes through :class:`fastgan.Trainer` (``fastgan-eager``,
``-compile``, ``-graph``, ``-fast``, plus variants that isolate one choice).

Every recipe trains the same architecture (the DCGAN width schedule of
:mod:`fastgan.models.dcgan`, or an MLP for 2-D points) on the same synthetic
uint8 data already on the device.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .models.dcgan import dcgan_channels

LR, BETAS = 2e-4, (0.5, 0.999)   # pytorch/examples' DCGAN settings (fastgan's defaults too)
DATA_SIZE = 2048                 # synthetic images (or points) held on the device
GRAPH_WARMUP = 3                 # eager side-stream steps before a hand-captured graph


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
        width: DCGAN ngf = ndf, or MLP hidden units.
        depth: MLP hidden layers (points only).
    """

    name: str
    kind: str
    img_size: int
    channels: int
    z_dim: int
    width: int
    depth: int = 3


PRESETS = {p.name: p for p in (
    Preset("dcgan16", "image", 16, 3, 100, 64),
    Preset("dcgan32", "image", 32, 3, 100, 64),
    Preset("dcgan64", "image", 64, 3, 100, 64),
    Preset("dcgan128", "image", 128, 3, 100, 64),
    Preset("mlp2d", "points", 0, 2, 2, 128, 3),
)}


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
        info: recipe details for the JSON (resolved plan, settings).
        flops_key: recipes with equal keys share one FLOP count.
    """

    run: Callable[[int], None]
    eager_step: Callable[[], None]
    info: dict = field(default_factory=dict)
    flops_key: Optional[str] = None


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
    shape = (DATA_SIZE, preset.channels, preset.img_size, preset.img_size)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=g).to(device)


# ---------------------------------------------------------------------------- plain networks
def _init_dcgan(m: nn.Module) -> None:
    """pytorch/examples' weights_init: N(0, 0.02) weights, N(1, 0.02) BN scales, zero BN shifts."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def plain_networks(p: Preset, sigmoid: bool) -> tuple[nn.Module, nn.Module]:
    """pytorch/examples-style G and D (nn.BatchNorm2d, ReLU / LeakyReLU) for a preset.

    Args:
        p: the workload; image nets follow fastgan's DCGAN width schedule.
        sigmoid: end D with a Sigmoid (for ``nn.BCELoss``, as the example does).

    Returns:
        (G, D) on the CPU. G maps (B, z, 1, 1) (images) or (B, z) (points).
    """
    if p.kind == "points":
        g_layers: list[nn.Module] = []
        d_layers: list[nn.Module] = []
        gi, di = p.z_dim, p.channels
        for _ in range(p.depth):
            g_layers += [nn.Linear(gi, p.width), nn.ReLU(True)]
            d_layers += [nn.Linear(di, p.width), nn.LeakyReLU(0.2, True)]
            gi = di = p.width
        G = nn.Sequential(*g_layers, nn.Linear(gi, p.channels))
        D = nn.Sequential(*d_layers, nn.Linear(di, 1), *([nn.Sigmoid()] if sigmoid else []))
    else:
        S, w = p.img_size, p.width
        g = [nn.ConvTranspose2d(p.z_dim, dcgan_channels(S, w, 4), 4, 1, 0, bias=False),
             nn.BatchNorm2d(dcgan_channels(S, w, 4)), nn.ReLU(True)]                      # (B, 8w, 4, 4)
        r = 4
        while r < S // 2:
            ci, co = dcgan_channels(S, w, r), dcgan_channels(S, w, 2 * r)
            g += [nn.ConvTranspose2d(ci, co, 4, 2, 1, bias=False), nn.BatchNorm2d(co), nn.ReLU(True)]
            r *= 2
        g += [nn.ConvTranspose2d(dcgan_channels(S, w, r), p.channels, 4, 2, 1, bias=False), nn.Tanh()]
        r = S // 2
        c = dcgan_channels(S, w, r)
        d = [nn.Conv2d(p.channels, c, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]      # (B, w, S/2, S/2)
        while r > 4:
            co = dcgan_channels(S, w, r // 2)
            d += [nn.Conv2d(c, co, 4, 2, 1, bias=False), nn.BatchNorm2d(co), nn.LeakyReLU(0.2, True)]
            c, r = co, r // 2
        d += [nn.Conv2d(c, 1, 4, 1, 0, bias=False)] + ([nn.Sigmoid()] if sigmoid else [])  # (B, 1, 1, 1)
        G, D = nn.Sequential(*g), nn.Sequential(*d)
    G.apply(_init_dcgan)
    D.apply(_init_dcgan)
    return G, D


class PlainGAN:
    """Plain PyTorch G/D/optimisers/data sampling for the baseline recipes.

    Args:
        ctx: the shared context.
        amp: autocast dtype or ``None``.
        channels_last: networks and real batches in channels_last.
        adam: extra ``torch.optim.Adam`` flags (``fused``, ``capturable``).
        sigmoid: D ends in a Sigmoid (pytorch/examples' BCELoss recipe).
    """

    def __init__(self, ctx: BenchContext, amp: Optional[torch.dtype], channels_last: bool,
                 adam: dict, sigmoid: bool):
        torch.manual_seed(0)
        G, D = plain_networks(ctx.preset, sigmoid)
        fmt = torch.channels_last if channels_last and ctx.preset.kind == "image" else torch.preserve_format
        self.G, self.D = G.to(ctx.device, memory_format=fmt), D.to(ctx.device, memory_format=fmt)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=LR, betas=BETAS, **adam)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=LR, betas=BETAS, **adam)
        self.ctx, self.amp, self.fmt = ctx, amp, fmt
        B = ctx.batch_size
        self.noise_shape = (B, ctx.preset.z_dim, 1, 1) if ctx.preset.kind == "image" else (B, ctx.preset.z_dim)
        self.ones = torch.ones(B, device=ctx.device)
        self.zeros = torch.zeros(B, device=ctx.device)

    def sample_real(self) -> torch.Tensor:
        """A real batch: random rows of the device data, as float in [-1, 1] for images."""
        data = self.ctx.data
        idx = torch.randint(0, data.shape[0], (self.ctx.batch_size,), device=self.ctx.device)
        x = data[idx]
        if data.dtype == torch.uint8:
            x = x.float().div_(127.5).sub_(1.0).contiguous(memory_format=self.fmt)
        return x

    def autocast(self):
        """Autocast for the recipe's dtype (disabled for fp32)."""
        return torch.autocast(self.ctx.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None)

    def examples_step(self) -> None:
        """pytorch/examples' DCGAN iteration (BCELoss on Sigmoid outputs, two D backwards)."""
        criterion = F.binary_cross_entropy
        real = self.sample_real()
        self.D.zero_grad()
        label = torch.full((self.ctx.batch_size,), 1.0, device=self.ctx.device)
        errD_real = criterion(self.D(real).view(-1), label)
        errD_real.backward()
        fake = self.G(torch.randn(self.noise_shape, device=self.ctx.device))
        label.fill_(0.0)
        errD_fake = criterion(self.D(fake.detach()).view(-1), label)
        errD_fake.backward()
        self.opt_d.step()
        self.G.zero_grad()
        label.fill_(1.0)
        errG = criterion(self.D(fake).view(-1), label)
        errG.backward()
        self.opt_g.step()

    def tuned_step(self) -> None:
        """The same GAN step written for speed: autocast, logits, one D backward, D frozen for G."""
        bce = F.binary_cross_entropy_with_logits
        real = self.sample_real()
        noise = torch.randn(self.noise_shape, device=self.ctx.device)
        with self.autocast():
            fake = self.G(noise)
            out_real = self.D(real).view(-1)
            out_fake = self.D(fake.detach()).view(-1)
        err_d = bce(out_real.float(), self.ones) + bce(out_fake.float(), self.zeros)
        self.opt_d.zero_grad(set_to_none=True)
        err_d.backward()
        self.opt_d.step()
        self.D.requires_grad_(False)
        with self.autocast():
            out = self.D(fake).view(-1)
        err_g = bce(out.float(), self.ones)
        self.opt_g.zero_grad(set_to_none=True)
        err_g.backward()
        self.opt_g.step()
        self.D.requires_grad_(True)


def _loop(step: Callable[[], None]) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            step()
    return run


def _needs_cuda(ctx: BenchContext) -> None:
    if not ctx.cuda:
        raise RecipeSkipped("needs CUDA")


def _needs_bf16(ctx: BenchContext) -> None:
    if not ctx.bf16_ok():
        cap = ".".join(map(str, torch.cuda.get_device_capability(ctx.device)))
        raise RecipeSkipped(f"needs bf16 (compute capability >= 8.0; this GPU is {cap})")


def pytorch_eager_fp32(ctx: BenchContext) -> Built:
    """Recipe (1): pytorch/examples' DCGAN, eager fp32."""
    gan = PlainGAN(ctx, amp=None, channels_last=False, adam={}, sigmoid=True)
    return Built(_loop(gan.examples_step), gan.examples_step, {"optimizer": "Adam (torch default)"})


def pytorch_eager_bf16(ctx: BenchContext) -> Built:
    """Recipe (2): eager, bf16 autocast, channels_last, fused Adam (fused needs CUDA)."""
    _needs_cuda(ctx)
    _needs_bf16(ctx)
    gan = PlainGAN(ctx, amp=torch.bfloat16, channels_last=True, adam={"fused": True}, sigmoid=False)
    return Built(_loop(gan.tuned_step), gan.tuned_step, {"optimizer": "Adam(fused=True)"})


def pytorch_graph_bf16(ctx: BenchContext) -> Built:
    """Recipe (3): recipe (2)'s step captured whole by hand in one CUDA graph (capturable Adam)."""
    _needs_cuda(ctx)
    _needs_bf16(ctx)
    gan = PlainGAN(ctx, amp=torch.bfloat16, channels_last=True, adam={"fused": True, "capturable": True},
                   sigmoid=False)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(GRAPH_WARMUP):
            gan.tuned_step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):   # the default CUDA generator is registered automatically
        gan.tuned_step()

    def run(n: int) -> None:
        for _ in range(n):
            graph.replay()

    info = {"optimizer": "Adam(fused=True, capturable=True)", "warmup_steps": GRAPH_WARMUP}
    built = Built(run, gan.tuned_step, info)
    built.info["_graph"] = graph    # keeps the graph alive with the recipe (dropped from the JSON)
    return built


# ---------------------------------------------------------------------------- fastgan recipes
@dataclass(frozen=True)
class FastganVariant:
    """A fastgan recipe: config fields and engine options on top of the preset.

    Args:
        mode: TrainConfig.mode.
        mixed: bf16 autocast + channels_last on CUDA (fp32, contiguous on CPU).
        kernels: TrainConfig.kernels.
        options: :class:`fastgan.engine.EngineOptions` fields.
    """

    mode: str
    mixed: bool = True
    kernels: str = "auto"
    options: dict = field(default_factory=dict)


def fastgan_recipe(variant: FastganVariant) -> Callable[[BenchContext], Built]:
    """A recipe builder that trains the preset with :class:`fastgan.Trainer` as ``variant`` says.

    Args:
        variant: mode, precision, kernels and engine options.
    """
    def build(ctx: BenchContext) -> Built:
        from .engine import EngineOptions
        from .train import Trainer

        if variant.mode == "graph":
            _needs_cuda(ctx)
        mixed = variant.mixed and ctx.cuda and variant.mode != "fast"
        if mixed:
            _needs_bf16(ctx)
        cfg = _fastgan_config(ctx, mode=variant.mode, amp="bf16" if mixed else "none", channels_last=mixed,
                              kernels=variant.kernels)
        try:
            options = EngineOptions(**{"cudnn_benchmark": ctx.cudnn_benchmark, **variant.options})
            trainer = Trainer(cfg, data=_trainer_data(ctx), resume=False, engine_options=options)
        except ConfigError as e:
            raise RecipeSkipped(str(e)) from None
        info = {"plan": trainer.engine.plan.summary(), "engine": trainer.engine.plan.to_dict(),
                "ema": trainer.cfg.ema_decay > 0}

        def run(n: int) -> None:
            trainer.run_steps(n)

        def after_timing() -> None:
            info["graphs_captured"] = trainer.engine.graphs_captured
            if trainer.engine.fallback_reason:
                info["fallback"] = trainer.engine.fallback_reason

        built = Built(run, lambda: _fastgan_flop_step(ctx), info, flops_key="fastgan")
        built.info["_after_timing"] = after_timing
        return built
    return build


def _trainer_data(ctx: BenchContext):
    return None if ctx.preset.kind == "points" else ctx.data


def _fastgan_config(ctx: BenchContext, **fields_):
    from .config import TrainConfig

    p = ctx.preset
    base = dict(data="grid25" if p.kind == "points" else "synthetic", out=ctx.workdir,
                batch_size=ctx.batch_size, z_dim=p.z_dim, g_width=p.width, d_width=p.width,
                g_depth=p.depth, d_depth=p.depth, resolution=p.img_size or None, loss="ns",
                device=str(ctx.device), progress=False, seed=0,
                # the same work as the plain-PyTorch recipes: no R1, DCGAN's Adam, EMA kept
                r1_gamma=0.0, lr_g=2e-4, lr_d=2e-4, ema_decay=0.999)
    base.update(fields_)
    return TrainConfig(**base)


def _fastgan_flop_step(ctx: BenchContext) -> None:
    """One eager reference step of fastgan's maths (compiled and graph modes do the same FLOPs)."""
    from .engine import EngineOptions
    from .train import Trainer

    cfg = _fastgan_config(ctx, mode="eager", kernels="ref")
    options = EngineOptions(cudnn_benchmark=ctx.cudnn_benchmark)
    Trainer(cfg, data=_trainer_data(ctx), resume=False, engine_options=options).train_step()


# ---------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Recipe:
    """A named benchmark recipe.

    Args:
        name: what ``--recipes`` selects.
        build: ``build(ctx) -> Built`` (raises RecipeSkipped when it cannot run).
        description: one line for the table and JSON.
        default: part of the default selection.
    """

    name: str
    build: Callable[[BenchContext], Built]
    description: str
    default: bool = True


RECIPES: tuple[Recipe, ...] = (
    Recipe("pytorch-eager-fp32", pytorch_eager_fp32, "(1) pytorch/examples DCGAN: eager fp32, BatchNorm2d, Adam"),
    Recipe("pytorch-eager-bf16", pytorch_eager_bf16, "(2) eager bf16 autocast, channels_last, fused Adam"),
    Recipe("pytorch-graph-bf16", pytorch_graph_bf16,
           "(3) (2) captured whole in one CUDA graph by hand, fused capturable Adam"),
    Recipe("fastgan-eager", fastgan_recipe(FastganVariant("eager")), "fastgan eager (bf16, channels_last on CUDA)"),
    Recipe("fastgan-compile", fastgan_recipe(FastganVariant("compile")),
           "fastgan compile: forward+loss through torch.compile (bf16, channels_last on CUDA)"),
    Recipe("fastgan-graph", fastgan_recipe(FastganVariant("graph")),
           "fastgan graph: whole step in CUDA graphs (bf16, channels_last, fused kernels)"),
    Recipe("fastgan-fast", fastgan_recipe(FastganVariant("fast")), "fastgan mode fast (resolved per device)"),
    Recipe("fastgan-graph-ref", fastgan_recipe(FastganVariant("graph", kernels="ref")),
           "fastgan graph with reference (unfused) kernels", default=False),
    Recipe("fastgan-graph-pad8", fastgan_recipe(FastganVariant("graph", options={"pad_channels": 8})),
           "fastgan graph with D's input padded to 8 channels", default=False),
    Recipe("fastgan-graph-compiled", fastgan_recipe(FastganVariant("graph", options={"compile_in_graph": True})),
           "fastgan graph capturing inductor-compiled forward+loss pieces", default=False),
    Recipe("fastgan-graph-autotune",
           fastgan_recipe(FastganVariant("graph", options={"compile_in_graph": True,
                                                          "compile_mode": "max-autotune-no-cudagraphs"})),
           "fastgan graph capturing max-autotune compiled pieces (Triton conv templates)", default=False),
    Recipe("fastgan-eager-fp32", fastgan_recipe(FastganVariant("eager", mixed=False)),
           "fastgan eager fp32, contiguous (the CPU reference path)", default=False),
)


def select_recipes(spec: Optional[str]) -> list[Recipe]:
    """Recipes named by ``spec``: comma-separated names, ``default`` or ``all``.

    Args:
        spec: the ``--recipes`` value (``None``: the default selection).
    """
    by_name = {r.name: r for r in RECIPES}
    if spec is None or spec.strip() in ("", "default"):
        return [r for r in RECIPES if r.default]
    if spec.strip() == "all":
        return list(RECIPES)
    chosen = []
    for name in (s.strip() for s in spec.split(",") if s.strip()):
        if name not in by_name:
            raise ConfigError(f"unknown recipe {name!r}; choose from {', '.join(by_name)} (or default, all)")
        if by_name[name] not in chosen:
            chosen.append(by_name[name])
    return chosen


def get_preset(name: str, width: Optional[int] = None, z_dim: Optional[int] = None) -> Preset:
    """The preset called ``name``, optionally with another width / latent size.

    Args:
        name: dcgan16, dcgan32, dcgan64, dcgan128 or mlp2d.
        width: override of the network width.
        z_dim: override of the latent size.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    p = PRESETS[name]
    changes: dict[str, Any] = {}
    if width is not None:
        changes["width"] = width
    if z_dim is not None:
        changes["z_dim"] = z_dim
    return dataclasses.replace(p, **changes) if changes else p


def scratch_dir() -> tempfile.TemporaryDirectory:
    """A temporary folder for Trainer run folders (the benchmark writes nothing there)."""
    return tempfile.TemporaryDirectory(prefix="fastgan-bench-")
