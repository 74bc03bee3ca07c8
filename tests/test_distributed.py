"""Data-parallel training: torchrun with the gloo backend on this CPU, checked against one process.

The tests that start processes (``python -m torch.distributed.run --standalone``:
a local rendezvous on a free port) are marked slow: each launch starts three
interpreters, which takes seconds on a busy 2-core machine. They run in
``make test`` like the others. Three launches in all: the module fixture's
two-process run, killed once mid-run and resumed by the same command (it
serves four checks), and the out-folder error.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fastgan import ConfigError, TrainConfig, Trainer
from fastgan import errors as fastgan_errors
from fastgan.checkpoint import latest_checkpoint, read_models
from fastgan.cli import main as cli_main
from fastgan.batch_streams import BatchStreams, stream_seed
from fastgan.distributed import Parallel, setup_parallel
from fastgan.engine import EngineOptions
from fastgan.engine_plan import ddp_capture_problem
from fastgan.checkpoint_store import step_of   # a staging folder is a valid answer too
from helpers import one_thread  # noqa: F401  (fixture)

WORKER = Path(__file__).with_name("ddp_worker.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
LAUNCH_TIMEOUT = 600

# Every path a data-parallel step has: alternating D (two critic steps) and G updates with D frozen, a
# conditional G whose batch norm is synchronised over the ranks, augmentation, WGAN-GP in the D step,
# lazy R1 (every 4 steps, its own all-reduce), EMA. A batch-norm D: one process emulating two ranks calls D once
# per shard for WGAN-GP, so a spectral-norm D would run its power iteration twice where each rank runs it once.
TRAIN = dict(data="digits", steps=20, batch_size=16, resolution=16, g_width=8, d_width=8, z_dim=16,
             conditional=True, augment="translation,cutout", r1_gamma=1.0, r1_every=4, gp_weight=1.0, n_critic=2,
             spectral_norm=False, sync_bn=True, log_every=5, ckpt_every=5, sample_every=0, progress=False,
             device="cpu", lr_g=2e-4, beta1=0.5, beta2=0.999)   # the Adam settings MATCH_ATOL was measured with

# One process drawing the two ranks' shards sums every gradient over the batch at once where the ranks sum
# their halves and then add the two sums (and the synchronised batch norm adds per-rank sums): the same
# maths in another order of float additions, which Adam carries on. Seen: <= 6e-8 after 20 steps; the
# weights move by ~1e-3 in those steps, and drawing other samples moves them apart by more than 100x this.
MATCH_ATOL = 2e-6


def _env() -> dict:
    # one OpenMP thread per process (torchrun's default; set here so it does not warn about it)
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _flags(cfg: dict) -> list[str]:
    out = []
    for k, v in cfg.items():
        if isinstance(v, bool):
            out.append(f"--{k}" if v else f"--no-{k}")
        else:
            out += [f"--{k}", str(v)]
    return out


def _tail(text: str, n: int = 3000) -> str:
    return text[-n:]


def _descendants(pid: int) -> list[int]:
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _worker_pid(launcher: int, rank: int) -> int | None:
    for pid in _descendants(launcher):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"LOCAL_RANK=" + str(rank).encode() in env:
            return pid
    return None


def _launch_and_kill_rank_1(cmd: list[str], run: Path) -> tuple[int, str]:
    """Start ``cmd``; SIGKILL rank 1 as soon as rank 0 has written a checkpoint. (exit status, output)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
                         start_new_session=True)
    try:
        victim, deadline = None, time.monotonic() + LAUNCH_TIMEOUT
        while latest_checkpoint(run) is None:
            assert p.poll() is None, "the run ended before it could be killed: " + _tail(p.stdout.read())
            assert time.monotonic() < deadline
            victim = victim or _worker_pid(p.pid, 1)
            time.sleep(0.02)
        victim = victim or _worker_pid(p.pid, 1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        out, _ = p.communicate(timeout=LAUNCH_TIMEOUT)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    return p.returncode, out


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    """TRAIN on two processes (gloo) as ``fastgan train`` runs it, its rank 1 SIGKILLed mid-run and the same
    command run again to finish: the run folder, the kill, and each rank's final weights."""
    if not Path("/proc/self/environ").exists():
        pytest.skip("finds the worker's pid through /proc")
    root = tmp_path_factory.mktemp("ddp")
    run = root / "run"
    cmd = TORCHRUN + ["--nproc_per_node", "2", str(WORKER), str(root / "dump"), "train",
                      *_flags({**TRAIN, "out": str(run)})]
    killed_status, killed_out = _launch_and_kill_rank_1(cmd, run)
    killed_at = step_of(latest_checkpoint(run))
    read_models(latest_checkpoint(run))   # complete and readable: the resumed launch must use it
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT, env=_env())
    assert resumed.returncode == 0, _tail(resumed.stdout + resumed.stderr)
    ranks = [torch.load(root / "dump" / f"rank{i}.pt") for i in range(2)]
    return SimpleNamespace(run=run, ranks=ranks, killed_status=killed_status, killed_out=killed_out,
                           killed_at=killed_at, resumed_err=resumed.stderr)


@pytest.fixture(scope="module")
def one_process_reference(two_rank_run, tmp_path_factory):
    """One process drawing both ranks' shards (the same samples, the same global batch): its G and D."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # tiny tensors (see helpers.one_thread)
    try:
        out = tmp_path_factory.mktemp("one") / "run"
        ref = Trainer(TrainConfig(**{**TRAIN, "out": str(out)}), engine_options=EngineOptions(batch_shards=2)).fit()
    finally:
        torch.set_num_threads(threads)
    return {"G": ref.G.state_dict(), "D": ref.D.state_dict()}


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.mark.slow
def test_two_ranks_hold_identical_weights_that_match_one_process(two_rank_run, one_process_reference, tmp_path,
                                                                 one_thread):
    r0, r1 = two_rank_run.ranks
    assert r0["step"] == r1["step"] == 20 and r0["world_size"] == 2
    assert r0["group_left"] and r1["group_left"]   # an open gloo group can abort the exiting process
    for net in ("G", "D"):  # bitwise: parameters and (synchronised batch norm) running statistics alike
        assert r0[net].keys() == r1[net].keys()
        assert all(torch.equal(r0[net][k], r1[net][k]) for k in r0[net]), net

    start = Trainer(TrainConfig(**{**TRAIN, "out": str(tmp_path / "start")}))  # the weights before step 1
    for net in ("G", "D"):
        got = one_process_reference[net]
        assert _max_diff(got, r0[net]) <= MATCH_ATOL, net
        moved = _max_diff({k: v for k, v in got.items() if v.is_floating_point()},
                          {k: v for k, v in getattr(start, net).state_dict().items() if v.is_floating_point()})
        assert moved > 100 * MATCH_ATOL, net   # training moved the weights far beyond the tolerance

    # drawing the batch as one shard gives other samples: the shards are what made the runs agree
    plain = Trainer(TrainConfig(**{**TRAIN, "out": str(tmp_path / "plain"), "steps": 4}))
    plain.fit()
    sharded = Trainer(TrainConfig(**{**TRAIN, "out": str(tmp_path / "sharded"), "steps": 4}),
                      engine_options=EngineOptions(batch_shards=2)).fit()
    assert _max_diff(plain.G.state_dict(), sharded.G.state_dict()) > 100 * MATCH_ATOL

    # rank 0 alone wrote the run folder, with the two ranks' own random streams in each checkpoint
    run = two_rank_run.run
    nets, _ = read_models(latest_checkpoint(run))
    assert all(torch.equal(nets["G"][k], r0["G"][k]) for k in r0["G"])
    state = torch.load(latest_checkpoint(run) / "state.pt", weights_only=True)
    assert state["world_size"] == 2 and state["shards"] == 2 and len(state["other_ranks"]) == 1
    assert not torch.equal(state["gen_state"], state["other_ranks"][0]["gen_state"])


@pytest.mark.slow
def test_a_killed_rank_leaves_a_checkpoint_the_same_command_resumes_exactly(two_rank_run, one_process_reference):
    # the fixture's first launch lost rank 1 to SIGKILL mid-run: torchrun failed, a checkpoint stayed
    assert two_rank_run.killed_status != 0, _tail(two_rank_run.killed_out)
    assert 5 <= two_rank_run.killed_at < 20, _tail(two_rank_run.killed_out)
    # the same command continued it to the end ...
    assert f"continuing run '{two_rank_run.run}' from step {two_rank_run.killed_at}" in two_rank_run.resumed_err
    assert latest_checkpoint(two_rank_run.run).name == "step_00000020"
    # ... exactly: restarted streams, lost optimiser state or running sums would draw or step otherwise and
    # land > 100x MATCH_ATOL away from the uninterrupted reference (see the shard check above)
    for net in ("G", "D"):
        assert _max_diff(one_process_reference[net], two_rank_run.ranks[0][net]) <= MATCH_ATOL, net


@pytest.mark.slow
def test_a_run_resumes_on_another_number_of_processes(two_rank_run, tmp_path, one_thread):
    run = tmp_path / "run"
    shutil.copytree(two_rank_run.run, run)
    shutil.rmtree(run / "checkpoints" / "step_00000020")
    with pytest.warns(UserWarning, match="random streams restart"):
        tr = Trainer(TrainConfig(**{**TRAIN, "out": str(run)}))   # one process resumes the two-process run
    assert tr.step == 15 and tr.parallel.world_size == 1
    nets, _ = read_models(run / "checkpoints" / "step_00000015")
    assert all(torch.equal(v, nets["D"][k]) for k, v in tr.D.state_dict().items())
    tr.fit()
    assert tr.step == 20 and latest_checkpoint(run).name == "step_00000020"
    assert all(torch.isfinite(p).all() for p in tr.G.parameters())


@pytest.mark.slow
def test_an_out_folder_that_differs_between_ranks_is_one_error(tmp_path):
    cfg = {**TRAIN, "steps": 2}
    cfg.pop("out", None)
    script = (f"exec {sys.executable} -m fastgan train {' '.join(_flags(cfg))} "
              f"--out {tmp_path}/run_$RANK")
    r = subprocess.run(TORCHRUN + ["--nproc_per_node", "2", "--no-python", "sh", "-c", script],
                       capture_output=True, text=True, timeout=LAUNCH_TIMEOUT, env=_env())
    assert r.returncode != 0
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if "fastgan: error:" in ln]
    assert len(lines) == 1, r.stdout + r.stderr
    assert "the out folder differs between ranks" in lines[0] and "run_0" in lines[0] and "run_1" in lines[0]
    assert "fastgan/" not in r.stdout + r.stderr   # no traceback through fastgan's code
    assert not (tmp_path / "run_0").exists() and not (tmp_path / "run_1").exists()


# ------------------------------------------------------------------ bad set-ups found before any process group
def _as_rank(monkeypatch, rank: int, world: int = 2) -> None:
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("LOCAL_RANK", str(rank))


@pytest.mark.parametrize("flags, message", [
    (["--batch_size", "15"], "batch_size (15) is the global batch and must be divisible by the world size (2)"),
    (["--dist_backend", "nccl"], "backend 'nccl' needs CUDA tensors, but this run trains on cpu"),
])
def test_bad_set_ups_are_one_line_on_rank_0_only(monkeypatch, capsys, tmp_path, flags, message):
    args = ["train", "--data", "digits", "--out", str(tmp_path / "run"), "--device", "cpu", "--steps", "1", *flags]
    for rank in (0, 1):
        _as_rank(monkeypatch, rank)
        assert cli_main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        if rank == 0:
            assert len(err) == 1 and err[0].startswith("fastgan: error: ") and message in err[0], err
        else:
            assert err == []   # every rank raises it; rank 0 says it
    assert not torch.distributed.is_initialized()
    assert not (tmp_path / "run").exists()


def test_close_leaves_only_a_group_fastgan_joined():
    Parallel().close()                                  # one process: nothing to leave
    Parallel(world_size=2, rank=0, backend="gloo").close()   # a group the caller made (or none) stays as it is
    assert not torch.distributed.is_initialized()


def test_distributed_without_a_process_group_is_one_error(monkeypatch, tmp_path):
    for v in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(v, raising=False)
    with pytest.raises(ConfigError, match="needs a process group"):
        Trainer(TrainConfig(data="grid25", out=str(tmp_path / "r"), device="cpu"), distributed=True)


def test_batch_shards_that_do_not_divide_the_batch_are_refused(tmp_path):
    cfg = TrainConfig(data="grid25", out=str(tmp_path / "r"), device="cpu", batch_size=20, pack=4)
    with pytest.raises(ConfigError, match=r"share of the batch \(10\) must be a multiple of pack \(4\)"):
        setup_parallel(cfg, False, shards_per_rank=2)
    with pytest.raises(ConfigError, match=r"world size x shards per process \(1 x 3\)"):
        setup_parallel(dataclasses.replace(cfg, pack=1), False, shards_per_rank=3)


# ---------------------------------------------------------------------------- random streams and the plan
def test_streams_are_the_seed_for_shard_0_and_distinct_per_shard_and_step():
    assert stream_seed(7, 0) == 7
    seeds = {stream_seed(7, s, t) for s in range(4) for t in (0, 10)}
    assert len(seeds) == 8
    assert stream_seed(7, 1) == stream_seed(7, 1)


def test_one_stream_draws_as_a_plain_generator_and_more_concatenate_their_shards():
    one = BatchStreams(3, [0], 6, torch.device("cpu"))
    g = torch.Generator().manual_seed(3)
    assert torch.equal(one.draw(lambda n, gen: torch.randn(n, 2, generator=gen)), torch.randn(6, 2, generator=g))
    two = BatchStreams(3, [0, 1], 3, torch.device("cpu"))
    x, y = two.draw(lambda n, gen: (torch.randn(n, generator=gen), None))
    assert y is None and x.shape == (6,)
    parts = [torch.randn(3, generator=torch.Generator().manual_seed(stream_seed(3, s))) for s in (0, 1)]
    assert torch.equal(x, torch.cat(parts))
    doubled = two.each(lambda a, b, gen: a + torch.rand(a.shape, generator=gen) * 0, torch.ones(6), None)
    assert torch.equal(doubled, torch.ones(6))
    assert two.size == 6 and Parallel(world_size=2, rank=1, shards_per_rank=2).local_shards() == [2, 3]


def test_graph_capture_of_ddp_needs_nccl():
    assert "cannot be captured" in ddp_capture_problem("gloo")
    assert ddp_capture_problem("nccl") is None or "NCCL" in ddp_capture_problem("nccl")


class _FakeRank(Parallel):
    """A rank of a two-process run whose broadcast hands out a given report of rank 0 (no process group)."""

    report = None

    def broadcast_object(self, obj):
        return obj if self.writes else self.report


def test_a_failure_of_rank_0_is_raised_alike_on_every_rank():
    from fastgan import CheckpointError

    writer = _FakeRank(world_size=2, rank=0)
    with pytest.raises(CheckpointError, match="disk full") as e:
        with writer.outcome_of_writer():
            raise CheckpointError("disk full")
    assert e.value.every_rank
    other = _FakeRank(world_size=2, rank=1)
    object.__setattr__(other, "report", ("CheckpointError", "disk full"))
    with pytest.raises(CheckpointError, match="^disk full$") as e:
        with other.outcome_of_writer():
            pass
    assert e.value.every_rank
    object.__setattr__(other, "report", ("PermissionError", "denied"))
    with pytest.raises(fastgan_errors.TrainingError, match=r"rank 0 failed \(PermissionError: denied\)"):
        with other.outcome_of_writer():
            pass
    object.__setattr__(other, "report", None)
    with other.outcome_of_writer():   # rank 0 succeeded: everyone goes on
        pass
