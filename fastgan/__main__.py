"""``python -m fastgan`` and the ``fastgan`` console script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
