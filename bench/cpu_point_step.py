"""CPU cost of one 2-D training iteration, with and without the point-step fast paths.

Times ``Trainer.run_steps`` on ``grid25`` with fastgan's defaults (one thread)
in four forms, interleaved in short bursts inside one process so that drift
in the host's speed hits every form alike:

- ``two_step``: MLP layers as ``mm`` then bias + activation, D called on the
  real and the fake batch separately (the code before the fast paths);
- ``fast_layers``: the bias folded into the matrix multiply (``BiasAct.linear``)
  and the 2-wide input layer's weight used as a column-major copy (faster
  gradient products in the CPU BLAS);
- ``one_pass``: D scores real and fake in one call;
- ``both``: fastgan's path.

    python bench/cpu_point_step.py --out bench/results/cpu-point-step.json

Reports the median and 20th percentile of milliseconds per iteration (R1
every ``r1_every`` iterations included) and each form's speed-up over
``two_step``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="grid25", help="point dataset (default grid25)")
    p.add_argument("--rounds", type=int, default=60, help="timed bursts per form (default 60)")
    p.add_argument("--burst", type=int, default=8, help="iterations per burst (default 8)")
    p.add_argument("--out", default=None, help="JSON file for the results (default: print only)")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.burst < 1:
        p.error("--rounds and --burst must be positive")

    import torch

    import fastgan
    import fastgan.models.mlp as mlp
    from fastgan.benchmark import environment, write_results
    from fastgan.benchmark_telemetry import Telemetry

    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    folded = mlp._run_hidden

    def unfolded(hidden, h):  # the layers as modules: mm, then BiasAct's bias add + activation
        return hidden(h)

    forms = {"two_step": (unfolded, False), "fast_layers": (folded, False), "one_pass": (unfolded, True),
             "both": (folded, True)}
    tmp = tempfile.mkdtemp(prefix="fastgan-cpu-step-")
    trainers = {}
    for name in forms:
        cfg = fastgan.TrainConfig(data=args.data, out=os.path.join(tmp, name), seed=0, progress=False,
                                  device="cpu", sample_every=0, ckpt_every=0)
        trainers[name] = fastgan.Trainer(cfg, resume=False)
    if not trainers["both"].D.batch_independent:
        print("note: this D is not batch independent; one_pass runs the two-pass form", file=sys.stderr)
    times: dict[str, list[float]] = {name: [] for name in forms}
    try:
        for r in range(args.rounds + 1):  # round 0 warms up
            for name, (hidden, one_pass) in forms.items():
                mlp._run_hidden = hidden
                tr = trainers[name]
                tr.D.batch_independent = one_pass and trainers["both"].D.batch_independent
                t0 = time.perf_counter()
                tr.run_steps(args.burst)
                if r:
                    times[name].append(1000 * (time.perf_counter() - t0) / args.burst)
    finally:
        mlp._run_hidden = folded
        shutil.rmtree(tmp, ignore_errors=True)
    base = statistics.median(times["two_step"])
    results = {}
    for name, ts in times.items():
        ts = sorted(ts)
        med = statistics.median(ts)
        results[name] = {"median_ms": round(med, 3), "p20_ms": round(ts[len(ts) // 5], 3),
                         "speedup_vs_two_step": round(base / med, 3)}
        print(f"{name:10s} median {med:6.2f} ms/iter  p20 {ts[len(ts) // 5]:6.2f}  x{base / med:.3f}")
    if args.out:
        cfg = trainers["both"].cfg
        write_results({"benchmark": "CPU 2-D training iteration (ms, one thread)", "data": args.data,
                       "batch_size": cfg.batch_size, "g_width": cfg.g_width, "d_width": cfg.d_width,
                       "r1_every": cfg.r1_every, "rounds": args.rounds, "burst": args.burst, "results": results,
                       "env": environment(cpu, Telemetry(cpu)),
                       "time": time.strftime("%Y-%m-%dT%H:%M:%S")}, args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
