"""Communication model of data-parallel training: gradient bytes all-reduced per step against the step time.

Counts, from the networks fastgan builds for each benchmark preset, the fp32
gradient bytes DDP all-reduces per training step (one D update and one G
update; R1 is off for images by default), splits them into DDP's buckets
(its rule: parameters in reverse order, each bucket closed once it reaches
its cap, 1 MiB for the first, 25 MiB after; cross-checked with torch's own
bucketing function where it exists), and prices them with the ring all-reduce: each GPU sends (and
receives) 2 (N - 1) / N x bytes, at the bus bandwidth of the slowest link in
the ring. Against the DCGAN-64 step times measured on an H100 (torch 2.11,
per-GPU batches 128 and 512, the fastest plain recipe), it gives the expected
weak-scaling efficiency t / (t + exposed communication) for 2, 8 and 64 GPUs:

- no overlap: all communication after the backward pass;
- overlap (DDP's bucketing): each update's all-reduces run during its own
  backward pass (time apportioned by FLOPs, counted here with torch's
  FlopCounterMode on meta tensors); only the last bucket, and what does not
  fit in the backward window, is exposed. A best case: NCCL's kernels also
  take SMs from the backward kernels, which this ignores.

The bandwidth term alone: per-hop latency is reported as the microseconds a
step gains per microsecond of latency (2 (N - 1) hops per bucket).

Usage: python bench/ddp_comm_model.py [--json bench/results/ddp-comm-model.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fastgan import TrainConfig
from fastgan.benchmark_context import PRESETS, Preset
from fastgan.kernels import use_impl
from fastgan.models import build_models

GB = 1e9
MIB = 1 << 20
FIRST_BUCKET_BYTES = 1 * MIB     # DDP's first bucket (the gradients that are ready first)
BUCKET_BYTES = 25 * MIB          # DDP's bucket_cap_mb default

# DCGAN-64, z=100, ngf=ndf=64 on an H100 (torch 2.11, triton 3.6): manual whole-step CUDA graph, bf16,
# channels_last, fused Adam, fake batch reused (pytorch/examples order: D's weight gradients are also
# computed in the G step), median ms per step, per-GPU batch -> ms.
MEASURED_MS = {128: 2.72, 512: 7.10}
MEASURED_GFLOP_512 = 1271  # the same recipe's FLOPs at batch 512, measured beside those times

# Bus bandwidth in GB/s per GPU and direction. NVLink 4 (H100/H200 SXM): 900 GB/s in total per GPU.
NVLINK4 = 450.0
LINKS = [  # (GPUs, link, bus GB/s): 2 and 8 GPUs in one node; 64 GPUs as 8 nodes of 8
    (2, "NVLink 4", NVLINK4),
    (8, "NVLink 4", NVLINK4),
    (64, "8 x 400 Gb/s NICs per node", min(NVLINK4, 8 * 400 / 8)),
    (64, "8 x 100 Gb/s NICs per node", min(NVLINK4, 8 * 100 / 8)),
    (64, "1 x 400 Gb/s NIC per node", 400 / 8),
    (64, "1 x 200 Gb/s NIC per node", 200 / 8),
    (64, "1 x 100 Gb/s NIC per node", 100 / 8),
]


def networks(preset: Preset) -> tuple[nn.Module, nn.Module]:
    """The (G, D) fastgan trains for a benchmark preset (3-channel images, or 2-D points)."""
    points = preset.kind == "points"
    cfg = TrainConfig(data="grid25" if points else "bench", resolution=None if points else preset.img_size,
                      g_width=preset.width, d_width=preset.width, z_dim=preset.z_dim, g_depth=preset.depth,
                      d_depth=preset.depth).resolved(points=points)
    return build_models(cfg, channels=preset.channels, num_classes=0, points=points)


def buckets(module: nn.Module) -> list[int]:
    """Bytes of each DDP gradient bucket of ``module`` (fp32), in the order they become ready."""
    out: list[int] = []
    fill, cap = 0, FIRST_BUCKET_BYTES
    for p in reversed([p for p in module.parameters() if p.requires_grad]):
        fill += p.numel() * 4
        if fill >= cap:  # a bucket closes once it reaches its cap (it may pass it by one tensor)
            out.append(fill)
            fill, cap = 0, BUCKET_BYTES
    return out + [fill] if fill else out


def torch_buckets(module: nn.Module) -> Optional[list[int]]:
    """The same from torch's own bucketing function, when this torch has it (a cross-check)."""
    fn = getattr(torch.distributed, "_compute_bucket_assignment_by_size", None)
    if fn is None:
        return None
    params = list(reversed([p for p in module.parameters() if p.requires_grad]))
    first = getattr(torch.distributed, "_DEFAULT_FIRST_BUCKET_BYTES", FIRST_BUCKET_BYTES)
    indices, _ = fn(params, [first, BUCKET_BYTES], [False] * len(params))
    return [sum(params[i].numel() * 4 for i in b) for b in indices]


def step_flops(preset: Preset, batch: int) -> dict[str, float]:
    """GFLOP of the pieces of one DCGAN step at ``batch`` (meta tensors: nothing is computed)."""
    G, D = (n.to("meta") for n in networks(preset))
    z = torch.randn(batch, preset.z_dim, device="meta")
    real = torch.randn(batch, preset.channels, preset.img_size, preset.img_size, device="meta")

    def count(fn) -> float:
        with use_impl("ref"), FlopCounterMode(display=False) as fc:
            fn()
        return fc.get_total_flops() / GB

    fake = G(z).detach()
    g_fwd = count(lambda: G(z))
    d_fwd = count(lambda: (D(real), D(fake)))
    d_step = count(lambda: (D(real).mean() + D(fake).mean()).backward())

    def g_step(freeze: bool) -> None:
        D.requires_grad_(not freeze)
        D(G(z)).mean().backward()
        D.requires_grad_(True)

    g_all = count(lambda: g_step(True))                         # G forward, D forward, backward to z
    g_all_unfrozen = count(lambda: g_step(False))               # + D's weight gradients
    g_bwd = count(lambda: G(z).mean().backward()) - g_fwd       # G's own backward: G's all-reduce window
    return {"g_forward": g_fwd, "d_forward_real_fake": d_fwd, "d_backward": d_step - d_fwd,
            "g_backward": g_bwd, "step_frozen_d": g_fwd + d_step + g_all - g_fwd,
            "step_measured_recipe": g_fwd + d_step + g_all_unfrozen - g_fwd}


def ring_ms(nbytes: float, gpus: int, bus_gbps: float) -> float:
    """Milliseconds of a ring all-reduce of ``nbytes`` over ``gpus`` at ``bus_gbps`` GB/s per direction."""
    return 2 * (gpus - 1) / gpus * nbytes / (bus_gbps * GB) * 1e3


def exposed_ms(bucket_bytes: list[int], window_ms: float, gpus: int, bus: float) -> tuple[float, float]:
    """(no overlap, overlap) exposed milliseconds of one update's all-reduces."""
    total = sum(ring_ms(b, gpus, bus) for b in bucket_bytes)
    last = ring_ms(bucket_bytes[-1], gpus, bus)
    return total, max(total - window_ms, last)


def model() -> dict:
    """Every figure of the model (see the module docstring)."""
    presets = {}
    for name, preset in PRESETS.items():
        G, D = networks(preset)
        presets[name] = {"g_params": sum(p.numel() for p in G.parameters()),
                         "d_params": sum(p.numel() for p in D.parameters()),
                         "g_buckets": buckets(G), "d_buckets": buckets(D),
                         "torch_g_buckets": torch_buckets(G), "torch_d_buckets": torch_buckets(D)}
        presets[name]["bytes_per_step"] = 4 * (presets[name]["g_params"] + presets[name]["d_params"])
    p64 = presets["dcgan64"]
    flops = {b: step_flops(PRESETS["dcgan64"], b) for b in MEASURED_MS}
    rows = []
    for gpus, link, bus in LINKS:
        row = {"gpus": gpus, "link": link, "bus_GBps": bus,
               "sent_MB_per_gpu": 2 * (gpus - 1) / gpus * p64["bytes_per_step"] / 1e6,
               "comm_ms": ring_ms(p64["bytes_per_step"], gpus, bus),
               "latency_us_per_us": 2 * (gpus - 1) * (len(p64["g_buckets"]) + len(p64["d_buckets"]))}
        for batch, t in MEASURED_MS.items():
            f = flops[batch]
            scale = t / f["step_measured_recipe"]          # ms per GFLOP of the measured recipe
            d_none, d_over = exposed_ms(p64["d_buckets"], f["d_backward"] * scale, gpus, bus)
            g_none, g_over = exposed_ms(p64["g_buckets"], f["g_backward"] * scale, gpus, bus)
            row[f"eff_no_overlap_b{batch}"] = t / (t + d_none + g_none)
            row[f"eff_overlap_b{batch}"] = t / (t + d_over + g_over)
        rows.append(row)
    return {"presets": presets, "dcgan64_flops_gflop": flops, "measured_ms": MEASURED_MS,
            "measured_gflop_512": MEASURED_GFLOP_512, "dcgan64_rows": rows}


def report(m: dict) -> str:
    """The model as markdown tables."""
    lines = ["| preset | G params | D params | fp32 gradient bytes per step | buckets (G + D) | "
             "8 GPUs, NVLink 4 | 64 GPUs, 1 x 100 Gb/s per node |", "|---|---|---|---|---|---|---|"]
    for name, p in m["presets"].items():
        b = p["bytes_per_step"]
        lines.append(f"| {name} | {p['g_params']:,} | {p['d_params']:,} | {b / 1e6:.2f} MB | "
                     f"{len(p['g_buckets'])} + {len(p['d_buckets'])} | {ring_ms(b, 8, NVLINK4):.3f} ms | "
                     f"{ring_ms(b, 64, 100 / 8):.2f} ms |")
    f512 = m["dcgan64_flops_gflop"][512]
    lines += ["", f"DCGAN-64 FLOPs at batch 512 (counted): {f512['step_frozen_d']:.0f} GFLOP per step with D frozen in "
              f"G's step (fastgan), {f512['step_measured_recipe']:.0f} GFLOP with D's weight gradients too (the "
              f"measured recipe; {m['measured_gflop_512']} GFLOP were counted beside the times). Backward windows: "
              f"D {f512['d_backward']:.0f}, G {f512['g_backward']:.0f} GFLOP.", "",
              "| GPUs | link (bus GB/s per GPU and direction) | sent per GPU per step | all-reduce time | "
              "batch 128/GPU (2.72 ms): no overlap | overlap | batch 512/GPU (7.10 ms): no overlap | overlap | "
              "+us per us of hop latency |", "|---|---|---|---|---|---|---|---|---|"]
    for r in m["dcgan64_rows"]:
        lines.append(f"| {r['gpus']} | {r['link']} ({r['bus_GBps']:g}) | {r['sent_MB_per_gpu']:.1f} MB | "
                     f"{r['comm_ms']:.3f} ms | {r['eff_no_overlap_b128']:.0%} | {r['eff_overlap_b128']:.0%} | "
                     f"{r['eff_no_overlap_b512']:.0%} | {r['eff_overlap_b512']:.0%} | {r['latency_us_per_us']} |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    """Print the model's tables; optionally write every figure as JSON.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", default=None, help="also write every figure to this JSON file")
    args = p.parse_args(argv)
    m = model()
    for name, pr in m["presets"].items():
        for net in ("g", "d"):
            theirs = pr[f"torch_{net}_buckets"]
            if theirs is not None and theirs != pr[f"{net}_buckets"]:
                print(f"warning: {name} {net.upper()}: torch buckets {theirs} != modelled {pr[f'{net}_buckets']}",
                      file=sys.stderr)
    print(report(m))
    if args.json:
        from fastgan.info import cpu_machine

        m = {"device": f"none: a model, computed on a CPU machine ({cpu_machine()}); its link bandwidths are "
                       "assumptions and its step times the measured figures it names", **m}
        Path(args.json).write_text(json.dumps(m, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
