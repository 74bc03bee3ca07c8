"""instance_norm_act: Triton kernels (interpreter on CPU, compiled on a GPU) against the reference."""

import pytest
import torch
from torch import nn

from fastgan import kernels as K
from fastgan.kernels import InstanceNormAct, instance_norm_act, instance_norm_act_ref
from fastgan.kernels import ops, tiles
from kernel_helpers import DEVICE, needs_triton
from test_kernels_batch_norm_act import make, tol

# (shape, channels_last): odd sizes, a 1-D and a 3-D spatial input; both layouts for 4-D shapes
SHAPES = [(1, 1, 2, 1), (2, 3, 5, 7), (3, 17, 4, 4), (2, 5, 9), (2, 3, 2, 3, 3)]
LAYOUTS = [(s, cl) for s in SHAPES for cl in ((False, True) if len(s) == 4 else (False,))]


def affine(c, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(c, generator=g) + 0.5).to(DEVICE), torch.randn(c, generator=g).to(DEVICE)


def run(impl, x, w, b, dy, **kw):
    """One forward + backward: y, dx, dw, db."""
    xx = x.detach().clone().requires_grad_(True)
    ww = None if w is None else w.detach().clone().requires_grad_(True)
    bb = None if b is None else b.detach().clone().requires_grad_(True)
    y = instance_norm_act(xx, ww, bb, impl=impl, **kw)
    y.backward(dy)
    return dict(y=y, dx=xx.grad, dw=None if ww is None else ww.grad, db=None if bb is None else bb.grad)


def compare(got, want, dtype):
    for k in ("y", "dx"):
        torch.testing.assert_close(got[k], want[k], **tol(dtype), msg=lambda m: f"{k}: {m}")
    red = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=2e-2, atol=5e-2)
    for k in ("dw", "db"):
        if want[k] is None:
            assert got[k] is None, k
        else:
            torch.testing.assert_close(got[k], want[k], **red, msg=lambda m: f"{k}: {m}")


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape,channels_last", LAYOUTS)
def test_matches_reference(shape, channels_last, dtype):
    x = make(shape, channels_last, dtype)
    dy = make(shape, channels_last, dtype, seed=2, scale=1.0, offset=0.0)
    # with and without the per-channel affine, alternating over the cases
    w, b = affine(shape[1]) if (len(shape) + channels_last + (dtype == torch.float32)) % 2 else (None, None)
    got = run("triton", x, w, b, dy, act="lrelu", alpha=0.2)
    want = run("ref", x, w, b, dy, act="lrelu", alpha=0.2)
    assert got["y"].dtype == dtype and got["y"].stride() == x.stride() and got["dx"].stride() == x.stride()
    compare(got, want, dtype)


@needs_triton
@pytest.mark.parametrize("act", ["linear", "relu", "tanh", "sigmoid", "silu"])
def test_every_activation(act):
    x = make((3, 6, 5, 5), True, torch.float32)
    dy = make((3, 6, 5, 5), True, torch.float32, seed=3, scale=1.0, offset=0.0)
    w, b = affine(6)
    kw = dict(act=act, alpha=0.1, eps=1e-3)
    compare(run("triton", x, w, b, dy, **kw), run("ref", x, w, b, dy, **kw), torch.float32)


VIEWS = {
    "transposed": lambda t: t.transpose(2, 3),          # (4, 6, 8, 5), non-contiguous
    "sliced": lambda t: t[:, ::2, :, 1:],               # (4, 3, 5, 7), gaps between planes
    "expanded_batch": lambda t: t[:1].expand(3, 6, 5, 8),  # stride 0 over the batch
}


@needs_triton
@pytest.mark.parametrize("view", list(VIEWS))
def test_strided_inputs_and_parameter_views(view):
    """x in neither dense layout, weight/bias as strided or expanded views, a non-dense dy: outputs and gradients."""
    leaf = make((4, 6, 5, 8), False, torch.float32)
    x = VIEWS[view](leaf)
    assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    c = x.shape[1]
    w_leaf, b_leaf = (torch.rand(2 * c) + 0.5).to(DEVICE), torch.tensor([0.3]).to(DEVICE)
    dy = make(tuple(x.shape)[::-1], False, torch.float32, seed=4, scale=1.0, offset=0.0).permute(3, 2, 1, 0)
    out = []
    for impl in ("triton", "ref"):
        xl, wl, bl = (t.detach().clone().requires_grad_(True) for t in (leaf, w_leaf, b_leaf))
        y = instance_norm_act(VIEWS[view](xl), wl[::2], bl.expand(c), act="silu", impl=impl)
        y.backward(dy)
        out.append(dict(y=y, dx=xl.grad, dw=wl.grad, db=bl.grad))
    compare(out[0], out[1], torch.float32)


@needs_triton
def test_large_mean_small_spread_statistics():
    # |mean| >> std: plain sum / sum-of-squares in fp32 would lose the variance.
    x = make((2, 3, 8, 8), True, torch.float32, scale=0.01, offset=300.0)
    dy = make((2, 3, 8, 8), True, torch.float32, seed=6, scale=1.0, offset=0.0)
    got = run("triton", x, None, None, dy, act="linear")
    want = run("ref", x.double(), None, None, dy.double(), act="linear")
    torch.testing.assert_close(got["y"].double(), want["y"], rtol=0, atol=2e-3)


@needs_triton
@pytest.mark.parametrize("channels_last", [False, True])
def test_many_groups_int64_offsets_and_bitwise_reproducible(monkeypatch, channels_last):
    # Small tiles: several loop iterations per program, a ragged last group, partial channel
    # blocks and a multi-row combine of the partial sums; int64 offsets forced on.
    monkeypatch.setitem(tiles.TUNING, "tile_reduce", 16)
    monkeypatch.setitem(tiles.TUNING, "tile_elementwise", 32)
    monkeypatch.setitem(tiles.TUNING, "max_block_c", 2)
    monkeypatch.setitem(tiles.TUNING, "interp_programs", 12)
    monkeypatch.setattr(tiles, "INT32_NUMEL", 16)
    x = make((2, 3, 5, 7), channels_last, torch.float32)
    dy = make((2, 3, 5, 7), channels_last, torch.float32, seed=7, scale=1.0, offset=0.0)
    w, b = affine(3)
    first = run("triton", x, w, b, dy, act="tanh")
    compare(first, run("ref", x, w, b, dy, act="tanh"), torch.float32)
    again = run("triton", x, w, b, dy, act="tanh")
    for k in first:
        assert torch.equal(first[k], again[k]), k


@needs_triton
def test_custom_op_path_matches_eager_path(monkeypatch):
    x = make((3, 4, 3, 3), True, torch.bfloat16)
    dy = make((3, 4, 3, 3), True, torch.bfloat16, seed=8, scale=1.0, offset=0.0)
    w, b = affine(4)
    eager = run("triton", x, w, b, dy, act="relu")
    monkeypatch.setattr(ops, "FORCE_CUSTOM_OPS", True)
    via_op = run("triton", x, w, b, dy, act="relu")
    for k in eager:
        assert torch.equal(eager[k], via_op[k]), k


@pytest.mark.parametrize("impl", ["ref", pytest.param("triton", marks=needs_triton)])
@pytest.mark.parametrize("with_affine", [False, True])
def test_module_matches_instancenorm2d_plus_leaky_relu(impl, with_affine):
    torch.manual_seed(0)
    ref = nn.InstanceNorm2d(6, affine=with_affine).to(DEVICE)
    if with_affine:
        with torch.no_grad():
            ref.weight.uniform_(0.5, 1.5)
            ref.bias.normal_()
    m = InstanceNormAct(6, act="lrelu", alpha=0.2, affine=with_affine, impl=impl).to(DEVICE)
    assert list(m.state_dict()) == list(ref.state_dict())
    m.load_state_dict(ref.state_dict())
    for train in (True, False):   # no running statistics: both modes normalise by the instance
        m.train(train)
        ref.train(train)
        x = make((4, 6, 5, 5), train, torch.float32, seed=int(train))
        torch.testing.assert_close(m(x), nn.functional.leaky_relu(ref(x), 0.2), rtol=1e-4, atol=1e-5)


def test_argument_errors():
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        instance_norm_act(torch.randn(2, 3, 1, 1))
    with pytest.raises(ValueError, match=">= 3 dims"):
        instance_norm_act(torch.randn(2, 3))
    with pytest.raises(ValueError, match="does not match"):
        instance_norm_act(torch.randn(2, 3, 2, 2), torch.ones(4))
    with pytest.raises(ValueError, match="activation"):
        InstanceNormAct(3, act="gelu")


def test_reference_gradcheck_and_gradgradcheck():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 3, 2, generator=g, dtype=torch.float64).requires_grad_(True)
    w = (torch.rand(2, generator=g, dtype=torch.float64) + 0.5).requires_grad_(True)
    b = torch.randn(2, generator=g, dtype=torch.float64).requires_grad_(True)

    def fn(x, w, b):
        return instance_norm_act_ref(x, w, b, act="silu")

    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


@needs_triton
def test_double_backward_refused_on_triton_and_routed_through_the_reference():
    x = make((2, 3, 4, 4), False, torch.float32)

    def penalty(impl):
        xx = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(instance_norm_act(xx, act="tanh", impl=impl).square().sum(), xx,
                                   create_graph=True)
        return g.square().sum()

    with pytest.raises(RuntimeError, match=r'use_impl\("ref"\)'):
        penalty("triton")
    with K.use_impl("ref"):
        routed = penalty("triton")
    torch.testing.assert_close(routed, penalty("ref"))


@pytest.mark.parametrize("impl", ["auto", pytest.param("triton", marks=needs_triton)])
def test_torch_compile_fullgraph_matches_eager(impl):
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), InstanceNormAct(4, act="lrelu", affine=True, impl=impl))
    compiled = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), InstanceNormAct(4, act="lrelu", affine=True, impl=impl))
    eager, compiled = eager.to(DEVICE), compiled.to(DEVICE)
    compiled.load_state_dict(eager.state_dict())
    x = torch.randn(2, 3, 5, 5, device=DEVICE).to(memory_format=torch.channels_last)
    step = torch.compile(lambda m, x: m(x).square().mean(), backend="aot_eager", fullgraph=True)
    step(compiled, x).backward()
    eager(x).square().mean().backward()
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
    torch._dynamo.reset()


def test_ops_register_their_kernels_for_compile_caches():
    from test_kernels_compile import run_compiled_mode

    ops_ = {"instance_norm_stats": ["_in_stats_combine_kernel", "_in_stats_kernel"],
            "instance_norm_act": ["_in_apply_kernel"],
            "instance_norm_act_backward": ["_in_bwd_dx_kernel", "_in_bwd_reduce_kernel", "sum_partials_kernel"]}
    if not K.HAS_TRITON:
        pytest.skip("needs triton")
    found = run_compiled_mode(
        "import json\n"
        "from torch._library.triton import get_triton_kernels_for_op\n"
        "import fastgan.kernels as K\n"
        f"print(json.dumps({{op: sorted(k.fn.__name__ for k in get_triton_kernels_for_op('fastgan::' + op))"
        f" for op in {list(ops_)!r}}}))\n")
    assert found == ops_
