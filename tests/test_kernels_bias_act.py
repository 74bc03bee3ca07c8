"""bias_act: Triton kernels (interpreter on CPU, compiled on a GPU) against the reference."""

import pytest
import torch

from fastgan import kernels as K
from fastgan.kernels import BiasAct, bias_act, bias_act_ref
from fastgan.kernels import activations, ops, tiles
from kernel_helpers import DEVICE, needs_triton

ACTS = ["linear", "relu", "lrelu", "tanh", "sigmoid", "silu"]
# (shape, dim, channels_last)
LAYOUTS = [
    ((1, 3, 1, 1), 1, False),
    ((3, 5, 7, 7), 1, False),
    ((2, 17, 5, 3), 1, True),
    ((3, 5, 7, 7), 1, True),
    ((6, 10), 1, False),
    ((5, 7, 3), 0, False),
    ((5, 7, 3), -1, False),
]


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)


def make_input(shape, channels_last, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(DEVICE, dtype)
    return x.to(memory_format=torch.channels_last) if channels_last else x


def run_both(x, b, dy, **kw):
    """Forward + backward with impl='triton' and impl='ref'; returns ((y, dx, db), (y, dx, db))."""
    out = []
    for impl in ("triton", "ref"):
        xx = x.detach().clone().requires_grad_(True)
        bb = None if b is None else b.detach().clone().requires_grad_(True)
        y = bias_act(xx, bb, impl=impl, **kw)
        y.backward(dy)
        out.append((y, xx.grad, None if bb is None else bb.grad))
    return out


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("gain_clamp", [(None, None), (1.7, 0.6)])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape,dim,channels_last", LAYOUTS)
def test_matches_reference(shape, dim, channels_last, act, gain_clamp, dtype):
    gain, clamp = gain_clamp
    x = make_input(shape, channels_last, dtype)
    b = torch.randn(shape[dim], generator=torch.Generator().manual_seed(1)).to(DEVICE)
    dy = make_input(shape, channels_last, dtype, seed=2)
    (y, dx, db), (y_ref, dx_ref, db_ref) = run_both(x, b, dy, act=act, alpha=0.2, gain=gain, clamp=clamp, dim=dim)
    assert y.dtype == dtype and y.shape == x.shape and y.stride() == x.stride()
    torch.testing.assert_close(y, y_ref, **tol(dtype))
    torch.testing.assert_close(dx, dx_ref, **tol(dtype))
    assert db.dtype == b.dtype
    torch.testing.assert_close(db, db_ref, rtol=1e-4, atol=1e-4 if dtype == torch.float32 else 5e-2)


@needs_triton
@pytest.mark.parametrize("act", ["linear", "lrelu"])
def test_no_bias_and_partial_grads(act):
    x = make_input((3, 5, 7, 7), False, torch.float32)
    dy = make_input((3, 5, 7, 7), False, torch.float32, seed=3)
    (y, dx, _), (y_ref, dx_ref, _) = run_both(x, None, dy, act=act, gain=2.0)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(dx, dx_ref)
    # only the bias needs a gradient (x is a constant)
    b = torch.randn(5, device=DEVICE)
    grads = []
    for impl in ("triton", "ref"):
        bb = b.clone().requires_grad_(True)
        bias_act(x, bb, act=act, impl=impl).backward(dy)
        grads.append(bb.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-4)


@needs_triton
def test_many_groups_and_non_dense_input(monkeypatch):
    # Small tiles + many programs: several loop iterations and a multi-row partial-sum combine.
    monkeypatch.setitem(tiles.TUNING, "tile_reduce", 16)
    monkeypatch.setitem(tiles.TUNING, "interp_programs", 7)
    base = make_input((4, 9, 6, 10), False, torch.float32)
    x = base[:, :, :, ::2]  # strided view: neither contiguous nor channels_last
    b = torch.randn(9, device=DEVICE)
    dy = make_input(tuple(x.shape), False, torch.float32, seed=4)
    (y, dx, db), (y_ref, dx_ref, db_ref) = run_both(x, b, dy, act="silu", clamp=0.9)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(dx, dx_ref)
    torch.testing.assert_close(db, db_ref, rtol=1e-4, atol=1e-4)


@needs_triton
def test_module_and_custom_op_path(monkeypatch):
    torch.manual_seed(0)
    m = BiasAct(5, act="lrelu", alpha=0.1, gain=1.5).to(DEVICE)
    with torch.no_grad():
        m.bias.normal_()
    x = make_input((3, 5, 4, 4), True, torch.float32)
    outs = []
    for impl, force_ops in (("triton", False), ("triton", True), ("ref", False)):
        monkeypatch.setattr(ops, "FORCE_CUSTOM_OPS", force_ops)
        m.impl = impl
        m.bias.grad = None
        xx = x.clone().requires_grad_(True)
        m(xx).square().sum().backward()
        outs.append((xx.grad, m.bias.grad))
    for dx, db in outs[:2]:
        torch.testing.assert_close(dx, outs[2][0])
        torch.testing.assert_close(db, outs[2][1], rtol=1e-4, atol=1e-4)


def test_reference_semantics():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64)
    want = torch.nn.functional.leaky_relu(x + b.view(1, 3, 1, 1), 0.3) * 2.0
    torch.testing.assert_close(bias_act_ref(x, b, "lrelu", 0.3, gain=2.0), want)
    want = torch.tanh(x + b.view(1, 3, 1, 1)).clamp(-0.5, 0.5)
    torch.testing.assert_close(bias_act_ref(x, b, "tanh", clamp=0.5), want)
    torch.testing.assert_close(bias_act_ref(x, torch.ones(5, dtype=torch.float64), dim=-1), x + 1)
    with pytest.raises(ValueError, match="activation"):
        bias_act(x, b, act="gelu")
    with pytest.raises(ValueError, match="does not match"):
        bias_act_ref(x, torch.ones(4), dim=1)


@pytest.mark.parametrize("act", ACTS)
def test_reference_gradcheck_and_gradgradcheck(act):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64) + 0.05).requires_grad_(True)
    b = torch.randn(3, generator=g, dtype=torch.float64).requires_grad_(True)
    fn = lambda x, b: bias_act_ref(x, b, act, 0.2, gain=1.3, clamp=None)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


@pytest.mark.parametrize("act", ["relu", "lrelu", "tanh"])
def test_linear_folds_bias_like_linear_then_module(act):
    """BiasAct.linear == module(F.linear(x, W)): forward, both gradients, and (float64) the double backward."""
    g = torch.Generator().manual_seed(1)
    mod = BiasAct(6, act=act, alpha=0.2, dim=1, impl="ref").double()
    with torch.no_grad():
        mod.bias.copy_(torch.randn(6, generator=g, dtype=torch.float64))
    x = torch.randn(9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = mod.linear(x, w)
    want = mod(torch.nn.functional.linear(x, w))
    torch.testing.assert_close(y, want)
    dy = torch.randn(9, 6, generator=g, dtype=torch.float64)
    got = torch.autograd.grad(y, (x, w, mod.bias), dy)
    exp = torch.autograd.grad(want, (x, w, mod.bias), dy)
    for a, b in zip(got, exp):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradgradcheck(mod.linear, (x, w))


def test_linear_takes_the_unfused_path_where_folding_would_change_the_result(monkeypatch):
    mod = BiasAct(5, act="lrelu", gain=2.0, impl="ref")
    x, w = torch.randn(3, 4), torch.randn(5, 4)
    torch.testing.assert_close(mod.linear(x, w), mod(torch.nn.functional.linear(x, w)))
    calls = []
    monkeypatch.setattr(BiasAct, "forward", lambda self, h: calls.append(h.shape) or h)
    mod.gain = None
    mod.linear(x, w)                          # folded: the module's forward is not called
    assert calls == []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mod.linear(x, w)                      # autocast: unfused, the bias add stays in float32
    with pytest.raises(ValueError, match="does not match"):
        BiasAct(5, impl="ref").linear(x, torch.randn(4, 4))
    assert len(calls) == 1


@pytest.mark.parametrize("act", ["relu", "lrelu", "tanh"])
def test_act_ref_in_place_matches_out_of_place_to_second_order(act):
    """In place (relu / lrelu) the backward reads the output: gradients and gradients of gradients unchanged."""
    torch.manual_seed(0)
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    grads = []
    for inplace in (False, True):
        y = activations.act_ref(x @ w, act, 0.2, inplace=inplace)       # a fresh product, as the MLP ensembles use it
        (gx,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
        (gw,) = torch.autograd.grad(gx.square().sum(), w)
        grads.append((y.detach(), gx.detach(), gw))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _views(c, seed):
    """Leaf tensors and the non-dense views of them that an op receives: strided, expanded, offset."""
    g = torch.Generator().manual_seed(seed)
    wide = torch.randn(2 * c + 1, generator=g).to(DEVICE).requires_grad_(True)
    one = torch.randn(1, generator=g).to(DEVICE).requires_grad_(True)
    return {"strided": (wide, lambda t: t[1::2]), "expanded": (one, lambda t: t.expand(c)),
            "offset": (wide, lambda t: t[c + 1:])}


@needs_triton
@pytest.mark.parametrize("bias_view", ["strided", "expanded", "offset"])
@pytest.mark.parametrize("shape,dim,channels_last,x_view", [
    ((3, 5, 4, 6), 1, False, "dense"),
    ((3, 5, 4, 6), 1, True, "dense"),
    ((3, 5, 4, 6), 1, False, "expanded"),    # x broadcast along N and H (stride 0)
    ((3, 5, 4, 6), 1, False, "transposed"),  # x and dy with H and W swapped in memory
    ((4, 7), -1, False, "dense"),
])
def test_strided_and_expanded_arguments(shape, dim, channels_last, x_view, bias_view):
    """Every tensor argument may be a view: values and every gradient match the reference."""
    c = shape[dim]
    base, view = _views(c, seed=3)[bias_view]
    g = torch.Generator().manual_seed(4)
    if x_view == "expanded":
        x_leaf = torch.randn(1, shape[1], 1, shape[3], generator=g).to(DEVICE)
        make_x = lambda t: t.expand(shape)  # noqa: E731
    elif x_view == "transposed":
        x_leaf = torch.randn(shape[0], shape[1], shape[3], shape[2], generator=g).to(DEVICE)
        make_x = lambda t: t.transpose(2, 3)  # noqa: E731
    else:
        x_leaf = make_input(shape, channels_last, torch.float32, seed=5)
        make_x = lambda t: t  # noqa: E731
    dy = torch.randn(tuple(reversed(shape)), generator=g).to(DEVICE).permute(*reversed(range(len(shape))))
    out = []
    for impl in ("triton", "ref"):
        xl = x_leaf.detach().clone().requires_grad_(True)
        bl = base.detach().clone().requires_grad_(True)
        y = bias_act(make_x(xl), view(bl), act="lrelu", alpha=0.2, gain=1.3, dim=dim, impl=impl)
        y.backward(dy)
        out.append((y, xl.grad, bl.grad))
    for name, got, want in zip(("y", "dx", "db"), *out):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=lambda m: f"{name}: {m}")


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape,dim,channels_last", [((3, 3, 5, 7), 1, True), ((37, 2), 1, False), ((4, 6, 3), -1, False)])
def test_narrow_rows_take_the_flat_kernels(shape, dim, channels_last, dtype, monkeypatch):
    """RGB channels_last images and 2-D points: flat kernels (every lane busy); several groups and a
    loop step (whole rows) that does not divide the tile."""
    monkeypatch.setitem(tiles.TUNING, "tile_reduce", 16)
    monkeypatch.setitem(tiles.TUNING, "tile_elementwise", 32)
    monkeypatch.setitem(tiles.TUNING, "interp_programs", 3)
    meta = torch.empty(shape, device="meta")
    meta = (meta.to(memory_format=torch.channels_last) if channels_last else meta).requires_grad_(True)
    with K.record_launches() as rec:
        bias_act(meta, torch.empty(shape[dim], device="meta", requires_grad=True), "tanh", dim=dim).sum().backward()
    assert {k.fn.__name__ for k, *_ in rec.launches} == {"_bias_act_flat_fwd_kernel", "_bias_act_flat_bwd_kernel",
                                                           "sum_partials_kernel"}
    x = make_input(shape, channels_last, dtype)
    b = torch.randn(shape[dim], generator=torch.Generator().manual_seed(1)).to(DEVICE)
    dy = make_input(shape, channels_last, dtype, seed=2)
    for act, clamp in (("tanh", None), ("lrelu", 0.7)):
        (y, dx, db), (y_ref, dx_ref, db_ref) = run_both(x, b, dy, act=act, gain=1.1, clamp=clamp, dim=dim)
        torch.testing.assert_close(y, y_ref, **tol(dtype))
        torch.testing.assert_close(dx, dx_ref, **tol(dtype))
        torch.testing.assert_close(db, db_ref, rtol=1e-4, atol=1e-4 if dtype == torch.float32 else 5e-2)
