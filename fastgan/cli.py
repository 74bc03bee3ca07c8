"""The ``fastgan`` command line: train, sample, export, eval, bench, info, translate.

``fastgan train`` flags map 1:1 onto :class:`fastgan.TrainConfig` fields (same
names, ``--flag/--no-flag`` for booleans). Running ``fastgan train --out RUN``
on an existing run continues it: the run's saved config is the base and only
the flags given on the command line change it.

Errors a user can cause are printed as one line (``fastgan: error: ...``) with
exit status 2; Ctrl-C during training saves a checkpoint first.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from .cli_common import (EXIT_ABORTED, EXIT_ERROR, EXIT_STOPPED, add_config_flags, announce_start, cpu_threads_for,
                         fit_to_end)
from .config import TrainConfig
from .errors import ConfigError, FastGANError, storage_error


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fastgan`` command."""
    from .version import __version__

    parser = argparse.ArgumentParser(prog="fastgan", description="Train, sample, export, evaluate and benchmark GANs.")
    parser.add_argument("--version", action="version", version=f"fastgan {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    t = sub.add_parser("train", help="train a GAN (rerun on the same --out to resume)",
                       description="Train a GAN. Rerunning on an existing --out continues that run; "
                                   "flags given then override its saved config. For image-to-image translation: "
                                   "fastgan train --task pix2pix|cyclegan (its own flags: add --help).")
    add_config_flags(t)

    s = sub.add_parser("sample", help="generate samples from a run or an exported ONNX generator")
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run folder (or one checkpoint folder)")
    src.add_argument("--onnx", help="ONNX generator exported by 'fastgan export'")
    s.add_argument("--n", type=int, default=None, help="number of samples (default: 64, or one per --labels value)")
    s.add_argument("--out", required=True, help="FILE.png (grid), FILE.npy (raw array), FILE.npz, or DIR/ (one PNG "
                   "each; with --per_class a labelled dataset: one sub-folder per class and manifest.json)")
    s.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    s.add_argument("--labels", nargs="+", default=None,
                   help="class labels of a conditional generator, as indices or class names, comma- or "
                        "space-separated (3,3,7): one for every sample, or one per sample")
    s.add_argument("--vectors", default=None,
                   help="conditioning vectors of a vector-conditioned generator: FILE.npy (N, V), FILE.npz "
                        "(array 'vectors'), or numbers (0.1,0.2;0.3,0.4); one vector is used for all --n samples")
    s.add_argument("--per_class", type=int, default=None,
                   help="N samples of every class of a conditional generator (a .png grid has one row per class)")
    s.add_argument("--no-ema", dest="ema", action="store_false", help="use the raw generator, not its EMA")
    s.add_argument("--device", default="cpu", help="device for --run (default: cpu)")

    e = sub.add_parser("export", help="export a run's generator to ONNX and verify it with ONNX Runtime")
    e.add_argument("--run", required=True, help="run folder (or one checkpoint folder)")
    e.add_argument("--out", required=True, help="destination .onnx file")
    e.add_argument("--fp16", action="store_true",
                   help="fp16 weights and compute, fp32 inputs/outputs (parity tolerance 1e-2)")
    e.add_argument("--no-verify", dest="verify", action="store_false", help="skip the ONNX Runtime parity check")
    e.add_argument("--direction", default="AtoB", choices=("AtoB", "BtoA"),
                   help="translation runs: which generator (CycleGAN has two; default AtoB)")

    v = sub.add_parser("eval", help="compute quality / mode-collapse metrics for a run or an ONNX generator")
    v.add_argument("--run", required=True, help="run folder, checkpoint folder, or exported .onnx file")
    v.add_argument("--metrics", default="", help="comma-separated metrics (default: the data's usual set)")
    v.add_argument("--n", type=int, default=None, help="samples to generate (default: per metric)")
    v.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    v.add_argument("--out", default=None, help="JSON file for the results (default: RUN/eval.json for runs)")
    v.add_argument("--data", default=None, help="reference data (default: the run's data)")

    i = sub.add_parser("info", help="versions, devices, and which modes, kernels and AMP types run here (for bug "
                       "reports)")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument("--device", default="auto", help="device to check (default: auto, as fastgan train)")

    from .translation_cli import add_translate_parser

    add_translate_parser(sub)

    b = sub.add_parser("bench", help="training-throughput benchmark against eager PyTorch recipes",
                       add_help=False)
    b.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments of the benchmark runner (see --help)")
    return parser


def _train(args: argparse.Namespace) -> int:
    from .checkpoint import read_run_config
    from .distributed import env_rank
    from .train import Trainer

    say = print if env_rank() == 0 else (lambda *a, **k: None)  # under torchrun rank 0 speaks for the run

    given = {k: v for k, v in vars(args).items() if k != "command"}
    out = given.get("out", TrainConfig.out)
    saved = read_run_config(out) if Path(out).is_dir() else None
    if saved is not None:
        cfg = TrainConfig.from_dict(saved)
        if cfg.data == "<custom>" and "data" not in given:
            raise ConfigError(f"run '{out}' was trained on data passed from Python; give --data to continue it")
        cfg = dataclasses.replace(cfg, **given)
    else:
        cfg = TrainConfig(**given)
    trainer = Trainer(cfg)   # takes the run folder's lock to resume: a folder in use is refused here
    announce_start(trainer, out, saved, say)
    trainer.cpu_threads = cpu_threads_for(trainer)
    plan = trainer.engine.plan
    say(f"fastgan: {plan.summary()}", file=sys.stderr)
    for note in plan.notes if plan.world_size > 1 else ():  # e.g. why fast runs eager steps with gloo
        say(f"fastgan: {note}", file=sys.stderr)
    finished = fit_to_end(trainer, out, say)
    trainer.parallel.close()   # every rank gets here, trained or stopped alike (a stop is agreed by all)
    if not finished:
        return EXIT_STOPPED
    last = next((h for h in reversed(trainer.history) if "d_loss" in h), None)
    summary = f"trained to step {trainer.step}; run folder: {trainer.run_dir}"
    if last:
        summary += f" (d_loss {last['d_loss']:.3f}, g_loss {last['g_loss']:.3f}, {last['images_per_s']:.0f} img/s)"
    say(summary)
    return 0


def _run_data_modes(run: str):
    """Mixture centres for a point-data run (drawn on its plots), else ``None``."""
    from .checkpoint import read_run_config
    from .config import POINT_DATASETS

    p = Path(run)
    saved = read_run_config(p) or read_run_config(p.parent.parent)
    if saved and saved.get("data") in POINT_DATASETS:
        from .data import load_data
        return load_data(saved["data"]).modes
    return None


def _sample(args: argparse.Namespace) -> int:
    from .sampling import check_labels, check_vectors, parse_labels, per_class_labels, read_vectors

    for flag in ("n", "per_class"):
        v = getattr(args, flag)
        if v is not None and v <= 0:
            raise ConfigError(f"--{flag} must be a positive integer, got {v}")
    if args.per_class is not None and (args.n is not None or args.labels is not None):
        raise ConfigError("--per_class gives N samples of every class; leave out --n and --labels")
    if args.vectors is not None and (args.labels is not None or args.per_class is not None):
        raise ConfigError("--vectors conditions a vector generator; leave out --labels and --per_class")
    if args.per_class is not None and _is_folder(args.out):
        return _export_dataset(args)
    if args.onnx:
        from .export import OnnxGenerator
        gen = OnnxGenerator(args.onnx)
        num_classes, class_names, vector_dim = gen.num_classes, gen.class_names, gen.vector_dim
    else:
        from .checkpoint import load_generator
        G = load_generator(args.run, device=args.device, ema=args.ema)
        num_classes, class_names, vector_dim = G.num_classes, G.class_names, getattr(G, "vector_dim", 0)
    labels, vectors, n, nrow = None, None, args.n or 64, None
    if args.vectors is not None:
        vectors = read_vectors(args.vectors)
        n = args.n or (len(vectors) if vectors.ndim == 2 and len(vectors) > 1 else 64)
    vectors = check_vectors(vectors, n, vector_dim)   # one clear line for missing or misshapen vectors
    if args.per_class is not None:
        labels = per_class_labels(args.per_class, num_classes)
        n, nrow = len(labels), args.per_class
    elif args.labels is not None:
        labels = parse_labels(args.labels, class_names)
        n = args.n or (64 if len(labels) == 1 else len(labels))
        labels = check_labels(labels, n, num_classes)   # one clear line for a wrong count or range
    if args.onnx:
        from .export import sample_onnx
        written = sample_onnx(args.onnx, n, args.out, seed=args.seed, labels=labels, nrow=nrow, vectors=vectors)
    else:
        from .sample_output import write_sample_batches
        from .sampling import generate_batches

        batches = generate_batches(G, n, z_dim=G.z_dim, seed=args.seed, labels=labels, num_classes=num_classes,
                                   device=args.device, vectors=vectors,
                                   vector_dim=vector_dim)   # drawn as the writer consumes them: memory bounded
        points = len(G.out_shape) == 1
        written = write_sample_batches(batches, n, tuple(G.out_shape), args.out, nrow=nrow,
                                       labels=check_labels(labels, n, num_classes), vectors=vectors,
                                       modes=_run_data_modes(args.run) if points else None)
    print(f"wrote {n} samples to {args.out}" + (f" ({len(written)} files)" if len(written) > 1 else ""))
    return 0


def _is_folder(out: str) -> bool:
    return out.endswith(("/", os.sep)) or Path(out).is_dir()


def _export_dataset(args: argparse.Namespace) -> int:
    from .dataset_export import export_dataset, onnx_source, run_source

    source = onnx_source(args.onnx) if args.onnx else run_source(args.run, ema=args.ema, device=args.device)
    done = export_dataset(source, args.out, args.per_class, seed=args.seed, progress=sys.stderr.isatty())
    m = done.manifest
    if done.generated == 0 and done.reused == m["total"]:
        print(f"dataset '{done.path}' is already complete ({m['total']} images); nothing to do")
    else:
        again = f", {done.reused} kept from an interrupted export" if done.reused else ""
        print(f"wrote {m['total']} images ({m['per_class']} per class, {m['num_classes']} classes{again}) "
              f"and {done.path / 'manifest.json'}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .export import export_run, format_report
    from .translator import is_translation_run

    if is_translation_run(args.run):
        from .export import export_translation_run, format_translator_report

        print(format_translator_report(export_translation_run(args.run, args.out, direction=args.direction,
                                                              fp16=args.fp16, verify=args.verify)))
        return 0
    report = export_run(args.run, args.out, fp16=args.fp16, verify=args.verify)
    print(format_report(report))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .metrics import evaluate_cli

    return evaluate_cli(run=args.run, metrics=args.metrics, n=args.n, seed=args.seed, out=args.out, data=args.data)


def _info(args: argparse.Namespace) -> int:
    from .info import main as info_main

    return info_main(args.device, as_json=args.json)


def _bench(args: argparse.Namespace) -> int:
    from .benchmark import main as bench_main

    return bench_main(args.bench_args)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``fastgan`` console script and ``python -m fastgan``.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit status.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:  # the runner owns its flags, --help included
        from .benchmark import main as bench_main
        return _guard(lambda: bench_main(argv[1:]))
    if argv[:1] == ["train"]:  # pix2pix / CycleGAN runs have flags of their own
        from .translation_cli import train_main, wants_translation
        if wants_translation(argv[1:]):
            return _guard(lambda: train_main(argv[1:]))
    args = build_parser().parse_args(argv)
    from .translation_cli import translate_main

    handler = {"train": _train, "sample": _sample, "export": _export, "eval": _eval, "bench": _bench,
               "info": _info, "translate": translate_main}[args.command]
    return _guard(lambda: handler(args))


def _guard(fn) -> int:
    try:
        return int(fn() or 0)
    except FastGANError as e:
        from .distributed import env_rank

        if env_rank() == 0 or not getattr(e, "every_rank", False):  # an error all ranks raise: printed once
            print(f"fastgan: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as e:  # a path the user gave that cannot be read or written: one line, not a traceback
        print(f"fastgan: error: {storage_error(e, 'use')}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("fastgan: interrupted", file=sys.stderr)
        return EXIT_ABORTED
    except json.JSONDecodeError as e:  # a hand-edited config file
        print(f"fastgan: error: invalid JSON ({e.msg})", file=sys.stderr)
        return EXIT_ERROR
