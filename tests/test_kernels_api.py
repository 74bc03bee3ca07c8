"""fastgan.kernels API: implementation choice, double backward, torch.compile, no-triton import."""

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from fastgan import kernels as K
from fastgan.kernels import dispatch, ops
from kernel_helpers import DEVICE, needs_triton


def test_use_impl_and_set_default_impl():
    x = torch.randn(2, 3)
    assert dispatch.resolve_impl("auto", x, "op") == "ref"  # CPU tensor: reference
    assert K.get_default_impl() == "auto"
    with K.use_impl("ref"):
        assert dispatch.resolve_impl("triton", x, "op") == "ref"  # the override wins
        with pytest.raises(ZeroDivisionError):
            with K.use_impl("triton"):
                1 / 0
        assert K.get_default_impl() == "ref"  # restored after an exception
    assert K.get_default_impl() == "auto"
    K.set_default_impl("ref")
    try:
        assert dispatch.resolve_impl("triton", x, "op") == "ref"
    finally:
        K.set_default_impl("auto")
    with pytest.raises(ValueError, match="unknown kernel impl"):
        K.set_default_impl("cuda")
    with pytest.raises(ValueError, match="unknown kernel impl"):
        K.bias_act(x, impl="fast")


def test_auto_on_cpu_is_exactly_the_reference():
    x = torch.randn(3, 4, 5, 5)
    b = torch.randn(4)
    assert torch.equal(K.bias_act(x, b, "lrelu"), K.bias_act_ref(x, b, "lrelu"))
    assert torch.equal(K.gan_loss(x, True, "ns"), K.gan_loss_ref(x, True, "ns"))
    assert torch.equal(K.batch_norm_act(x, None, b, None, None, True, act="silu"),
                       K.batch_norm_act_ref(x, None, b, None, None, True, act="silu"))


@pytest.mark.skipif(DEVICE == "cuda", reason="checks the CPU-without-interpreter error")
def test_triton_on_cpu_without_interpreter_fails_clearly(monkeypatch):
    monkeypatch.setattr(dispatch, "TRITON_INTERPRETED", False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        K.bias_act(torch.randn(2, 3), impl="triton")


def test_import_and_use_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None\n"  # makes `import triton` fail
        "import torch, fastgan.kernels as K\n"
        "assert not K.HAS_TRITON\n"
        "m = torch.nn.Sequential(K.BatchNormAct(3, 'lrelu'), K.BiasAct(3, 'tanh'))\n"
        "y = m(torch.randn(2, 3, 4, 4)); K.gan_loss(y, True, 'ns').backward()\n"
        "try:\n"
        "    K.bias_act(torch.randn(2), impl='triton'); raise SystemExit('no error')\n"
        "except RuntimeError as e:\n"
        "    assert 'not installed' in str(e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _r1_like(x, impl, layer):
    """Gradient penalty through a layer: needs gradients of gradients."""
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(layer(x, impl).square().sum(), x, create_graph=True)
    return g.square().sum()


LAYERS = {
    "bias_act": lambda x, impl: K.bias_act(x, torch.linspace(-1, 1, x.shape[1], device=x.device), "silu", impl=impl),
    "batch_norm_act": lambda x, impl: K.batch_norm_act(x, None, None, None, None, True, act="tanh", impl=impl),
    "gan_loss": lambda x, impl: K.gan_loss(x, True, "ns", impl=impl),
}


@needs_triton
@pytest.mark.parametrize("force_ops", [False, True])
@pytest.mark.parametrize("name", list(LAYERS))
def test_double_backward_fails_loudly_on_triton_and_works_on_ref(name, force_ops, monkeypatch):
    monkeypatch.setattr(ops, "FORCE_CUSTOM_OPS", force_ops)
    x = torch.randn(3, 4, 3, 3, device=DEVICE)
    with pytest.raises(RuntimeError, match=r'use_impl\("ref"\)'):
        _r1_like(x, "triton", LAYERS[name])
    with K.use_impl("ref"):  # the documented way out
        penalty = _r1_like(x, "triton", LAYERS[name])
    penalty.backward()
    torch.testing.assert_close(penalty, _r1_like(x, "ref", LAYERS[name]))
    # a plain (first-order) backward through the Triton path still works
    xx = x.clone().requires_grad_(True)
    LAYERS[name](xx, "triton").sum().backward()
    assert xx.grad is not None and torch.isfinite(xx.grad).all()


class TinyD(nn.Module):
    def __init__(self, impl):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = K.BatchNormAct(8, act="lrelu", impl=impl)
        self.conv2 = nn.Conv2d(8, 4, 3, stride=2, bias=False)
        self.act = K.BiasAct(4, act="silu", impl=impl)

    def forward(self, x):
        return self.act(self.conv2(self.bn(self.conv1(x)))).mean((1, 2, 3))  # (B,)


@pytest.mark.parametrize("impl", ["auto", pytest.param("triton", marks=needs_triton)])
def test_torch_compile_fullgraph_matches_eager(impl):
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = TinyD(impl).to(DEVICE)
    compiled = TinyD(impl).to(DEVICE)
    compiled.load_state_dict(eager.state_dict())
    x = torch.randn(4, 3, 7, 7, device=DEVICE).to(memory_format=torch.channels_last)

    def step(model, x):
        logits = model(x)
        return K.gan_loss(logits, True, "hinge", impl=impl) + K.gan_loss(logits, False, "ns", impl=impl)

    step_c = torch.compile(step, backend="aot_eager", fullgraph=True)  # fullgraph: a graph break raises
    for _ in range(2):
        loss_c = step_c(compiled, x)
        loss_c.backward()
        loss_e = step(eager, x)
        loss_e.backward()
        torch.testing.assert_close(loss_c, loss_e)
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
    for (name, b), c in zip(eager.named_buffers(), compiled.buffers()):
        torch.testing.assert_close(c, b, msg=lambda m: f"{name}: {m}")
    assert int(compiled.bn.num_batches_tracked) == 2
    torch._dynamo.reset()
