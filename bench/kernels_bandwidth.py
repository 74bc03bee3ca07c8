"""Effective memory bandwidth of fastgan's fused kernels vs eager PyTorch vs torch.compile.

One command on a CUDA GPU:

    python bench/kernels_bandwidth.py --out bench/results/kernels_<device>.json

For every DCGAN-64 discriminator activation shape (64,32,32), (128,16,16), (256,8,8),
(512,4,4) at batch 128 and 512, bf16 and fp32, channels_last, it times three
implementations of each op:

    triton   fastgan.kernels (batch_norm_act / instance_norm_act / bias_act / gan_loss, impl="triton")
    eager    the plain nn modules: BatchNorm2d (InstanceNorm2d) + LeakyReLU(0.2); x + b then
             leaky_relu; binary_cross_entropy_with_logits
    compile  torch.compile (default mode, inductor) of the same eager code

in three modes: forward ("fwd"), backward only ("bwd": autograd.grad of a saved
forward, retain_graph) and forward + backward ("fwd+bwd"), with
triton.testing.do_bench (median after warm-up, launches included) and, where the
work can be captured, as a CUDA-graph replay ("graph": launch overhead removed,
what a graph-captured training step sees).

Effective GB/s = counted bytes / median time, counting the minimum traffic of the
op, in passes over the activation tensor (numel * element size each):

    batch_norm_act, instance_norm_act, bias_act:  fwd = 2 (read x, write y)
                               bwd = 3 (read x, read dy, write dx)
                               fwd+bwd = 5
    gan_loss (on (B,) logits): fwd+bwd = 2 (read logits, write their gradient)

Per-channel parameters and statistics are not counted (C values, negligible).
fastgan's batch_norm_act really moves 8 passes for fwd+bwd (a statistics pass
and a reduction pass re-read x); the counted 5 is the bound any implementation
must move, so figures are comparable across implementations. A device-to-device
copy (read + write) is timed as the practical ceiling.

Without a GPU the script says so and exits 0; --cpu-smoke runs a tiny version on
CPU (Triton interpreter, aot_eager compile) to check the script itself; its
timings mean nothing.
"""

import argparse
import json
import os
import platform
import re
import sys
import time
from datetime import datetime, timezone

SHAPES = [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]
BATCHES = [128, 512]
DTYPES = ["bf16", "fp32"]
MODES = ["fwd", "bwd", "fwd+bwd"]
IMPLS = ["triton", "eager", "compile"]
PASSES = {"batch_norm_act": {"fwd": 2, "bwd": 3, "fwd+bwd": 5},
          "instance_norm_act": {"fwd": 2, "bwd": 3, "fwd+bwd": 5},
          "bias_act": {"fwd": 2, "bwd": 3, "fwd+bwd": 5},
          "gan_loss": {"fwd+bwd": 2}}
TARGET = {"op": "batch_norm_act", "mode": "fwd+bwd", "batch": 512, "shape": [128, 16, 16], "dtype": "bf16",
          "min_gbps": 1500.0}
COUNTING = ("effective GB/s = counted bytes / median time; counted bytes = passes * numel * element size; "
            "batch_norm_act, instance_norm_act and bias_act: fwd 2 passes (read x, write y), "
            "bwd 3 (read x, read dy, write dx), "
            "fwd+bwd 5; gan_loss fwd+bwd 2 (read logits, write gradient); per-channel vectors not counted")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None,
                   help="JSON file (default bench/results/kernels_<device>.json; --cpu-smoke writes only if given)")
    p.add_argument("--batches", type=int, nargs="+", default=BATCHES)
    p.add_argument("--dtypes", nargs="+", default=DTYPES, choices=DTYPES)
    p.add_argument("--ops", nargs="+", default=list(PASSES), choices=list(PASSES))
    p.add_argument("--impls", nargs="+", default=IMPLS, choices=IMPLS)
    p.add_argument("--no-graph", action="store_true", help="skip the CUDA-graph replay timings")
    p.add_argument("--warmup", type=int, default=25, help="do_bench warm-up, ms")
    p.add_argument("--rep", type=int, default=100, help="do_bench measuring time, ms")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="no GPU: run tiny shapes on CPU (Triton interpreter) to check the script")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- the ops under test
def make_case(op, impl, batch, shape, dtype, device, compile_backend):
    """Build inputs and a forward function for one (op, impl); returns (fwd, inputs, numel, elem_size)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from fastgan import kernels as K

    gen = torch.Generator().manual_seed(0)
    if op == "gan_loss":
        x = torch.randn(batch, generator=gen).to(device, dtype).requires_grad_(True)
        if impl == "triton":
            fwd = lambda: K.gan_loss(x, True, "ns", impl="triton")  # noqa: E731
        else:
            ones = torch.ones_like(x, dtype=torch.float32)
            eager = lambda: F.binary_cross_entropy_with_logits(x.float(), ones)  # noqa: E731
            fwd = eager if impl == "eager" else torch.compile(eager, backend=compile_backend, dynamic=False)
        return fwd, [x], x.numel(), x.element_size()

    c = shape[0]
    x = torch.randn((batch, *shape), generator=gen).to(device, dtype)
    x = x.to(memory_format=torch.channels_last).requires_grad_(True)
    if op in ("batch_norm_act", "instance_norm_act"):
        fused, norm = (K.BatchNormAct, nn.BatchNorm2d) if op == "batch_norm_act" else \
            (K.InstanceNormAct, nn.InstanceNorm2d)
        if impl == "triton":
            m = fused(c, act="lrelu", alpha=0.2, impl="triton").to(device)
        else:
            m = nn.Sequential(norm(c), nn.LeakyReLU(0.2)).to(device)
        m = m.to(memory_format=torch.channels_last)
        params = list(m.parameters())
        if impl == "compile":
            m = torch.compile(m, backend=compile_backend, dynamic=False)
        fwd = lambda: m(x)  # noqa: E731
        return fwd, [x, *params], x.numel(), x.element_size()
    # bias_act
    b = torch.zeros(c, device=device, dtype=torch.float32).requires_grad_(True)
    if impl == "triton":
        fwd = lambda: K.bias_act(x, b, "lrelu", 0.2, impl="triton")  # noqa: E731
    else:
        eager = lambda: F.leaky_relu(x + b.to(x.dtype).view(1, -1, 1, 1), 0.2)  # noqa: E731
        fwd = eager if impl == "eager" else torch.compile(eager, backend=compile_backend, dynamic=False)
    return fwd, [x, b], x.numel(), x.element_size()


def mode_fn(mode, fwd, inputs):
    """The function timed for one mode (no gradient accumulation: autograd.grad)."""
    import torch

    if mode == "fwd":
        return fwd
    y = fwd()
    dy = torch.randn_like(y)
    if mode == "bwd":
        return lambda: torch.autograd.grad(y, inputs, dy, retain_graph=True)
    return lambda: torch.autograd.grad(fwd(), inputs, dy)


# ----------------------------------------------------------------------------- timing
def time_eager(fn, args, cuda):
    """Median ms of fn() with launches included."""
    if cuda:
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=args.warmup, rep=args.rep, return_mode="median"))
    fn()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return sorted(times)[1]


def time_graph(fn, args):
    """Median ms of a CUDA-graph replay of fn(); None (and the reason) if it cannot be captured."""
    import torch
    from triton.testing import do_bench

    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):  # warm-up outside the capture (autotuning, lazy init, allocator)
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        graph.replay()
        torch.cuda.synchronize()
        return float(do_bench(graph.replay, warmup=args.warmup, rep=args.rep, return_mode="median")), None
    except Exception as e:  # report, do not abort the whole run
        torch.cuda.synchronize()
        return None, _error_text(e)


def copy_bandwidth(numel, dtype, args, cuda):
    """GB/s of a device-to-device copy (read + write) of numel elements: the practical ceiling."""
    import torch

    src = torch.randn(numel, device="cuda" if cuda else "cpu").to(dtype)
    dst = torch.empty_like(src)
    ms = time_eager(lambda: dst.copy_(src), args, cuda)
    return 2 * numel * src.element_size() / ms / 1e6


# ----------------------------------------------------------------------------- driver
def check_against_eager(op, batch, shape, dtype, device, compile_backend):
    """Max |triton - eager| of the fwd+bwd outputs (a sanity check stored beside the timings)."""
    import torch

    res = []
    for impl in ("triton", "eager"):
        fwd, inputs, _, _ = make_case(op, impl, batch, shape, dtype, device, compile_backend)
        y = fwd()
        g = torch.autograd.grad(y, inputs[0], torch.ones_like(y))[0]
        res.append((y.float(), g.float()))
    return {"max_abs_err_y": (res[0][0] - res[1][0]).abs().max().item(),
            "max_abs_err_dx": (res[0][1] - res[1][1]).abs().max().item()}


def measure_impl(op, impl, batch, shape, dname, dtype, device, compile_backend, args, cuda):
    """Timing rows of one implementation of one op at one shape, every mode; errors become rows too."""
    rows = []
    base = {"op": op, "impl": impl, "batch": batch, "shape": [] if op == "gan_loss" else list(shape),
            "dtype": dname, "layout": "flat" if op == "gan_loss" else "channels_last"}
    try:
        fwd, inputs, numel, esize = make_case(op, impl, batch, shape, dtype, device, compile_backend)
    except Exception as e:  # report and go on: one broken case must not lose the whole run
        return [{**base, "mode": mode, "error": _error_text(e)} for mode in PASSES[op]]
    for mode in PASSES[op]:
        row = {**base, "mode": mode, "counted_bytes": PASSES[op][mode] * numel * esize}
        try:
            fn = mode_fn(mode, fwd, inputs)
            row["ms"] = time_eager(fn, args, cuda)
            row["gbps"] = row["counted_bytes"] / row["ms"] / 1e6
            row["ms_graph"] = row["gbps_graph"] = None
            # NOTE: no graph for "bwd": its forward ran outside the capture, and
            # autograd runs a backward on the forward's stream, not the capturing one.
            if cuda and not args.no_graph and mode != "bwd":
                row["ms_graph"], graph_error = time_graph(fn, args)
                if row["ms_graph"] is None:
                    row["graph_error"] = graph_error
                else:
                    row["gbps_graph"] = row["counted_bytes"] / row["ms_graph"] / 1e6
        except Exception as e:
            row["error"] = _error_text(e)
        rows.append(row)
        shown = "(logits)" if op == "gan_loss" else str(shape)
        head = f"{op:15s} {mode:8s} {impl:8s} B={batch:<4d} {shown:15s} {dname:5s} "
        if "error" in row:
            print(head + "ERROR " + row["error"], flush=True)
        else:
            graph = "" if row["ms_graph"] is None else \
                f" | graph {row['ms_graph'] * 1e3:9.1f} us {row['gbps_graph']:8.1f} GB/s"
            print(head + f"{row['ms'] * 1e3:9.1f} us {row['gbps']:8.1f} GB/s" + graph, flush=True)
    return rows


def _error_text(e):
    text = str(e).splitlines()[0][:300] if str(e) else ""
    return f"{type(e).__name__}: {text}"


def run(args):
    import torch

    cuda = torch.cuda.is_available() and not args.cpu_smoke
    device = "cuda" if cuda else "cpu"
    compile_backend = "inductor" if cuda else "aot_eager"
    dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}
    shapes, batches = (SHAPES, args.batches) if cuda else ([(8, 4, 4)], [4])
    if cuda:
        torch.backends.cudnn.benchmark = True
        import torch._dynamo.config as dynamo_config

        # One compiled graph per shape and dtype: lift the recompile limits so compile never
        # silently falls back to eager (which would then be timed as "compile").
        for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit"):
            if hasattr(dynamo_config, name):
                setattr(dynamo_config, name, 1024)
        if hasattr(dynamo_config, "fail_on_recompile_limit_hit"):
            dynamo_config.fail_on_recompile_limit_hit = True
    else:
        from fastgan import kernels as K

        if not K.TRITON_INTERPRETED and "triton" in args.impls:
            print("kernels_bandwidth: triton was imported without TRITON_INTERPRET=1; smoke run without it")
            args.impls = [i for i in args.impls if i != "triton"]
    results, checks = [], []
    for dname in args.dtypes:
        dtype = dtypes[dname]
        for batch in batches:
            for shape in shapes:
                for op in args.ops:
                    if op == "gan_loss" and shape != shapes[0]:
                        continue  # logits are (B,): one shape per batch
                    if "triton" in args.impls and "eager" in args.impls:
                        check = {"op": op, "batch": batch, "shape": list(shape), "dtype": dname}
                        try:
                            check.update(check_against_eager(op, batch, shape, dtype, device, compile_backend))
                        except Exception as e:
                            check["error"] = _error_text(e)
                        checks.append(check)
                    for impl in args.impls:
                        results += measure_impl(op, impl, batch, shape, dname, dtype, device, compile_backend,
                                                args, cuda)
    big = max(batches) * max(c * h * w for c, h, w in shapes)
    return {
        "device": torch.cuda.get_device_name() if cuda else f"cpu-smoke ({platform.processor() or 'cpu'})",
        "torch": torch.__version__,
        "triton": _triton_version(),
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "timer": "triton.testing.do_bench median (ms), launches included; *_graph: CUDA-graph replay"
                 if cuda else "CPU perf_counter (smoke test only: meaningless numbers)",
        "counting": COUNTING,
        "copy_gbps": {d: copy_bandwidth(big, dtypes[d], args, cuda) for d in args.dtypes},
        "checks_vs_eager": checks,
        "results": results,
        "errors": sum("error" in r for r in results),
        "target": TARGET,
        "target_check": target_check(results),
    }


def target_check(results):
    """The issue's targets: the headline bandwidth, and triton no slower than eager and compile anywhere."""
    def key(r):
        return (r["op"], r["mode"], r["batch"], tuple(r["shape"]), r["dtype"])

    by = {}
    for r in results:
        if "error" not in r:
            by.setdefault(key(r), {})[r["impl"]] = r
    headline = by.get((TARGET["op"], TARGET["mode"], TARGET["batch"], tuple(TARGET["shape"]), TARGET["dtype"]), {})
    tr = headline.get("triton")
    slower = []
    for k, impls in by.items():
        if "triton" not in impls:
            continue
        for other in ("eager", "compile"):
            if other in impls:
                for t in ("ms", "ms_graph"):
                    a, b = impls["triton"].get(t), impls[other].get(t)
                    if a is not None and b is not None and a > b:
                        slower.append({"op": k[0], "mode": k[1], "batch": k[2], "shape": list(k[3]), "dtype": k[4],
                                       "timer": t, "vs": other, "triton_ms": a, "other_ms": b})
    best = None if tr is None else max(x for x in (tr["gbps"], tr["gbps_graph"]) if x is not None)
    return {"headline_gbps": best, "headline_met": None if best is None else best >= TARGET["min_gbps"],
            "triton_slower_cases": slower}


def _triton_version():
    try:
        import triton

        return triton.__version__
    except ImportError:
        return None


def default_out(device_name):
    slug = re.sub(r"[^a-z0-9]+", "_", device_name.lower()).strip("_")
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"kernels_{slug}.json")


def main(argv=None):
    args = parse_args(argv)
    if args.cpu_smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported
    import torch

    if not torch.cuda.is_available() and not args.cpu_smoke:
        print("kernels_bandwidth: no CUDA GPU found; nothing measured. Run this on a GPU machine, or pass "
              "--cpu-smoke to check the script on CPU (meaningless timings).")
        return 0
    report = run(args)
    out = args.out or (None if args.cpu_smoke else default_out(report["device"]))
    if out:  # a smoke run writes only where asked (its numbers are not results)
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {out}")
    tc = report["target_check"]
    print(f"headline batch_norm_act fwd+bwd (512,128,16,16) bf16 channels_last: {tc['headline_gbps']} GB/s "
          f"(target {TARGET['min_gbps']:.0f}); triton slower than eager/compile in {len(tc['triton_slower_cases'])} "
          "timings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
