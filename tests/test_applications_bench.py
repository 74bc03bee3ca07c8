"""bench/applications.py's guard: a run stopped early is never measured as if it had finished."""

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("bench_applications", ROOT / "bench" / "applications.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class FakeTrainer:
    def __init__(self, reach: int, steps: int = 10, stopped_by=None):
        self.cfg = SimpleNamespace(steps=steps, out="runs/x")
        self.step, self._reach, self.stopped_by = 0, reach, stopped_by

    def fit(self):
        self.step = self._reach
        return self


def test_a_run_stopped_by_a_signal_ends_the_experiment():
    apps = _load()
    done = FakeTrainer(reach=10)
    assert apps.fit_to_end(done) is done
    with pytest.raises(SystemExit, match=r"stopped at step 7 of 10 \(SIGTERM\); rerun the command"):
        apps.fit_to_end(FakeTrainer(reach=7, stopped_by="SIGTERM"))


def test_the_ada_verdict_compares_adaptive_with_the_best_other_setting_per_metric():
    apps = _load()
    m = lambda kl, fd, pfd, cl=10: {"classes_reverse_kl": {"mean": kl}, "fd": {"mean": fd},
                                    "pixel_fd": {"mean": pfd}, "classes": {"mean": cl}}
    v = apps.verdict({"none": m(0.02, 0.60, 60.0), "fixed_p0.25": m(0.01, 0.70, 65.0, 9),
                      "adaptive": m(0.01, 0.55, 61.0)})
    assert v["classes_reverse_kl"]["adaptive"] == "equal" and v["classes_reverse_kl"]["best_other"] == "fixed_p0.25"
    assert v["fd"]["adaptive"] == "better" and v["fd"]["best_other"] == "none"
    assert v["pixel_fd"]["adaptive"] == "worse" and v["classes"]["adaptive"] == "equal"
    assert apps.verdict({"adaptive": m(0.01, 0.5, 60.0)}) == {}      # adaptive alone: nothing to compare
    assert apps.verdict({"none": m(0.01, 0.5, 60.0)}) == {}


def test_ada_refuses_a_run_folder_trained_for_more_steps_than_asked(tmp_path):
    apps = _load()
    (tmp_path / "ada-none-s0").mkdir()
    (tmp_path / "ada-none-s0" / "applications-eval.json").write_text('{"seed": 0, "steps": 10000}\n')
    args = SimpleNamespace(recipe="digits", settings=["none"], augment=apps.AUGMENT, first_seed=0, seeds=1,
                           per_class=18, work=str(tmp_path), ada_target=0.6, ada_kimg=20.0, steps=5000)
    with pytest.raises(SystemExit, match="trained for 10,000 steps, more than --steps 5,000"):
        apps.run_ada(args)
