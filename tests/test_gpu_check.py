"""bench/gpu_check.py without a GPU: the plan and its bounds, the offline install, the bounded runner, the
pytest plugin, the summary that survives a step cut short."""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gpu_check = _load("gpu_check")


def test_plan_fits_ten_minutes_and_prints_without_a_gpu(capsys):
    assert gpu_check.main(["--plan"]) == 0
    text = capsys.readouterr().out
    stages = {}
    for s in gpu_check.PLAN:
        stages[s.stage] = stages.get(s.stage, 0) + s.bound_s
        assert s.name in text and s.log in gpu_check.FILES and s.result in (None, *gpu_check.FILES)
        assert s.bound_s > gpu_check.GRACE_S
    assert list(stages) == ["tests", "throughput", "bandwidth"]   # the priority order
    assert stages["tests"] <= 180 and stages["throughput"] <= 240 and stages["bandwidth"] <= 120
    total = gpu_check.total_bound_s()
    assert total == gpu_check.INSTALL_BOUND_S + sum(stages.values()) and total < 600
    assert f"total        {total:.0f} s" in text and "install" in text
    assert len(gpu_check.FILES) <= 8 and gpu_check.FILES[0] == "summary.json"


def test_every_step_command_is_valid_here(tmp_path):
    """The commands name files that exist and flags their programs accept (parsed, not run)."""
    from fastgan import benchmark
    from fastgan.benchmark_recipes import select_recipes

    bandwidth = _load("kernels_bandwidth")
    by = {s.name: s.argv("PY", tmp_path) for s in gpu_check.PLAN}
    kernel_files = [a for a in by["kernel-tests"] if a.startswith("tests/")]
    assert len(kernel_files) >= 4 and all((ROOT / f).is_file() for f in kernel_files)
    assert all(Path(f).name.startswith("test_kernels_") for f in kernel_files)
    for name in ("engine-tests", "compile-smoke"):
        assert by[name][-1] == "tests/test_engine_gpu.py" and "not slow" in by[name]
    recipes = set()
    for name in ("throughput", "throughput-compiled"):
        args = benchmark.build_parser().parse_args(by[name][4:])
        assert args.preset == ["dcgan64"] and args.batch_size == [128, 512]
        assert args.out == str(tmp_path / "throughput.json")
        recipes |= {r.name for r in select_recipes(args.recipes)}
    assert args.append
    defaults = {r.name for r in select_recipes("default")}
    assert recipes == defaults   # every default recipe, fastgan's and plain, exactly once
    assert by["bandwidth"][1] == "bench/kernels_bandwidth.py"
    bargs = bandwidth.parse_args(by["bandwidth"][2:])
    assert bargs.dtypes == ["bf16"] and bargs.out == str(tmp_path / "kernels_bandwidth.json")


def test_install_offline_into_a_fresh_venv(tmp_path):
    """The install step as the GPU machine runs it: no index, no network, the interpreter's torch reused; its
    probe imports fastgan.kernels and fastgan.export with the new venv's python from a folder outside the repository."""
    out, venv = tmp_path / "out", tmp_path / "venv"
    dead = "http://127.0.0.1:9"   # any attempt to reach the network fails at once
    env = {**os.environ, "HTTP_PROXY": dead, "HTTPS_PROXY": dead, "http_proxy": dead, "https_proxy": dead,
           "OUT": str(out)}
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--install-only", "--venv", str(venv)],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    inst, probe = summary["install"], summary["env"]
    assert inst["status"] == "ok" and inst["python_bin"] == str(venv / "bin" / "python")
    assert summary["status"] == "done" and summary["exit"] == 0
    assert inst["mode"] == "editable" and probe["fastgan_in_venv"] is True
    assert Path(probe["fastgan_dist"]).resolve().is_relative_to(venv.resolve())  # installed into the new venv
    assert probe["fastgan_kernels"] == str(ROOT / "kernels" / "__init__.py")
    assert probe["fastgan_export"] == str(ROOT / "export" / "__init__.py")
    import torch
    assert probe["torch"] == torch.__version__                       # the interpreter's torch, untouched
    assert "Successfully installed fastgan" in (out / "install.log").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["install.log", "summary.json"]


def test_linked_install_imports_the_repository_files(tmp_path):
    """The fallback when pip cannot build (a setuptools without bdist_wheel and no wheel package)."""
    tomllib = pytest.importorskip("tomllib")
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    assert gpu_check.PACKAGE_DIRS == package_dir
    site = tmp_path / "site"
    site.mkdir()
    gpu_check.link_install(site)
    code = ("import fastgan, fastgan.kernels, fastgan.export, fastgan.models, fastgan.metrics, fastgan.benchmark; "
            "print(fastgan.__file__); print(fastgan.kernels.__file__)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                       env={**env, "PYTHONPATH": str(site), "PYTHONSAFEPATH": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    init, kernels = map(Path, r.stdout.split())
    assert init.parent == site / "fastgan" and init.resolve() == ROOT / "fastgan" / "__init__.py"
    assert kernels.resolve() == ROOT / "kernels" / "__init__.py"


def _py(code):
    return lambda python, out: [python, "-c", code]


def test_steps_are_bounded_and_the_summary_survives(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "GRACE_S", 0.5)
    pidfile = tmp_path / "child.pid"
    stuck = ("import subprocess, sys, time; "
             "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
             f"open({str(pidfile)!r}, 'w').write(str(c.pid)); print('started', flush=True); time.sleep(60)")
    Step = gpu_check.Step
    plan = (Step("quick", "a", 2.0, "exits 0", _py("print('quick ran')"), "tests.log"),
            Step("stuck", "a", 2.5, "never ends", _py(stuck), "tests.log"),
            Step("fails", "b", 1.0, "exits 3", _py("import sys; sys.exit(3)"), "throughput.log"))
    check = gpu_check.Check(tmp_path / "out", plan)
    check.start()
    first = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [v["status"] for v in first["steps"].values()] == ["pending"] * 3
    t0 = time.monotonic()
    assert check.run_steps(sys.executable, dict(os.environ), test_timeout=False) is False
    took = time.monotonic() - t0
    steps = json.loads((tmp_path / "out" / "summary.json").read_text())["steps"]
    assert [steps[n]["status"] for n in ("quick", "stuck", "fails")] == ["ok", "cut short", "failed"]
    assert steps["fails"]["rc"] == 3 and steps["fails"]["timeout_s"] == 1.0      # nothing carried across stages
    assert 2.5 < steps["stuck"]["timeout_s"] <= 4.5                              # quick's leftover carried over
    assert steps["stuck"]["seconds"] <= steps["stuck"]["timeout_s"] + 1.0 and took < 10
    log = (tmp_path / "out" / "tests.log").read_text()
    assert "quick ran" in log and "started" in log and "cut short after" in log
    child = int(pidfile.read_text())
    for _ in range(50):   # the stuck step's own child went with its process group
        if not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the stopped step's child process is still running")


def test_no_cuda_device_skips_every_step(tmp_path, monkeypatch, capsys):
    def fake_install(python, venv, log, deadline, link=False):
        log.write_text("installed\n")
        return {"status": "ok", "python_bin": python, "seconds": 0.1,
                "env": {"cuda_available": False, "torch": "x", "triton": None, "pytest_timeout": False}}

    monkeypatch.setattr(gpu_check, "install", fake_install)
    assert gpu_check.run_check(tmp_path / "o", sys.executable, tmp_path / "venv") == 2
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["exit"] == 2 and "no CUDA device" in summary["message"]
    assert all(s["status"] == "skipped" for s in summary["steps"].values())
    assert summary["env"]["torch"] == "x" and "env" not in summary["install"]
    monkeypatch.delenv("OUT", raising=False)
    capsys.readouterr()
    assert gpu_check.main([]) == 2
    assert "give the output folder" in capsys.readouterr().err


def test_cap_file_keeps_head_and_tail(tmp_path):
    small, big = tmp_path / "small.log", tmp_path / "big.log"
    small.write_text("x" * 100)
    big.write_bytes(b"HEAD" + b"y" * 5000 + b"TAIL")
    assert gpu_check.cap_file(small, limit=1000) is False and small.read_text() == "x" * 100
    assert gpu_check.cap_file(big, limit=1000) is True
    data = big.read_bytes()
    assert len(data) <= 1000 and data.startswith(b"HEAD") and data.endswith(b"TAIL") and b"bytes cut" in data


def test_pytest_plugin_writes_one_line_per_outcome(tmp_path):
    (tmp_path / "test_sample.py").write_text(
        "import pytest\n"
        "@pytest.fixture\ndef broken():\n    raise RuntimeError('fixture broke')\n"
        "def test_ok():\n    pass\n"
        "def test_bad():\n    assert 1 == 2, 'one is not two'\n"
        "def test_skip():\n    pytest.skip('no gpu here')\n"
        "def test_error(broken):\n    pass\n")
    jsonl = tmp_path / "t.jsonl"
    env = {**os.environ, gpu_check.JSONL_ENV: str(jsonl), gpu_check.STEP_ENV: "demo",
           "PYTHONPATH": str(ROOT / "bench")}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "gpu_check",
                        "test_sample.py"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 1, r.stdout[-2000:]
    recs = {json.loads(line)["test"].split("::")[1]: json.loads(line) for line in jsonl.read_text().splitlines()}
    assert {k: v["outcome"] for k, v in recs.items()} == {"test_ok": "passed", "test_bad": "failed",
                                                         "test_skip": "skipped", "test_error": "error"}
    assert all(v["step"] == "demo" for v in recs.values())
    assert "one is not two" in recs["test_bad"]["message"] and "no gpu here" in recs["test_skip"]["message"]
    assert "fixture broke" in recs["test_error"]["message"]
    out = tmp_path / "out"
    out.mkdir()
    (out / "tests.jsonl").write_text(jsonl.read_text() + '{"cut by a stop\n')
    rec = gpu_check._tests_record(out, "demo")
    assert rec["counts"] == {"passed": 1, "failed": 1, "skipped": 1, "error": 1}
    assert {f["test"].split("::")[1] for f in rec["failures"]} == {"test_bad", "test_error"}


def test_docs_show_the_current_plan_and_make_installs_nothing():
    assert gpu_check.plan_text() in (ROOT / "docs" / "gpu_check.md").read_text()
    rule = (ROOT / "Makefile").read_text().split("\ngpu-check:", 1)[1].split("\n\n", 1)[0]
    assert rule.split("##")[0].strip() == "" and "bench/gpu_check.py" in rule   # no prerequisite (no install)
    assert "pip" not in rule and "TORCH" not in rule
