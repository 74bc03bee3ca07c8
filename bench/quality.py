"""Mode collapse on the 2-D mixtures: fastgan's defaults beside PacGAN's Table 1.

Trains ``grid25`` (25 Gaussians, std 0.05) and ``ring8`` (8 Gaussians on the
unit circle, std 0.01) once per seed with fastgan's default settings, draws
2,500 samples from each trained generator and scores them as VEEGAN and PacGAN
do (see :mod:`fastgan.metrics.modes`): modes captured, percentage of
high-quality samples (within 3 std of the nearest mode), and the reverse KL of
the captured-mode histogram against uniform. Prints mean +- standard error
over seeds beside the published numbers and writes everything to JSON.

    python bench/quality.py                       # 10 seeds each, 5 per process, 2 workers
    python bench/quality.py --members 1           # one Trainer run per seed
    python bench/quality.py --seeds 3 --members 1 --set steps=1000 --set pack=2

Runs are independent, so they are spread over ``--workers`` processes with one
intra-op thread each (the MLPs are far too small to gain from threads). By
default each process trains ``--members`` seeds at once as one Trainer run of
an MLP ensemble (``fastgan.models.ensemble``): every member starts as the
standalone run with its seed would and is updated exactly as a standalone
network with the default batch would be, only the random draws differ; the
per-operation overhead that dominates a 2-D step on the CPU is then shared.
Packing, minibatch std, spectral norm and conditional models need
``--members 1``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import multiprocessing as mp
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

# PacGAN (Lin et al., 2018), Table 1: mean over 10 runs, 2,500 samples each.
PACGAN_TABLE1 = {
    "grid25": {"GAN": (17.3, 94.8, 0.70), "PacGAN4": (24.8, 93.6, 0.04)},
    "ring8": {"GAN": (6.3, 98.2, 0.45), "PacGAN2": (7.9, 95.6, 0.07)},
}
# What fastgan's defaults must reach (averaged over seeds).
TARGETS = {
    "grid25": {"modes": 24.8, "high_quality": 95.0, "reverse_kl": 0.04},
    "ring8": {"modes": 8.0, "high_quality": 97.0, "reverse_kl": None},
}
N_SAMPLES = 2500


def _parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


_RESOLVED_KEYS = ("steps", "batch_size", "g_width", "d_width", "g_depth", "d_depth", "z_dim", "loss", "lr_g", "lr_d",
                  "beta1", "beta2", "pack", "mbstd", "ema_decay", "spectral_norm", "r1_gamma", "gp_weight", "n_critic")


def _score(G, seed: int, data) -> dict:
    """Modes, high-quality % and reverse KL of 2,500 samples drawn as ``Trainer.sample(seed=seed)`` draws them."""
    from fastgan.metrics import mixture_mode_metrics
    from fastgan.sampling import generate

    x = generate(G, N_SAMPLES, z_dim=G.z_dim, seed=seed, device="cpu")
    m = mixture_mode_metrics(x, data.modes.cpu(), data.mode_std)
    return {"modes": m["modes"], "high_quality": 100 * m["high_quality"], "reverse_kl": m["reverse_kl"]}


def one_run(job: dict) -> list[dict]:
    """Train one dataset for the job's seeds and score each; runs in a worker process.

    One seed: a standalone Trainer run. Several: one Trainer run of an MLP
    ensemble (fastgan.models.ensemble) whose member k starts as the standalone
    run with seed k would and is updated as it would be; each member gets the
    default batch, so the Trainer's batch is members x batch.
    """
    import torch

    torch.set_num_threads(1)
    import fastgan
    from fastgan.data import load_data
    from fastgan.models import build_point_ensemble

    seeds = job["seeds"]
    out = Path(job["tmp"]) / f"{job['data']}-{seeds[0]}"
    kw = dict(data=job["data"], out=str(out), progress=False, device="cpu", sample_every=0, ckpt_every=0)
    t0 = time.perf_counter()
    if len(seeds) == 1:
        trainer = fastgan.Trainer(fastgan.TrainConfig(seed=seeds[0], **kw, **job["overrides"]), resume=False)
        trainer.fit()
        models = [trainer.ema_generator()]
    else:
        member_cfg = fastgan.TrainConfig(seed=seeds[0], **kw, **job["overrides"]).resolved(points=True)
        data = load_data(job["data"], seed=seeds[0])
        G, D = build_point_ensemble(member_cfg, seeds, point_scale=data.scale)
        cfg = dataclasses.replace(member_cfg, batch_size=member_cfg.batch_size * len(seeds))
        trainer = fastgan.Trainer(cfg, generator=G, discriminator=D, resume=False)
        trainer.fit()
        models = [trainer.ema_generator().member(k) for k in range(len(seeds))]
    train_s = time.perf_counter() - t0
    resolved = {k: getattr(trainer.cfg, k) for k in _RESOLVED_KEYS}
    resolved["batch_size"] //= len(seeds)  # per member
    runs = [{"data": job["data"], "seed": s, **_score(G_k, s, trainer.data), "members": len(seeds),
             "seconds": round(train_s / len(seeds), 2), "config": resolved} for s, G_k in zip(seeds, models)]
    shutil.rmtree(out, ignore_errors=True)
    return runs


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def summarise(runs: list[dict]) -> dict:
    """Per dataset: mean and standard error of each metric, and whether the target is met."""
    out = {}
    for data in sorted({r["data"] for r in runs}):
        rs = [r for r in runs if r["data"] == data]
        s = {k: mean_se([r[k] for r in rs]) for k in ("modes", "high_quality", "reverse_kl")}
        t = TARGETS[data]
        ok = s["modes"][0] >= t["modes"] - 1e-9 and s["high_quality"][0] >= t["high_quality"]
        if t["reverse_kl"] is not None:
            ok = ok and s["reverse_kl"][0] <= t["reverse_kl"]
        out[data] = {"runs": len(rs), **{k: {"mean": v[0], "se": v[1]} for k, v in s.items()},
                     "max_seconds": max(r["seconds"] for r in rs), "meets_target": ok}
    return out


def print_table(summary: dict) -> None:
    def fmt(mean, se, digits):
        return f"{mean:.{digits}f} +- {se:.{digits}f}" if math.isfinite(mean) else "inf"

    print(f"{'data':<7} {'method':<18} {'modes':>16} {'high quality %':>18} {'reverse KL':>18}")
    for data, s in summary.items():
        for name, (modes, hq, kl) in PACGAN_TABLE1[data].items():
            print(f"{data:<7} {'PacGAN paper ' + name:<18} {modes:>16.1f} {hq:>18.1f} {kl:>18.2f}")
        row = (fmt(s["modes"]["mean"], s["modes"]["se"], 1), fmt(s["high_quality"]["mean"], s["high_quality"]["se"], 1),
               fmt(s["reverse_kl"]["mean"], s["reverse_kl"]["se"], 3))
        tag = "fastgan (ok)" if s["meets_target"] else "fastgan (MISSED)"
        print(f"{data:<7} {tag:<18} {row[0]:>16} {row[1]:>18} {row[2]:>18}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=10, help="runs per dataset (seeds 0..N-1; default 10)")
    p.add_argument("--data", default="grid25,ring8", help="comma-separated datasets (default grid25,ring8)")
    p.add_argument("--workers", type=int, default=2, help="parallel training processes (default 2)")
    p.add_argument("--members", type=int, default=5,
                   help="seeds trained together as one MLP ensemble per process (default 5; 1: one Trainer "
                        "run per seed)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a TrainConfig field (repeatable), e.g. --set steps=3000")
    p.add_argument("--out", default=None, help="JSON file (default bench/results/quality[-TAG].json)")
    p.add_argument("--tag", default="", help="suffix of the default JSON name")
    args = p.parse_args(argv)

    import torch

    import fastgan
    from fastgan.benchmark import write_results

    overrides = {}
    fields = {f.name for f in dataclasses.fields(fastgan.TrainConfig)}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            p.error(f"--set expects FIELD=VALUE with a TrainConfig field, got {item!r}")
        overrides[key] = _parse_value(value)
    datasets = [d.strip() for d in args.data.split(",") if d.strip()]
    for d in datasets:
        if d not in TARGETS:
            p.error(f"unknown dataset {d!r}; choose from {', '.join(TARGETS)}")

    if args.seeds < 1 or args.members < 1 or args.workers < 1:
        p.error("--seeds, --members and --workers must be positive")
    if args.members > 1 and (overrides.get("pack", 1) != 1 or overrides.get("mbstd") or overrides.get("spectral_norm")
                             or overrides.get("conditional")):
        p.error("pack, mbstd, spectral_norm and conditional need one Trainer run per seed: add --members 1")
    tmp = tempfile.mkdtemp(prefix="fastgan-quality-")
    seed_groups = [list(range(a, min(a + args.members, args.seeds))) for a in range(0, args.seeds, args.members)]
    jobs = [{"data": d, "seeds": g, "overrides": overrides, "tmp": tmp} for d in datasets for g in seed_groups]
    n_runs = len(datasets) * args.seeds
    t0 = time.perf_counter()
    runs: list[dict] = []

    def report(group: list[dict]) -> None:  # one line per finished run: the benchmark takes minutes
        for run in group:
            runs.append(run)
            print(f"[{len(runs)}/{n_runs}] {run['data']} seed {run['seed']}: {run['modes']} modes, "
                  f"{run['high_quality']:.1f}% high quality, reverse KL {run['reverse_kl']:.3f} "
                  f"({run['seconds']:.0f} s of training per run; {time.perf_counter() - t0:.0f} s elapsed)",
                  flush=True)

    print(f"training {n_runs} runs as {len(jobs)} jobs of up to {args.members} seed(s) on {args.workers} "
          "worker(s)...", flush=True)
    try:
        if args.workers > 1:
            pool = mp.get_context("spawn").Pool(args.workers)
            try:
                for group in pool.imap_unordered(one_run, jobs, chunksize=1):
                    report(group)
            finally:
                pool.close()
                pool.join()
        else:
            for job in jobs:
                report(one_run(job))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    runs.sort(key=lambda r: (r["data"], r["seed"]))
    wall = time.perf_counter() - t0

    summary = summarise(runs)
    print_table(summary)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{len(runs)} runs in {wall:.0f} s wall ({args.workers} workers, {args.members} seed(s) per job, "
          f"{os.cpu_count()} CPUs, load average "
          f"{load:.1f} at the end); overrides: {overrides or 'none (fastgan defaults)'}")
    record = {
        "benchmark": "2-D mixture mode collapse (PacGAN Table 1 protocol)",
        "samples_per_run": N_SAMPLES, "overrides": overrides,
        "wall_seconds": round(wall, 1), "load_average_end": round(load, 2),
        "workers": args.workers, "members": args.members, "summary": summary, "pacgan_table1": PACGAN_TABLE1, "targets": TARGETS,
        "runs": runs,
        "env": {"fastgan": fastgan.__version__, "torch": torch.__version__, "python": platform.python_version(),
                "machine": platform.machine(), "cpus": os.cpu_count(), "device": "cpu"},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    dest = Path(args.out) if args.out else Path(__file__).parent / "results" / \
        f"quality{'-' + args.tag if args.tag else ''}.json"
    write_results(record, str(dest))
    print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
