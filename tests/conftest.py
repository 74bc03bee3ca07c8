import os

import torch

# Without a GPU, run Triton kernels in the interpreter (on CPU tensors). Must happen
# before triton is first imported in this process; on a GPU machine the real
# compiled kernels are tested instead.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _steady_cpu_threads(monkeypatch):
    """Command-line runs inside tests keep torch's thread count whatever else loads the machine.

    A thread count that followed the test machine's load would make bitwise comparisons of
    CLI runs depend on it; tests/test_cpu_threads.py checks the adaptive policy with a fake load.
    """
    from fastgan import cpu_threads

    monkeypatch.setattr(cpu_threads, "machine_busy_seconds", lambda path="/proc/stat": None)
