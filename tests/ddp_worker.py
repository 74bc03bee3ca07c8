"""One process of a data-parallel test run, started by torchrun: ``fastgan train`` as the CLI runs it, then a dump.

Usage: python -m torch.distributed.run --nproc_per_node 2 tests/ddp_worker.py DUMP_DIR train --data ... --out ...
Everything after DUMP_DIR is the command line of ``python -m fastgan``; the process exits with its status.
When training ended, DUMP_DIR/rank<R>.pt holds the trainer's G and D state dicts: the tests' window on
the ranks other than 0, which write nothing into the run folder.
"""

import sys
from pathlib import Path

import torch

from fastgan import cli
from fastgan.train import Trainer


def main(dump_dir: str, argv: list[str]) -> int:
    trained = []
    fit = Trainer.fit

    def fit_and_remember(self, *args, **kwargs):
        trained.append(self)
        return fit(self, *args, **kwargs)

    Trainer.fit = fit_and_remember   # the CLI builds its Trainer inside; this keeps a hold of it
    status = cli.main(argv)
    if trained and status == 0:
        trainer = trained[-1]
        dump = Path(dump_dir)
        dump.mkdir(parents=True, exist_ok=True)
        torch.save({"G": trainer.G.state_dict(), "D": trainer.D.state_dict(), "step": trainer.step,
                    "world_size": trainer.parallel.world_size,
                    "group_left": not torch.distributed.is_initialized()},   # the CLI left the group it joined
                   dump / f"rank{trainer.parallel.rank}.pt")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
