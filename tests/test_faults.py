"""The run folder under faults: SIGKILL at every step of the checkpoint protocol, a full disk, a second
trainer or a reader at work on the same folder.

Each killed run is restarted and must end bit-identical to a run never killed, having resumed from
the newest checkpoint that was complete when the kill came (never from an older one, never from
scratch), with no staging or half-deleted folder left behind.
"""

import errno
import shutil
import warnings

import pytest

from fastgan import StorageError, Trainer
from fastgan import checkpoint as ckpt_mod
from fastgan import checkpoint_store as store
from fault_harness import context, finish, same_state, start, train, training_state
from helpers import one_thread, state_equal, tiny_points  # noqa: F401  (one_thread: a fixture)

RUN = dict(steps=6, ckpt_every=2, keep_ckpts=1, log_every=2)   # saves at 2, 4 (pruning 2), 6 (pruning 4)


@pytest.fixture(autouse=True)
def no_history_plot(monkeypatch):
    """The history plot at the end of a fit is most of a tiny run's time and no part of these tests."""
    import fastgan.train
    monkeypatch.setattr(fastgan.train, "plot_history", lambda *a, **k: None)


@pytest.fixture(scope="module")
def ctx():
    return context()


@pytest.fixture(scope="module")
def reference(ctx, tmp_path_factory):
    """A run never killed: its final training state and the protocol steps it passed."""
    run = tmp_path_factory.mktemp("faults") / "reference"
    code, report = train(ctx, run, RUN)
    assert code == 0
    return {"run": run, "state": training_state(ckpt_mod.latest_checkpoint(run)), "trace": report["trace"]}


def _commit_points(trace, n):
    """1-based indices of the protocol steps of the n-th save (0-based) in a trace."""
    starts = [i for i, label in enumerate(trace) if label == "made staging folder"] + [len(trace)]
    return list(range(starts[n] + 1, starts[n + 1] + 1))


def _leftovers(run):
    root = run / ckpt_mod.CKPT_DIR
    return sorted(p.name for p in root.iterdir() if not p.name.startswith("step_")) if root.exists() else []


def _restart_and_check(ctx, run, reference, expect_start):
    """Restart a killed run; return a list of what went wrong (empty: all good)."""
    code, report = train(ctx, run, RUN)
    if code != 0:
        return [f"restart exited with {code}"]
    problems = []
    if report["start"] != expect_start:
        problems.append(f"resumed from step {report['start']}, expected {expect_start}")
    if not same_state(training_state(ckpt_mod.latest_checkpoint(run)), reference["state"]):
        problems.append("final state differs from the uninterrupted run")
    if _leftovers(run):
        problems.append(f"left {_leftovers(run)}")
    if [p.name for p in ckpt_mod.checkpoint_dirs(run)] != ["step_00000006"]:
        problems.append(f"checkpoints {[p.name for p in ckpt_mod.checkpoint_dirs(run)]}")
    return problems


def _kill_at_each(ctx, reference, tmp_path, points, labels, start_from, expect_start):
    """For each k in points: copy ``start_from`` (None: an empty folder), train killed at step k,
    restart; assert every restart resumed from ``expect_start(k)`` and ended as the reference."""
    failures = {}
    for k in points:
        run = tmp_path / f"k{k}"
        if start_from is not None:
            shutil.copytree(start_from, run)
        code, _ = train(ctx, run, RUN, kill_at=k)
        assert code == -9, f"the child was to die at step {k} ({labels[k - 1]})"
        problems = _restart_and_check(ctx, run, reference, expect_start(k))
        if problems:
            failures[f"{k}: {labels[k - 1]}"] = problems
        shutil.rmtree(run)
    assert not failures, failures


def test_sigkill_at_every_step_of_a_save_that_prunes(ctx, reference, tmp_path):
    """Kill inside the save of step 4 (which then deletes step 2) at each of its steps."""
    trace = reference["trace"]
    points = _commit_points(trace, 1)
    assert trace[points[0] - 1] == "made staging folder" and "renamed step_00000002 to be deleted" in \
        [trace[k - 1] for k in points]
    complete_from = trace.index("wrote manifest.json", points[0] - 1) + 1  # the staging copy is complete
    _kill_at_each(ctx, reference, tmp_path, points, trace, None, lambda k: 4 if k >= complete_from else 2)
    assert len(points) >= 18  # every write, fsync, rename and deletion of the save was a kill point


@pytest.fixture(scope="module")
def finished(ctx, reference, tmp_path_factory):
    """A copy of the finished reference run and the protocol steps of re-saving its step 6."""
    base = tmp_path_factory.mktemp("finished")
    probe = base / "probe"
    shutil.copytree(reference["run"], probe)
    code, report = train(ctx, probe, RUN)
    assert code == 0 and report["start"] == 6
    return {"base": base, "trace": report["trace"]}


def test_sigkill_at_every_step_of_a_resave_of_the_same_step(ctx, reference, finished, tmp_path):
    """Rerunning a finished run re-saves its last step: the old copy is moved aside, the new one
    committed, the old one deleted. Kill at each step from the moment the new copy is complete
    (the steps before are the staging writes, killed at every step in the test above)."""
    trace = finished["trace"]
    assert "moved step_00000006 aside" in trace
    points = list(range(trace.index("wrote manifest.json") + 1, len(trace) + 1))
    _kill_at_each(ctx, reference, tmp_path, points, trace, reference["run"], lambda k: 6)
    assert len(points) >= 9


def test_sigkill_during_start_up_recovery(ctx, reference, finished, tmp_path):
    """A kill between the two renames of a re-save leaves two complete copies and no committed
    folder; the restart's recovery is itself killed at each of its steps, then restarted."""
    trace = finished["trace"]
    aside = trace.index("moved step_00000006 aside") + 1
    state = tmp_path / "state"
    shutil.copytree(reference["run"], state)
    code, _ = train(ctx, state, RUN, kill_at=aside)
    assert code == -9 and not (state / "checkpoints" / "step_00000006").exists()
    assert sorted(n.split("-step")[0] for n in _leftovers(state)) == [".old", ".tmp"]
    probe = tmp_path / "probe"
    shutil.copytree(state, probe)
    code, report = train(ctx, probe, RUN)
    recovery = report["trace"][:report["trace"].index("made staging folder")]  # before the save that follows
    assert code == 0 and report["start"] == 6 and recovery[0].startswith("recovered .tmp-step_00000006-")
    assert recovery[-1].startswith("removed .del-.old-step_00000006")  # then the redundant old copy went
    _kill_at_each(ctx, reference, tmp_path, range(1, len(recovery) + 1), recovery, state, lambda k: 6)


def test_full_disk_keeps_the_last_checkpoint_and_says_so_in_one_line(tmp_path, monkeypatch, one_thread):
    run = tmp_path / "run"
    cfg = tiny_points(run, steps=8, ckpt_every=4)
    tr = Trainer(cfg)
    tr.fit(4)
    real_write = store._write_file

    def full_disk(path, data):
        if path.name == ckpt_mod.STATE_FILE:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, data)

    monkeypatch.setattr(store, "_write_file", full_disk)
    with pytest.raises(StorageError) as e:
        tr.fit(8)
    msg = str(e.value)
    assert "\n" not in msg and "No space left on device" in msg and "free some space" in msg
    assert str(run / "checkpoints") in msg and "step_00000008" in msg
    assert [p.name for p in ckpt_mod.checkpoint_dirs(run)] == ["step_00000004"]
    assert _leftovers(run) == []  # the staging folder was removed
    monkeypatch.setattr(store, "_write_file", real_write)
    resumed = Trainer(cfg)
    assert resumed.step == 4
    resumed.fit()
    full = Trainer(tiny_points(tmp_path / "full", steps=8, ckpt_every=4)).fit()
    assert state_equal(full.G, resumed.G) and state_equal(full.D, resumed.D)


def test_a_damaged_newest_checkpoint_falls_back_to_an_intact_one_with_one_warning(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_points(run, keep_ckpts=3)).fit(8)   # checkpoints 4 and 8
    newest = run / "checkpoints" / "step_00000008"
    data = bytearray((newest / ckpt_mod.STATE_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF   # one flipped byte: same size, another checksum
    (newest / ckpt_mod.STATE_FILE).write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        got = ckpt_mod.select_checkpoint(run, set_aside=True)
    assert got.name == "step_00000004"
    msgs = [str(x.message) for x in w]
    assert len(msgs) == 1 and "\n" not in msgs[0]
    assert "step_00000008 (state.pt: checksum mismatch)" in msgs[0] and "using step_00000004" in msgs[0]
    assert (run / "checkpoints" / "damaged-step_00000008").is_dir()   # kept, out of the way
    assert [p.name for p in ckpt_mod.checkpoint_dirs(run)] == ["step_00000004"]


def test_every_checkpoint_damaged_is_an_error_not_a_fresh_start(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_points(run)).fit(4)
    (run / "checkpoints" / "step_00000004" / ckpt_mod.MODELS_FILE).write_bytes(b"junk")
    with pytest.raises(ckpt_mod.CheckpointError, match=r"no intact checkpoint .*step_00000004 \(models.safetensors"):
        ckpt_mod.select_checkpoint(run, set_aside=True)
    assert (run / "checkpoints" / "step_00000004").is_dir()


def test_checkpoints_written_before_manifests_still_load_and_are_checked_by_reading(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_points(run, keep_ckpts=3)).fit(8)
    for p in ckpt_mod.checkpoint_dirs(run):
        (p / store.MANIFEST_FILE).unlink()
    assert ckpt_mod.select_checkpoint(run).name == "step_00000008"
    (run / "checkpoints" / "step_00000008" / ckpt_mod.STATE_FILE).write_bytes(b"\x00junk")
    with pytest.warns(UserWarning, match=r"skipped damaged checkpoint\(s\) step_00000008 .*using step_00000004"):
        assert ckpt_mod.select_checkpoint(run).name == "step_00000004"


def test_has_resumable_checkpoint(tmp_path):
    run = tmp_path / "run"
    assert not ckpt_mod.has_resumable_checkpoint(run)
    Trainer(tiny_points(run)).fit(4)
    assert ckpt_mod.has_resumable_checkpoint(run)
    shutil.rmtree(run / "checkpoints")
    assert not ckpt_mod.has_resumable_checkpoint(run) and (run / "config.json").exists()


def test_load_generator_skips_a_damaged_newest_checkpoint_with_a_warning(tmp_path):
    import fastgan
    run = tmp_path / "run"
    Trainer(tiny_points(run, steps=8, ckpt_every=4, keep_ckpts=2)).fit()
    older = fastgan.load_generator(run / "checkpoints" / "step_00000004")
    (run / "checkpoints" / "step_00000008" / ckpt_mod.MODELS_FILE).write_bytes(b"torn")
    with pytest.warns(UserWarning, match=r"skipped damaged checkpoint\(s\) step_00000008 .*using step_00000004"):
        G = fastgan.load_generator(run)
    assert state_equal(G, older)
    assert (run / "checkpoints" / "step_00000008").is_dir()   # a reader moves nothing


# ------------------------------------------------------------------ two processes on one run folder
def test_a_second_trainer_never_touches_a_checkpoint_in_progress(ctx, reference, tmp_path):
    """The same command started twice: the second trainer's start-up clean-up once deleted the first one's
    checkpoint in progress. Now, with the first paused inside a save, the second is refused and changes
    nothing; the first then ends exactly as if alone."""
    from fastgan.run_folder import RunLockedError

    run, flag = tmp_path / "run", tmp_path / "paused"
    p, report = start(ctx, run, RUN, pause=("wrote models.safetensors", str(flag)))
    try:
        for _ in range(2400):
            if flag.exists() or not p.is_alive():
                break
            p.join(0.05)
        assert flag.exists(), "the first trainer never reached its first save"
        (staging,) = [q for q in (run / "checkpoints").iterdir()]
        assert staging.name == f".tmp-step_00000002-{p.pid}"
        before = sorted(q.name for q in staging.iterdir())
        with pytest.raises(RunLockedError, match=f"in use by another trainer \\(pid {p.pid} "):
            Trainer(tiny_points(run, **RUN))
        assert sorted(q.name for q in staging.iterdir()) == before == ["models.safetensors"]
    finally:
        flag.unlink(missing_ok=True)
    code, _ = finish(p, report)
    assert code == 0
    assert same_state(training_state(ckpt_mod.latest_checkpoint(run)), reference["state"])


# ------------------------------------------------------------------ a reader while a trainer writes
@pytest.mark.parametrize("when", ["while checking", "while reading"])
def test_a_reader_whose_checkpoint_a_trainer_prunes_meanwhile_reads_the_new_one(tmp_path, monkeypatch, when):
    """fastgan sample / export / eval on a run being trained with keep_ckpts=1: the checkpoint the reader
    chose is pruned by the trainer (which has committed a newer one) before the reader is done with it.
    The reader lists the checkpoints again instead of calling the vanished one damaged."""
    import fastgan

    run = tmp_path / "run"
    tr = Trainer(tiny_points(run, steps=8, ckpt_every=4, keep_ckpts=1))
    tr.fit(4)
    target, name = (store, "verify") if when == "while checking" else (ckpt_mod, "read_models")
    real = getattr(target, name)

    def trainer_meanwhile(*args):
        if ckpt_mod.checkpoint_dirs(run)[-1].name == "step_00000004":
            tr.fit(8)   # commits step 8 and deletes step 4
        return real(*args)
    monkeypatch.setattr(target, name, trainer_meanwhile)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # nothing was damaged: no warning either
        G = fastgan.load_generator(run)
    assert G.fastgan_checkpoint == str(run / "checkpoints" / "step_00000008")
    assert [p.name for p in ckpt_mod.checkpoint_dirs(run)] == ["step_00000008"]


def test_a_reader_gives_up_with_one_line_when_the_checkpoints_keep_vanishing(tmp_path, monkeypatch):
    gone = tmp_path / "run" / "checkpoints" / "step_00000004"   # listed, but pruned before every check
    monkeypatch.setattr(store, "candidates", lambda root, required=(): [(4, gone)])
    with pytest.raises(ckpt_mod.CheckpointError, match=r"kept changing while being read \(a trainer is writing "
                                                        r"them\): try again"):
        ckpt_mod.select_checkpoint(tmp_path / "run")
