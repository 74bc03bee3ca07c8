"""``fastgan bench``: training throughput of fastgan's modes against plain PyTorch recipes.

One command on a GPU::

    fastgan bench --out bench/results/throughput_<device>.json

For every preset and batch size, each recipe (see
:mod:`fastgan.benchmark_recipes`) is built, warmed up (compiles and graph
captures happen there), then timed over ``--windows`` windows of ``--steps``
steps with CUDA events (``time.perf_counter`` on a CPU). Reported per recipe:
median ms/step with min/max and quartiles over the windows, images/s, TFLOP/s
(FLOPs of one step counted with ``torch.utils.flop_counter.FlopCounterMode``),
peak memory (``torch.cuda.max_memory_allocated`` after a reset per recipe),
the signature of the networks it trained (every recipe trains the same ones)
and, when NVML is there, mean power, energy per step and SM clock. The
headline, per preset and batch, is fastgan's fastest recipe against the
fastest plain-PyTorch recipe of the same run. With ``--out`` the JSON is
rewritten after every recipe, so an interrupted run keeps what it measured;
``--append`` adds a run's results to those already in ``--out`` (the GPU check
times the compiled recipes that way, after the others).

``--compare BASELINE.json`` exits with status 1 when a recipe present in both
runs is more than ``--threshold`` (10%) slower than in the baseline;
``--results FILE.json`` compares stored results instead of running.
Exit status: 0 fine, 1 regression, 2 bad arguments, 3 a recipe failed.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from .benchmark_context import (PRESETS, TRANSLATION_PRESETS, BenchContext, Built, RecipeSkipped, get_preset,
                                network_signature, scratch_dir, synthetic_data)
from .benchmark_recipes import RECIPES, select_recipes
from .benchmark_report import (DEFAULT_THRESHOLD, add_speedups, compare, format_table, progress_line, read_results,
                               write_results)
from .benchmark_telemetry import Telemetry
from .errors import ConfigError, FastGANError
from .engine import resolve_device
from .info import cpu_name

SCHEMA = 1
# Defaults per device kind: (preset, batch sizes, steps per window, windows, warm-up steps)
GPU_DEFAULTS = ("dcgan64", [128, 512], 50, 10, 20)
CPU_DEFAULTS = ("dcgan16", [16], 3, 3, 2)
MIN_GRAPH_WARMUP = 5   # a fastgan graph recipe captures after its 3 eager warm-up steps


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fastgan bench``."""
    p = argparse.ArgumentParser(
        prog="fastgan bench", description="Training throughput: fastgan's modes against eager PyTorch recipes.",
        epilog="Presets: " + ", ".join([*PRESETS, *TRANSLATION_PRESETS]) + ". Recipes: " + ", ".join(r.name for r in RECIPES) +
               " (default: those marked default in --list; 'all' for every one).")
    p.add_argument("--preset", nargs="+", default=None, help="workload(s) (default: dcgan64 on a GPU, dcgan16 on CPU)")
    p.add_argument("--batch_size", type=int, nargs="+", default=None,
                   help="batch size(s) (default: 128 512 on a GPU, 16 on CPU)")
    p.add_argument("--recipes", default=None, help="comma-separated recipe names, 'default' or 'all'")
    p.add_argument("--steps", type=int, default=None, help="steps per timing window (default: 50 GPU, 3 CPU)")
    p.add_argument("--windows", type=int, default=None, help="timing windows (default: 10 GPU, 3 CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 20 GPU, 2 CPU)")
    p.add_argument("--width", type=int, default=None, help="override the preset's network width")
    p.add_argument("--z_dim", type=int, default=None, help="override the preset's latent size")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--out", default=None, help="write the results as JSON here (rewritten after every recipe)")
    p.add_argument("--append", action="store_true",
                   help="add this run's results to those already in --out (same device); the headline covers all")
    p.add_argument("--compare", default=None, metavar="BASELINE.json",
                   help="exit 1 when a recipe is more than --threshold slower than in this baseline")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help="allowed slowdown for --compare, as a fraction (default: 0.10)")
    p.add_argument("--results", default=None, metavar="RESULTS.json",
                   help="with --compare: compare these stored results instead of running the benchmark")
    p.add_argument("--no-cudnn-benchmark", dest="cudnn_benchmark", action="store_false",
                   help="leave torch.backends.cudnn.benchmark off (default: on for every recipe)")
    p.add_argument("--list", action="store_true", help="list presets and recipes, then exit")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``fastgan bench`` and ``bench/train_throughput.py``.

    Args:
        argv: the arguments after ``bench`` (default: ``sys.argv[1:]``).

    Returns:
        Exit status: 0 fine, 1 regression against ``--compare``, 2 bad
        arguments, 3 a recipe failed with an error.
    """
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return _main(args)
    except FastGANError as e:
        print(f"fastgan bench: error: {e}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    if args.list:
        print(list_text())
        return 0
    if args.results and not args.compare:
        raise ConfigError("--results needs --compare BASELINE.json")
    if args.threshold < 0:
        raise ConfigError(f"--threshold must be >= 0, got {args.threshold}")
    if args.append and not args.out:
        raise ConfigError("--append needs --out RESULTS.json")
    baseline = read_results(args.compare) if args.compare else None
    if args.results:
        report = read_results(args.results)
    else:
        earlier = read_results(args.out) if args.append and Path(args.out).is_file() else None
        report = run_benchmark(args, earlier)
        print(format_table(report))
        if args.out:
            write_results(report, args.out)
            print(f"wrote {args.out}")
    status = 3 if any(r["status"] == "error" for r in report["results"]) else 0
    if baseline is not None:
        regressions, lines = compare(report, baseline, args.threshold)
        print("\n".join(lines))
        if regressions:
            return 1
    return status


def list_text() -> str:
    """Presets and recipes, one per line."""
    lines = ["presets:"]
    for p in PRESETS.values():
        shape = f"{p.img_size}x{p.img_size}x{p.channels}" if p.kind == "image" else f"{p.channels}-D points"
        lines.append(f"  {p.name:10s} {p.kind:6s} {shape}, z={p.z_dim}, width={p.width}")
    for p in TRANSLATION_PRESETS.values():
        lines.append(f"  {p.name:10s} {p.task:6s} {p.img_size}x{p.img_size}x{p.channels}, width={p.width}, "
                     f"batch {'/'.join(map(str, p.batch_sizes))}; plain recipe: the reference repository's loop")
    lines.append("recipes (* = default):")
    lines += [f"  {'*' if r.default else ' '} {r.name:24s} {r.description}" for r in RECIPES]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- running



def run_benchmark(args: argparse.Namespace, earlier: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Run every (preset, batch, recipe) the arguments select; return the report dict.

    Args:
        args: parsed ``fastgan bench`` arguments.
        earlier: a report of the same device whose results this run extends (``--append``).
    """
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    d_preset, d_batches, d_steps, d_windows, d_warmup = GPU_DEFAULTS if cuda else CPU_DEFAULTS
    presets = [get_preset(n, args.width, args.z_dim) for n in (args.preset or [d_preset])]
    batches = args.batch_size or d_batches
    steps = d_steps if args.steps is None else args.steps
    windows = d_windows if args.windows is None else args.windows
    warmup = d_warmup if args.warmup is None else args.warmup
    recipes = select_recipes(args.recipes)
    for name, v, low in (("batch_size", min(batches), 1), ("steps", steps, 1), ("windows", windows, 1),
                         ("warmup", warmup, 0)):
        if v < low:
            raise ConfigError(f"--{name} must be >= {low}, got {v}")
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = bool(args.cudnn_benchmark)
    telemetry = Telemetry(device)
    report: dict[str, Any] = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "env": environment(device, telemetry),
        "config": {"presets": [p.name for p in presets], "batch_sizes": batches, "steps": steps, "windows": windows,
                   "warmup": warmup, "recipes": [r.name for r in recipes],
                   "cudnn_benchmark": bool(args.cudnn_benchmark) if cuda else None,
                   "overrides": {"width": args.width, "z_dim": args.z_dim}},
        "results": [],
        "complete": False,
    }
    if earlier is not None:
        if earlier.get("env", {}).get("device_name") != report["env"]["device_name"]:
            there = earlier.get("env", {}).get("device_name")
            raise ConfigError(f"--append: '{args.out}' holds results from {there!r}, "
                              f"this run is on {report['env']['device_name']!r}")
        report["results"] = list(earlier["results"])
        report["config"]["appended_to"] = earlier.get("config")
    with scratch_dir() as workdir:
        for preset in presets:
            data = synthetic_data(preset, device)
            for batch in (args.batch_size or preset.batch_sizes or batches):
                ctx = BenchContext(preset, batch, device, data, workdir, cudnn_benchmark=bool(args.cudnn_benchmark))
                for recipe in recipes:
                    res = run_recipe(recipe, ctx, steps, windows, warmup, telemetry)
                    report["results"].append(res)
                    print(progress_line(res), file=sys.stderr, flush=True)
                    if args.out:   # what was measured survives a run that is cut short
                        write_results(report, args.out)
                del ctx
            del data
    telemetry.close()
    report["headline"] = add_speedups(report["results"])
    report["complete"] = True
    return report


def run_recipe(recipe, ctx: BenchContext, steps: int, windows: int, warmup: int,
               telemetry: Telemetry) -> dict[str, Any]:
    """Build, warm up, time and measure one recipe; never raises for a recipe's own failure.

    Args:
        recipe: the :class:`~fastgan.benchmark_recipes.Recipe`.
        ctx: shared preset/batch/device/data.
        steps: steps per timing window.
        windows: timing windows.
        warmup: untimed steps before timing.
        telemetry: NVML reader (may be unavailable).

    Returns:
        One result record (``status`` ok, skipped or error).
    """
    res: dict[str, Any] = {"recipe": recipe.name, "description": recipe.description, "plain": recipe.plain,
                           "preset": ctx.preset.name, "batch_size": ctx.batch_size}
    _release_memory(ctx.device)
    built: Optional[Built] = None
    info: dict[str, Any] = {}
    try:
        built = recipe.build(ctx)
        info = built.info
        networks = network_signature(*built.networks)
        if "graph" in recipe.name or recipe.name == "fastgan-fast":
            warmup = max(warmup, MIN_GRAPH_WARMUP)
        built.run(warmup)
        _sync(ctx.device)
        times = _time_windows(built, ctx.device, steps, windows, telemetry)
        peak = torch.cuda.max_memory_allocated(ctx.device) if ctx.cuda else None
        after = info.get("_after_timing")
        if after:
            after()
        flops = _count_flops(built, ctx)
    except RecipeSkipped as e:
        res.update(status="skipped", reason=str(e))
        return res
    except Exception as e:  # a failing recipe must not cost the others their numbers
        first = (str(e).strip().splitlines() or [""])[0][:300]
        res.update(status="error", reason=f"{type(e).__name__}: {first}")
        return res
    finally:
        info = {k: v for k, v in info.items() if not k.startswith("_")}   # drops graphs and callbacks
        built = None
        _release_memory(ctx.device)
    med = statistics.median(times)
    res.update(status="ok", ms_per_step=_spread(times), images_per_s=ctx.batch_size * 1000.0 / med,
               gflop_per_step=None if flops is None else flops / 1e9,
               tflops=None if flops is None else flops / (med / 1000.0) / 1e12,
               peak_mem_mb=None if peak is None else peak / 2**20, timing="cuda-events" if ctx.cuda else "perf_counter")
    res.update(telemetry.result(steps * windows))
    res["networks"] = networks
    res["info"] = info
    return res


def _time_windows(built: Built, device: torch.device, steps: int, windows: int,
                  telemetry: Telemetry) -> list[float]:
    times = []
    telemetry.start()
    for _ in range(windows):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            built.run(steps)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / steps)
        else:
            t0 = time.perf_counter()
            built.run(steps)
            times.append((time.perf_counter() - t0) * 1000.0 / steps)
        telemetry.sample()
    telemetry.stop()
    return times


def _count_flops(built: Built, ctx: BenchContext) -> Optional[float]:
    """FLOPs of one eager step with the recipe's maths (memoised per ``flops_key``)."""
    from torch.utils.flop_counter import FlopCounterMode

    key = built.flops_key
    if key is not None and key in ctx.cache:
        return ctx.cache[key]
    try:
        counter = FlopCounterMode(display=False)
        with counter:
            built.eager_step()
        _sync(ctx.device)
        flops = float(counter.get_total_flops())
    except Exception:   # counting is a bonus: a recipe that cannot be counted still has its timings
        flops = None
    if key is not None:
        ctx.cache[key] = flops
    return flops


def _spread(times: list[float]) -> dict[str, float]:
    q1, q3 = (statistics.quantiles(times, n=4)[0], statistics.quantiles(times, n=4)[2]) if len(times) > 1 \
        else (times[0], times[0])
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "q1": q1, "q3": q3,
            "windows": len(times)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _release_memory(device: torch.device) -> None:
    if device.type == "cuda":   # peak memory is measured per recipe there (a full gc costs ~0.3 s on a CPU)
        gc.collect()
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def environment(device: torch.device, telemetry: Telemetry) -> dict[str, Any]:
    """Device, driver and library versions recorded beside every figure.

    Args:
        device: the benchmark device.
        telemetry: NVML reader (driver version when available).
    """
    from . import __version__

    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    env: dict[str, Any] = {
        "device_type": device.type, "device_name": cpu_name(),
        "torch": torch.__version__, "triton": triton_version, "cuda": torch.version.cuda, "cudnn": None,
        "driver": telemetry.driver_version(), "fastgan": __version__, "python": platform.python_version(),
        "platform": platform.platform(), "cpu_threads": torch.get_num_threads(), "nvml": telemetry.available,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                   memory_gb=round(props.total_memory / 2**30, 1), sms=props.multi_processor_count,
                   cudnn=torch.backends.cudnn.version())
    return env
