"""What pix2pix and CycleGAN learn on the built-in demos, on a CPU in a few minutes (docs/translation.md).

pix2pix on its default demo ``edges2photo`` (or ``--set data=edges2digits``,
``grey2colour``): held-out L1, PSNR and style FD of the trained U-Net beside
the identity baseline (the input returned as the output) and beside the same
U-Net trained for the same steps on the L1 loss alone (same initial weights,
data draws and dropout noise, same Adam): what the adversarial term adds.

CycleGAN on its default demo ``digits2bold`` (or ``--set data=china2flower``):
cycle-reconstruction error and the style Fréchet distance
(:mod:`fastgan.metrics.translation`) of translated held-out images to the
target domain, both directions, before and after training.

    python bench/translation_quality.py pix2pix --seeds 3 --out bench/results/translation-pix2pix-edges2photo.json \
        --grid docs/translation_pix2pix.png
    python bench/translation_quality.py pix2pix --seeds 2 --set data=edges2digits --set steps=1000 \
        --out bench/results/translation-pix2pix-edges2digits.json --grid docs/translation_pix2pix_digits.png
    python bench/translation_quality.py cyclegan --seeds 2 --out bench/results/translation-cyclegan-digits2bold.json \
        --grid docs/translation_cyclegan.png

Quality is counted in steps, so the figures do not depend on the machine's
load; the JSON records the commands' settings, the seconds they took and
the versions.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path


def l1_only_unet(trainer, steps: int) -> dict:
    """The pix2pix run's U-Net, trained from the same initial weights on L1 alone, then evaluated like pix2pix.

    Draws batches, flips and dropout noise from a generator seeded as the pix2pix
    run's, and uses an Adam made by the same engine with the same settings.

    Args:
        trainer: a fresh (untrained) pix2pix Trainer, whose networks it copies.
        steps: training iterations.
    """
    import copy

    import torch

    from fastgan.tasks.pix2pix import pair_metrics
    from fastgan.translation_data import to_float

    task, cfg = trainer.task, trainer.cfg
    G = copy.deepcopy(task.G).train()
    opt = trainer.engine.make_optimizer(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    gen = torch.Generator(device=task.device).manual_seed(cfg.seed)
    shapes = G.noise_shapes(cfg.batch_size, cfg.resolution, cfg.resolution)
    for _ in range(steps):
        a, b = task.data.sample(cfg.batch_size, gen)
        noise = [torch.rand(s, generator=gen, device=task.device) for s in shapes]
        trainer.engine.update((G(a, noise) - b).abs().mean(), opt, None)
    G.eval()
    with torch.no_grad():
        a, b = to_float(task.data.test_a), to_float(task.data.test_b)
        return pair_metrics(torch.cat([G(a[i:i + 64]) for i in range(0, len(a), 64)]), b)


def real_vs_real(data) -> dict:
    """The style FD's floor: held-out real images of each domain against every image of that domain.

    Args:
        data: the task's TranslationData.
    """
    import torch

    from fastgan.metrics.translation import style_fd
    from fastgan.translation_data import to_float

    every_a = to_float(torch.cat([data.a.cpu(), data.test_a]))
    every_b = to_float(torch.cat([data.b.cpu(), data.test_b]))
    return {"fd_a": style_fd(to_float(data.test_a), every_a), "fd_b": style_fd(to_float(data.test_b), every_b)}


def run(args) -> dict:
    import torch

    from fastgan import Trainer
    from fastgan.tasks import TranslationConfig

    torch.set_num_threads(args.threads)
    from quality import _parse_value   # bench/quality.py: --set values as int, float, bool or text

    overrides = {k: _parse_value(v) for k, v in (s.split("=", 1) for s in args.set)}
    results = []
    work = Path(tempfile.mkdtemp(prefix="fastgan-translation-"))
    try:
        for seed in range(args.seeds):
            cfg = TranslationConfig(task=args.task, out=str(work / f"{args.task}-{seed}"), seed=seed, device="cpu",
                                    progress=False, sample_every=0, ckpt_every=0,
                                    **overrides)
            trainer = Trainer(cfg, resume=False)
            rec = {"seed": seed, "before": trainer.evaluate()}
            if args.task == "cyclegan":
                rec["real_vs_real"] = real_vs_real(trainer.task.data)
            baseline = None
            if args.task == "pix2pix" and not args.no_l1_only:
                t0 = time.perf_counter()
                baseline = l1_only_unet(Trainer(cfg, resume=False), trainer.cfg.steps)
                rec["l1_only_unet"] = {**baseline, "seconds": time.perf_counter() - t0}
            t0 = time.perf_counter()
            trainer.run_steps(trainer.cfg.steps)
            rec["seconds"] = time.perf_counter() - t0
            rec["after"] = trainer.evaluate()
            rec["resolved_config"] = {k: v for k, v in trainer.cfg.to_dict().items() if k not in ("out", "progress")}
            results.append(rec)
            print(json.dumps({k: v for k, v in rec.items() if k != "resolved_config"}), flush=True)
            if seed == 0 and args.grid:
                trainer.task.save_samples(Path(args.grid))
                print(f"wrote {args.grid}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"benchmark": f"{args.task} on its built-in demo (bench/translation_quality.py)",
            "command": " ".join(["python bench/translation_quality.py", *sys.argv[1:]]),
            "threads": args.threads, "results": results, "summary": summarise(args.task, results),
            "env": {"torch": torch.__version__, "python": platform.python_version(), "cpu": platform.machine(),
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S")}}


def summarise(task: str, results: list[dict]) -> dict:
    """Means over seeds of the headline figures.

    Args:
        task: pix2pix or cyclegan.
        results: one record per seed.
    """
    def mean(path):
        vals = [r for r in results]
        for key in path:
            vals = [v[key] for v in vals]
        return sum(vals) / len(vals)

    if task == "pix2pix":
        out = {k: mean(("after", k)) for k in ("l1", "psnr", "fd", "identity_l1", "identity_psnr", "identity_fd")}
        if all("l1_only_unet" in r for r in results):
            out.update({f"l1_only_{k}": mean(("l1_only_unet", k)) for k in ("l1", "psnr", "fd")})
        return out
    keys = ("cycle_a", "cycle_b", "fd_ab", "fd_ba", "fd_ab_identity", "fd_ba_identity")
    return {**{f"before_{k}": mean(("before", k)) for k in keys}, **{f"after_{k}": mean(("after", k)) for k in keys},
            "real_vs_real_fd_a": mean(("real_vs_real", "fd_a")), "real_vs_real_fd_b": mean(("real_vs_real", "fd_b"))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("task", choices=("pix2pix", "cyclegan"))
    p.add_argument("--seeds", type=int, default=1, help="seeds 0 .. N-1 (default 1)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="TranslationConfig field (repeatable), e.g. --set steps=500")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: the machine is shared)")
    p.add_argument("--no-l1-only", action="store_true", help="pix2pix: skip the L1-only U-Net baseline")
    p.add_argument("--out", default=None, help="JSON file for the results")
    p.add_argument("--grid", default=None, help="PNG of the sample figure of seed 0 after training")
    args = p.parse_args(argv)
    report = run(args)
    print(json.dumps(report["summary"], indent=2))
    if args.out:
        from fastgan.benchmark_report import write_results

        write_results(report, args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
