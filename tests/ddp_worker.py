"""One process of a data-parallel test run, started by torchrun: train from a JSON config, dump its weights.

Usage: python -m torch.distributed.run --nproc_per_node 2 tests/ddp_worker.py CONFIG_JSON DUMP_DIR
The dump (DUMP_DIR/rank<R>.pt: G and D state dicts) is the tests' window on the ranks other than 0,
which write nothing into the run folder.
"""

import json
import sys
from pathlib import Path

import torch

from fastgan import TrainConfig, Trainer


def main(config_json: str, dump_dir: str) -> None:
    cfg = TrainConfig.from_dict(json.loads(config_json))
    trainer = Trainer(cfg)
    trainer.fit()
    dump = Path(dump_dir)
    dump.mkdir(parents=True, exist_ok=True)
    rank = trainer.parallel.rank
    torch.save({"G": trainer.G.state_dict(), "D": trainer.D.state_dict(), "step": trainer.step,
                "world_size": trainer.parallel.world_size}, dump / f"rank{rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
