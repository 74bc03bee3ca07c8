"""Evaluating a generator: sample it, pick the feature space, compute the metrics.

Metric names and what they return (one flat dict of numbers, JSON-ready):

============  ==================================================  ==========================
name          meaning                                             keys
============  ==================================================  ==========================
``fd``        Fréchet distance in the data's feature space        ``fd``
``kid``       kernel distance, mean and std over subsets          ``kid``, ``kid_std``
``pr``        improved precision / recall (k = 3)                 ``precision``, ``recall``
``modes``     2-D mixtures: modes captured, high-quality          ``modes``, ``num_modes``,
              fraction, reverse KL (PacGAN Table 1)               ``high_quality``, ``reverse_kl``
``classes``   digits: classes found by the classifier and         ``classes``, ``num_classes``,
              reverse KL against the real class distribution      ``classes_reverse_kl``
``pixel_fd``  digits: Fréchet distance to the 1,797 real digits   ``pixel_fd``
              in their native 8x8 pixel space (0..16 scale;
              :mod:`fastgan.metrics.pixel_fd`)
============  ==================================================  ==========================

KID is averaged over 100 subsets of up to 1,000 samples. With at most 1,000
real and generated samples every subset is the whole set, so no spread exists:
``kid_std`` is then ``None`` and a warning says why.

Feature spaces: raw coordinates for 2-D points, the digits classifier for
``digits`` and ``stacked_digits`` (per channel), InceptionV3 for other images.
For ``stacked_digits`` the classes are the 1,000 digit triples and the
reference distribution is uniform over them (as PacGAN measures stacked MNIST);
for ``digits`` it is the real label histogram.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from ..errors import CheckpointError, ConfigError
from .features import FeatureFn, check_samples, data_family, digits_labels, feature_fn
from .fid import frechet_distance
from .mmd import kid
from .modes import class_coverage, mixture_mode_metrics
from .pixel_fd import pixel_frechet_distance
from .prdc import precision_recall

METRICS = ("fd", "kid", "pr", "modes", "classes", "pixel_fd")
# Generated samples per evaluation when n is not given (PacGAN uses 2,500 points;
# stacked digits need many samples to see 1,000 modes; Inception is slow on CPUs).
DEFAULT_N = {"points": 2500, "digits": 2000, "stacked_digits": 10000, "images": 5000}
KID_SUBSET = 1000
KID_SUBSETS = 100
PR_K = 3


def default_metrics(data) -> list[str]:
    """The metrics computed when none are asked for.

    Args:
        data: the reference :class:`fastgan.data.GanData`.
    """
    return {"points": ["modes", "fd", "pr"], "digits": ["fd", "kid", "pr", "classes", "pixel_fd"],
            "stacked_digits": ["classes", "fd"], "images": ["fd", "kid", "pr"]}[data_family(data)]


def check_metrics(data, metrics: Union[None, str, Sequence[str]], features=None) -> list[str]:
    """Validate metric names for ``data`` (cheap: call it before training starts).

    Args:
        data: the reference :class:`fastgan.data.GanData`.
        metrics: names (a list or a comma-separated string); empty means
            :func:`default_metrics`.
        features: the ``features`` argument :func:`evaluate` will get.

    Returns:
        The list of metric names to compute, without duplicates.
    """
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",")]
    names = [m.strip().lower() for m in (metrics or []) if m and m.strip()]
    names = list(dict.fromkeys(names)) or default_metrics(data)
    family = data_family(data)
    for m in names:
        if m not in METRICS:
            raise ConfigError(f"unknown metric {m!r}; choose from {', '.join(METRICS)}")
        if m == "modes" and family != "points":
            raise ConfigError("metric 'modes' needs 2-D mixture data (grid25, ring8); "
                              "use 'classes' for digits and stacked_digits")
        if m == "classes" and family not in ("digits", "stacked_digits"):
            raise ConfigError("metric 'classes' needs digits or stacked_digits data "
                              "(it labels samples with the digits classifier)")
        if m == "pixel_fd" and family != "digits":
            raise ConfigError("metric 'pixel_fd' needs the built-in digits data "
                              "(it compares with scikit-learn's 8x8 digits)")
    needs_features = any(m in ("fd", "kid", "pr") for m in names)
    if needs_features and features in (None, "auto", "inception") and (family == "images" or features == "inception"):
        from .inception import inception_available, inception_path, INCEPTION_URL
        if not inception_available():
            raise ConfigError(f"metrics {', '.join(m for m in names if m in ('fd', 'kid', 'pr'))} on '{data.name}' "
                              f"need Inception weights: download {INCEPTION_URL} to '{inception_path()}' "
                              "(or set FASTGAN_INCEPTION), or pass features=")
    return names


def _real_samples(data, n: int, seed: int) -> torch.Tensor:
    """Up to ``n`` real samples on the CPU: images without replacement, fresh mixture points."""
    if data.kind == "points":
        g = torch.Generator(device=data.device)
        g.manual_seed(seed + 1)
        x, _ = data.sample(n, g)
        return x.float().cpu()
    g = torch.Generator().manual_seed(seed + 1)
    total = len(data)
    idx = torch.randperm(total, generator=g)[:n] if n < total else torch.arange(total)
    return data.images[idx.to(data.images.device)].cpu().float().div_(127.5).sub_(1.0)


def _generate(G, n: int, seed: int, device, vector_pool: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``n`` samples of a generator: an nn.Module (fastgan's or the user's), an
    ONNX Runtime generator (``.run(z, labels)``) or any callable ``(z, labels) -> x``.
    A vector-conditioned generator gets vectors drawn (seeded) from ``vector_pool``."""
    from ..sampling import check_labels, generate

    z_dim = getattr(G, "z_dim", None)
    if not isinstance(z_dim, int) or z_dim <= 0:
        raise ConfigError("the generator must have a positive integer attribute z_dim")
    num_classes = int(getattr(G, "num_classes", 0) or 0)
    vector_dim = int(getattr(G, "vector_dim", 0) or 0)
    vectors = None
    if vector_dim:
        if vector_pool is None:
            raise ConfigError("a vector-conditioned generator is evaluated on data with vectors "
                              "(e.g. digits_vectors)")
        pick = torch.randint(len(vector_pool), (n,), generator=torch.Generator().manual_seed(seed + 2))
        vectors = vector_pool.cpu()[pick]
    if isinstance(G, torch.nn.Module):
        return generate(G, n, z_dim=z_dim, seed=seed, num_classes=num_classes, device=device, vectors=vectors,
                        vector_dim=vector_dim)
    run = getattr(G, "run", None) or G
    if not callable(run):
        raise ConfigError(f"cannot sample from a {type(G).__name__}: pass an nn.Module or an OnnxGenerator")
    g = torch.Generator().manual_seed(seed)
    y = check_labels(None, n, num_classes)
    out = []
    for s in range(0, n, 256):
        z = torch.randn(min(256, n - s), z_dim, generator=g)
        lab = None if y is None else y[s:s + len(z)]
        if vectors is not None:
            lab = vectors[s:s + len(z)]
        if hasattr(G, "run") and vectors is not None:   # ONNX Runtime: numpy in, numpy out
            out.append(torch.as_tensor(run(z.numpy(), vectors=lab.numpy())))
        elif hasattr(G, "run"):
            out.append(torch.as_tensor(run(z.numpy(), None if lab is None else lab.numpy())))
        else:
            out.append(torch.as_tensor(run(z, lab)).detach().cpu())
    return torch.cat(out).float()


def evaluate_samples(fake, data, metrics: Union[None, str, Sequence[str]] = None, *, seed: int = 0,
                     features: Union[None, str, FeatureFn] = None, device="cpu",
                     n_real: Optional[int] = None) -> dict:
    """Compute metrics for samples already generated.

    Args:
        fake: (N, 2) points or (N, C, H, W) images in [-1, 1].
        data: the reference :class:`fastgan.data.GanData`.
        metrics: names (see the module doc); empty means :func:`default_metrics`.
        seed: seed of the real-sample subset and of KID's subsets.
        features: feature space for fd/kid/pr (see
            :func:`fastgan.metrics.features.feature_fn`).
        device: where feature networks run.
        n_real: real samples to compare with (default: as many as ``fake``,
            at most the whole data set).

    Returns:
        A flat dict of floats and ints (see the module doc for the keys).
    """
    names = check_metrics(data, metrics, features)
    fake = check_samples(fake, data, "generated samples")
    family = data_family(data)
    out: dict = {}
    if any(m in ("fd", "kid", "pr") for m in names):
        real = _real_samples(data, n_real or len(fake), seed)
        extract = feature_fn(data, features, device)
        f_real, f_fake = extract(real), extract(fake)
        if "fd" in names:
            out["fd"] = frechet_distance(f_real, f_fake)
        if "kid" in names:
            m = max(2, min(KID_SUBSET, len(f_real), len(f_fake)))
            out["kid"], std = kid(f_real, f_fake, subset_size=m, num_subsets=KID_SUBSETS, seed=seed)
            out["kid_std"] = None if math.isnan(std) else std
            if out["kid_std"] is None:
                warnings.warn(f"KID std not reported: with {m} real and {m} generated samples every KID subset "
                              f"(up to {KID_SUBSET:,} samples) is the whole set; evaluate more samples for a spread",
                              stacklevel=2)
        if "pr" in names:
            out["precision"], out["recall"] = precision_recall(f_real, f_fake, k=PR_K)
    if "modes" in names:
        r = mixture_mode_metrics(fake, data.modes.cpu(), data.mode_std)
        out.update({k: r[k] for k in ("modes", "num_modes", "high_quality", "reverse_kl")})
    if "classes" in names:
        if family == "stacked_digits" or data.labels is None:
            reference = None                                             # uniform
        else:
            reference = torch.bincount(data.labels.cpu(), minlength=data.num_classes)
        r = class_coverage(digits_labels(fake, device), data.num_classes, reference)
        out.update({"classes": r["classes"], "num_classes": r["num_classes"],
                    "classes_reverse_kl": r["reverse_kl"]})
    if "pixel_fd" in names:
        out["pixel_fd"] = pixel_frechet_distance(fake)
    return out


def evaluate(G, data, metrics: Union[None, str, Sequence[str]] = None, n: Optional[int] = None, seed: int = 0,
             device="cpu", features: Union[None, str, FeatureFn] = None) -> dict:
    """Sample a generator and compute quality and mode-collapse metrics against ``data``.

    The global random state is left untouched (every draw uses its own
    seeded generator), so calling this during training changes nothing.

    Args:
        G: the generator: an nn.Module with ``z_dim`` (and ``num_classes`` for a
            conditional one; classes are sampled in turn), an ONNX Runtime
            generator, or a callable ``(z, labels) -> x`` with ``z_dim``.
        data: the reference :class:`fastgan.data.GanData`.
        metrics: names among ``fd``, ``kid``, ``pr``, ``modes``, ``classes``,
            ``pixel_fd`` (list or comma-separated); empty means :func:`default_metrics`.
        n: samples to generate (default per data kind: 2,500 points, 2,000
            digits, 10,000 stacked digits, 5,000 other images).
        seed: seed of the latents, the real subset and KID's subsets.
        device: where G lives and feature networks run.
        features: feature space for fd/kid/pr (``None``: by data kind).

    Returns:
        A flat dict of floats and ints (see the module doc for the keys).
    """
    names = check_metrics(data, metrics, features)
    n = DEFAULT_N[data_family(data)] if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ConfigError(f"n must be an integer >= 2, got {n!r}")
    fake = _generate(G, n, seed, device, getattr(data, "vectors", None))
    return evaluate_samples(fake, data, names, seed=seed, features=features, device=device)


# ---------------------------------------------------------------------- CLI
def _load_source(run: str, data_spec: Optional[str]):
    """(generator, data spec, resolution, default output file, saved config) for a run folder, checkpoint
    folder or .onnx file."""
    p = Path(run)
    if not p.exists():
        raise CheckpointError(f"no run, checkpoint or ONNX file at '{run}'")
    if p.is_file():
        from ..export.runtime import OnnxGenerator

        G = OnnxGenerator(p, providers="cpu")
        cfg = G.info.train_config or {}
        return G, data_spec or cfg.get("data"), cfg.get("resolution"), None, cfg
    from ..checkpoint import load_generator, read_run_config

    G = load_generator(p, device="cpu")
    cfg = read_run_config(p) or read_run_config(p.parent.parent) or {}
    if not cfg and "config" in getattr(G, "fastgan_metadata", {}):
        cfg = json.loads(G.fastgan_metadata["config"])
    run_dir = p if (p / "config.json").is_file() else p.parent.parent
    return G, data_spec or cfg.get("data"), cfg.get("resolution"), run_dir / "eval.json", cfg


def evaluate_cli(run: str, metrics: str = "", n: Optional[int] = None, seed: int = 0,
                 out: Optional[str] = None, data: Optional[str] = None) -> int:
    """``fastgan eval``: evaluate a run (or an exported .onnx generator), print and save the results.

    Args:
        run: a run folder, a checkpoint folder or an ``.onnx`` file.
        metrics: comma-separated metric names (empty: the data's defaults).
        n: samples to generate (default per data kind).
        seed: noise seed.
        out: JSON file for the results (default: ``RUN/eval.json`` for runs,
            none for ONNX files).
        data: reference data (default: the data the run was trained on).

    Returns:
        The exit status (0).
    """
    from ..config import DIGITS_UPSCALES, with_legacy_values
    from ..data import load_data

    G, spec, resolution, default_out, cfg = _load_source(run, data)
    if not spec or spec == "<custom>":
        raise ConfigError(f"'{run}' does not say which data it was trained on; pass --data")
    image_shape = getattr(G, "out_shape", None)
    if image_shape is not None and len(image_shape) == 3:
        resolution = int(image_shape[-1])
    # the digits as the run was trained on them (a run saved before digits_upscale: plain bicubic)
    trained_on = with_legacy_values(cfg).get("digits_upscale") if spec == cfg.get("data") else None
    ref = load_data(spec, resolution=resolution if spec not in ("grid25", "ring8") else None,
                    digits_upscale=trained_on or DIGITS_UPSCALES[0])
    t0 = time.perf_counter()
    result = evaluate(G, ref, metrics, n=n, seed=seed, device="cpu")
    elapsed = time.perf_counter() - t0
    width = max(len(k) for k in result) if result else 0
    print(f"fastgan eval: {run} against '{spec}' ({elapsed:.1f} s)")
    for k, v in result.items():
        shown = f"{v:.6g}" if isinstance(v, float) and math.isfinite(v) else "not reported" if v is None else str(v)
        print(f"  {k:<{width}}  {shown}")
    dest = Path(out) if out else default_out
    if dest is not None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        record = {"run": str(run), "data": spec, "seed": seed, "metrics": result}
        dest.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {dest}", file=sys.stderr)
    return 0
