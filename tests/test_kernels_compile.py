"""The Triton ops as torch.compile sees them on a GPU: registered kernels and AOT tracing.

These run in a fresh interpreter without ``TRITON_INTERPRET`` (the kernels are then real
``triton.jit`` functions, which need no GPU until launched).
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from fastgan import kernels as K

pytestmark = pytest.mark.skipif(not K.HAS_TRITON, reason="needs triton")

OP_KERNELS = {
    "bias_act": ["_bias_act_flat_fwd_kernel", "_bias_act_fwd_kernel"],
    "bias_act_backward": ["_bias_act_bwd_kernel", "_bias_act_flat_bwd_kernel", "sum_partials_kernel"],
    "batch_norm_stats": ["bn_stats_combine_kernel", "bn_stats_kernel"],
    "batch_norm_act": ["bn_apply_kernel"],
    "batch_norm_act_backward": ["bn_bwd_dx_kernel", "bn_bwd_reduce_kernel", "sum_partials_kernel"],
    "gan_loss": ["_gan_loss_combine_kernel", "_gan_loss_kernel"],
}


def run_compiled_mode(code: str) -> dict:
    """Run ``code`` (which prints one JSON line last) in a fresh interpreter with compiled (not interpreted) kernels."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_op_registers_its_kernels_for_compile_caches():
    found = run_compiled_mode(
        "import json\n"
        "from torch._library.triton import get_triton_kernels_for_op\n"
        "import fastgan.kernels as K\n"
        "assert not K.TRITON_INTERPRETED\n"
        f"print(json.dumps({{op: sorted(k.fn.__name__ for k in get_triton_kernels_for_op('fastgan::' + op))"
        f" for op in {list(OP_KERNELS)!r}}}))\n")
    assert found == OP_KERNELS


@pytest.mark.skipif(not torch.backends.cuda.is_built(), reason="fake CUDA tensors need a CUDA build of torch")
def test_aot_tracing_puts_every_kernel_in_the_graph():
    """What torch.compile does to the ops' bodies (forward and backward ops) on a GPU, on fake CUDA tensors.

    AOT autograd's functional tracing runs the op bodies outside dynamo, where torch 2.11's
    ``is_compiling()`` is False: a launch must still become a kernel node, never a direct launch.
    """
    got = run_compiled_mode(r'''
import json, logging, re
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table
from functorch.compile import aot_function, make_boxed_func
import fastgan.kernels as K
from fastgan.kernels import tiles
tiles._cuda_sm_count = lambda index: 132  # no device to ask
# without a driver torch cannot analyse which arguments a kernel mutates and says so; it then assumes all
logging.getLogger("torch._higher_order_ops.triton_kernel_wrap").setLevel(logging.ERROR)
codes = []
def compiler(gm, example_inputs):
    codes.append(gm.code)
    return make_boxed_func(gm.forward)
def step(x, w, b, rm, rv, dy):
    y = K.batch_norm_act(x, w, b, rm, rv, True, act="lrelu", impl="triton")
    y = K.bias_act(y, b, "silu", impl="triton")
    dx, db = torch.ops.fastgan.bias_act_backward(dy, y, b, "silu", 0.2, 1.0, None, 1, True, True)
    dx2, sums = torch.ops.fastgan.batch_norm_act_backward(dx, x, rm, rv, w, b, 1e-5, True, "lrelu", 0.2, True)
    rgb = K.bias_act(x[:, :3].contiguous(memory_format=torch.channels_last), b[:3], "tanh", impl="triton")
    drgb, db3 = torch.ops.fastgan.bias_act_backward(rgb, rgb, b[:3], "tanh", 1.0, 1.0, None, 1, True, True)
    return K.gan_loss(y.repeat(1000, 1, 1, 1), True, "ns", impl="triton"), dx2, db, sums, drgb, db3
with FakeTensorMode():
    x = torch.empty(4, 8, 3, 3, device="cuda").to(memory_format=torch.channels_last)
    w, b, rm, rv = (torch.empty(8, device="cuda") for _ in range(4))
    aot_function(step, fw_compiler=compiler)(x, w, b, rm, rv, torch.empty_like(x))
code = codes[0]
names = sorted({kernel_side_table.get_kernel(int(i)).fn.__name__ for i in re.findall(r"kernel_idx = (\d+)", code)})
print(json.dumps({"kernels": names, "opaque_ops": code.count("torch.ops.fastgan")}))
''')
    assert got["opaque_ops"] == 0
    assert got["kernels"] == sorted({k for ks in OP_KERNELS.values() for k in ks})


def test_representative_specialisations_compile_for_gpu_targets(tmp_path):
    """bench/compile_check.py's representative set: no compile error, spill, stack frame or register overrun."""
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "compile_check.py")
    out = tmp_path / "compile-check.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, script, "--out", str(out)], capture_output=True, text=True, env=env,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["targets"]) >= {"sm_80", "sm_90a"}
    for target, s in report["summary"].items():
        assert s["compiled"] == s["specialisations"] and s["failed"] == 0 and s["spilling"] == 0, (target, s)
        assert s["max_registers"] <= report["register_budget"]
    names = {k["kernel"] for k in report["kernels"]}
    assert {kernel for kernels in OP_KERNELS.values() for kernel in kernels} <= names
    assert {"_bias_act_flat_fwd_kernel", "_bias_act_flat_bwd_kernel"} <= names  # the RGB image ends
