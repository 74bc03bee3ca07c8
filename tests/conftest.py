import os

import torch

# Without a GPU, run Triton kernels in the interpreter (on CPU tensors). Must happen
# before triton is first imported in this process; on a GPU machine the real
# compiled kernels are tested instead.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
