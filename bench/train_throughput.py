"""Training throughput: fastgan's modes against plain PyTorch recipes, side by side.

One command on a GPU (the same as ``fastgan bench``)::

    python bench/train_throughput.py --out bench/results/throughput_<device>.json

Regression gate against a stored baseline (exit status 1 when a recipe is more
than 10% slower)::

    python bench/train_throughput.py --compare bench/results/throughput_<device>.json

``--help`` lists every flag; ``--list`` the presets and recipes. The runner
itself lives in the package (``fastgan.benchmark``) so that it also works from
an installed wheel.
"""

import sys

from fastgan.benchmark import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
