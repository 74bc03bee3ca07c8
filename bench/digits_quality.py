"""Time to quality on the built-in digits: pixel-space Fréchet distance against training seconds.

Trains ``digits`` generators in this process (``Trainer.run_steps`` in chunks,
as ``fit`` runs them, without sample grids or checkpoints) and evaluates the
EMA generator every ``--eval_every`` steps with ``pixel_fd`` (1,000 samples,
fixed noise) and the classifier's class coverage. Only the training chunks are
timed; the evaluations are not counted. Seeds run one after the other.

    # the defaults before and after the quality study (docs/quality.md)
    python bench/digits_quality.py --preset old --out bench/results/digits-quality-old.json
    python bench/digits_quality.py --preset new --out bench/results/digits-quality-new.json
    # one plot of both
    python bench/digits_quality.py --plot bench/results/digits-quality-old.json \\
        bench/results/digits-quality-new.json --out docs/digits_time_to_quality.png
    # a probe: any TrainConfig field, by steps
    python bench/digits_quality.py --set lr_g=1e-3 --set steps=3000 --seeds 0 --out probe.json
    # the whole `fastgan train --data digits` command, old and new defaults alternating, timed and evaluated
    python bench/digits_quality.py --cli --out bench/results/digits-demo-cli.json

``--preset old`` is the configuration ``fastgan train --data digits`` resolved
to before the study, including the plain bicubic upscaling of the digits
(``digits_upscale=bicubic``);
``--preset new`` is whatever the library's defaults resolve to now. Every
record holds the resolved config, the load average before and after each
seed, and the versions.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import tempfile
import time
import typing
from typing import Optional

# What `fastgan train --data digits` resolved to before the quality study (fastgan 0.x, docs/quality.md).
OLD_DEFAULTS = dict(steps=2000, batch_size=64, resolution=16, z_dim=100, g_width=32, d_width=32, lr_g=2e-4,
                    lr_d=2e-4, lr_decay=0.0, beta1=0.5, beta2=0.999, r1_gamma=0.0, r1_every=16, ema_decay=0.999,
                    digits_upscale="bicubic")
EVAL_METRICS = ("pixel_fd", "classes")


def _parse_sets(items: list[str]) -> dict:
    from fastgan import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in hints:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with a TrainConfig field")
        t = hints[key]
        base = typing.get_args(t)[0] if typing.get_origin(t) is typing.Union else t
        out[key] = (value.lower() in ("1", "true", "yes")) if base is bool else base(value)
    return out


def _config(preset: str, overrides: dict, seed: int, out: str):
    from fastgan import TrainConfig

    base = dict(OLD_DEFAULTS) if preset == "old" else {}
    base.update(overrides)
    return TrainConfig(data="digits", out=out, seed=seed, progress=False, sample_every=0, ckpt_every=0,
                       device="cpu", **base).resolved()


def run_seed(cfg, eval_every: int, eval_n: int, eval_seed: int) -> dict:
    """Train one seed, evaluating along the way; returns its record."""
    import torch

    import fastgan
    from fastgan.metrics import evaluate

    trainer = fastgan.Trainer(cfg, resume=False)
    data = trainer.data
    load0 = os.getloadavg()
    curve, train_s, eval_s = [], 0.0, 0.0

    def measure():
        nonlocal eval_s
        t = time.perf_counter()
        r = evaluate(trainer.ema_generator(), data, list(EVAL_METRICS), n=eval_n, seed=eval_seed)
        eval_s += time.perf_counter() - t
        curve.append({"step": trainer.step, "train_s": train_s, **r})
        print(f"  seed {cfg.seed} step {trainer.step:5d}  {train_s:7.1f} s  pixel_fd {r['pixel_fd']:7.2f}  "
              f"classes {r['classes']:2d}  KL {r['classes_reverse_kl']:.3f}", flush=True)

    measure()
    while trainer.step < cfg.steps:
        n = min(eval_every, cfg.steps - trainer.step)
        t = time.perf_counter()
        trainer.run_steps(n)
        train_s += time.perf_counter() - t
        measure()
    return {"seed": cfg.seed, "config": {k: v for k, v in cfg.to_dict().items() if k != "out"},
            "train_s": train_s, "eval_s": eval_s,
            "ms_per_step": 1000 * train_s / max(cfg.steps, 1), "loadavg_before": load0,
            "loadavg_after": os.getloadavg(), "threads": torch.get_num_threads(), "curve": curve,
            "final": curve[-1]}


def _flags(preset: str, overrides: dict) -> list[str]:
    """The flags a preset and ``--set`` overrides add to ``fastgan train --data digits``."""
    return [f"--{k}={v}" for k, v in {**(OLD_DEFAULTS if preset == "old" else {}), **overrides}.items()]


def _fastgan(*args: str) -> None:
    """Run ``fastgan ARGS`` (this interpreter's) and fail loudly with its output."""
    import subprocess

    done = subprocess.run([sys.executable, "-m", "fastgan", *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"fastgan {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def run_demo(preset: str, overrides: dict, seed: int, run: str, ckpt_every: int, eval_n: int,
             eval_seed: int) -> dict:
    """``fastgan train --data digits`` (``make demo``'s command) with checkpoints every ``ckpt_every``
    steps, then ``fastgan eval`` on each checkpoint; returns the run's record.

    Args:
        preset: ``new`` (the defaults) or ``old`` (the flags of :data:`OLD_DEFAULTS`).
        overrides: further ``TrainConfig`` fields, given as flags.
        seed: the training seed (``--seed``).
        run: the run folder to create.
        ckpt_every: steps between the checkpoints that are evaluated (they are all kept).
        eval_n: samples per evaluation (``fastgan eval --n``).
        eval_seed: noise seed of the evaluations (``fastgan eval --seed``).
    """
    given = [*_flags(preset, overrides), f"--ckpt_every={ckpt_every}", "--keep_ckpts=1000", "--no-progress"]
    train = ["train", "--data", "digits", "--out", run, "--seed", str(seed), *given]
    load0 = os.getloadavg()
    _fastgan(*train)
    load1 = os.getloadavg()
    evaluate = ["--metrics", ",".join(EVAL_METRICS), "--n", str(eval_n), "--seed", str(eval_seed)]
    curve = []
    for ckpt in sorted(glob.glob(os.path.join(run, "checkpoints", "step_*"))):
        out = os.path.join(run, f"eval_{os.path.basename(ckpt)}.json")
        _fastgan("eval", "--run", ckpt, *evaluate, "--out", out)
        curve.append({"step": int(ckpt.rsplit("_", 1)[1]), **json.loads(open(out).read())["metrics"]})
    cfg = json.loads(open(os.path.join(run, "config.json")).read())
    final = curve[-1]
    print(f"  {preset} seed {seed}: step {final['step']}, pixel_fd {final['pixel_fd']:.2f}, classes "
          f"{final['classes']}, KL {final['classes_reverse_kl']:.3f}; load {load0[0]:.2f} -> {load1[0]:.2f}",
          flush=True)
    return {"preset": preset, "seed": seed, "command": " ".join(["fastgan", *train]).replace(run, "RUN"),
            "eval_command": " ".join(["fastgan", "eval", "--run", "RUN/checkpoints/step_N", *evaluate]),
            "config": {k: v for k, v in cfg.items() if k != "out"}, "loadavg_before": load0,
            "loadavg_after": load1, "curve": curve, "final": final}


def time_ab(presets: list[str], threads: list[int], chunk: int, rounds: int, warmup: int) -> dict:
    """Seconds per training step of each preset at each thread count, measured A/B in one process.

    One trainer per (preset, threads) runs ``warmup`` steps, then each runs ``chunk`` steps in
    turn, ``rounds`` times, the order rotating every round; a chunk's time over its steps is one
    sample. On a busy machine every setting sees the same load, so their ratio holds even when
    the seconds themselves do not.

    Args:
        presets: ``old`` and/or ``new``.
        threads: torch CPU thread counts to time each preset at.
        chunk: steps per timed chunk (a multiple of ``r1_every`` keeps R1's share equal).
        rounds: timed chunks per setting.
        warmup: untimed steps per setting first.
    """
    import torch

    import fastgan

    keys = [(p, t) for t in threads for p in presets]
    with tempfile.TemporaryDirectory(prefix="fastgan-digits-ab-") as tmp:
        trainers = {}
        for p, t in keys:
            torch.set_num_threads(t)
            trainers[p, t] = fastgan.Trainer(_config(p, {}, 0, os.path.join(tmp, f"{p}{t}")), resume=False)
            trainers[p, t].run_steps(warmup)
        samples = {k: [] for k in keys}
        load0 = os.getloadavg()
        for r in range(rounds):
            for p, t in keys[r % len(keys):] + keys[:r % len(keys)]:
                torch.set_num_threads(t)
                start = time.perf_counter()
                trainers[p, t].run_steps(chunk)
                samples[p, t].append((time.perf_counter() - start) / chunk)
        load1 = os.getloadavg()
    out = {"chunk_steps": chunk, "rounds": rounds, "warmup_steps": warmup, "loadavg_before": load0,
           "loadavg_after": load1, "settings": []}
    for p, t in keys:
        ms = [1000 * s for s in samples[p, t]]
        out["settings"].append({"preset": p, "threads": t, "median_ms_per_step": statistics.median(ms),
                                "ms_per_step": ms})
        print(f"  {p} defaults, {t} thread(s): median {statistics.median(ms):.1f} ms/step "
              f"({min(ms):.1f} .. {max(ms):.1f}; {rounds} chunks of {chunk} steps)", flush=True)
    if set(presets) == {"old", "new"}:   # chunks of the same round ran back to back: their ratio is paired
        out["new_over_old"] = {str(t): statistics.median(n / o for o, n in zip(samples["old", t], samples["new", t]))
                               for t in threads}
        print("  new / old, median of the rounds' ratios: " + ", ".join(
            f"{r:.3f} at {t} thread(s)" for t, r in out["new_over_old"].items()), flush=True)
    return out


def ms_per_step(ab: dict, preset: str, threads: int) -> float:
    """The median ms/step of ``preset`` at ``threads`` in a :func:`time_ab` record."""
    for s in ab["settings"]:
        if s["preset"] == preset and s["threads"] == threads:
            return s["median_ms_per_step"]
    raise SystemExit(f"the timing file holds no {preset} defaults at {threads} thread(s)")


def _mean_se(values: list[float]) -> dict:
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
    return {"mean": statistics.fmean(values), "se": se, "values": values}


def _summary(runs: list[dict]) -> dict:
    return {"pixel_fd": _mean_se([r["final"]["pixel_fd"] for r in runs]),
            "classes_reverse_kl": _mean_se([r["final"]["classes_reverse_kl"] for r in runs]),
            "classes_min": min(r["final"]["classes"] for r in runs), "steps": [r["final"]["step"] for r in runs]}


def plot(files: list[str], out: str, timing: str, threads: int) -> None:
    """One figure: mean pixel_fd (± s.e. over seeds) against training seconds, one line per preset.

    Args:
        files: result files of this script's runs (``--demo``, or the in-process curves).
        out: the PNG to write.
        timing: a ``--ab`` result file: a step costs its preset's median seconds there.
        threads: which of the timing file's thread counts to use.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ab = json.loads(open(timing).read())
    by_preset: dict = {}
    for path in files:
        rec = json.loads(open(path).read())
        for r in rec["runs"]:
            by_preset.setdefault(r.get("preset", rec.get("preset")), []).append(r)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for preset in sorted(by_preset, reverse=True):
        runs = by_preset[preset]
        sec = ms_per_step(ab, preset, threads) / 1000
        steps = sorted(set.intersection(*({p["step"] for p in r["curve"]} for r in runs)))
        xs, ys, es = [], [], []
        for step in steps:
            fds = [next(p["pixel_fd"] for p in r["curve"] if p["step"] == step) for r in runs]
            xs.append(step * sec)
            ys.append(statistics.fmean(fds))
            es.append(statistics.stdev(fds) / len(fds) ** 0.5 if len(fds) > 1 else 0.0)
        label = (f"{preset} defaults: {ys[-1]:.1f} ± {es[-1]:.1f} at step {steps[-1]:,} "
                 f"({len(runs)} seeds; {1000 * sec:.0f} ms/step)")
        line, = ax.plot(xs, ys, marker="o", ms=3, label=label)
        ax.fill_between(xs, [y - e for y, e in zip(ys, es)], [y + e for y, e in zip(ys, es)],
                        color=line.get_color(), alpha=0.2)
    ax.axhline(25, color="grey", ls="--", lw=1, label="target 25")
    ax.axhline(18.2, color="grey", ls=":", lw=1, label="two halves of the real digits (18.2)")
    ax.set_yscale("log")
    ax.set_xlabel(f"training seconds = steps x seconds per step (A/B in one process, {threads} thread(s))")
    ax.set_ylabel("pixel_fd at 8x8 (1,000 samples)")
    ax.set_title("fastgan train --data digits: time to quality")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    print(f"wrote {out}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=("old", "new", "both"), default="new",
                   help="configuration (default new; both: old and new, for --demo)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a TrainConfig field (repeatable)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    p.add_argument("--eval_every", type=int, default=250,
                   help="steps between evaluations (with --demo: between checkpoints; default 250)")
    p.add_argument("--eval_n", type=int, default=1000, help="samples per evaluation (default 1000)")
    p.add_argument("--eval_seed", type=int, default=0, help="noise seed of the evaluations (default 0)")
    p.add_argument("--threads", type=int, nargs="+", default=None,
                   help="torch threads (default: torch's choice; with --ab: each count is timed; with --plot: "
                        "the timing's count to use)")
    p.add_argument("--label", default=None, help="name of this configuration in the record")
    p.add_argument("--demo", action="store_true",
                   help="run the `fastgan train --data digits` command per seed and `fastgan eval` its checkpoints")
    p.add_argument("--jobs", type=int, default=1, help="with --demo: runs at a time (default 1)")
    p.add_argument("--keep", default=None, metavar="DIR", help="with --demo: keep the run folders in DIR")
    p.add_argument("--ab", action="store_true", help="time seconds per step of old and new defaults, A/B interleaved")
    p.add_argument("--chunk", type=int, default=32, help="with --ab: steps per timed chunk (default 32)")
    p.add_argument("--rounds", type=int, default=15, help="with --ab: chunks per setting (default 15)")
    p.add_argument("--plot", nargs="+", default=None, metavar="JSON", help="plot these result files instead")
    p.add_argument("--timing", default=None, metavar="JSON", help="with --plot: the --ab result for the x axis")
    p.add_argument("--out", default=None, help="JSON (or with --plot, PNG) file to write")
    args = p.parse_args(argv)
    if args.plot:
        if not args.timing:
            p.error("--plot needs --timing (an --ab result)")
        plot(args.plot, args.out or "digits_time_to_quality.png", args.timing, (args.threads or [1])[0])
        return 0
    if args.eval_every < 1 or args.eval_n < 2:
        p.error("--eval_every must be positive and --eval_n at least 2")

    import torch

    from fastgan.benchmark import environment, write_results
    from fastgan.benchmark_telemetry import Telemetry

    overrides = _parse_sets(args.sets)
    presets = ["old", "new"] if args.preset == "both" else [args.preset]
    result = {"command": "python bench/digits_quality.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    runs = []
    if args.ab:
        result.update(time_ab(presets, args.threads or [torch.get_num_threads()], args.chunk, args.rounds,
                              warmup=args.chunk))
    elif args.demo:
        from concurrent.futures import ThreadPoolExecutor

        with tempfile.TemporaryDirectory(prefix="fastgan-digits-demo-") as tmp:
            root = args.keep or tmp
            jobs = [(pr, seed) for pr in reversed(presets) for seed in args.seeds]   # the longest runs first
            with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                runs = list(pool.map(lambda job: run_demo(job[0], overrides, job[1],
                                                          os.path.join(root, f"{job[0]}{job[1]}"),
                                                          args.eval_every, args.eval_n, args.eval_seed), jobs))
    else:
        if args.threads:
            torch.set_num_threads(args.threads[0])
        with tempfile.TemporaryDirectory(prefix="fastgan-digits-quality-") as tmp:
            for seed in args.seeds:
                cfg = _config(presets[0], overrides, seed, os.path.join(tmp, f"seed{seed}"))
                runs.append(dict(run_seed(cfg, args.eval_every, args.eval_n, args.eval_seed), preset=presets[0]))
        result.update(label=args.label or (presets[0] + "".join(f" {s}" for s in args.sets)), sets=args.sets)
    if runs:
        result["summary"] = {}
        for pr in presets:
            s = result["summary"][pr] = _summary([r for r in runs if r["preset"] == pr])
            print(f"{pr}: pixel_fd {s['pixel_fd']['mean']:.2f} +- {s['pixel_fd']['se']:.2f} (s.e., "
                  f"{len(s['pixel_fd']['values'])} seeds), classes >= {s['classes_min']}, reverse KL "
                  f"{s['classes_reverse_kl']['mean']:.3f}")
    result.update(runs=runs, environment=environment(torch.device("cpu"), Telemetry(torch.device("cpu"))))
    if args.out:
        write_results(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
