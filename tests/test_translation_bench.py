"""The translation presets of ``fastgan bench`` and the reference repository's loop they are timed against."""

import random

import torch

from fastgan import Trainer, benchmark
from fastgan.benchmark_context import BenchContext, get_preset, network_signature, synthetic_data
from fastgan.benchmark_recipes import FastganVariant, fastgan_recipe
from fastgan.benchmark_translation import ReferenceImagePool, reference_from_task, reference_recipe
from helpers import one_thread  # noqa: F401  (a fixture)
from translation_helpers import tiny_config


def test_presets_build_the_same_networks_in_both_recipes(one_thread):  # noqa: F811
    for name in ("pix2pix256", "cyclegan256"):
        preset = get_preset(name, width=2)
        ctx = BenchContext(preset, 1, torch.device("cpu"), synthetic_data(preset, torch.device("cpu")), "unused")
        ours, theirs = fastgan_recipe(FastganVariant("eager"))(ctx), reference_recipe(ctx)
        assert network_signature(*ours.networks) == network_signature(*theirs.networks)
        assert ctx.data.shape == (128, 3, 256, 256)
    assert "pix2pix256" in benchmark.list_text() and "cyclegan256" in benchmark.list_text()


def test_reference_loop_trains_fastgans_networks_from_the_same_weights(tmp_path, one_thread):  # noqa: F811
    for task in ("pix2pix", "cyclegan"):
        tr = Trainer(tiny_config(tmp_path / task, task), resume=False)
        ref, nets = reference_from_task(tr.task)
        for ours, theirs in zip(tr.task.networks().values(), nets):
            assert [p.numel() for p in ours.parameters()] == [p.numel() for p in theirs.parameters()]
            assert all(torch.equal(p.flatten(), q.flatten()) for p, q in zip(ours.parameters(), theirs.parameters()))
        before = [p.detach().clone() for p in nets[0].parameters()]
        ref.step()
        assert any(not torch.equal(a, b) for a, b in zip(before, nets[0].parameters()))   # it trains


def test_reference_image_pool_follows_its_rule():
    random.seed(0)
    pool = ReferenceImagePool(2)
    first = torch.arange(2.0).view(2, 1, 1, 1)
    assert torch.equal(pool.query(first), first) and len(pool.images) == 2   # filling: returned as given
    new = torch.arange(10.0, 60.0).view(50, 1, 1, 1)
    out = pool.query(new)
    from_pool = out != new                                   # each returned image: its own, or a stored one
    assert 12 < int(from_pool.sum()) < 38 and set(out[from_pool].tolist()) <= {0.0, 1.0, *new.flatten().tolist()}
