"""Small configs shared by the tests (tiny networks so CPU runs take seconds)."""

import pytest
import torch

from fastgan import TrainConfig


def tiny_points(out, **kw) -> TrainConfig:
    base = dict(data="grid25", out=str(out), steps=12, batch_size=32, g_width=32, d_width=32,
                log_every=4, sample_every=0, ckpt_every=4, progress=False, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def tiny_images(out, **kw) -> TrainConfig:
    base = dict(data="digits", out=str(out), steps=4, batch_size=8, resolution=16, g_width=8, d_width=8,
                z_dim=16, log_every=2, sample_every=0, ckpt_every=2, progress=False, device="cpu",
                # the image defaults (D with batch norm, DCGAN's Adam) the tolerances here were set with,
                # not the digits' own (tests/test_config.py checks those)
                r1_gamma=0.0, lr_g=2e-4, beta1=0.5, beta2=0.999)
    base.update(kw)
    return TrainConfig(**base)


def state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread is as fast and does not spin against a busy neighbour core."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def trained_tiny_run(run, **kw):
    """A tiny digits run trained in one thread (a conditional one of two steps unless told), for sampling tests."""
    from fastgan import Trainer

    torch.set_num_threads(1)
    Trainer(tiny_images(run, **{"conditional": True, "steps": 2, "ckpt_every": 0, **kw})).fit()
    return run
