"""batch_norm_act: Triton kernels (interpreter on CPU, compiled on a GPU) against the reference."""

import pytest
import torch
from torch import nn

from fastgan.kernels import BatchNormAct, batch_norm_act, batch_norm_act_ref
from fastgan.kernels import ops, tiles
from kernel_helpers import DEVICE, needs_triton

SHAPES = [(2, 3, 1, 1), (3, 5, 7, 7), (2, 17, 5, 3), (3, 33, 4, 4), (7, 6), (5, 7, 11)]
# (shape, channels_last): both layouts for 4-D shapes
LAYOUTS = [(s, cl) for s in SHAPES for cl in ((False, True) if len(s) == 4 else (False,))]


def tol(dtype):
    return dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)


def make(shape, channels_last, dtype, seed=0, scale=2.0, offset=0.5):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * scale + offset).to(DEVICE, dtype)
    return x.to(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x


def params(c, seed=1):
    g = torch.Generator().manual_seed(seed)
    w = (torch.rand(c, generator=g) + 0.5).to(DEVICE)
    b = torch.randn(c, generator=g).to(DEVICE)
    rm = torch.randn(c, generator=g).to(DEVICE)
    rv = (torch.rand(c, generator=g) + 0.5).to(DEVICE)
    return w, b, rm, rv


def run(impl, x, w, b, rm, rv, dy, training, **kw):
    """One forward + backward; returns y, dx, dw, db and the (copied, updated) running stats."""
    xx = x.detach().clone().requires_grad_(True)
    ww = None if w is None else w.clone().requires_grad_(True)
    bb = None if b is None else b.clone().requires_grad_(True)
    rm = None if rm is None else rm.clone()
    rv = None if rv is None else rv.clone()
    y = batch_norm_act(xx, ww, bb, rm, rv, training, impl=impl, **kw)
    y.backward(dy)
    return dict(y=y, dx=xx.grad, dw=None if ww is None else ww.grad, db=None if bb is None else bb.grad,
                rm=rm, rv=rv)


def compare(got, want, dtype):
    for k in ("y", "dx"):
        torch.testing.assert_close(got[k], want[k], **tol(dtype), msg=lambda m: f"{k}: {m}")
    red = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=2e-2, atol=5e-2)
    for k in ("dw", "db", "rm", "rv"):
        if want[k] is None:
            assert got[k] is None, k
        else:
            torch.testing.assert_close(got[k], want[k], **red, msg=lambda m: f"{k}: {m}")


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape,channels_last", LAYOUTS)
def test_matches_reference(shape, channels_last, training, dtype):
    x = make(shape, channels_last, dtype)
    dy = make(shape, channels_last, dtype, seed=2, scale=1.0, offset=0.0)
    w, b, rm, rv = params(shape[1])
    got = run("triton", x, w, b, rm, rv, dy, training, momentum=0.2, act="lrelu", alpha=0.2)
    want = run("ref", x, w, b, rm, rv, dy, training, momentum=0.2, act="lrelu", alpha=0.2)
    assert got["y"].dtype == dtype and got["y"].stride() == x.stride() and got["dx"].stride() == x.stride()
    compare(got, want, dtype)
    if training:  # the running stats really moved
        assert not torch.allclose(got["rm"], rm) and not torch.allclose(got["rv"], rv)
    else:
        assert torch.equal(got["rm"], rm) and torch.equal(got["rv"], rv)


@needs_triton
@pytest.mark.parametrize("act", ["linear", "relu", "lrelu", "tanh", "sigmoid", "silu"])
@pytest.mark.parametrize("training", [True, False])
def test_every_activation(act, training):
    x = make((3, 6, 5, 5), True, torch.float32)
    dy = make((3, 6, 5, 5), True, torch.float32, seed=3, scale=1.0, offset=0.0)
    w, b, rm, rv = params(6)
    kw = dict(act=act, alpha=0.1, eps=1e-3)
    compare(run("triton", x, w, b, rm, rv, dy, training, **kw), run("ref", x, w, b, rm, rv, dy, training, **kw),
            torch.float32)


@needs_triton
@pytest.mark.parametrize("training", [True, False])
def test_float16_and_no_affine_no_running_stats(training):
    x = make((4, 5, 3, 3), False, torch.float16)
    dy = make((4, 5, 3, 3), False, torch.float16, seed=5, scale=1.0, offset=0.0)
    # no weight/bias, no running buffers: batch statistics in both modes
    compare(run("triton", x, None, None, None, None, dy, training, act="relu"),
            run("ref", x, None, None, None, None, dy, training, act="relu"), torch.float16)


@needs_triton
def test_large_mean_small_spread_statistics():
    # |mean| >> std: plain sum / sum-of-squares in fp32 would lose the variance.
    x = make((4, 3, 8, 8), True, torch.float32, scale=0.01, offset=300.0)
    dy = make((4, 3, 8, 8), True, torch.float32, seed=6, scale=1.0, offset=0.0)
    w, b, rm, rv = params(3)
    got = run("triton", x, w, b, rm, rv, dy, True, act="linear")
    want = run("ref", x.double(), w, b, rm, rv, dy.double(), True, act="linear")
    torch.testing.assert_close(got["y"].double(), want["y"], rtol=0, atol=2e-3)
    torch.testing.assert_close(got["rv"], want["rv"], rtol=1e-3, atol=1e-6)


@needs_triton
@pytest.mark.parametrize("channels_last", [False, True])
def test_many_groups_deterministic(monkeypatch, channels_last):
    # Small tiles: several loop iterations per program, a ragged last group, partial channel
    # blocks and a multi-row combine of the partial sums.
    monkeypatch.setitem(tiles.TUNING, "tile_reduce", 32)
    monkeypatch.setitem(tiles.TUNING, "tile_elementwise", 256)
    monkeypatch.setitem(tiles.TUNING, "max_block_c", 2)
    monkeypatch.setitem(tiles.TUNING, "interp_programs", 6)
    x = make((7, 3, 4, 4), channels_last, torch.float32)
    dy = make((7, 3, 4, 4), channels_last, torch.float32, seed=7, scale=1.0, offset=0.0)
    w, b, rm, rv = params(3)
    first = run("triton", x, w, b, rm, rv, dy, True, act="silu")
    compare(first, run("ref", x, w, b, rm, rv, dy, True, act="silu"), torch.float32)
    again = run("triton", x, w, b, rm, rv, dy, True, act="silu")
    for k in ("y", "dx", "dw", "db", "rm", "rv"):
        assert torch.equal(first[k], again[k]), k  # bitwise reproducible


@needs_triton
def test_custom_op_path_matches_eager_path(monkeypatch):
    x = make((3, 4, 3, 3), True, torch.bfloat16)
    dy = make((3, 4, 3, 3), True, torch.bfloat16, seed=8, scale=1.0, offset=0.0)
    w, b, rm, rv = params(4)
    eager = run("triton", x, w, b, rm, rv, dy, True, act="tanh")
    monkeypatch.setattr(ops, "FORCE_CUSTOM_OPS", True)
    via_op = run("triton", x, w, b, rm, rv, dy, True, act="tanh")
    for k in eager:
        assert torch.equal(eager[k], via_op[k]), k


@pytest.mark.parametrize("impl", ["ref", pytest.param("triton", marks=needs_triton)])
def test_module_matches_batchnorm2d_plus_leaky_relu(impl):
    torch.manual_seed(0)
    ref_bn = nn.BatchNorm2d(6, momentum=0.3).to(DEVICE)
    with torch.no_grad():
        ref_bn.weight.uniform_(0.5, 1.5)
        ref_bn.bias.normal_()
    m = BatchNormAct(6, act="lrelu", alpha=0.2, momentum=0.3, impl=impl).to(DEVICE)
    assert list(m.state_dict().keys()) == list(ref_bn.state_dict().keys())
    m.load_state_dict(ref_bn.state_dict())
    for step in range(2):
        x = make((4, 6, 5, 5), step == 1, torch.float32, seed=step)
        want = nn.functional.leaky_relu(ref_bn(x), 0.2)
        torch.testing.assert_close(m(x), want, rtol=1e-4, atol=1e-5)
    for k, v in ref_bn.state_dict().items():
        torch.testing.assert_close(m.state_dict()[k], v, rtol=1e-5, atol=1e-6)
    assert int(m.num_batches_tracked) == 2
    m.eval()
    ref_bn.eval()
    x = make((2, 6, 3, 3), False, torch.float32, seed=9)
    torch.testing.assert_close(m(x), nn.functional.leaky_relu(ref_bn(x), 0.2), rtol=1e-4, atol=1e-5)
    assert int(m.num_batches_tracked) == 2


def test_argument_errors():
    x = torch.randn(1, 3, 1, 1)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        batch_norm_act(x, None, None, torch.zeros(3), torch.ones(3), True)
    # eval mode with one value per channel is fine
    assert batch_norm_act(x, None, None, torch.zeros(3), torch.ones(3), False).shape == x.shape
    with pytest.raises(ValueError, match="does not match"):
        batch_norm_act(torch.randn(2, 3, 2, 2), torch.ones(4), None, None, None, True)
    with pytest.raises(ValueError, match="activation"):
        BatchNormAct(3, act="gelu")
    with pytest.raises(ValueError, match="momentum"):
        BatchNormAct(3, momentum=None)


@pytest.mark.parametrize("training", [True, False])
def test_reference_gradcheck_and_gradgradcheck(training):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 2, 2, generator=g, dtype=torch.float64).requires_grad_(True)
    w = (torch.rand(2, generator=g, dtype=torch.float64) + 0.5).requires_grad_(True)
    b = torch.randn(2, generator=g, dtype=torch.float64).requires_grad_(True)
    rm, rv = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)

    def fn(x, w, b):
        return batch_norm_act_ref(x, w, b, rm.clone(), rv.clone(), training, act="silu")

    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


@needs_triton
@pytest.mark.parametrize("param_view", ["strided", "expanded"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_strided_and_expanded_parameters_and_running_stats(param_view, training, channels_last):
    """weight / bias / running stats given as views: values, gradients and the running buffers match the
    reference, and a running-stat update into a strided view leaves the elements between untouched."""
    c = 5
    g = torch.Generator().manual_seed(11)
    if param_view == "strided":
        w_leaf = (torch.rand(2 * c, generator=g) + 0.5).to(DEVICE)
        b_leaf = torch.randn(2 * c, generator=g).to(DEVICE)
        view = lambda t: t[::2]  # noqa: E731
    else:
        w_leaf = torch.tensor([1.3]).to(DEVICE)
        b_leaf = torch.tensor([-0.4]).to(DEVICE)
        view = lambda t: t.expand(c)  # noqa: E731
    rm_wide = torch.randn(2 * c, generator=g).to(DEVICE)
    rv_wide = (torch.rand(2 * c, generator=g) + 0.5).to(DEVICE)
    x = make((3, c, 4, 3), channels_last, torch.float32)
    dy = make((3, c, 3, 4), False, torch.float32, seed=12, scale=1.0, offset=0.0).transpose(2, 3)
    out = []
    # the oracle is the reference given dense copies of the views (torch's own CPU batch_norm is not
    # right for every view, see batch_norm_act_ref)
    for impl, dense in (("triton", False), ("ref", False), ("ref", True)):
        xx = x.detach().clone().requires_grad_(True)
        wl, bl = w_leaf.clone().requires_grad_(True), b_leaf.clone().requires_grad_(True)
        rm, rv = rm_wide.clone(), rv_wide.clone()
        args = [view(wl), view(bl), rm[1::2], rv[1::2]]
        if dense:
            args = [t.clone() for t in args]
        y = batch_norm_act(xx, *args, training, momentum=0.3, act="lrelu", impl=impl)
        y.backward(dy)
        if dense:
            rm[1::2], rv[1::2] = args[2], args[3]
        out.append(dict(y=y, dx=xx.grad, dw=wl.grad, db=bl.grad, rm=rm, rv=rv))
    compare(out[0], out[2], torch.float32)
    compare(out[1], out[2], torch.float32)
    for got in out[:2]:
        assert torch.equal(got["rm"][::2], rm_wide[::2]) and torch.equal(got["rv"][::2], rv_wide[::2])


@pytest.mark.parametrize("impl", ["ref", pytest.param("triton", marks=needs_triton)])
def test_expanded_running_stats_are_refused(impl):
    x = make((3, 4, 2, 2), False, torch.float32)
    rm, rv = torch.zeros(1, device=DEVICE).expand(4), torch.ones(1, device=DEVICE).expand(4)
    with pytest.raises(ValueError, match="running_mean .*overlap"):
        batch_norm_act(x, None, None, rm, rv, True, impl=impl)
    # read-only in eval mode: an expanded buffer is fine there
    y = batch_norm_act(x, None, None, rm, rv, False, impl=impl)
    torch.testing.assert_close(y, torch.relu(x / (1 + 1e-5) ** 0.5))
