"""Reference figures of the digits' pixel-space Fréchet distance (``pixel_fd``).

What real data score against the reference (all 1,797 of scikit-learn's 8x8
digits, pixels 0..16), so a generator's figure can be read:

- ``halves``: two disjoint random halves of the real digits (898 / 899),
  over ``--splits`` random splits: the noise floor of two real samples;
- ``one_class``: each class alone against all the digits (a generator that
  collapsed onto one digit);
- ``loader``: the images fastgan trains on (``load_data("digits", resolution=R,
  digits_upscale=U)``, uint8 in [-1, 1]) mapped back to 8x8, for both upscalings:
  all of them, and 1,000 drawn without replacement over ``--splits`` draws (what
  a generator that reproduced its training images exactly would score with
  ``--n 1000``).

    python bench/digits_pixel_fd_calibration.py --out bench/results/digits-pixel-fd-calibration.json
"""

from __future__ import annotations

import argparse
import statistics


def _summary(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--splits", type=int, default=20, help="random splits / draws per figure (default 20)")
    p.add_argument("--n", type=int, default=1000, help="images drawn from the loader's set (default 1000)")
    p.add_argument("--resolutions", type=int, nargs="+", default=[16, 32], help="loader resolutions (16 32)")
    p.add_argument("--out", default=None, help="JSON file for the results (default: print only)")
    args = p.parse_args(argv)
    if args.splits < 1 or args.n < 2:
        p.error("--splits must be positive and --n at least 2")

    import torch

    from fastgan.benchmark import environment, write_results
    from fastgan.benchmark_telemetry import Telemetry
    from fastgan.config import DIGITS_UPSCALES
    from fastgan.data import load_data
    from fastgan.metrics import native_digits, pixel_frechet_distance, to_native_pixels
    from fastgan.metrics.fid import frechet_distance

    x, y = native_digits()
    g = torch.Generator().manual_seed(0)
    halves = []
    for _ in range(args.splits):
        perm = torch.randperm(len(x), generator=g)
        halves.append(frechet_distance(x[perm[:len(x) // 2]], x[perm[len(x) // 2:]]))
    one_class = {str(c): frechet_distance(x, x[y == c]) for c in range(10)}
    loader = {}
    for r in args.resolutions:
        for upscale in DIGITS_UPSCALES:
            images = load_data("digits", resolution=r, digits_upscale=upscale).images.float() / 127.5 - 1.0
            drawn = [pixel_frechet_distance(images[torch.randperm(len(images), generator=g)[:args.n]])
                     for _ in range(args.splits)]
            err = (to_native_pixels(images) - x).abs()
            loader[f"{r}_{upscale}"] = {
                "resolution": r, "digits_upscale": upscale, "all": pixel_frechet_distance(images),
                f"drawn_{args.n}": _summary(drawn), "mean_abs_pixel_error": float(err.mean()),
                "max_abs_pixel_error": float(err.max())}
    result = {
        "reference": "all 1,797 scikit-learn digits, 8x8, pixels 0..16",
        "halves": _summary(halves),
        "one_class": one_class,
        "one_class_summary": _summary(list(one_class.values())),
        "loader": loader,
        "environment": environment(torch.device("cpu"), Telemetry(torch.device("cpu"))),
    }
    print(f"disjoint halves: {result['halves']['mean']:.1f} +- {result['halves']['sd']:.1f} "
          f"(min {result['halves']['min']:.1f}, max {result['halves']['max']:.1f}; {args.splits} splits)")
    print("one class vs all: " + ", ".join(f"{c}: {v:.0f}" for c, v in one_class.items()))
    for v in loader.values():
        d = v[f"drawn_{args.n}"]
        print(f"loader at {v['resolution']} px, {v['digits_upscale']}: all {v['all']:.2f}; {args.n} drawn "
              f"{d['mean']:.2f} +- {d['sd']:.2f}; mean |pixel error| {v['mean_abs_pixel_error']:.3f} of 16")
    if args.out:
        write_results(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
