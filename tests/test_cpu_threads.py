"""Adaptive CPU threads: the load arithmetic, the decisions, and where the loop and the CLI use them."""

import os

import pytest
import torch

from fastgan import cpu_threads
from fastgan.cli import main
from fastgan.cli_common import cpu_threads_for as _cpu_threads
from fastgan.config import TrainConfig
from fastgan.cpu_threads import AdaptiveThreads, machine_busy_seconds  # the real one (conftest fakes the module's)
from fastgan.train import Trainer


def test_machine_busy_seconds_reads_proc_stat(tmp_path):
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 20 30 500 50 5 5 0 7 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    hz = os.sysconf("SC_CLK_TCK")
    assert machine_busy_seconds(str(stat)) == pytest.approx((100 + 20 + 30 + 5 + 5) / hz)
    assert machine_busy_seconds(str(tmp_path / "missing")) is None
    stat.write_text("intr 1 2 3\n")
    assert machine_busy_seconds(str(stat)) is None


class Machine:
    """A fake machine: the clock, everyone's CPU seconds and this process's, advanced by hand."""

    def __init__(self):
        self.t, self.busy, self.own, self.set = 0.0, 0.0, 0.0, []

    def run(self, seconds, own_cores, other_cores):
        self.t += seconds
        self.own += seconds * own_cores
        self.busy += seconds * (own_cores + other_cores)

    def threads(self, **kw):
        return AdaptiveThreads(clock=lambda: self.t, machine=lambda: self.busy, own=lambda: self.own,
                               set_threads=self.set.append, **kw)


def test_one_thread_while_others_keep_the_cores_busy_and_back_after():
    m = Machine()
    a = m.threads(max_threads=2, cores=2, interval=2.0)
    m.run(1.0, own_cores=2, other_cores=1.6)
    assert a.tick() == 2 and m.set == []          # before the interval: no look at all
    m.run(1.5, own_cores=2, other_cores=1.6)      # two programs with 2 busy threads each
    assert a.tick() == 1 and m.set == [1]
    m.run(2.5, own_cores=1, other_cores=1.6)
    assert a.tick() == 1 and m.set == [1]         # still busy: no change
    m.run(2.5, own_cores=1, other_cores=0.1)      # they stopped; a daemon's crumbs do not count
    assert a.tick() == 2 and m.set == [1, 2] and a.switches == 2
    a.restore()
    assert m.set == [1, 2]                        # already at torch's count


def test_own_threads_never_count_as_load():
    m = Machine()
    a = m.threads(max_threads=2, cores=2)
    for _ in range(5):
        m.run(3.0, own_cores=2.0, other_cores=0.0)   # fastgan alone, both cores flat out
        assert a.tick() == 2
    assert m.set == []


def test_a_big_machine_gives_up_only_the_cores_others_use():
    m = Machine()
    a = m.threads(max_threads=16, cores=16)
    m.run(3.0, own_cores=15, other_cores=1.0)
    assert a.tick() == 15
    m.run(3.0, own_cores=15, other_cores=3.4)
    assert a.tick() == 13
    a.restore()
    assert m.set == [15, 13, 16] and a.threads == 16


def test_nothing_to_adapt_without_proc_stat_or_with_one_thread():
    m = Machine()
    assert not AdaptiveThreads(max_threads=2, machine=lambda: None).active
    assert not AdaptiveThreads(max_threads=2).active      # conftest: no /proc/stat inside tests
    assert not m.threads(max_threads=1).active
    assert m.threads(max_threads=2).active


class Recorder:
    def __init__(self):
        self.ticks, self.restored, self.switches = 0, 0, []

    def tick(self):
        self.ticks += 1
        return 1

    def restore(self):
        self.restored += 1


def test_fit_consults_the_policy_each_iteration_and_restores_it(tmp_path):
    rec = Recorder()
    cfg = TrainConfig(data="grid25", out=str(tmp_path / "run"), steps=3, batch_size=8, g_width=8, d_width=8,
                      sample_every=0, ckpt_every=0, eval_every=0, progress=False, device="cpu")
    Trainer(cfg, cpu_threads=rec).fit()
    assert rec.ticks == 3 and rec.restored == 1


class FakeTrainer:
    def __init__(self, device="cpu", fixed=None):
        self.device = torch.device(device)
        self.data = type("D", (), {"cpu_threads": fixed})()


def test_cli_policy_user_count_wins_then_the_datas_then_adaptive(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(cpu_threads, "machine_busy_seconds", lambda path="/proc/stat": 1.0)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert _cpu_threads(FakeTrainer()) is None and _cpu_threads(FakeTrainer(fixed=1)) is None and calls == []
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert _cpu_threads(FakeTrainer(fixed=1)) is None and calls == [1]
    assert isinstance(_cpu_threads(FakeTrainer()), AdaptiveThreads)
    assert _cpu_threads(FakeTrainer("meta")) is None


def test_info_says_how_train_picks_threads(capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert main(["info"]) == 0
    assert "fastgan train on the CPU: " in capsys.readouterr().out
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(cpu_threads, "machine_busy_seconds", lambda path="/proc/stat": 1.0)
    assert main(["info"]) == 0
    assert "adaptive: 2, or 1 while other programs keep the cores busy" in capsys.readouterr().out


def test_translation_cli_runs_use_the_same_thread_policy(tmp_path, monkeypatch):
    import fastgan.cli_common as cli_common
    from translation_helpers import tiny_config

    rec, seen = Recorder(), []

    def policy(trainer):
        seen.append(trainer.cfg.task)
        return rec
    monkeypatch.setattr(cli_common, "cpu_threads_for", policy)
    cfg = tiny_config(tmp_path, "pix2pix", steps=3, ckpt_every=0)
    flags = [f"--{k}={v}" for k, v in cfg.to_dict().items() if v is not None and not isinstance(v, bool)]
    assert main(["train", *flags, "--no-progress"]) == 0
    assert seen == ["pix2pix"] and rec.ticks == 3 and rec.restored == 1
