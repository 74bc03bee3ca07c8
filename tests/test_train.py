import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import fastgan
from fastgan import CheckpointError, ConfigError, Trainer, TrainingError
from fastgan import checkpoint as ckpt_mod
from fastgan.models import MLPDiscriminator
from fastgan.cli import main as cli_main
from fastgan.checkpoint_store import step_of   # a staging folder is a valid answer too
from helpers import one_thread, state_equal, tiny_images, tiny_points  # noqa: F401  (one_thread: fixture)


def _params(m):
    return [p.detach().clone() for p in m.parameters()]


def test_one_step_changes_both_networks(tmp_path):
    tr = Trainer(tiny_images(tmp_path / "run"))
    g0, d0 = _params(tr.G), _params(tr.D)
    tr.train_step()
    assert any(not torch.equal(a, b) for a, b in zip(g0, tr.G.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d0, tr.D.parameters()))
    assert torch.isfinite(tr.stats.buffer).all()


def test_g_step_freezes_only_ds_trainable_weights_and_restores_them(tmp_path):
    """D is frozen for the G update through the list of its trainable weights taken at construction."""
    D = MLPDiscriminator(width=32)
    D.hidden[0].weight.requires_grad_(False)            # a weight the user froze stays frozen
    tr = Trainer(tiny_points(tmp_path / "run"), discriminator=D)
    seen = []
    tr.D.register_forward_pre_hook(lambda m, args: seen.append([p.requires_grad for p in m.parameters()]))
    d_frozen = tr.D.hidden[0].weight.detach().clone()
    tr.train_step()
    assert [p.requires_grad for p in tr.D.parameters()] == [False] + [True] * (len(seen[0]) - 1)
    assert seen[-1] == [False] * len(seen[-1])          # the G update's D call: every weight frozen
    assert torch.equal(tr.D.hidden[0].weight, d_frozen)
    assert tr.D.hidden[2].weight.grad is not None and tr.G.out.weight.grad is not None


def test_fit_writes_run_folder(tmp_path):
    run = tmp_path / "run"
    tr = Trainer(tiny_points(run, sample_every=4)).fit()
    assert tr.step == 12
    assert json.loads((run / "config.json").read_text())["data"] == "grid25"
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [l for l in lines if "d_loss" in l]
    assert [l["step"] for l in logged] == [4, 8, 12]
    for l in logged:
        assert {"d_loss", "g_loss", "step_time_ms", "images_per_s"} <= set(l)
        assert l["step_time_ms"] > 0
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "step_00000004.png", "step_00000008.png", "step_00000012.png"]
    assert [p.name for p in ckpt_mod.checkpoint_dirs(run)] == ["step_00000008", "step_00000012"]  # keep_ckpts=2


def test_sample_shapes_and_determinism(tmp_path):
    tr = Trainer(tiny_images(tmp_path / "run"))
    x = tr.sample(5)
    assert x.shape == (5, 1, 16, 16) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert torch.equal(tr.sample(5, seed=3), tr.sample(5, seed=3))
    assert not torch.equal(tr.sample(5, seed=3), tr.sample(5, seed=4))
    p = Trainer(tiny_points(tmp_path / "p"))
    assert p.sample(7).shape == (7, 2)
    with pytest.raises(ConfigError):
        tr.sample(0)


def test_conditional_sampling_checks_labels(tmp_path):
    tr = Trainer(tiny_images(tmp_path / "run", conditional=True))
    tr.train_step()
    assert tr.sample(4, labels=[0, 1, 2, 3]).shape == (4, 1, 16, 16)
    assert tr.sample(3, labels=7).shape == (3, 1, 16, 16)
    with pytest.raises(ConfigError, match="labels must lie"):
        tr.sample(2, labels=[0, 10])
    with pytest.raises(ConfigError, match="labelled"):
        Trainer(tiny_points(tmp_path / "p", data=str(_unlabelled_folder(tmp_path)), conditional=True))


def _unlabelled_folder(tmp_path):
    from PIL import Image
    d = tmp_path / "imgs"
    d.mkdir(exist_ok=True)
    for i in range(4):
        Image.new("RGB", (20, 20), (i * 60, 10, 10)).save(d / f"{i}.png")
    return d


@pytest.mark.parametrize("kw", [dict(loss="lsgan"), dict(loss="hinge", n_critic=2),
                                dict(loss="wgan", gp_weight=10.0), dict(r1_gamma=1.0, r1_every=2),
                                dict(augment="color,translation,cutout,flip,rot90,scale,shift,rotate", augment_p=0.5),
                                dict(spectral_norm=True, pack=2, mbstd=True), dict(ema_decay=0.0)])
def test_every_loss_and_option_trains(tmp_path, kw):
    tr = Trainer(tiny_images(tmp_path / "run", **kw))
    tr.fit(4)
    rec = [h for h in tr.history if "d_loss" in h][-1]
    assert all(torch.isfinite(torch.tensor(rec[k])) for k in ("d_loss", "g_loss"))
    if kw.get("r1_gamma"):
        assert "r1" in rec and rec["r1"] >= 0


def test_custom_data_and_networks(tmp_path):
    imgs = torch.randint(0, 256, (20, 3, 16, 16), dtype=torch.uint8)
    tr = Trainer(tiny_images(tmp_path / "run"), data=imgs)
    assert tr.cfg.resolution == 16 and tr.data.channels == 3
    tr.train_step()

    class G(torch.nn.Module):
        z_dim = 4

        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(4, 2)

        def forward(self, z, labels=None):
            return self.net(z)

    class D(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(2, 1)

        def forward(self, x, labels=None):
            return self.net(x).squeeze(1)

    tr = Trainer(tiny_points(tmp_path / "p"), generator=G(), discriminator=D())
    tr.fit(2)
    assert tr.sample(3).shape == (3, 2)


def test_resume_is_bit_exact(tmp_path):
    full = Trainer(tiny_points(tmp_path / "full")).fit()
    part = Trainer(tiny_points(tmp_path / "part"))
    part.fit(6)  # checkpoint at 4 (periodic) and 6 (end)
    del part
    resumed = Trainer(tiny_points(tmp_path / "part"))
    assert resumed.step == 6
    resumed.fit()
    assert resumed.step == 12
    for a, b in [(full.G, resumed.G), (full.D, resumed.D), (full.G_ema, resumed.G_ema)]:
        assert state_equal(a, b)


def test_interrupt_before_commit_resumes_from_the_complete_staging_copy(tmp_path, monkeypatch):
    run = tmp_path / "run"
    tr = Trainer(tiny_points(run))
    tr.fit(4)  # good checkpoint at step 4
    real_rename = os.rename

    def dying_rename(src, dst):
        if ".tmp-step_" in str(src):
            raise KeyboardInterrupt  # the process dies between writing and publishing
        return real_rename(src, dst)

    monkeypatch.setattr(ckpt_mod.os, "rename", dying_rename)
    with pytest.raises(KeyboardInterrupt):
        tr.fit(8)
    monkeypatch.setattr(ckpt_mod.os, "rename", real_rename)
    assert [p.name for p in ckpt_mod.checkpoint_dirs(run)] == ["step_00000004"]
    resumed = Trainer(tiny_points(run))
    assert resumed.step == 8  # the staging copy was complete: recovered, not retrained
    resumed.fit()
    full = Trainer(tiny_points(tmp_path / "full")).fit()
    assert state_equal(full.G, resumed.G) and state_equal(full.D, resumed.D)


def test_sigkill_then_rerun_matches_uninterrupted(tmp_path, one_thread):
    """A real process killed with SIGKILL (possibly mid-checkpoint) and restarted ends bit-identical.

    The restart and the uninterrupted reference run in this process, through the same command line
    on one thread as the killed one.
    """
    args = ["--data", "grid25", "--steps", "60", "--batch_size", "32", "--g_width", "32", "--d_width", "32",
            "--ckpt_every", "2", "--sample_every", "0", "--log_every", "10", "--no-progress", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "fastgan", "train"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd + args + ["--out", str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(ckpt_mod.checkpoint_dirs(killed)) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    got = ckpt_mod.latest_checkpoint(killed)
    assert got is not None and step_of(got) < 60, "the run finished before it could be killed"
    assert cli_main(["train", "--out", str(killed)]) == 0
    assert cli_main(["train", *args, "--out", str(tmp_path / "full")]) == 0
    a = fastgan.load_generator(killed, ema=False)
    b = fastgan.load_generator(tmp_path / "full", ema=False)
    assert state_equal(a, b)
    ka, _ = ckpt_mod.read_models(ckpt_mod.latest_checkpoint(killed))
    kb, _ = ckpt_mod.read_models(ckpt_mod.latest_checkpoint(tmp_path / "full"))
    assert all(torch.equal(ka["D"][k], kb["D"][k]) for k in kb["D"])


def test_incompatible_checkpoint_is_refused(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_points(run)).fit(4)
    with pytest.raises(CheckpointError, match=r"incompatible config: g_width \(32 in the checkpoint, 64 now\)"):
        Trainer(tiny_points(run, g_width=64))


@pytest.mark.parametrize("damage", ["junk_weights", "junk_state", "foreign_safetensors"])
def test_damaged_checkpoint_files_are_refused(tmp_path, damage):
    run = tmp_path / "run"
    Trainer(tiny_points(run)).fit(4)
    ck = ckpt_mod.latest_checkpoint(run)
    if damage == "junk_weights":
        (ck / "models.safetensors").write_bytes(b"this is not a checkpoint")
    elif damage == "junk_state":
        (ck / "state.pt").write_bytes(b"\x00\x01garbage")
    else:
        from safetensors.torch import save_file
        save_file({"w": torch.zeros(2)}, str(ck / "models.safetensors"))
    with pytest.raises(CheckpointError) as e:
        Trainer(tiny_points(run))
    assert "\n" not in str(e.value)
    assert ck.exists(), "a bad checkpoint must not be deleted"


def test_load_generator(tmp_path):
    run = tmp_path / "run"
    tr = Trainer(tiny_images(run)).fit()
    G = fastgan.load_generator(run)
    assert not G.training and G.z_dim == 16 and tuple(G.out_shape) == (1, 16, 16)
    z = torch.randn(3, 16)
    torch.testing.assert_close(G(z), tr.G_ema(z), rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        fastgan.load_generator(tmp_path)
    with pytest.raises(CheckpointError, match="no run or checkpoint"):
        fastgan.load_generator(tmp_path / "missing")
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable fastgan checkpoint"):
        fastgan.load_generator(bogus)


def test_non_finite_losses_stop_before_a_checkpoint_of_that_step(tmp_path):
    tr = Trainer(tiny_points(tmp_path / "run", steps=12, log_every=4, ckpt_every=4))
    step, step_fn = tr._runners[0]

    def poisoned_after_step_6():
        step_fn()
        if tr.step >= 6:                       # the stats of the step ending at 8 turn NaN
            tr.stats.buffer.fill_(float("nan"))

    tr._runners[0] = (step, poisoned_after_step_6)
    with pytest.raises(TrainingError, match="non-finite at step 8"):
        tr.fit()
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts == ["step_00000004"]      # no checkpoint of the non-finite step 8


# ---------------------------------------------------------------- learning-rate decay
def _lrs(tr: Trainer) -> tuple[float, float]:
    return float(tr.opt_g.param_groups[0]["lr"]), float(tr.opt_d.param_groups[0]["lr"])


def test_lr_decay_drives_both_optimisers_step_by_step(tmp_path):
    tr = Trainer(tiny_points(tmp_path / "r", lr_g=1e-3, lr_d=4e-3, lr_decay=0.5, lr_decay_to=0.2))
    seen = []
    for _ in range(tr.cfg.steps):
        tr.run_steps(1)
        seen += _lrs(tr)
    want = [lr * tr.cfg.lr_factor(s) for s in range(tr.cfg.steps) for lr in (1e-3, 4e-3)]
    assert seen == pytest.approx(want)
    assert seen[:2] == pytest.approx([1e-3, 4e-3]) and seen[-2:] == pytest.approx([2e-4, 8e-4])


def test_constant_lr_when_decay_is_off(tmp_path):
    tr = Trainer(tiny_points(tmp_path / "r", lr_g=1e-3, lr_decay=0.0))
    tr.fit()
    assert _lrs(tr) == (1e-3, 1e-3)


def test_lr_decay_changes_training_and_an_early_stop_keeps_the_schedule(tmp_path):
    """fit(n) then resume follows the schedule of the configured run (checked bit-exact elsewhere);
    here: the schedule is really in force (a run without it ends elsewhere)."""
    part = Trainer(tiny_points(tmp_path / "part", lr_decay=0.5))
    part.fit(8)
    assert _lrs(part)[0] == pytest.approx(part.cfg.lr_g * part.cfg.lr_factor(7, 12))
    resumed = Trainer(tiny_points(tmp_path / "part", lr_decay=0.5))
    resumed.fit()
    decayed = Trainer(tiny_points(tmp_path / "full", lr_decay=0.5)).fit()
    flat = Trainer(tiny_points(tmp_path / "flat", lr_decay=0.0)).fit()
    assert state_equal(decayed.G, resumed.G) and state_equal(decayed.D, resumed.D)
    assert not state_equal(decayed.G, flat.G)


# ---------------------------------------------------------------- point-data scale
def test_point_data_scale_reaches_the_networks_and_r1_is_in_unit_coordinates(tmp_path):
    from fastgan import losses
    from fastgan.data import load_data
    assert load_data("grid25").scale == pytest.approx((8 + 0.05 ** 2) ** 0.5, rel=1e-6)
    assert load_data("ring8").scale == pytest.approx((0.5 + 0.01 ** 2) ** 0.5, rel=1e-5)
    assert load_data("digits").scale == 1.0
    tr = Trainer(tiny_points(tmp_path / "r", r1_gamma=1.0))
    s = tr.data.scale
    assert tr.G.scale == tr.D.scale == s and tr.ema_generator().scale == s
    # the R1 the trainer logs is E||grad||^2 of the unit-scale network at x / s
    state = tr.gen.get_state()
    real, _ = tr.data.sample(tr.cfg.batch_size, tr.gen)
    tr.gen.set_state(state)
    unit = MLPDiscriminator(**dict(tr.D.arch_config(), scale=1.0))
    unit.load_state_dict(tr.D.state_dict())
    u = (real / s).requires_grad_(True)
    want = losses.r1_penalty(unit(u), u).item()
    tr.stats.buffer.zero_()
    tr.reg_step()
    assert tr.stats["r1"].item() == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize("make,kw,one_pass", [
    (tiny_points, {}, True),
    (tiny_points, {"pack": 2}, True),
    (tiny_points, {"mbstd": True}, False),
    (tiny_points, {"spectral_norm": True}, False),
    (tiny_images, {"loss": "hinge", "r1_gamma": 1.0}, True),   # R1: no batch norm in D
    (tiny_images, {}, False),                         # batch norm in D: real and fake batches stay apart
])
def test_d_scores_real_and_fake_in_one_pass_only_when_that_changes_nothing(tmp_path, make, kw, one_pass):
    cfgs = [make(tmp_path / f"r{i}", **kw) for i in range(2)]
    trs = [Trainer(c) for c in cfgs]
    assert trs[0].D.batch_independent is one_pass
    trs[1].D.batch_independent = False                # the two-pass form, as reference
    for tr in trs:
        tr.train_step()
    for a, b in zip(trs[0].D.parameters(), trs[1].D.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(trs[0].G.parameters(), trs[1].G.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(trs[0].stats.buffer, trs[1].stats.buffer, rtol=1e-5, atol=1e-6)


def test_a_resumed_run_cannot_switch_its_digits_images(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_images(run, steps=2)).fit()
    assert json.loads((run / "config.json").read_text())["digits_upscale"] == "block"
    with pytest.raises(CheckpointError, match=r"digits_upscale \('block' in the checkpoint, 'bicubic' now\)"):
        Trainer(tiny_images(run, steps=4, digits_upscale="bicubic"))
    assert Trainer(tiny_images(run, steps=4)).step == 2
