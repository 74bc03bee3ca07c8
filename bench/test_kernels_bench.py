"""Micro-benchmarks of fastgan.kernels (pytest-benchmark).

On a GPU: DCGAN-64 discriminator shapes, Triton vs reference, forward + backward.
On CPU (CI, ``--benchmark-disable``): tiny shapes, the reference and the Triton
interpreter, each case run once as a plain test that checks the result.
The timed functions synchronise the device before returning.

    pytest bench/test_kernels_bench.py                      # GPU timings
    pytest bench/test_kernels_bench.py --benchmark-disable  # CI smoke test
"""

import importlib.util
import json
import os

import torch

if not torch.cuda.is_available():  # must precede the first `import triton`
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from fastgan import kernels as K  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
# (batch, channels, height, width): DCGAN-64 D's normalised layers on a GPU, tiny on CPU.
SHAPES = [(128, 128, 16, 16), (512, 256, 8, 8)] if CUDA else [(4, 8, 4, 4)]
DTYPE = torch.bfloat16 if CUDA else torch.float32
IMPLS = ["ref", pytest.param("triton", marks=pytest.mark.skipif(
    not (K.HAS_TRITON and (CUDA or K.TRITON_INTERPRETED)), reason="needs triton"))]


def sync():
    if CUDA:
        torch.cuda.synchronize()


def channels_last_input(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(DEVICE, DTYPE).to(memory_format=torch.channels_last)
    return x.requires_grad_(True)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_batch_norm_act_fwd_bwd(benchmark, shape, impl):
    x = channels_last_input(shape)
    dy = torch.randn_like(x)
    m = K.BatchNormAct(shape[1], act="lrelu", impl=impl).to(DEVICE)
    params = (x, m.weight, m.bias)

    def step():
        grads = torch.autograd.grad(m(x), params, dy)
        sync()
        return grads

    dx, dw, db = benchmark(step)
    assert dx.shape == x.shape and torch.isfinite(dx.float()).all()
    assert torch.isfinite(dw).all() and torch.isfinite(db).all()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_bias_act_fwd_bwd(benchmark, shape, impl):
    x = channels_last_input(shape)
    dy = torch.randn_like(x)
    b = torch.zeros(shape[1], device=DEVICE, requires_grad=True)

    def step():
        grads = torch.autograd.grad(K.bias_act(x, b, "lrelu", impl=impl), (x, b), dy)
        sync()
        return grads

    dx, db = benchmark(step)
    torch.testing.assert_close(db, torch.where(x > 0, dy, 0.2 * dy).float().sum((0, 2, 3)), rtol=2e-2, atol=2e-1)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("batch", [512] if CUDA else [16])
def test_gan_loss_fwd_bwd(benchmark, batch, impl):
    logits = torch.randn(batch, device=DEVICE, dtype=DTYPE, requires_grad=True)

    def step():
        loss = K.gan_loss(logits, True, "ns", impl=impl)
        (dx,) = torch.autograd.grad(loss, logits)
        sync()
        return loss, dx

    loss, dx = benchmark(step)
    torch.testing.assert_close(loss, K.gan_loss_ref(logits.detach(), True, "ns"), rtol=1e-3, atol=1e-3)


@pytest.mark.skipif(CUDA or not K.TRITON_INTERPRETED, reason="CPU smoke run needs the Triton interpreter")
def test_bandwidth_script_cpu_smoke(tmp_path):
    """bench/kernels_bandwidth.py runs end to end (tiny CPU shapes) and writes its JSON."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels_bandwidth.py")
    spec = importlib.util.spec_from_file_location("kernels_bandwidth", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "kernels.json"
    assert script.main(["--cpu-smoke", "--ops", "bias_act", "gan_loss", "--dtypes", "fp32", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["errors"] == 0 and report["torch"] == torch.__version__ and "passes" in report["counting"]
    impls = {(r["op"], r["impl"], r["mode"]) for r in report["results"]}
    assert ("bias_act", "compile", "fwd+bwd") in impls and ("gan_loss", "triton", "fwd+bwd") in impls
    for check in report["checks_vs_eager"]:
        assert check["max_abs_err_y"] < 1e-4 and check["max_abs_err_dx"] < 1e-4, check
