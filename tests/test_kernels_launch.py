"""Launch geometry: tiny tiles (every block count > 1), int64 offsets, 1-D grids for any size."""

import pytest
import torch

from fastgan import kernels as K
from fastgan.kernels import tiles
from kernel_helpers import DEVICE, needs_triton

TINY = {"tile_reduce": 8, "tile_elementwise": 8, "max_block_c": 2, "interp_programs": 5,
        "loss_per_program": 8, "loss_block": 4}


def _run(op, impl, x, b):
    """Output and the gradients of x and b of one op."""
    x, b = x.detach().clone().requires_grad_(True), b.detach().clone().requires_grad_(True)
    if op == "bias_act":
        out = K.bias_act(x, b, "silu", gain=1.2, clamp=0.8, impl=impl)
    elif op == "batch_norm_act":
        out = K.batch_norm_act(x, b.abs() + 0.5, b, None, None, True, act="lrelu", impl=impl)
    else:
        out = K.gan_loss(x * b.sum(), True, "ns", impl=impl).reshape(1)
    out.backward(torch.linspace(-1, 1, out.numel(), device=out.device).reshape(out.shape))
    return out.detach(), x.grad, b.grad


@needs_triton
@pytest.mark.parametrize("int64", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("op", ["bias_act", "batch_norm_act", "gan_loss"])
def test_tiny_tiles_and_int64_offsets_match_the_reference(op, channels_last, int64, monkeypatch):
    """Tiles of 8 elements: several blocks along O, C and I and many reduction groups; optionally int64 offsets."""
    for k, v in TINY.items():
        monkeypatch.setitem(tiles.TUNING, k, v)
    if int64:
        monkeypatch.setattr(tiles, "INT32_NUMEL", 0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 4, 3, generator=g).to(DEVICE)
    x = x.to(memory_format=torch.channels_last) if channels_last else x
    b = torch.randn(5, generator=g).to(DEVICE)
    for name, got, want in zip(("out", "dx", "db"), _run(op, "triton", x, b), _run(op, "ref", x, b)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")


def test_huge_tensors_launch_1d_grids_with_int64_offsets(monkeypatch):
    """Shapes past int32 offsets and past 65,535 channel blocks, on meta tensors (nothing runs)."""
    monkeypatch.setitem(tiles.TUNING, "max_block_c", 1)  # 2**17 channel blocks in rows mode
    big_rows = torch.empty(2**14 + 1, 2**17, device="meta", requires_grad=True)  # > 2**31 elements, C = 2**17
    big_planes = torch.empty(2, 3, 2**15, 2**15 + 1, device="meta", requires_grad=True)
    b = torch.empty(2**17, device="meta", requires_grad=True)
    with K.record_launches() as rec:
        K.bias_act(big_rows, b, "lrelu").sum().backward()
        K.batch_norm_act(big_planes, None, None, None, None, True).sum().backward()
        K.batch_norm_act(big_planes.to(memory_format=torch.channels_last), None, None, None, None, True)
        K.gan_loss(big_rows.flatten(), True, "ns").backward()
    names = {kernel.fn.__name__ for kernel, *_ in rec.launches}
    assert {"_bias_act_fwd_kernel", "_bias_act_bwd_kernel", "bn_stats_kernel", "bn_apply_kernel",
            "bn_bwd_reduce_kernel", "bn_bwd_dx_kernel", "_gan_loss_kernel", "sum_partials_kernel"} <= names
    for kernel, grid, args, kwargs in rec.launches:
        assert len(grid) == 1 and 1 <= grid[0] <= tiles.MAX_PROGRAMS, (kernel.fn.__name__, grid)
        if "BIG" in kwargs:
            assert kwargs["BIG"], kernel.fn.__name__
    fwd = [grid for kernel, grid, *_ in rec.launches if kernel.fn.__name__ == "_bias_act_fwd_kernel"]
    assert fwd[0][0] >= 2**17  # as a 2-D grid, 2**17 channel blocks would have broken dimension 1's limit
    with pytest.raises(RuntimeError, match="exceed one launch"):
        tiles.grid_1d(tiles.MAX_PROGRAMS + 1)
