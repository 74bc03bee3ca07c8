"""A fastgan pix2pix (or CycleGAN) step against the same networks trained as the reference repository trains them.

Both recipes train the same networks from the same initial weights on the
same data, in one process, on the CPU, interleaved (round r runs every recipe
for ``--steps`` steps, in an order that alternates between rounds) so that a
shared machine's load hits both alike:

- ``reference``: pytorch-CycleGAN-and-pix2pix's training as its
  ``optimize_parameters`` runs it, in plain PyTorch, eager fp32
  (:mod:`fastgan.benchmark_translation`);
- ``fastgan-<mode>``: :class:`fastgan.Trainer` on the task (eager on a CPU:
  the fused ops' reference maths, fused Adam, real and fake pairs scored in
  one D call, the CycleGAN generator passes batched three instead of six).

    python bench/translation_cpu_step.py pix2pix --out bench/results/translation-cpu-step-pix2pix.json
    python bench/translation_cpu_step.py cyclegan --out bench/results/translation-cpu-step-cyclegan.json

Reports the median and quartiles of ms per step per recipe, the speed-up, and
what else ran on the machine (load average, busiest processes) before and after.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def machine_load() -> dict:
    """Load averages and the five busiest other processes (what shared the cores)."""
    try:
        ps = subprocess.run(["ps", "-eo", "pcpu,comm", "--sort=-pcpu"], capture_output=True, text=True,
                            timeout=10).stdout.splitlines()[1:6]
    except (OSError, subprocess.SubprocessError):
        ps = []
    return {"loadavg": list(os.getloadavg()), "top": [line.strip() for line in ps]}


def build(args):
    """The fastgan Trainer(s) and the reference loop, from the same initial weights, on the same data."""
    import torch

    from fastgan import Trainer
    from fastgan.benchmark_translation import reference_from_task
    from fastgan.tasks import TranslationConfig

    torch.set_num_threads(args.threads)
    work = tempfile.mkdtemp(prefix="fastgan-translation-step-")
    recipes = {}
    task = None
    for mode in args.modes:
        cfg = TranslationConfig(task=args.task, out=str(Path(work) / mode), device="cpu", progress=False, mode=mode,
                                resolution=args.resolution, g_width=args.width, d_width=args.width,
                                batch_size=args.batch_size, g_blocks=args.g_blocks, steps=10**6)
        trainer = Trainer(cfg, resume=False)
        task = task or trainer.task
        recipes[f"fastgan-{mode}"] = (lambda tr: (lambda n: tr.run_steps(n)))(trainer)
    ref, nets = reference_from_task(task, seed=0)

    def run_ref(n):
        for _ in range(n):
            ref.step()
    recipes = {"reference": run_ref, **recipes}
    sizes = {name: sum(p.numel() for p in net.parameters()) for name, net in task.networks().items()}
    same = [sum(p.numel() for p in n.parameters()) for n in nets] == list(sizes.values())
    return recipes, {"parameters": sizes, "same_parameter_sizes": same, "resolved": task.cfg.to_dict()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("task", choices=("pix2pix", "cyclegan"))
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--width", type=int, default=32, help="ngf = ndf (default 32)")
    p.add_argument("--g_blocks", type=int, default=None, help="CycleGAN residual blocks (default: 6)")
    p.add_argument("--batch_size", type=int, default=1, help="images per step (default 1: the reference's)")
    p.add_argument("--modes", nargs="+", default=["eager"], help="fastgan modes (default eager; compile is slow to "
                                                                   "build on a CPU)")
    p.add_argument("--steps", type=int, default=5, help="steps per recipe per round")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per recipe first")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    before = machine_load()
    recipes, info = build(args)
    for run in recipes.values():
        run(args.warmup)
    times = {name: [] for name in recipes}
    names = list(recipes)
    for r in range(args.rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            recipes[name](args.steps)
            times[name].append((time.perf_counter() - t0) * 1000.0 / args.steps)
    results = {}
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3
        results[name] = {"median_ms": statistics.median(ts), "q1_ms": q[0], "q3_ms": q[2], "rounds": len(ts)}
    ref = results["reference"]["median_ms"]
    for name, r in results.items():
        r["speedup_vs_reference"] = ref / r["median_ms"]
        print(f"{name:18s} {r['median_ms']:9.1f} ms/step (q1 {r['q1_ms']:.1f}, q3 {r['q3_ms']:.1f})  "
              f"x{r['speedup_vs_reference']:.2f} vs reference")
    import torch

    from fastgan.info import cpu_machine

    report = {"benchmark": f"CPU {args.task} training step, interleaved in one process (bench/translation_cpu_step.py)",
              "command": " ".join(["python bench/translation_cpu_step.py",
                                   *(argv if argv is not None else sys.argv[1:])]),
              "settings": vars(args), "networks": info, "results": results,
              "machine_before": before, "machine_after": machine_load(),
              "env": {"torch": torch.__version__, "python": platform.python_version(), "cpu": cpu_machine(),
                      "threads": args.threads, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}}
    if args.out:
        from fastgan.benchmark_report import write_results

        write_results(report, args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
