"""The plain-PyTorch recipes ``fastgan bench`` times fastgan against.

Written the way people write them, each training exactly fastgan's networks
(:func:`plain_networks`: the layers of :mod:`fastgan.models` in plain
``torch.nn``, same sizes, same discriminator head):

- ``pytorch-eager-fp32``: pytorch/examples' DCGAN loop (``nn.BatchNorm2d``,
  Sigmoid + ``nn.BCELoss``, plain Adam, the fake batch reused for the G step,
  D's gradients from the G step left to be zeroed next iteration). The
  example's per-iteration ``.item()`` logging is left out.
- ``pytorch-eager-bf16``: bf16 autocast, channels_last, fused Adam, logits +
  ``binary_cross_entropy_with_logits``, D frozen during the G step.
- ``pytorch-graph-bf16``: that step captured whole by hand in one CUDA graph
  (``torch.cuda.graph``, fused capturable Adam).
- ``pytorch-graph-compiled``: the strongest plain recipe: the G forward, the
  D forward + loss and the G forward + loss through ``torch.compile`` (inductor,
  without torch's own CUDA graphs, which break on GAN steps), backward and
  fused capturable Adam outside them, the whole step captured by hand in one
  CUDA graph.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .benchmark_context import BenchContext, Built, Preset, RecipeSkipped, needs_bf16, needs_cuda
from .models.common import dcgan_init_
from .models.dcgan import dcgan_channels

LR, BETAS = 2e-4, (0.5, 0.999)   # pytorch/examples' DCGAN settings (fastgan's defaults too)
GRAPH_WARMUP = 3                 # eager side-stream steps before a hand-captured graph


# ---------------------------------------------------------------------------- networks
def plain_networks(p: Preset, sigmoid: bool) -> tuple[nn.Module, nn.Module]:
    """fastgan's G and D for a preset, written in plain ``torch.nn`` (``nn.BatchNorm2d``, ``nn.ReLU`` ...).

    Layer for layer the networks of :func:`fastgan.models.build_models` (no
    R1, pack 1, no minibatch std): a conv bias where fastgan's ``BiasAct``
    holds one (G's output layer, D's input layer), and D's head a linear layer
    on the flattened 4x4 map, as fastgan applies its last 4x4 convolution.
    The MLP generator's constant input gain and output scale (one elementwise
    multiply each on (B, 2)) are left out.

    Args:
        p: the workload.
        sigmoid: end D with a Sigmoid (for ``nn.BCELoss``, as pytorch/examples does).

    Returns:
        (G, D) on the CPU. G maps (B, z, 1, 1) (images) or (B, z) (points).
    """
    tail: list[nn.Module] = [nn.Sigmoid()] if sigmoid else []
    if p.kind == "points":
        g_layers: list[nn.Module] = []
        d_layers: list[nn.Module] = []
        gi, di = p.z_dim, p.channels
        for _ in range(p.depth):
            g_layers += [nn.Linear(gi, p.width), nn.ReLU(True)]
            d_layers += [nn.Linear(di, p.width), nn.LeakyReLU(0.2, True)]
            gi = di = p.width
        # PyTorch's default Linear init, as fastgan's MLPs use
        return nn.Sequential(*g_layers, nn.Linear(gi, p.channels)), nn.Sequential(*d_layers, nn.Linear(di, 1), *tail)
    S, w = p.img_size, p.width
    g = [nn.ConvTranspose2d(p.z_dim, dcgan_channels(S, w, 4), 4, 1, 0, bias=False),
         nn.BatchNorm2d(dcgan_channels(S, w, 4)), nn.ReLU(True)]                      # (B, 8w, 4, 4)
    r = 4
    while r < S // 2:
        ci, co = dcgan_channels(S, w, r), dcgan_channels(S, w, 2 * r)
        g += [nn.ConvTranspose2d(ci, co, 4, 2, 1, bias=False), nn.BatchNorm2d(co), nn.ReLU(True)]
        r *= 2                                                                        # (B, co, 2r, 2r)
    g += [nn.ConvTranspose2d(dcgan_channels(S, w, r), p.channels, 4, 2, 1), nn.Tanh()]  # (B, C, S, S)
    r = S // 2
    c = dcgan_channels(S, w, r)
    d = [nn.Conv2d(p.channels, c, 4, 2, 1), nn.LeakyReLU(0.2, True)]                  # (B, w, S/2, S/2)
    while r > 4:
        co = dcgan_channels(S, w, r // 2)
        d += [nn.Conv2d(c, co, 4, 2, 1, bias=False), nn.BatchNorm2d(co), nn.LeakyReLU(0.2, True)]
        c, r = co, r // 2                                                             # (B, co, r, r)
    d += [nn.Flatten(), nn.Linear(c * 16, 1)] + tail                                  # (B, 1)
    G, D = nn.Sequential(*g), nn.Sequential(*d)
    dcgan_init_(G)   # pytorch/examples' weights_init, as fastgan's DCGAN: N(0, 0.02), BN scales N(1, 0.02)
    dcgan_init_(D)
    return G, D


# ---------------------------------------------------------------------------- the step
class PlainGAN:
    """Plain PyTorch G/D/optimisers/data sampling for the baseline recipes.

    Args:
        ctx: the shared context.
        amp: autocast dtype or ``None``.
        channels_last: networks and real batches in channels_last.
        adam: extra ``torch.optim.Adam`` flags (``fused``, ``capturable``).
        sigmoid: D ends in a Sigmoid (pytorch/examples' BCELoss recipe).
        compile_kwargs: ``torch.compile`` arguments for the three forward
            (+ loss) pieces of :meth:`tuned_step`; ``None`` leaves them eager.
    """

    def __init__(self, ctx: BenchContext, amp: Optional[torch.dtype], channels_last: bool,
                 adam: dict, sigmoid: bool, compile_kwargs: Optional[dict] = None):
        if ctx.preset.kind == "translation":
            raise RecipeSkipped("a DCGAN recipe; the translation presets' plain recipe is pytorch-eager-fp32 (the "
                                "reference repository's loop)")
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
        pieces = (self._g_forward, self._d_forward_loss, self._g_forward_loss)
        if compile_kwargs is not None:
            pieces = tuple(torch.compile(fn, **compile_kwargs) for fn in pieces)
        self.generate, self.d_loss, self.g_loss = pieces

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

    # forward (+ loss) pieces: what the compiled recipe hands to torch.compile (no random draws inside)
    def _g_forward(self, noise: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.G(noise)

    def _d_forward_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            out_real = self.D(real).view(-1)
            out_fake = self.D(fake).view(-1)
        bce = F.binary_cross_entropy_with_logits
        return bce(out_real.float(), self.ones) + bce(out_fake.float(), self.zeros)

    def _g_forward_loss(self, fake: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            out = self.D(fake).view(-1)
        return F.binary_cross_entropy_with_logits(out.float(), self.ones)

    def tuned_step(self, pieces: Optional[tuple[Callable, Callable, Callable]] = None) -> None:
        """The GAN step written for speed: logits, one D backward, the fake batch reused, D frozen for G.

        Args:
            pieces: (generate, d_loss, g_loss) to use instead of the recipe's
                own (the eager ones, for FLOP counting).
        """
        generate, d_loss, g_loss = pieces or (self.generate, self.d_loss, self.g_loss)
        real = self.sample_real()
        noise = torch.randn(self.noise_shape, device=self.ctx.device)
        fake = generate(noise)
        err_d = d_loss(real, fake.detach())
        self.opt_d.zero_grad(set_to_none=True)
        err_d.backward()
        self.opt_d.step()
        self.D.requires_grad_(False)
        err_g = g_loss(fake)
        self.opt_g.zero_grad(set_to_none=True)
        err_g.backward()
        self.opt_g.step()
        self.D.requires_grad_(True)

    def eager_tuned_step(self) -> None:
        """:meth:`tuned_step` with the eager pieces (what FLOP counting sees)."""
        self.tuned_step((self._g_forward, self._d_forward_loss, self._g_forward_loss))


# ---------------------------------------------------------------------------- recipes
def _loop(step: Callable[[], None]) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            step()
    return run


def _built(gan: PlainGAN, run: Callable[[int], None], eager_step: Callable[[], None], info: dict,
           flops_key: Optional[str] = None) -> Built:
    return Built(run, eager_step, (gan.G, gan.D), info, flops_key)


def pytorch_eager_fp32(ctx: BenchContext) -> Built:
    """Recipe (1): pytorch/examples' DCGAN, eager fp32.

    Args:
        ctx: the shared context.
    """
    if ctx.preset.kind == "translation":   # the translation presets' plain recipe: the reference repository's loop
        from .benchmark_translation import reference_recipe
        return reference_recipe(ctx)
    gan = PlainGAN(ctx, amp=None, channels_last=False, adam={}, sigmoid=True)
    return _built(gan, _loop(gan.examples_step), gan.examples_step, {"optimizer": "Adam (torch default)"})


def pytorch_eager_bf16(ctx: BenchContext) -> Built:
    """Recipe (2): eager, bf16 autocast, channels_last, fused Adam.

    Args:
        ctx: the shared context.
    """
    needs_cuda(ctx)
    needs_bf16(ctx)
    gan = PlainGAN(ctx, amp=torch.bfloat16, channels_last=True, adam={"fused": True}, sigmoid=False)
    return _built(gan, _loop(gan.tuned_step), gan.eager_tuned_step, {"optimizer": "Adam(fused=True)"}, "plain-tuned")


def _captured_whole_step(gan: PlainGAN, info: dict) -> Built:
    """``gan.tuned_step`` warmed up on a side stream, then captured whole in one CUDA graph by hand."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(GRAPH_WARMUP):  # compiles, cuDNN choices and Adam's state happen here
            gan.tuned_step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):   # the default CUDA generator is registered automatically
        gan.tuned_step()

    def run(n: int) -> None:
        for _ in range(n):
            graph.replay()

    built = _built(gan, run, gan.eager_tuned_step, {**info, "warmup_steps": GRAPH_WARMUP}, "plain-tuned")
    built.info["_graph"] = graph    # keeps the graph alive with the recipe (dropped from the JSON)
    return built


def pytorch_graph_bf16(ctx: BenchContext) -> Built:
    """Recipe (3): recipe (2)'s step captured whole by hand in one CUDA graph (capturable Adam).

    Args:
        ctx: the shared context.
    """
    needs_cuda(ctx, "whole-step CUDA graph")
    needs_bf16(ctx)
    gan = PlainGAN(ctx, amp=torch.bfloat16, channels_last=True, adam={"fused": True, "capturable": True},
                   sigmoid=False)
    return _captured_whole_step(gan, {"optimizer": "Adam(fused=True, capturable=True)"})


def pytorch_graph_compiled(compile_mode: Optional[str] = None) -> Callable[[BenchContext], Built]:
    """Recipe (4): compiled forward (+ loss) pieces inside recipe (3)'s hand-captured whole-step graph.

    Args:
        compile_mode: inductor mode; ``None`` is torch's default mode. Modes
            with torch's own CUDA graphs are not offered: the whole step is
            already one graph, and they fail on GAN steps.

    Returns:
        The recipe builder.
    """
    def build(ctx: BenchContext) -> Built:
        needs_cuda(ctx, "whole-step CUDA graph")
        needs_bf16(ctx)
        kwargs: dict[str, Any] = {"backend": "inductor", "dynamic": False}
        if compile_mode is not None:
            kwargs["mode"] = compile_mode
        gan = PlainGAN(ctx, amp=torch.bfloat16, channels_last=True, adam={"fused": True, "capturable": True},
                       sigmoid=False, compile_kwargs=kwargs)
        return _captured_whole_step(gan, {"optimizer": "Adam(fused=True, capturable=True)",
                                          "compile": {"backend": "inductor", "mode": compile_mode or "default"}})
    return build
