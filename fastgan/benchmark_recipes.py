"""The recipes ``fastgan bench`` times side by side: fastgan's modes, and the table of every recipe.

fastgan's own modes run through :class:`fastgan.Trainer` (``fastgan-eager``,
``-compile``, ``-graph``, ``-fast``, plus variants that isolate one choice);
the plain-PyTorch baselines are in :mod:`fastgan.benchmark_plain`. Every
recipe trains the same networks (the DCGAN of :mod:`fastgan.models.dcgan`, or
its MLP for 2-D points; the JSON records each recipe's network signature) on
the same synthetic uint8 data already on the device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from .benchmark_context import BenchContext, Built, RecipeSkipped, needs_bf16, needs_cuda
from .benchmark_plain import pytorch_eager_bf16, pytorch_eager_fp32, pytorch_graph_bf16, pytorch_graph_compiled
from .benchmark_translation import split_networks
from .errors import ConfigError


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
            needs_cuda(ctx, "whole-step CUDA graph")
        mixed = variant.mixed and ctx.cuda and variant.mode != "fast"
        if mixed:
            needs_bf16(ctx)
        cfg = _fastgan_config(ctx, mode=variant.mode, amp="bf16" if mixed else "none", channels_last=mixed,
                              kernels=variant.kernels)
        try:
            options = EngineOptions(**{"cudnn_benchmark": ctx.cudnn_benchmark, **variant.options})
            trainer = Trainer(cfg, data=_trainer_data(ctx), resume=False, engine_options=options)
        except ConfigError as e:
            raise RecipeSkipped(str(e)) from None
        info = {"plan": trainer.engine.plan.summary(), "engine": trainer.engine.plan.to_dict(),
                "ema": getattr(trainer.cfg, "ema_decay", 0) > 0}

        def run(n: int) -> None:
            trainer.run_steps(n)

        def after_timing() -> None:
            info["graphs_captured"] = trainer.engine.graphs_captured
            if trainer.engine.fallback_reason:
                info["fallback"] = trainer.engine.fallback_reason

        nets = (trainer.G, trainer.D) if ctx.preset.kind != "translation" else split_networks(trainer.task)
        built = Built(run, lambda: _fastgan_flop_step(ctx), nets, info, flops_key="fastgan")
        built.info["_after_timing"] = after_timing
        return built
    return build


def _trainer_data(ctx: BenchContext):
    if ctx.preset.kind == "translation":
        from .benchmark_translation import synthetic_translation_data
        return synthetic_translation_data(ctx)
    return None if ctx.preset.kind == "points" else ctx.data


def _fastgan_config(ctx: BenchContext, **fields_):
    from .config import TrainConfig

    p = ctx.preset
    if p.kind == "translation":
        from .benchmark_translation import translation_config
        return translation_config(ctx, **fields_)
    base = dict(data="grid25" if p.kind == "points" else "synthetic", out=ctx.workdir,
                batch_size=ctx.batch_size, z_dim=p.z_dim, g_width=p.width, d_width=p.width,
                g_depth=p.depth, d_depth=p.depth, resolution=p.img_size or None, loss="ns",
                device=str(ctx.device), progress=False, seed=0,
                # the plain recipes' work (no R1, DCGAN's Adam) plus fastgan's EMA update, kept on
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
        plain: a plain-PyTorch baseline (else one of fastgan's modes).
    """

    name: str
    build: Callable[[BenchContext], Built]
    description: str
    default: bool = True
    plain: bool = False


RECIPES: tuple[Recipe, ...] = (
    Recipe("pytorch-eager-fp32", pytorch_eager_fp32, "(1) pytorch/examples DCGAN: eager fp32, BatchNorm2d, Adam",
           plain=True),
    Recipe("pytorch-eager-bf16", pytorch_eager_bf16, "(2) eager bf16 autocast, channels_last, fused Adam", plain=True),
    Recipe("pytorch-graph-bf16", pytorch_graph_bf16,
           "(3) (2) captured whole in one CUDA graph by hand, fused capturable Adam", plain=True),
    Recipe("pytorch-graph-compiled", pytorch_graph_compiled(),
           "(4) (3) with the forward+loss pieces through torch.compile (inductor, no torch cudagraphs)", plain=True),
    Recipe("pytorch-graph-autotune", pytorch_graph_compiled("max-autotune-no-cudagraphs"),
           "(4) with max-autotune-no-cudagraphs (Triton conv templates; long compile)", default=False, plain=True),
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
