"""The command line of image-to-image translation: ``fastgan train --task pix2pix|cyclegan`` and ``fastgan translate``.

``fastgan train --task ...`` flags map 1:1 onto
:class:`~fastgan.tasks.translation.TranslationConfig` fields; rerunning on an
existing translation run (``--out``) continues it, with its saved config as
the base. ``fastgan translate`` writes one translated PNG per input image.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Sequence


def wants_translation(argv: Sequence[str]) -> bool:
    """Whether ``fastgan train`` arguments ask for a translation run (``--task``, or an existing translation run).

    Args:
        argv: the arguments after ``train``.
    """
    from .checkpoint import read_run_config
    from .errors import FastGANError
    from .tasks.translation import is_translation_config

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--task", default=None)
    pre.add_argument("--out", default=None)
    known, _ = pre.parse_known_args(list(argv))
    if known.task is not None:   # an unknown task is refused by the config, in one line
        return True
    if known.out is None or not Path(known.out).is_dir():
        return False
    try:
        saved = read_run_config(known.out)
    except FastGANError:   # an unreadable config.json: the noise-to-image path reports it
        return False
    return saved is not None and is_translation_config(saved)


def train_parser() -> argparse.ArgumentParser:
    """The parser of ``fastgan train --task pix2pix|cyclegan``."""
    from .cli_common import add_config_flags
    from .tasks.translation import TranslationConfig

    p = argparse.ArgumentParser(prog="fastgan train --task pix2pix|cyclegan",
                                description="Train an image-to-image translation model (docs/translation.md). "
                                            "Rerunning on an existing --out continues that run.")
    add_config_flags(p, TranslationConfig)
    return p


def train_main(argv: Sequence[str]) -> int:
    """``fastgan train --task ...``: train (or continue) a translation run.

    Args:
        argv: the arguments after ``train``.
    """
    from .checkpoint import read_run_config
    from .cli_common import EXIT_STOPPED, announce_start, cpu_threads_for, fit_to_end
    from .tasks.translation import TranslationConfig
    from .train import Trainer

    given = vars(train_parser().parse_args(list(argv)))
    out = given.get("out", TranslationConfig.out)
    saved = read_run_config(out) if Path(out).is_dir() else None
    if saved is not None:
        cfg = dataclasses.replace(TranslationConfig.from_dict(saved), **given)
    else:
        cfg = TranslationConfig(**given)
    trainer = Trainer(cfg)   # takes the run folder's lock to resume: a folder in use is refused here
    announce_start(trainer, out, saved)
    trainer.cpu_threads = cpu_threads_for(trainer)
    print(f"fastgan: {trainer.cfg.task} on {trainer.data!r}; {trainer.engine.plan.summary()}", file=sys.stderr)
    if not fit_to_end(trainer, out):
        return EXIT_STOPPED
    last = next((h for h in reversed(trainer.history) if "eval" in h), None)
    summary = f"trained to step {trainer.step}; run folder: {trainer.run_dir}"
    if last:
        ev = last["eval"]
        keys = ("l1", "psnr", "identity_psnr") if trainer.cfg.task == "pix2pix" else \
            ("cycle_a", "cycle_b", "fd_ab", "fd_ba")
        summary += " (" + ", ".join(f"{k} {ev[k]:.4g}" for k in keys if k in ev) + f" on {ev['split']} images)"
    print(summary)
    return 0


def add_translate_parser(sub) -> None:
    """Add the ``translate`` subcommand to the ``fastgan`` parser.

    Args:
        sub: the parser's subparsers object.
    """
    t = sub.add_parser("translate", help="translate images with a pix2pix / CycleGAN run or an exported ONNX file")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="translation run folder (or one checkpoint folder)")
    src.add_argument("--onnx", help="translator exported by 'fastgan export' (run with ONNX Runtime)")
    t.add_argument("--input", required=True, help="an image file or a folder of images (searched recursively)")
    t.add_argument("--out", required=True, help="output folder: one PNG per input, under the input's name")
    t.add_argument("--direction", default=None, choices=("AtoB", "BtoA"),
                   help="which generator (CycleGAN runs; default AtoB, or the ONNX file's own)")
    t.add_argument("--resolution", type=int, default=None,
                   help="image side to translate at (default: the training resolution)")
    t.add_argument("--device", default="cpu", help="device for --run (default: cpu)")
    t.add_argument("--batch_size", type=int, default=16, help="images per forward pass (default: 16)")


def translate_main(args: argparse.Namespace) -> int:
    """``fastgan translate``.

    Args:
        args: the parsed ``translate`` arguments.
    """
    from .translator import translate

    if args.onnx:
        from .export import OnnxTranslator
    written = translate(OnnxTranslator(args.onnx) if args.onnx else args.run, args.input, args.out, direction=args.direction,
                        resolution=args.resolution, device=args.device, batch_size=args.batch_size)
    print(f"translated {len(written)} image{'s' if len(written) != 1 else ''} into {args.out}")
    return 0
