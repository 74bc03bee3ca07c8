"""GANs as data generators, measured on the built-in digits (CPU; results in steps, not seconds).

Subcommands (each writes one JSON file; run folders go under ``--work`` and are
reused when a command is run again, so an interrupted experiment continues):

- ``demo``: the class-conditional digits demo (``fastgan train --data digits
  --conditional``, defaults): does the digits classifier agree with the
  requested class (100 samples per class)?
- ``cas``: classification accuracy score. A conditional GAN is trained on the
  real training split only (80% of the digits, stratified: 1,438 images); a
  fresh classifier trained on as many synthetic digits (same class counts) is
  tested on the held-out real 20% (359 images), beside the same classifier
  trained on the real split.
- ``gain``: augmentation gain with little data. For each seed, 10% of the
  digits (18 per class, drawn from the training split) train a conditional GAN;
  a classifier trained on those 180 images plus 1,800 synthetic ones (180 per
  class) against one trained on the 180 alone, both tested on the held-out 359.
- ``ada``: little data (18 images per class, unconditional GAN): no
  augmentation, fixed probabilities, adaptive (ADA), same step budget, several
  seeds; class coverage and reverse KL (digits classifier), Fréchet distance in
  the classifier's features and in 8x8 pixels, against all 1,797 digits.
- ``vector``: the vector demo (``--data digits_vectors --vector_conditional``):
  class agreement for vectors with average strokes, correlation of requested
  and generated stroke statistics, and how far samples move when the vector
  moves a little (same noise) against a random other vector.

    python bench/applications.py demo --out bench/results/applications-conditional-demo.json
    python bench/applications.py cas  --out bench/results/applications-cas.json
    python bench/applications.py ada --settings none fixed_p0.5 adaptive --out bench/results/applications-ada.json
    python bench/applications.py gain --steps 1000 --out bench/results/applications-augmentation-gain.json
    python bench/applications.py vector --out bench/results/applications-vector-demo.json \
        --figure docs/vector_demo.png

With the built-in digits' own defaults (``--recipe digits``, run folders apart):

    python bench/applications.py cas --recipe digits --steps 5000 --work runs/applications-digits \
        --out bench/results/applications-cas-digits-defaults.json
    python bench/applications.py demo --recipe digits --steps 5000 --work runs/applications-digits \
        --out bench/results/applications-conditional-demo-digits-defaults.json
    python bench/applications.py gain --recipe digits --steps 1000 --work runs/applications-digits \
        --out bench/results/applications-augmentation-gain-digits-defaults.json
    python bench/applications.py ada --recipe digits --steps 5000 --settings none fixed_p0.25 adaptive \
        --work runs/applications-digits --out bench/results/applications-ada-digits-defaults.json

Classifiers are :func:`fastgan.metrics.classifier.fit_digits_classifier`
(the digits classifier's architecture and recipe, fresh weights, at least
``--clf_steps`` updates); real digits are scikit-learn's 8x8 images, synthetic
ones are brought to 8x8 by area averaging, as the classifier reads any input.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Optional

AUGMENT = "translation,cutout,color"
ADA_SETTINGS = {  # name -> TrainConfig fields of the augmentation under test
    "none": {},
    "fixed_p0.25": {"augment": AUGMENT, "augment_p": 0.25},
    "fixed_p0.5": {"augment": AUGMENT, "augment_p": 0.5},
    "fixed_p1.0": {"augment": AUGMENT, "augment_p": 1.0},
    "adaptive": {"augment": AUGMENT, "ada_target": 0.6},
}
LOWER_IS_BETTER = {"classes_reverse_kl": True, "fd": True, "pixel_fd": True, "classes": False}
# The settings these experiments were measured with: DCGAN's (Adam 2e-4, betas (0.5, 0.999), no R1) on the
# plainly bicubic-upscaled digits; the built-in digits' own defaults (docs/defaults.md) came later.
DCGAN_SETTINGS = {"lr_g": 2e-4, "beta1": 0.5, "beta2": 0.999, "r1_gamma": 0.0}


# ----------------------------------------------------------------------------- data
def digits(recipe: str = "dcgan"):
    """(images 16 px uint8 as fastgan trains on them, native 8x8 in [-1, 1], labels, train idx, test idx).

    Args:
        recipe: ``dcgan`` (plainly bicubic-upscaled digits) or ``digits`` (the built-in digits' default upscaling).
    """
    from fastgan.data import load_data
    from fastgan.metrics.classifier import digits_tensors, held_out_split

    d16 = load_data("digits", resolution=16, digits_upscale="bicubic" if recipe == "dcgan" else "block")
    native, labels = digits_tensors()
    train_idx, test_idx = held_out_split(labels, fraction=0.2, seed=0)
    return d16, native, labels, train_idx, test_idx


def little_split(train_idx, labels, per_class: int, seed: int):
    """``per_class`` indices of each class drawn (without replacement) from ``train_idx``.

    Args:
        train_idx: (N,) indices of the training split.
        labels: (1797,) labels of all digits.
        per_class: images per class.
        seed: seed of the draw.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in range(10):
        pool = train_idx[labels[train_idx] == c]
        picked.append(pool[torch.randperm(len(pool), generator=g)[:per_class]])
    return torch.cat(picked).sort().values


def mean_se(values: list[float]) -> dict:
    """Mean, standard error (sample std / sqrt(n)), n and the values.

    Args:
        values: one figure per seed.
    """
    n = len(values)
    sd = statistics.stdev(values) if n > 1 else 0.0
    return {"mean": statistics.fmean(values), "se": sd / math.sqrt(n) if n else float("nan"), "n": n,
            "values": values}


# ----------------------------------------------------------------------------- training a GAN
def train_gan(out: Path, images, labels, *, steps: int, conditional: bool, seed: int, recipe: str = "dcgan",
              **fields):
    """Train (or finish, or just reload) a digits GAN on the given images; returns the Trainer.

    Args:
        out: run folder (an existing one is continued).
        images: (N, 1, 16, 16) uint8 digits.
        labels: (N,) labels (used when ``conditional``).
        steps: GAN steps.
        conditional: class-conditional G and D.
        seed: TrainConfig.seed.
        recipe: ``dcgan`` (:data:`DCGAN_SETTINGS`) or ``digits`` (the built-in digits' own defaults).
        **fields: further TrainConfig fields (augmentation).
    """
    from fastgan import TrainConfig, Trainer
    from fastgan.data import load_data

    data = load_data(images, labels=labels if conditional else None)
    cfg = TrainConfig(data="digits", out=str(out), steps=steps, seed=seed, conditional=conditional, progress=False,
                      log_every=100, sample_every=0, ckpt_every=500, device="cpu",
                      **{**(DCGAN_SETTINGS if recipe == "dcgan" else {}), **fields})
    t0 = time.perf_counter()
    tr = fit_to_end(Trainer(cfg, data=data))
    tr.wall_s = time.perf_counter() - t0
    return tr


def fit_to_end(tr):
    """``tr.fit()``; a run stopped early (a signal: checkpoint saved) ends the experiment instead of being measured.

    Args:
        tr: the Trainer.
    """
    tr.fit()
    if tr.step < tr.cfg.steps:
        raise SystemExit(f"run {tr.cfg.out} stopped at step {tr.step} of {tr.cfg.steps} "
                         f"({tr.stopped_by or 'early'}); rerun the command to continue it")
    return tr


def synthetic(trainer, per_class_counts, seed: int):
    """Labelled samples of a conditional trainer: ``per_class_counts[c]`` of class c (16 px, [-1, 1]).

    Args:
        trainer: a conditional Trainer.
        per_class_counts: samples of each class.
        seed: sampling seed.
    """
    import torch

    labels = torch.cat([torch.full((int(k),), c) for c, k in enumerate(per_class_counts)])
    return trainer.sample(len(labels), seed=seed, labels=labels), labels


def accuracy(train_x, train_y, test_x, test_y, *, steps: int, seed: int) -> float:
    """Held-out accuracy of a fresh digits classifier trained on ``(train_x, train_y)``.

    Args:
        train_x: training digits in [-1, 1] (any size; read at 8x8).
        train_y: their labels.
        test_x: held-out real digits.
        test_y: their labels.
        steps: classifier updates, at least.
        seed: classifier seed.
    """
    from fastgan.metrics.classifier import accuracy_of, fit_digits_classifier

    model = fit_digits_classifier(train_x, train_y, steps=steps, seed=seed)
    return accuracy_of(model, test_x, test_y)


def agreement(x, labels) -> dict:
    """How often the cached digits classifier names the requested class: overall and per class.

    Args:
        x: samples in [-1, 1].
        labels: the classes they were asked for.
    """
    from fastgan.metrics import load_digits_classifier

    pred = load_digits_classifier().predict(x)
    per = {str(c): float((pred[labels == c] == c).double().mean()) for c in range(10)}
    return {"agreement": float((pred == labels).double().mean()), "per_class": per}


# ----------------------------------------------------------------------------- experiments
def run_demo(args) -> dict:
    """The class-conditional demo's agreement (see the module docstring).

    Args:
        args: the parsed command line.
    """
    import torch

    d16, _, labels, _, _ = digits(args.recipe)
    tr = train_gan(Path(args.work) / "demo-conditional", d16.images, labels, steps=args.steps, conditional=True,
                   seed=0, recipe=args.recipe)
    y = torch.arange(10).repeat_interleave(100)
    x = tr.sample(len(y), seed=1, labels=y)
    return {"command": "fastgan train --data digits --conditional (defaults: 16 px, batch 64, "
                       f"{tr.cfg.steps} steps); 100 samples per class, seed 1",
            "steps": tr.cfg.steps, "train_wall_s": round(tr.wall_s, 1), **agreement(x, y)}


def run_cas(args) -> dict:
    """Classification accuracy score beside the real split's (see the module docstring).

    Args:
        args: the parsed command line.
    """
    import torch

    d16, native, labels, train_idx, test_idx = digits(args.recipe)
    tr = train_gan(Path(args.work) / "cas-conditional", d16.images[train_idx], labels[train_idx],
                   steps=args.steps, conditional=True, seed=0, recipe=args.recipe)
    counts = torch.bincount(labels[train_idx], minlength=10).tolist()
    xs, ys = synthetic(tr, counts, seed=1)
    rows = []
    for s in range(args.clf_seeds):
        rows.append({"seed": s,
                     "synthetic_only": accuracy(xs, ys, native[test_idx], labels[test_idx], steps=args.clf_steps,
                                                seed=s),
                     "real_split": accuracy(native[train_idx], labels[train_idx], native[test_idx],
                                            labels[test_idx], steps=args.clf_steps, seed=s)})
    return {"split": {"train": len(train_idx), "held_out": len(test_idx),
                      "how": "held_out_split(labels, 0.2, seed=0): 20% of each class held out"},
            "gan": {"steps": tr.cfg.steps, "conditional": True, "recipe": args.recipe,
                    "train_wall_s": round(tr.wall_s, 1)},
            "synthetic": {"n": len(ys), "class_counts": counts, **agreement(xs, ys)},
            "classifier_steps": args.clf_steps, "runs": rows,
            "synthetic_only": mean_se([r["synthetic_only"] for r in rows]),
            "real_split": mean_se([r["real_split"] for r in rows])}


def run_gain(args) -> dict:
    """Augmentation gain with 10% of the digits, per seed (see the module docstring).

    Args:
        args: the parsed command line.
    """
    import torch

    d16, native, labels, train_idx, test_idx = digits(args.recipe)
    fields = {"augment": args.augment} if args.augment else {}
    if args.ada_target:
        fields["ada_target"] = args.ada_target
    rows = []
    for s in range(args.seeds):
        idx = little_split(train_idx, labels, args.per_class, seed=s)
        tr = train_gan(Path(args.work) / f"gain-s{s}", d16.images[idx], labels[idx], steps=args.steps,
                       conditional=True, seed=s, recipe=args.recipe, **fields)
        xs, ys = synthetic(tr, [args.synthetic_per_class] * 10, seed=1000 + s)
        real_x, real_y = native[idx], labels[idx]
        both_x = torch.cat([real_x, torch.nn.functional.interpolate(xs, size=(8, 8), mode="area")])
        both_y = torch.cat([real_y, ys])
        alone = accuracy(real_x, real_y, native[test_idx], labels[test_idx], steps=args.clf_steps, seed=s)
        mixed = accuracy(both_x, both_y, native[test_idx], labels[test_idx], steps=args.clf_steps, seed=s)
        rows.append({"seed": s, "split_alone": alone, "split_plus_synthetic": mixed, "gain": mixed - alone,
                     "synthetic_agreement": agreement(xs, ys)["agreement"], "gan_wall_s": round(tr.wall_s, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return {"split": {"per_class": args.per_class, "images": 10 * args.per_class, "held_out": len(test_idx),
                      "how": "per seed s, per_class images of each class drawn from the 80% training split"},
            "gan": {"steps": args.steps, "conditional": True, "recipe": args.recipe, **fields},
            "synthetic_per_class": args.synthetic_per_class, "classifier_steps": args.clf_steps, "runs": rows,
            "split_alone": mean_se([r["split_alone"] for r in rows]),
            "split_plus_synthetic": mean_se([r["split_plus_synthetic"] for r in rows]),
            "gain": mean_se([r["gain"] for r in rows])}


def run_ada(args) -> dict:
    """No, fixed and adaptive augmentation on little data (see the module docstring).

    Args:
        args: the parsed command line.
    """
    from fastgan.metrics import evaluate

    d16, _, labels, train_idx, _ = digits(args.recipe)
    settings = {k: ({**v, "augment": args.augment} if v else v) for k, v in ADA_SETTINGS.items() if k in args.settings}
    runs: dict[str, list] = {k: [] for k in settings}
    for s in range(args.first_seed, args.first_seed + args.seeds):
        idx = little_split(train_idx, labels, args.per_class, seed=s)
        for name, fields in settings.items():
            tag = f"-t{args.ada_target}" if name == "adaptive" and args.ada_target != 0.6 else ""
            tag += f"-{args.augment.replace(',', '+')}" if fields and args.augment != AUGMENT else ""
            out = Path(args.work) / f"ada-{name}{tag}-s{s}"
            cached = out / "applications-eval.json"
            row = json.loads(cached.read_text()) if cached.is_file() else {}
            done = row.get("steps", 0)
            if done > args.steps:
                raise SystemExit(f"{out} was trained for {done:,} steps, more than --steps {args.steps:,}; "
                                 "give another --work")
            if done != args.steps:
                if "ada_target" in fields:
                    fields = {**fields, "ada_target": args.ada_target, "ada_kimg": args.ada_kimg}
                tr = train_gan(out, d16.images[idx], None, steps=args.steps, conditional=False, seed=s,
                               recipe=args.recipe, **fields)
                m = evaluate(tr.ema_generator(), d16, ["classes", "fd", "pixel_fd"], n=2000, seed=0)
                p = [h["augment_p"] for h in tr.history if "augment_p" in h]
                row = {"seed": s, "steps": tr.cfg.steps, "train_wall_s": round(tr.wall_s, 1),
                       **{k: m[k] for k in ("classes", "classes_reverse_kl", "fd", "pixel_fd")},
                       "final_augment_p": p[-1] if p else fields.get("augment_p", 0.0)}
                cached.write_text(json.dumps(row) + "\n")
            runs[name].append(row)
            print(name, json.dumps(row), flush=True)
    summary = {name: {k: mean_se([r[k] for r in rows]) for k in LOWER_IS_BETTER} for name, rows in runs.items()}
    return {"data": f"{args.per_class} images per class ({10 * args.per_class}), drawn per seed from the 80% "
                    "training split; metrics against all 1,797 digits, 2,000 samples of the EMA generator",
            "steps": args.steps, "augment": args.augment, "ada_kimg": args.ada_kimg, "settings": settings,
            "runs": runs, "summary": summary, "adaptive_vs_best_fixed": verdict(summary)}


def run_vector(args) -> dict:
    """The vector demo: train on digits_vectors, then class agreement, stroke control and smoothness.

    Args:
        args: the parsed command line.
    """
    import numpy as np
    import torch

    from fastgan import TrainConfig, Trainer
    from fastgan.data import load_data
    from fastgan.images import save_image_grid
    from fastgan.stroke_vectors import STROKE_NAMES, make_vectors, measure_strokes

    cfg = TrainConfig(data="digits_vectors", vector_conditional=True, out=str(Path(args.work) / "vector"),
                      steps=args.steps, progress=False, log_every=100, sample_every=0, ckpt_every=500, device="cpu")
    t0 = time.perf_counter()
    tr = fit_to_end(Trainer(cfg))
    wall = time.perf_counter() - t0
    data = load_data("digits_vectors", resolution=tr.cfg.resolution)
    vectors = data.vectors.cpu()
    g = torch.Generator().manual_seed(0)
    out: dict = {"command": f"fastgan train --data digits_vectors --vector_conditional --steps {tr.cfg.steps}",
                 "train_wall_s": round(wall, 1)}
    # (a) the class part: the class's average strokes, 100 samples per class
    y = torch.arange(10).repeat_interleave(100)
    out["class_agreement"] = agreement(tr.sample(len(y), seed=1, vectors=make_vectors(y)), y)
    # (b) the stroke part: ask for the vectors of 1,000 real digits, read the strokes back from the samples
    pick = torch.randperm(len(vectors), generator=g)[:1000]
    asked = vectors[pick]
    asked_class = asked[:, :10].argmax(dim=1)
    got = measure_strokes(tr.sample(len(asked), seed=2, vectors=asked), asked_class)
    shuffled = asked[torch.randperm(len(asked), generator=g)]
    out["stroke_correlation"] = {
        name: {"requested_vs_generated": float(np.corrcoef(asked[:, 10 + i], got[:, i])[0, 1]),
               "shuffled_requests": float(np.corrcoef(shuffled[:, 10 + i], got[:, i])[0, 1])}
        for i, name in enumerate(STROKE_NAMES)}
    # (c) nearby vectors give nearby samples: same noise, the stroke part moved by delta along a random direction
    base = asked[:200]
    u = torch.randn(len(base), len(STROKE_NAMES), generator=g)
    u = u / u.norm(dim=1, keepdim=True)
    x0 = tr.sample(len(base), seed=3, vectors=base)

    def dist(a, b):   # mean L2 distance of the 8x8 images on the digits' 0..16 scale
        pa, pb = [torch.nn.functional.avg_pool2d((t + 1) * 8, t.shape[-1] // 8).flatten(1) for t in (a, b)]
        return float((pa - pb).norm(dim=1).mean())

    steps = {}
    for delta in (0.05, 0.1, 0.25, 0.5, 1.0, 2.0):
        moved = base.clone()
        moved[:, 10:] += delta * u
        steps[str(delta)] = dist(x0, tr.sample(len(base), seed=3, vectors=moved))
    other = base[torch.randperm(len(base), generator=g)]
    out["smoothness"] = {"mean_l2_by_delta": steps, "random_other_vector": dist(x0, tr.sample(len(base), seed=3,
                                                                                               vectors=other)),
                         "how": "200 real vectors; their stroke part moved by delta (standardised units) along a "
                                "random unit direction; same noise; mean L2 distance of the 8x8 images (0..16)"}
    # a picture: one row per class, ink from thin to thick (other strokes average)
    ink = torch.linspace(-2.0, 2.0, 9)
    rows = torch.arange(10).repeat_interleave(len(ink))
    strokes = torch.zeros(len(rows), len(STROKE_NAMES))
    strokes[:, 0] = ink.repeat(10)
    grid = tr.sample(len(rows), seed=4, vectors=make_vectors(rows, strokes))
    if args.figure:
        save_image_grid(grid, args.figure, nrow=len(ink))
        out["figure"] = args.figure
    return out


def verdict(summary: dict) -> dict:
    """Per metric: the best non-adaptive setting's mean against the adaptive one's.

    Args:
        summary: setting -> metric -> :func:`mean_se`.
    """
    if "adaptive" not in summary or len(summary) < 2:
        return {}                                     # nothing to compare with
    out = {}
    for metric, lower in LOWER_IS_BETTER.items():
        fixed = {k: v[metric]["mean"] for k, v in summary.items() if k != "adaptive"}
        best = (min if lower else max)(fixed, key=fixed.get)
        a = summary["adaptive"][metric]["mean"]
        better = a < fixed[best] if lower else a > fixed[best]
        out[metric] = {"best_other": best, "best_other_mean": fixed[best], "adaptive_mean": a,
                       "adaptive": "better" if better else ("equal" if a == fixed[best] else "worse")}
    return out


# ----------------------------------------------------------------------------- command line
EXPERIMENTS: dict[str, Callable[[Any], dict]] = {"demo": run_demo, "cas": run_cas, "gain": run_gain, "ada": run_ada,
                                                 "vector": run_vector}


def main(argv: Optional[list] = None) -> int:
    """Run one experiment and write its JSON.

    Args:
        argv: command-line arguments (without the program name).
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("experiment", choices=sorted(EXPERIMENTS))
    p.add_argument("--out", default=None, help="JSON file for the results (default: print only)")
    p.add_argument("--work", default="runs/applications", help="folder of the run folders (reused on a rerun)")
    p.add_argument("--steps", type=int, default=2000, help="GAN steps (default 2000, the digits default)")
    p.add_argument("--seeds", type=int, default=5, help="seeds of gain and ada (default 5)")
    p.add_argument("--first_seed", type=int, default=0, help="ada: the first seed (to split the runs over processes)")
    p.add_argument("--per_class", type=int, default=18, help="real images per class in gain and ada (default 18)")
    p.add_argument("--synthetic_per_class", type=int, default=180, help="synthetic images per class in gain")
    p.add_argument("--clf_steps", type=int, default=800, help="classifier updates, at least (default 800)")
    p.add_argument("--clf_seeds", type=int, default=3, help="classifier seeds in cas (default 3)")
    p.add_argument("--settings", nargs="+", default=list(ADA_SETTINGS), help="ada: the settings to run")
    p.add_argument("--ada_kimg", type=float, default=20.0, help="ada: TrainConfig.ada_kimg of the adaptive runs")
    p.add_argument("--augment", default=AUGMENT, help="gain and ada: the augmentations of the GAN (gain) "
                   "or of every setting but none (ada)")
    p.add_argument("--ada_target", type=float, default=0.6, help="gain and ada: ada_target of the adaptive runs "
                   "(gain: 0 = fixed p)")
    p.add_argument("--figure", default=None, help="vector: PNG grid, a row per class, ink from thin to thick")
    p.add_argument("--recipe", choices=("dcgan", "digits"), default="dcgan",
                   help="demo, cas, gain and ada: the GAN's settings: dcgan (Adam 2e-4, betas (0.5, 0.999), no R1, plainly "
                        "upscaled digits; the default, as the figures were first measured) or digits (the built-in "
                        "digits' own defaults; give --steps 5000 for their step count)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    args = p.parse_args(argv)

    import torch

    from fastgan.benchmark_report import write_results

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    result = EXPERIMENTS[args.experiment](args)
    from fastgan.info import cpu_machine

    report = {"experiment": args.experiment, "device": f"cpu ({cpu_machine()})", "argv": ["python", "bench/applications.py", *(argv or [])],
              "result": result, "wall_s": round(time.perf_counter() - t0, 1), "torch": torch.__version__,
              "threads": args.threads, "load_average_at_end": os.getloadavg()}
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.out:
        write_results(report, args.out)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
