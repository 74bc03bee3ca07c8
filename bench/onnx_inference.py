"""Generator inference on the CPU: ONNX Runtime against eager PyTorch.

For the DCGAN-32 and DCGAN-64 generators (z = 100, width 64, 3 channels) at
batch 1 and 64, both runtimes on the same number of intra-op threads
(``torch.set_num_threads`` / ``SessionOptions.intra_op_num_threads``). Each
ONNX Runtime variant is paired with eager PyTorch and the two are timed in
interleaved rounds (the order alternating), so that a burst of load from other
processes hits both alike; each figure is the median over every timed call
after warm-up, and the spread is the range of the per-round medians. The
minimum of each backend is stored as well: on a machine shared with other jobs
it is the best estimate of the uncontended time (PyTorch's OpenMP threads
suffer most from a busy machine, since every parallel region waits for its
slowest thread). The main ONNX Runtime figure ("ort") uses the session
options ``fastgan.export.OnnxGenerator`` uses (``session_options()``: all graph
optimisations, sequential execution, memory pattern on, idle threads sleep
instead of spinning); the variants show which options and export choices matter:

- ``ort_spin``: ONNX Runtime's default of spinning idle intra-op threads;
- ``ort_basic`` / ``ort_no_opt``: graph optimisation level BASIC / DISABLE_ALL;
- ``ort_no_mem_pattern``: memory-pattern planning off;
- ``ort_bn_unfolded``: exported without the exporter's graph optimisation, so
  batch norm stays a separate BatchNormalization node;
- ``ort_subpixel``: every stride-2 4x4 ConvTranspose rewritten as one 2x2
  Conv with 4x the output channels over the padded input, four Slices, a
  Concat and a DepthToSpace (the "sub-pixel" form: plain Conv kernels instead
  of MLAS's GEMM + col2im ConvTranspose);
- ``ort_fp16``: the fp16 export (the CPU provider has few fp16 kernels).

Usage::

    python bench/onnx_inference.py                       # writes bench/results/onnx_cpu_<cpu>.json
    python bench/onnx_inference.py --rounds 3 --models dcgan32 --variants ort
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fastgan.info import cpu_name

MODELS = {"dcgan32": 32, "dcgan64": 64}
VARIANTS = ("ort", "ort_spin", "ort_basic", "ort_no_opt", "ort_no_mem_pattern", "ort_bn_unfolded",
            "ort_subpixel", "ort_fp16")
TARGET_SPEEDUP = {1: 1.5, 64: 1.3}  # ONNX Runtime ("ort") over eager PyTorch
RESULTS = Path(__file__).resolve().parent / "results"


def slug(text: str) -> str:
    """A file-name-safe lowercase form of ``text`` ("AMD EPYC 7B13" -> "amd-epyc-7b13")."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "cpu"


def session(path: str, threads: int, variant: str):
    """An ONNX Runtime CPU session configured for one benchmark variant.

    Args:
        path: the ONNX file.
        threads: intra-op threads.
        variant: one of VARIANTS; "ort" and the file-level variants use the
            options OnnxGenerator uses (fastgan.export.session_options).
    """
    import onnxruntime as ort

    from fastgan.export import session_options

    opts = session_options(threads=threads, spin=variant == "ort_spin")
    if variant == "ort_basic":
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if variant == "ort_no_opt":
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if variant == "ort_no_mem_pattern":
        opts.enable_mem_pattern = False
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def export_files(G: torch.nn.Module, folder: Path, variants: list[str]) -> tuple[dict[str, str], dict]:
    """Export the generator once per file-level variant; return paths and the parity reports."""
    from fastgan.export import export_onnx

    paths, parity = {}, {}
    report = export_onnx(G, folder / "g.onnx")
    paths["fp32"], parity["fp32"] = report.path, report.max_abs_diff
    if "ort_fp16" in variants:
        report = export_onnx(G, folder / "g16.onnx", fp16=True)
        paths["fp16"], parity["fp16"] = report.path, report.max_abs_diff
    if "ort_bn_unfolded" in variants:
        paths["unfolded"] = export_unoptimised(G, folder / "g_unfolded.onnx")
    if "ort_subpixel" in variants:
        import onnx

        model = onnx.load(paths["fp32"])
        subpixel_conv_transpose(model)
        onnx.save(model, str(folder / "g_subpixel.onnx"))
        paths["subpixel"] = str(folder / "g_subpixel.onnx")
    return paths, parity


# For a ConvTranspose with kernel 4, stride 2, padding 1, output row 2m + a
# reads input rows {m - 1, m} (a = 0, kernel taps 3 and 1) or {m, m + 1}
# (a = 1, taps 2 and 0): a 2x2 window starting at row m - 1 + a of the input
# padded by one. Phase -> {window offset: kernel tap}.
_TAPS = {0: {0: 3, 1: 1}, 1: {0: 2, 1: 0}}


def subpixel_conv_transpose(model) -> int:
    """Rewrite stride-2 4x4 ConvTranspose nodes of an ONNX model in place (see the module notes).

    Args:
        model: an ``onnx.ModelProto`` with static spatial sizes and constant weights.

    Returns:
        The number of nodes rewritten.
    """
    import onnx
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    inferred = onnx.shape_inference.infer_shapes(model).graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.value_info) + list(inferred.input)}
    nodes, extra, done = [], [], 0
    for node in g.node:
        at = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if not (node.op_type == "ConvTranspose" and list(at.get("strides", [])) == [2, 2]
                and list(at.get("pads", [])) == [1, 1, 1, 1] and list(at.get("kernel_shape", [])) == [4, 4]
                and at.get("group", 1) == 1 and not any(at.get("output_padding", []))
                and list(at.get("dilations", [1, 1])) == [1, 1] and node.input[1] in inits
                and node.input[0] in shapes):
            nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]])                     # (Cin, Cout, 4, 4)
        cin, cout = w.shape[:2]
        h, wd = shapes[node.input[0]][2:]
        has_bias = len(node.input) > 2 and node.input[2]
        bias = numpy_helper.to_array(inits[node.input[2]]) if has_bias else np.zeros(cout, w.dtype)
        w2 = np.zeros((2, 2, cout, cin, 2, 2), w.dtype)                     # (a, b, Cout, Cin, 2, 2)
        for a in (0, 1):
            for b in (0, 1):
                for ty, ky in _TAPS[a].items():
                    for tx, kx in _TAPS[b].items():
                        w2[a, b, :, :, ty, tx] = w[:, :, ky, kx].T
        p = f"{node.output[0]}_subpixel"

        def const(name, arr):
            extra.append(numpy_helper.from_array(np.asarray(arr), f"{p}_{name}"))
            return f"{p}_{name}"

        pads = const("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))     # H and W by one each side
        nodes.append(helper.make_node("Pad", [node.input[0], pads], [f"{p}_xp"]))
        nodes.append(helper.make_node("Conv", [f"{p}_xp", const("w", w2.reshape(4 * cout, cin, 2, 2)),
                                               const("b", np.tile(bias, 4).astype(w.dtype))],
                                      [f"{p}_y"], kernel_shape=[2, 2]))            # (B, 4 Cout, H+1, W+1)
        parts = []
        for a in (0, 1):
            for b in (0, 1):
                k = 2 * a + b                                                   # DepthToSpace DCR order
                nodes.append(helper.make_node(
                    "Slice", [f"{p}_y", const(f"s{k}", np.array([k * cout, a, b], np.int64)),
                              const(f"e{k}", np.array([(k + 1) * cout, a + h, b + wd], np.int64)),
                              const(f"ax{k}", np.array([1, 2, 3], np.int64))], [f"{p}_phase{k}"]))
                parts.append(f"{p}_phase{k}")
        nodes.append(helper.make_node("Concat", parts, [f"{p}_phases"], axis=1))   # (B, 4 Cout, H, W)
        nodes.append(helper.make_node("DepthToSpace", [f"{p}_phases"], list(node.output), blocksize=2,
                                      mode="DCR"))                               # (B, Cout, 2H, 2W)
        done += 1
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(extra)
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    del g.value_info[:]
    onnx.checker.check_model(model, full_check=True)
    return done


def export_unoptimised(G: torch.nn.Module, path: Path) -> str:
    """Export with the exporter's optimiser off (batch norm stays a separate node)."""
    import logging
    import warnings

    from fastgan.kernels import use_impl

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with use_impl("ref"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(G, (torch.randn(2, G.z_dim),), str(path), dynamo=True, opset_version=20,
                          input_names=["z"], output_names=["images"], optimize=False, verbose=False,
                          dynamic_shapes={"z": {0: torch.export.Dim("batch")}}, external_data=False)
    return str(path)


def time_rounds(backends: dict[str, Callable[[], object]], rounds: int, round_seconds: float,
                warmup: int) -> dict[str, dict]:
    """Interleaved timing: every round runs each backend a few times, order rotating.

    Args:
        backends: name -> zero-argument function running one inference.
        rounds: number of rounds.
        round_seconds: target time each backend gets per round (sets its call count).
        warmup: untimed calls per backend before the first round.

    Returns:
        name -> {"median_ms", "min_ms", "round_medians_ms", "calls"}.
    """
    calls, samples, per_round = {}, {}, {}
    for name, fn in backends.items():
        for _ in range(warmup):
            fn()
        t0 = time.perf_counter()
        fn()
        est = time.perf_counter() - t0
        calls[name] = int(min(50, max(3, math.ceil(round_seconds / max(est, 1e-6)))))
        samples[name], per_round[name] = [], []
    names = list(backends)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            time.sleep(0.05)  # let the previous backend's spinning worker threads go idle
            fn, times = backends[name], []
            for _ in range(calls[name]):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            samples[name] += times
            per_round[name].append(statistics.median(times) * 1e3)
    return {n: {"median_ms": statistics.median(samples[n]) * 1e3, "min_ms": min(samples[n]) * 1e3,
                "round_medians_ms": [round(v, 4) for v in per_round[n]],
                "calls": len(samples[n])} for n in names}


def run(models: list[str], batches: list[int], variants: list[str], threads: int, rounds: int,
        round_seconds: float, warmup: int) -> dict:
    """Measure every model x batch x variant; return the JSON-ready result.

    Each ONNX Runtime variant is timed in its own interleaved pairing with eager
    PyTorch while it is the only live session: idle ORT thread pools of other
    sessions were measured to slow PyTorch's OpenMP threads down (DCGAN-32,
    batch 1: 6.3 ms with one live session, 300 ms with eight, on a busy 2-core
    machine), which would flatter ONNX Runtime.
    """
    import gc

    import onnx
    import onnxruntime as ort

    from fastgan.models import DCGANGenerator

    torch.set_num_threads(threads)
    load_start = os.getloadavg()
    results = []
    file_of = {"ort_fp16": "fp16", "ort_bn_unfolded": "unfolded", "ort_subpixel": "subpixel"}
    for model in models:
        torch.manual_seed(0)
        G = DCGANGenerator(z_dim=100, img_size=MODELS[model], channels=3, width=64).eval()
        with tempfile.TemporaryDirectory() as tmp:
            paths, parity = export_files(G, Path(tmp), variants)
            z3 = torch.randn(3, 100, generator=torch.Generator().manual_seed(3))
            with torch.inference_mode():
                want = G(z3).numpy()
            for batch in batches:
                z = torch.randn(batch, 100, generator=torch.Generator().manual_seed(batch))
                zn = z.numpy()

                def eager(z=z):
                    with torch.inference_mode():
                        return G(z)

                pairs, diffs = {}, {}
                for v in variants:
                    sess = session(paths[file_of.get(v, "fp32")], threads, v)
                    diffs[v] = float(np.abs(sess.run(None, {"z": z3.numpy()})[0] - want).max())
                    pairs[v] = time_rounds({"torch_eager": eager, v: lambda s=sess: s.run(None, {"z": zn})},
                                           rounds, round_seconds, warmup)
                    del sess
                    gc.collect()
                ref = pairs["ort" if "ort" in pairs else variants[0]]["torch_eager"]
                base, base_min = ref["median_ms"], ref["min_ms"]
                entry = {
                    "model": model, "img_size": MODELS[model], "batch": batch,
                    "torch_eager_ms": round(base, 4), "torch_eager_min_ms": round(base_min, 4),
                    "torch_eager_round_medians_ms": ref["round_medians_ms"],
                    "ort_ms": {v: round(t[v]["median_ms"], 4) for v, t in pairs.items()},
                    "ort_min_ms": {v: round(t[v]["min_ms"], 4) for v, t in pairs.items()},
                    "ort_round_medians_ms": {v: t[v]["round_medians_ms"] for v, t in pairs.items()},
                    # speedup within each pairing (the torch figure measured beside that variant)
                    "speedup_vs_torch": {v: round(t["torch_eager"]["median_ms"] / t[v]["median_ms"], 3)
                                         for v, t in pairs.items()},
                    "speedup_of_min_times": {v: round(t["torch_eager"]["min_ms"] / t[v]["min_ms"], 3)
                                             for v, t in pairs.items()},
                    "torch_eager_ms_by_pairing": {v: round(t["torch_eager"]["median_ms"], 4)
                                                  for v, t in pairs.items()},
                    "calls": {v: {n: x["calls"] for n, x in t.items()} for v, t in pairs.items()},
                    "images_per_s": {"torch_eager": round(batch / (base / 1e3), 1),
                                     **{v: round(batch / (t[v]["median_ms"] / 1e3), 1) for v, t in pairs.items()}},
                    "variant_max_abs_diff_vs_torch": diffs,
                    "export_parity_max_abs_diff": {k: {str(b): d for b, d in v.items()} for k, v in parity.items()},
                }
                if "ort" in variants and batch in TARGET_SPEEDUP:
                    entry["target_speedup"] = TARGET_SPEEDUP[batch]
                    entry["meets_target"] = entry["speedup_vs_torch"]["ort"] >= TARGET_SPEEDUP[batch]
                results.append(entry)
                print(_line(entry), flush=True)
    return {
        "benchmark": "onnx_inference",
        "cpu": cpu_name(), "logical_cpus": os.cpu_count(), "threads": threads,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "onnxruntime": ort.__version__, "onnx": onnx.__version__,
                     "fastgan": __import__("fastgan").__version__},
        "settings": {"rounds": rounds, "round_seconds": round_seconds, "warmup": warmup,
                     "z_dim": 100, "width": 64, "channels": 3, "opset": 20,
                     "ort": "fastgan.export.session_options(): ORT_ENABLE_ALL, ORT_SEQUENTIAL, "
                            "mem pattern on, inter-op 1, no spinning"},
        "load_average_start": [round(v, 2) for v in load_start],
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "results": results,
    }


def _line(e: dict) -> str:
    ort_part = "  ".join(f"{v} {ms:.2f} ms ({e['speedup_vs_torch'][v]:.2f}x)" for v, ms in e["ort_ms"].items())
    return (f"{e['model']} batch {e['batch']}: torch_eager {e['torch_eager_ms']:.2f} ms "
            f"(min {e['torch_eager_min_ms']:.2f})  {ort_part}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="dcgan32,dcgan64", help="comma-separated: dcgan32, dcgan64")
    p.add_argument("--batches", default="1,64", help="comma-separated batch sizes")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"ONNX Runtime variants: {', '.join(VARIANTS)}")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads for both runtimes")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    p.add_argument("--round-seconds", type=float, default=0.3, help="time per backend per round")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per backend first")
    p.add_argument("--out", default=None, help="JSON file (default: bench/results/onnx_cpu_<cpu>.json)")
    a = p.parse_args(argv)
    models = [m for m in a.models.split(",") if m]
    variants = [v for v in a.variants.split(",") if v]
    bad = [m for m in models if m not in MODELS] + [v for v in variants if v not in VARIANTS]
    if bad:
        p.error(f"unknown model/variant: {', '.join(bad)}")
    result = run(models, [int(b) for b in a.batches.split(",")], variants, a.threads, a.rounds,
                 a.round_seconds, a.warmup)
    out = Path(a.out) if a.out else RESULTS / f"onnx_cpu_{slug(result['cpu'])}.json"
    from fastgan.benchmark import write_results

    write_results(result, str(out))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
