"""What the kernel tests share: the device and the marker for tests that need Triton.

``tests/conftest.py`` sets ``TRITON_INTERPRET=1`` before anything imports
triton when there is no GPU, so on CPU the kernels run in the interpreter.
"""

import pytest
import torch

from fastgan import kernels as K

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(
    not (K.HAS_TRITON and (DEVICE == "cuda" or K.TRITON_INTERPRETED)),
    reason="needs triton (a GPU, or TRITON_INTERPRET=1 before triton is imported)")
