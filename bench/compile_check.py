"""Target compile check: the Triton kernel specialisations fastgan's models launch, compiled for
GPU targets on a machine without a GPU (nothing is run).

The launches are recorded by running the models on fake tensors inside
``fastgan.kernels.record_launches`` (DCGAN 16-128 px, the point MLP, and the translation
networks: pix2pix's U-Net + PatchGAN, CycleGAN's ResNet + PatchGAN, 32 and 256 px; fp32, bf16
and fp16 autocast; NCHW and channels_last; a training step and sampling). Each distinct specialisation
(kernel, argument types, Triton's integer and alignment specialisations, constexprs, warps) is
compiled with ``triton.compile`` for each target; ptxas's own report gives registers, spills
and stack, and the estimated occupancy follows from them. The check fails on a compile error,
a spill, a stack frame (local memory) or more registers than REGISTER_BUDGET.

    python bench/compile_check.py                  # the representative set (what CI runs)
    python bench/compile_check.py --all --out bench/results/compile-check-compiled-not-run.json

Run it without TRITON_INTERPRET (the interpreter builds no compilable kernels).
"""

import argparse
import contextlib
import io
import itertools
import json
import os
import platform
import re
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone

# A fresh cache: a cached kernel would skip ptxas, whose report this check reads.
os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="fastgan-compile-check-")
os.environ["TRITON_ALWAYS_COMPILE"] = "1"
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # triton 3.9 warns when unset; 1 is its default

import torch  # noqa: E402
import triton  # noqa: E402
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource, make_backend  # noqa: E402
from triton.runtime.jit import create_function_from_signature  # noqa: E402

from fastgan import kernels as K  # noqa: E402
from fastgan.kernels.tiles import TUNING  # noqa: E402
from fastgan.models import (DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator,  # noqa: E402
                            PatchDiscriminator, ResnetGenerator, UNetGenerator)

# 96 registers at 4 warps still allows 5 resident blocks (31% of an SM's warps); more is a tile to rethink.
REGISTER_BUDGET = 96
# Per-SM limits: (max resident warps, max resident blocks, shared memory per SM in bytes).
SM_LIMITS = {80: (64, 32, 167936), 90: (64, 32, 233472), 100: (64, 32, 233472), 120: (48, 32, 102400)}
TARGETS = {"sm_80": 80, "sm_90a": 90, "sm_100a": 100}
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


# ----------------------------------------------------------------------------- cases
def all_cases():
    """Every model configuration the full check records."""
    cases = []
    for res, channels, dtype, layout, norm in itertools.product(
            (16, 32, 64, 128), (1, 3), DTYPES, ("nchw", "channels_last"), ("batch", "none")):
        for batch in (64, 512):
            cases.append(dict(model="dcgan", resolution=res, channels=channels, dtype=dtype, layout=layout,
                              d_norm=norm, batch=batch, loss="ns"))
    for loss in K.LOSS_KINDS:
        cases.append(dict(model="dcgan", resolution=64, channels=3, dtype="bf16", layout="channels_last",
                          d_norm="batch", batch=128, loss=loss))
    for dtype, batch in itertools.product(DTYPES, (512, 4096, 65536)):
        cases.append(dict(model="mlp", dtype=dtype, batch=batch, loss="ns"))
    return cases


def translation_cases():
    """The translation networks' configurations (``--translation``): both tasks, 32 and 256 px, every dtype
    and layout, batch 1 (the papers') and 16."""
    return [dict(model=model, resolution=res, channels=3, dtype=dtype, layout=layout, batch=batch,
                 loss="ns" if model == "pix2pix" else "lsgan")
            for model, res, dtype, layout, batch in itertools.product(
                ("pix2pix", "cyclegan"), (32, 256), DTYPES, ("nchw", "channels_last"), (1, 16))]


def representative_cases():
    """What CI compiles: every kernel, both layouts, the RGB image ends, planes and rows, reductions."""
    return [
        dict(model="dcgan", resolution=64, channels=3, dtype="bf16", layout="channels_last", d_norm="batch",
             batch=512, loss="ns"),
        dict(model="dcgan", resolution=16, channels=1, dtype="fp32", layout="nchw", d_norm="none", batch=64,
             loss="hinge"),
        dict(model="mlp", dtype="fp32", batch=65536, loss="ns"),  # > 32K logits: gan_loss's two-stage path
    ]


def case_id(case: dict) -> str:
    return "-".join(str(v) for v in case.values())


def record_case(case: dict):
    """Launches of one training step (D update, then G update on the same fake batch) and of sampling."""
    if case["model"] in ("pix2pix", "cyclegan"):
        return record_translation_case(case)
    amp = DTYPES[case["dtype"]]
    with FakeTensorMode(allow_non_fake_inputs=True), K.record_launches() as rec:
        if case["model"] == "mlp":
            G, D = MLPGenerator(z_dim=8, out_dim=2, width=128, depth=3), MLPDiscriminator(in_dim=2, width=128, depth=3)
            z, real = torch.randn(case["batch"], 8), torch.randn(case["batch"], 2)
        else:
            res, ch = case["resolution"], case["channels"]
            G = DCGANGenerator(z_dim=100, img_size=res, channels=ch, width=64)
            D = DCGANDiscriminator(img_size=res, channels=ch, width=64, norm=case["d_norm"])
            z, real = torch.randn(case["batch"], 100), torch.randn(case["batch"], ch, res, res)
            if case["layout"] == "channels_last":
                for p in itertools.chain(G.parameters(), D.parameters()):  # .to() cannot swap fake parameters
                    if p.ndim == 4:
                        p.data = p.data.contiguous(memory_format=torch.channels_last)
                real = real.contiguous(memory_format=torch.channels_last)
        autocast = torch.autocast("cpu", dtype=amp) if amp is not None else contextlib.nullcontext()
        with autocast:
            fake = G(z)
            d_loss = K.gan_loss(D(real), True, case["loss"]) + K.gan_loss(D(fake.detach()), False, case["loss"])
        d_loss.backward()
        with autocast:
            g_loss = K.gan_loss(D(fake), True, case["loss"])
        g_loss.backward()
        G.eval()
        with torch.no_grad(), autocast:
            G(z)
    return rec.launches


def _channels_last(tensors, *modules):
    """Fake parameters and tensors in channels_last (``.to()`` cannot swap fake parameters)."""
    for p in itertools.chain(*(m.parameters() for m in modules)):
        if p.ndim == 4:
            p.data = p.data.contiguous(memory_format=torch.channels_last)
    return [t.contiguous(memory_format=torch.channels_last) for t in tensors]


def record_translation_case(case: dict):
    """Launches of a pix2pix step (U-Net G, PatchGAN D on input + output) or one CycleGAN generator's share of its
    step (ResNet G_AB, cycle through a second ResNet, PatchGAN D_B), then translation in eval mode."""
    amp = DTYPES[case["dtype"]]
    res, ch, n, kind = case["resolution"], case["channels"], case["batch"], case["loss"]
    with FakeTensorMode(allow_non_fake_inputs=True), K.record_launches() as rec:
        if case["model"] == "pix2pix":
            G, D = UNetGenerator(ch, ch, res, width=64), PatchDiscriminator(2 * ch, width=64, n_layers=3)
            nets = (G, D)
        else:
            G, back = ResnetGenerator(ch, ch, width=64, n_blocks=9 if res >= 256 else 6), \
                ResnetGenerator(ch, ch, width=64, n_blocks=9 if res >= 256 else 6)
            D = PatchDiscriminator(ch, width=64, n_layers=3)
            nets = (G, back, D)
        a, b = torch.randn(n, ch, res, res), torch.randn(n, ch, res, res)
        if case["layout"] == "channels_last":
            a, b = _channels_last((a, b), *nets)
        paired = case["model"] == "pix2pix"
        judge = (lambda x, y: D(torch.cat([x, y], 1))) if paired else (lambda x, y: D(y))
        autocast = torch.autocast("cpu", dtype=amp) if amp is not None else contextlib.nullcontext()
        with autocast:
            fake = G(a)
            g_loss = K.gan_loss(judge(a, fake), True, kind) + (fake - b).abs().mean()
            if not paired:
                g_loss = g_loss + (back(fake) - a).abs().mean()
        g_loss.backward()
        with autocast:
            d_loss = K.gan_loss(judge(a, b), True, kind) + K.gan_loss(judge(a, fake.detach()), False, kind)
        d_loss.backward()
        G.eval()
        with torch.no_grad(), autocast:
            G(a)
    return rec.launches


# ----------------------------------------------------------------------------- specialisations
def _describe(value):
    """A launch argument as what Triton specialises on: tensors by dtype (fresh allocations: aligned)."""
    if isinstance(value, torch.Tensor):
        return ("tensor", str(value.dtype).removeprefix("torch."))
    return value


def _materialise(value):
    if isinstance(value, tuple) and value and value[0] == "tensor":
        return torch.empty(0, dtype=getattr(torch, value[1]))  # data_ptr 0: aligned, like a fresh allocation
    return value


def spec_key(kernel, args, kwargs):
    """Hashable description of one launch: the kernel and what Triton specialises on (not the grid, not
    integer values beyond Triton's own classes: == 1, divisible by 16)."""
    src, options = triton_specialisation(kernel, [_materialise(_describe(a)) for a in args],
                                         {k: _materialise(_describe(v)) for k, v in kwargs.items()},
                                         GPUTarget("cuda", 90, 32))
    return (kernel.fn.__module__, kernel.fn.__name__, repr(src.signature), repr(sorted(src.constants.items())),
            repr(sorted(src.attrs.items())), options.num_warps)


def triton_specialisation(kernel, args, kwargs, target):
    """(ASTSource, options) exactly as Triton's launcher would build them for ``target``."""
    backend = make_backend(target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, specialization, options)
    return ASTSource(kernel, signature, constexprs, attrs), options


_PTXAS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads.*?"
                    r"Used (\d+) registers", re.S)
_LOAD = re.compile(r"ld\.global(?:\.nc)?(?:\.L\w+::\w+)*(?:\.v(\d))?\.(?:b|u|s|f)(\d+)")


def occupancy(cc: int, registers: int, num_warps: int, shared: int) -> float:
    """Resident warps / max warps per SM, from registers (256-register warp granules), warps, blocks, smem."""
    max_warps, max_blocks, smem = SM_LIMITS[cc]
    per_warp = -(-max(registers, 1) * 32 // 256) * 256
    blocks = min(max_blocks, max_warps // num_warps, (65536 // per_warp) // num_warps)
    if shared:
        blocks = min(blocks, smem // (shared + 1024))  # 1 KB per block is reserved by the system
    return round(blocks * num_warps / max_warps, 4)


def compile_one(job):
    """Compile one specialisation for one target; returns its resource report."""
    key, target_name = job
    module, name, args, kwargs = key
    kernel = getattr(sys.modules[module], name)
    cc = TARGETS[target_name]
    target = GPUTarget("cuda", cc, 32)
    src, options = triton_specialisation(kernel, [_materialise(a) for a in args],
                                         {k: _materialise(v) for k, v in kwargs}, target)
    triton.knobs.nvidia.dump_ptxas_log = True
    log = io.StringIO()
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(src, target=target, options=options.__dict__)
    except Exception as e:  # noqa: BLE001 - any compile failure is a finding
        return {"error": f"{type(e).__name__}: {str(e)[:500]}"}
    m = _PTXAS.search(log.getvalue())
    if m is None:
        return {"error": "no ptxas report: " + log.getvalue()[-300:]}
    stack, spill_st, spill_ld, regs = map(int, m.groups())
    shared = int(getattr(compiled.metadata, "shared", 0))
    widths = sorted({int(v or 1) * int(b) // 8 for v, b in _LOAD.findall(compiled.asm["ptx"])})
    return {"registers": regs, "spill_stores": spill_st, "spill_loads": spill_ld, "stack_frame": stack,
            "shared_bytes": shared, "num_warps": options.num_warps, "global_load_bytes": widths,
            "occupancy": occupancy(cc, regs, options.num_warps, shared),
            "compile_s": round(time.perf_counter() - t0, 3)}


def problems(report: dict) -> list:
    """Why a compiled specialisation fails the check (empty when it passes)."""
    if "error" in report:
        return [report["error"]]
    out = []
    if report["spill_stores"] or report["spill_loads"]:
        out.append(f"spills ({report['spill_stores']} B stored, {report['spill_loads']} B loaded)")
    if report["stack_frame"]:
        out.append(f"local memory ({report['stack_frame']} B stack frame)")
    if report["registers"] > REGISTER_BUDGET:
        out.append(f"{report['registers']} registers > budget {REGISTER_BUDGET}")
    return out


# ----------------------------------------------------------------------------- main
def run(cases, targets, workers):
    """Record ``cases``, compile every distinct specialisation for ``targets``; returns the report dict."""
    t0 = time.perf_counter()
    specs, launches = {}, {}
    for case in cases:
        for kernel, grid, args, kwargs in record_case(case):
            key = spec_key(kernel, args, kwargs)
            specs.setdefault(key, set()).add(case_id(case))
            launches.setdefault(key, (kernel.fn.__module__, kernel.fn.__name__, tuple(_describe(a) for a in args),
                                      tuple(sorted((k, _describe(v)) for k, v in kwargs.items()))))
    t_record = time.perf_counter() - t0
    jobs = [(launches[key], t) for key in specs for t in targets]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(compile_one, jobs, chunksize=4))
    kernels = []
    for i, key in enumerate(specs):
        module, name, args, kwargs = launches[key]
        per_target = {t: results[i * len(targets) + j] for j, t in enumerate(targets)}
        kernels.append({"kernel": name, "constexprs": {k: v for k, v in kwargs if k != "num_warps"},
                        "args": [list(a) if isinstance(a, tuple) else a for a in args],
                        "seen_in": sorted(specs[key]), "targets": per_target,
                        "problems": {t: p for t, r in per_target.items() if (p := problems(r))}})
    summary = {}
    for t in targets:
        ok = [k["targets"][t] for k in kernels if "error" not in k["targets"][t]]
        summary[t] = {"specialisations": len(kernels), "compiled": len(ok),
                      "failed": sum(1 for k in kernels if t in k["problems"]),
                      "max_registers": max((r["registers"] for r in ok), default=None),
                      "spilling": sum(1 for r in ok if r["spill_stores"] or r["spill_loads"]),
                      "with_stack_frame": sum(1 for r in ok if r["stack_frame"]),
                      "min_occupancy": min((r["occupancy"] for r in ok), default=None)}
    return {"what": "compiled for GPU targets on a machine without a GPU; nothing was run on a GPU",
            "command": "python bench/compile_check.py " + " ".join(sys.argv[1:]),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
            "register_budget": REGISTER_BUDGET, "tuning": dict(TUNING), "targets": targets, "cases": [case_id(c) for c in cases],
            "record_s": round(t_record, 1), "total_s": round(time.perf_counter() - t0, 1),
            "summary": summary, "kernels": kernels}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--all", action="store_true", help="every recorded case (default: the representative set)")
    p.add_argument("--translation", action="store_true",
                   help="the translation networks' cases (pix2pix, CycleGAN) instead")
    p.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", help="write the JSON report here")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override fastgan.kernels.tiles.TUNING entries, to see what another tiling compiles to")
    p.add_argument("--first", type=int, default=None, help="only the first N cases")
    args = p.parse_args(argv)
    for item in args.set:
        key, value = item.split("=")
        if key not in TUNING:
            p.error(f"unknown TUNING key {key!r} (one of {', '.join(TUNING)})")
        TUNING[key] = int(value)
    if K.TRITON_INTERPRETED:
        print("compile_check: unset TRITON_INTERPRET (the interpreter builds no compilable kernels)")
        return 2
    cases = translation_cases() if args.translation else all_cases() if args.all else representative_cases()
    report = run(cases[:args.first], args.targets, args.workers)
    if args.out:
        from fastgan.info import cpu_machine

        report = {"device": f"none: compiled (not run) for {', '.join(args.targets)} on a CPU machine "
                            f"({cpu_machine()})", **report}
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    for t, s in report["summary"].items():
        print(f"{t}: {s['compiled']}/{s['specialisations']} compiled, {s['failed']} failing, max {s['max_registers']} "
              f"registers, {s['spilling']} spilling, {s['with_stack_frame']} with a stack frame, "
              f"min occupancy {s['min_occupancy']}")
    for k in report["kernels"]:
        for t, why in k["problems"].items():
            print(f"FAIL {t} {k['kernel']} {k['constexprs']}: {'; '.join(why)}")
    print(f"recorded in {report['record_s']} s, total {report['total_s']} s")
    return 1 if any(k["problems"] for k in report["kernels"]) else 0


if __name__ == "__main__":
    sys.exit(main())
