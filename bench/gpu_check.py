"""The GPU check: one command for an offline CUDA machine that already has torch and triton.

    python3 bench/gpu_check.py --plan           # the stages and their time bounds (no GPU needed)
    python3 bench/gpu_check.py --out DIR        # or OUT=DIR python3 bench/gpu_check.py
    bash bench/gpu_check.sh DIR                 # the same
    make gpu-check OUT=DIR                      # the same (installs nothing else)

It installs fastgan into a fresh virtual environment that sees the packages of
the interpreter running it (torch, triton, numpy, ... are used as installed;
pip runs with ``--no-index --no-deps --no-build-isolation``, so nothing is
downloaded and the installed torch is never touched), then runs, in priority
order, each step bounded in time (a step still running at its bound is
stopped, with its whole process group, and recorded as "cut short"):

1. tests: the kernel tests on CUDA against the reference ops, graph == eager
   and the other engine tests, the torch.compile smoke tests;
2. throughput: ``fastgan bench``, DCGAN-64 at batch 128 and 512, fastgan's
   modes against every plain-PyTorch recipe (the compiled recipes last);
3. bandwidth: ``bench/kernels_bandwidth.py`` at the DCGAN-64 shapes, bf16,
   fastgan's kernels against eager PyTorch.

Time a step leaves unused passes to the next step of the same stage. The
folder receives at most 8 files (``FILES``), each kept under 16 MiB;
``summary.json`` is written first and rewritten after every step, so a run
cut short anywhere still leaves the earlier steps' results. Exit status: 0
every step passed, 1 a step failed or was cut short, 2 the check could not
run (no output folder, install failed, no CUDA device).

The module is also a pytest plugin (``-p gpu_check``): it appends one JSON
line per test outcome to ``$FASTGAN_GPU_CHECK_JSONL``, so a pytest run that is
stopped still leaves every result it reached.
"""

from __future__ import annotations

import argparse
import functools
import glob
import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = 1
GRACE_S = 5.0                        # SIGTERM -> SIGKILL; counted inside each step's bound
FILE_LIMIT = 16 * 2**20 - 4096       # "each under 16 MiB"
INSTALL_BOUND_S = 45.0
JSONL_ENV = "FASTGAN_GPU_CHECK_JSONL"
STEP_ENV = "FASTGAN_GPU_CHECK_STEP"
SUMMARY = "summary.json"
FILES = (SUMMARY, "install.log", "tests.log", "tests.jsonl", "throughput.json", "throughput.log",
         "kernels_bandwidth.json", "kernels_bandwidth.log")
# fastgan bench settings for the check: short windows, so both batch sizes and every recipe fit
BENCH_ARGS = ["--device", "cuda", "--preset", "dcgan64", "--batch_size", "128", "512",
              "--steps", "20", "--windows", "5", "--warmup", "10"]
UNCOMPILED_RECIPES = ("pytorch-graph-bf16,fastgan-graph,fastgan-fast,pytorch-eager-bf16,fastgan-eager,"
                      "pytorch-eager-fp32")
COMPILED_RECIPES = "pytorch-graph-compiled,fastgan-compile"   # an inductor compile each, per batch size


@dataclass
class Step:
    """One bounded command of the check.

    Args:
        name: the step's name (``kernel-tests`` ...).
        stage: the stage it belongs to (``tests``, ``throughput``, ``bandwidth``).
        bound_s: its time bound in seconds (plus what earlier steps of the stage left unused).
        what: one line for ``--plan``.
        argv: ``argv(python, out)``: the command, run from the repository root.
        log: the log file (in the output folder) its output is appended to.
        result: the JSON file it writes, if any.
        test_timeout_s: pytest-timeout's per-test limit for pytest steps (when the plugin is there).
    """

    name: str
    stage: str
    bound_s: float
    what: str
    argv: Callable[[str, Path], list[str]]
    log: str
    result: Optional[str] = None
    test_timeout_s: Optional[int] = None


def _pytest(files: str, *options: str) -> Callable[[str, Path], list[str]]:
    def argv(python: str, out: Path) -> list[str]:
        found = sorted(glob.glob(str(ROOT / files)))
        return [python, "-m", "pytest", "-q", "-rfE", "--tb=short", "-p", "no:cacheprovider", "-p", "gpu_check",
                *options, *[os.path.relpath(f, ROOT) for f in found]]
    return argv


def _bench(recipes: str, append: bool) -> Callable[[str, Path], list[str]]:
    def argv(python: str, out: Path) -> list[str]:
        return [python, "-m", "fastgan", "bench", *BENCH_ARGS, "--recipes", recipes,
                "--out", str(out / "throughput.json"), *(["--append"] if append else [])]
    return argv


def _bandwidth(python: str, out: Path) -> list[str]:
    # the compile column is left out: one inductor compile per case would not fit the bound
    return [python, "bench/kernels_bandwidth.py", "--dtypes", "bf16", "--impls", "triton", "eager",
            "--warmup", "5", "--rep", "20", "--out", str(out / "kernels_bandwidth.json")]


PLAN: tuple[Step, ...] = (
    Step("kernel-tests", "tests", 95, "tests/test_kernels_*.py: every fused kernel on CUDA against its reference op "
         "(forward, gradients, strided inputs, compile and graph capture of the ops)",
         _pytest("tests/test_kernels_*.py"), "tests.log", test_timeout_s=60),
    Step("engine-tests", "tests", 40, "tests/test_engine_gpu.py (not compile, not slow): graph replay == eager "
         "bitwise, capture safety, fp16 scaling on the device, fast mode",
         _pytest("tests/test_engine_gpu.py", "-m", "not slow", "-k", "not compile"), "tests.log", test_timeout_s=60),
    Step("compile-smoke", "tests", 40, "tests/test_engine_gpu.py -k compile: inductor compile of the step tracks "
         "eager; bf16 + channels_last compiles", _pytest("tests/test_engine_gpu.py", "-m", "not slow", "-k", "compile"),
         "tests.log", test_timeout_s=120),
    Step("throughput", "throughput", 90, f"fastgan bench DCGAN-64 b128+b512, no compile: {UNCOMPILED_RECIPES}",
         _bench(UNCOMPILED_RECIPES, append=False), "throughput.log", "throughput.json"),
    Step("throughput-compiled", "throughput", 145, f"fastgan bench DCGAN-64 b128+b512, inductor: {COMPILED_RECIPES} "
         "(appended to the same JSON; headline over all recipes)", _bench(COMPILED_RECIPES, append=True),
         "throughput.log", "throughput.json"),
    Step("bandwidth", "bandwidth", 110, "bench/kernels_bandwidth.py: DCGAN-64 D shapes at b128+b512, bf16, "
         "channels_last, fastgan's kernels vs eager, fwd/bwd/fwd+bwd, do_bench and graph replay",
         _bandwidth, "kernels_bandwidth.log", "kernels_bandwidth.json"),
)


def total_bound_s(plan: tuple[Step, ...] = PLAN) -> float:
    """The check's time bound: the install's plus every step's (each stage's time stays inside it).

    Args:
        plan: the steps.
    """
    return INSTALL_BOUND_S + sum(s.bound_s for s in plan)


def plan_text(plan: tuple[Step, ...] = PLAN) -> str:
    """The stages, their steps and time bounds, as printed by ``--plan``.

    Args:
        plan: the steps.
    """
    lines = [f"fastgan GPU check: {len(plan)} steps in 3 stages after the install, writing at most "
             f"{len(FILES)} files ({', '.join(FILES)}), each under 16 MiB",
             f"  install     {INSTALL_BOUND_S:4.0f} s  fresh venv seeing this interpreter's packages; pip install "
             "--no-index --no-deps --no-build-isolation -e . (or links the sources where pip cannot build); "
             "import check from outside the repository"]
    for stage in dict.fromkeys(s.stage for s in plan):
        steps = [s for s in plan if s.stage == stage]
        lines.append(f"  {stage:11s} {sum(s.bound_s for s in steps):4.0f} s")
        lines += [f"    {s.name:20s} {s.bound_s:4.0f} s  {s.what}" for s in steps]
    total = total_bound_s(plan)
    lines.append(f"  total       {total:4.0f} s  ({total / 60:.1f} min, stops included: each step's bound holds "
                 f"its {GRACE_S:.0f} s SIGTERM grace)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- files
def write_json(path: Path, data: dict) -> None:
    """Write JSON so that a reader never sees half a file (fastgan's one atomic-write helper).

    Args:
        path: destination.
        data: JSON-serialisable dict.
    """
    _files().atomic_write(path, json.dumps(data, indent=2, default=str) + "\n")


@functools.lru_cache(maxsize=None)
def _files():
    """``fastgan/files.py`` loaded by path: the check runs before fastgan is installed, and the
    module needs nothing but the standard library."""
    spec = importlib.util.spec_from_file_location("_fastgan_files", ROOT / "fastgan" / "files.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cap_file(path: Path, limit: int = FILE_LIMIT) -> bool:
    """Keep a log under ``limit`` bytes: its first and last parts, with a line saying what was cut.

    Args:
        path: the file.
        limit: the most bytes it may keep.

    Returns:
        True when the file was shortened.
    """
    if not path.is_file() or path.stat().st_size <= limit:
        return False
    data = path.read_bytes()
    note = f"\n[gpu_check: {len(data) - limit + 200} bytes cut here to keep the file under 16 MiB]\n".encode()
    keep = (limit - len(note)) // 2
    path.write_bytes(data[:keep] + note + data[-keep:])
    return True


# ---------------------------------------------------------------------------- running one command
def run_bounded(argv: list[str], log: Path, timeout_s: float, env: dict,
                cwd: Path = ROOT) -> tuple[Optional[int], bool, float]:
    """Run ``argv`` with its output appended to ``log``; stop its process group at ``timeout_s``.

    Args:
        argv: the command.
        log: the log file (appended to, with a header line).
        timeout_s: seconds before SIGTERM (then SIGKILL after ``GRACE_S``).
        env: the environment.
        cwd: working folder.

    Returns:
        (exit status or None, cut short, seconds taken).
    """
    t0 = time.monotonic()
    with open(log, "ab") as f:
        f.write(f"\n== {time.strftime('%H:%M:%S')} {shlex.join(argv)} (bound {timeout_s:.0f} s)\n".encode())
        f.flush()
        try:
            proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                    start_new_session=True)   # its own process group: stop it whole
        except OSError as e:
            f.write(f"== could not start: {e}\n".encode())
            return None, False, time.monotonic() - t0
        cut = False
        try:
            rc = proc.wait(timeout=max(timeout_s, 0.1))
        except subprocess.TimeoutExpired:
            cut = True
            _stop_group(proc)
            rc = proc.returncode
        took = time.monotonic() - t0
        f.write(f"\n== {'cut short' if cut else f'exit {rc}'} after {took:.1f} s\n".encode())
    return rc, cut, took


def _stop_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


# ---------------------------------------------------------------------------- install
PROBE = r"""
import importlib.metadata as md, importlib.util, json, os, platform, sys, sysconfig
import torch
import fastgan, fastgan.kernels, fastgan.export
try:
    import triton
    triton_version = triton.__version__
except ImportError:
    triton_version = None
cuda = torch.cuda.is_available()
purelib = sysconfig.get_paths()["purelib"]
dist = next((str(d.locate_file("")) for d in md.distributions(path=[purelib]) if d.metadata["Name"] == "fastgan"), None)
info = {"python": platform.python_version(), "torch": torch.__version__, "triton": triton_version,
        "cuda": torch.version.cuda, "cuda_available": cuda,
        "device_name": torch.cuda.get_device_name(0) if cuda else None,
        "capability": ".".join(map(str, torch.cuda.get_device_capability(0))) if cuda else None,
        "fastgan_dist": dist,   # the venv's own metadata (none for a linked install)
        "fastgan_in_venv": dist is not None or os.path.abspath(fastgan.__file__).startswith(purelib),
        "fastgan": fastgan.__file__, "fastgan_kernels": fastgan.kernels.__file__,
        "fastgan_export": fastgan.export.__file__,
        "pytest_timeout": importlib.util.find_spec("pytest_timeout") is not None}
print("PROBE " + json.dumps(info))
"""

SITE_DIRS = ("import json, site; print(json.dumps(site.getsitepackages() + "
             "([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])))")


def install(python: str, venv: Path, log: Path, deadline: float, link: bool = False) -> dict[str, Any]:
    """Install fastgan (editable, offline) into a fresh venv that sees ``python``'s packages; probe it.

    The venv is made without pip and without its own packages; a ``.pth`` file
    adds ``python``'s site folders with ``site.addsitedir`` (so their own
    ``.pth`` files work too), which makes its torch, triton, pip and
    setuptools importable unchanged. fastgan goes into the venv itself with
    ``pip install --no-index --no-deps --no-build-isolation -e``, or, where
    that cannot build (e.g. a setuptools without ``bdist_wheel`` and no
    ``wheel`` package), by :func:`link_install`. The probe then imports
    ``fastgan.kernels`` and ``fastgan.export`` from a folder outside the
    repository.

    Args:
        python: the interpreter whose packages the venv sees.
        venv: the venv folder (must not exist yet).
        log: the install log.
        deadline: ``time.monotonic()`` value by which the install must end.
        link: skip pip and link the sources in (:func:`link_install`).

    Returns:
        The record for the summary: status, seconds, the probe's findings.
    """
    t0 = time.monotonic()
    rec: dict[str, Any] = {"status": "failed", "venv": str(venv), "bound_s": INSTALL_BOUND_S}
    env = _clean_env()

    def step(argv: list[str], cwd: Path = ROOT) -> bool:
        rc, cut, _ = run_bounded(argv, log, deadline - time.monotonic(), env, cwd)
        if cut:
            rec["status"] = "cut short"
        return rc == 0 and not cut

    sites = subprocess.run([python, "-c", SITE_DIRS], capture_output=True, text=True, env=env, timeout=30)
    if sites.returncode != 0:
        rec["error"] = f"cannot read the site folders of {python}: {sites.stderr.strip()[-300:]}"
        return _finish(rec, t0)
    if not step([python, "-m", "venv", "--without-pip", str(venv)]):
        rec["error"] = "python -m venv failed (see install.log)"
        return _finish(rec, t0)
    vpy = str(venv / "bin" / "python")
    purelib = subprocess.run([vpy, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, env=env, timeout=30).stdout.strip()
    lines = [f"import site; site.addsitedir({d!r})" for d in json.loads(sites.stdout) if os.path.isdir(d)]
    Path(purelib, "_fastgan_gpu_check_base.pth").write_text("\n".join(lines) + "\n")
    pip = [vpy, "-m", "pip", "install", "--no-index", "--no-deps", "--no-build-isolation",
           "--disable-pip-version-check"]
    rec["mode"] = "linked" if link else "editable"
    if not link and not step(pip + ["-e", str(ROOT)]):
        if rec["status"] == "cut short":
            return _finish(rec, t0)
        rec["mode"] = "linked (pip could not build the editable install: see install.log)"
        link = True
    if link:
        link_install(Path(purelib))
    outside = Path(tempfile.mkdtemp(prefix="fastgan-gpu-check-probe-"))
    try:
        probe = subprocess.run([vpy, "-c", PROBE], capture_output=True, text=True, env=env, cwd=outside,
                               timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        rec["status"] = "cut short"
        return _finish(rec, t0)
    finally:
        shutil.rmtree(outside, ignore_errors=True)
    with open(log, "a") as f:
        f.write(probe.stdout + probe.stderr)
    found = [ln for ln in probe.stdout.splitlines() if ln.startswith("PROBE ")]
    if probe.returncode != 0 or not found:
        rec["error"] = "importing fastgan from outside the repository failed: " + \
            (probe.stderr.strip().splitlines() or ["?"])[-1][:300]
        return _finish(rec, t0)
    rec.update(status="ok", python_bin=vpy, env=json.loads(found[-1][len("PROBE "):]))
    return _finish(rec, t0)   # the caller moves "env" to the top of the summary


# pyproject.toml's package-dir: fastgan.kernels and fastgan.export live outside fastgan/ in the repository
PACKAGE_DIRS = {"fastgan": "fastgan", "fastgan.kernels": "kernels", "fastgan.export": "export"}


def link_install(site_packages: Path) -> None:
    """Make ``import fastgan`` load the repository's files without a build: a ``fastgan`` folder of links.

    Every entry of ``fastgan/`` is linked, and ``kernels/`` and ``export/``
    are linked in as ``fastgan/kernels`` and ``fastgan/export``, as
    pyproject's ``package-dir`` maps them (no console script, no metadata).

    Args:
        site_packages: the venv's site-packages folder.
    """
    pkg = site_packages / "fastgan"
    pkg.mkdir()
    for item in sorted((ROOT / PACKAGE_DIRS["fastgan"]).iterdir()):
        if item.name != "__pycache__":
            (pkg / item.name).symlink_to(item)
    for name, folder in PACKAGE_DIRS.items():
        if name != "fastgan":
            (pkg / name.split(".", 1)[1]).symlink_to(ROOT / folder)


def _finish(rec: dict, t0: float) -> dict:
    rec["seconds"] = round(time.monotonic() - t0, 1)
    return rec


def _clean_env() -> dict:
    """This environment without what would change what runs: the Triton interpreter, a PYTHONPATH, $OUT."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "PYTHONPATH", "OUT", "PYTHONHOME")}
    env["PYTHONUNBUFFERED"] = "1"
    env["PIP_NO_INDEX"] = "1"   # never the network, whatever pip's configuration says
    return env


# ---------------------------------------------------------------------------- summaries of each step
def _tests_record(out: Path, step: str) -> dict[str, Any]:
    counts: dict[str, int] = {}
    problems = []
    path = out / "tests.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue   # a line cut by the stop
            if r.get("step") != step:
                continue
            counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
            if r["outcome"] in ("failed", "error") and len(problems) < 40:
                problems.append({"test": r["test"], "message": r.get("message", "")})
    return {"counts": counts, "failures": problems}


def _throughput_record(out: Path) -> dict[str, Any]:
    try:
        rep = json.loads((out / "throughput.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    rows = [{"recipe": r["recipe"], "batch_size": r["batch_size"], "status": r["status"],
             **({"ms": round(r["ms_per_step"]["median"], 4)} if r["status"] == "ok" else {"reason": r.get("reason")})}
            for r in rep.get("results", [])]
    return {"complete": rep.get("complete"), "headline": rep.get("headline"), "recipes": rows}


def _bandwidth_record(out: Path) -> dict[str, Any]:
    try:
        rep = json.loads((out / "kernels_bandwidth.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {"results": len(rep.get("results", [])), "errors": rep.get("errors"),
            "target_check": {k: v for k, v in rep.get("target_check", {}).items() if k != "triton_slower_cases"},
            "triton_slower_cases": len(rep.get("target_check", {}).get("triton_slower_cases", []))}


# ---------------------------------------------------------------------------- the check
@dataclass
class Check:
    """The state of one run of the check: the output folder and the summary it keeps current.

    Args:
        out: the output folder.
        plan: the steps to run.
        summary: the summary dict (written to ``out/summary.json`` by :meth:`save`).
    """

    out: Path
    plan: tuple[Step, ...]
    summary: dict = field(default_factory=dict)

    def start(self) -> None:
        """Create the folder and write the summary first, every step pending."""
        self.out.mkdir(parents=True, exist_ok=True)
        self.summary = {
            "schema": SCHEMA, "check": "fastgan GPU check", "status": "running",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "total_bound_s": total_bound_s(self.plan),
            "files": list(FILES), "env": None, "install": {"status": "pending", "bound_s": INSTALL_BOUND_S},
            "steps": {s.name: {"stage": s.stage, "status": "pending", "bound_s": s.bound_s, "what": s.what}
                      for s in self.plan},
        }
        self.save()

    def save(self) -> None:
        """Rewrite ``summary.json`` (atomically) with the time of the update."""
        self.summary["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        write_json(self.out / SUMMARY, self.summary)

    def run_steps(self, python: str, env: dict, test_timeout: bool) -> bool:
        """Run every step in order, each within its bound plus its stage's leftover time.

        Args:
            python: the interpreter with fastgan installed.
            env: the steps' environment.
            test_timeout: pytest-timeout is available (per-test limits for pytest steps).

        Returns:
            True when every step exited 0.
        """
        ok, slack, stage = True, 0.0, None
        for s in self.plan:
            if s.stage != stage:
                stage, slack = s.stage, 0.0   # leftover time stays inside its stage
            timeout = s.bound_s + slack - GRACE_S
            argv = s.argv(python, self.out)
            if s.test_timeout_s and test_timeout:
                argv = argv[:3] + [f"--timeout={s.test_timeout_s}"] + argv[3:]
            rec = self.summary["steps"][s.name]
            rec.update(status="running", command=shlex.join(argv), timeout_s=round(timeout + GRACE_S, 1))
            self.save()
            rc, cut, took = run_bounded(argv, self.out / s.log, timeout, {**env, STEP_ENV: s.name})
            slack = max(0.0, timeout + GRACE_S - took)
            status = "cut short" if cut else ("ok" if rc == 0 else "failed")
            ok = ok and status == "ok"
            rec.update(status=status, rc=rc, seconds=round(took, 1))
            if "pytest" in argv:
                rec.update(_tests_record(self.out, s.name))
            elif s.result == "throughput.json":
                rec.update(_throughput_record(self.out))
            elif s.result == "kernels_bandwidth.json":
                rec.update(_bandwidth_record(self.out))
            rec["capped"] = [f for f in FILES if cap_file(self.out / f)]
            self.save()
        return ok


def run_check(out: Path, python: str, venv: Optional[Path], install_only: bool = False, link: bool = False,
              plan: tuple[Step, ...] = PLAN) -> int:
    """Install, then run the plan; keep ``out/summary.json`` current throughout.

    Args:
        out: the output folder.
        python: the interpreter whose packages (torch, triton, ...) are used.
        venv: where to make the venv (default: a new temporary folder, removed at the end).
        install_only: stop after the install and its probe.
        link: install by linking the sources instead of pip (see :func:`link_install`).
        plan: the steps.

    Returns:
        The exit status (see the module docstring).
    """
    check = Check(out, plan)
    check.start()
    own_venv = venv is None
    venv = Path(tempfile.mkdtemp(prefix="fastgan-gpu-check-")) / "venv" if own_venv else venv
    try:
        t0 = time.monotonic()
        check.summary["install"] = rec = install(python, venv, out / "install.log", t0 + INSTALL_BOUND_S, link)
        check.summary["env"] = rec.pop("env", None)
        cap_file(out / "install.log")
        check.save()
        if rec["status"] != "ok":
            return _end(check, 2, f"install {rec['status']}: {rec.get('error', 'see install.log')}")
        if install_only:
            return _end(check, 0, "install only")
        if not check.summary["env"]["cuda_available"]:
            for s in plan:
                check.summary["steps"][s.name].update(status="skipped", reason="no CUDA device")
            return _end(check, 2, "no CUDA device visible to torch: nothing measured")
        env = {**_clean_env(), JSONL_ENV: str(out / "tests.jsonl"),
               "PYTHONPATH": str(ROOT / "bench"),   # this module, as the pytest plugin
               "PYTHONSAFEPATH": "1"}               # the repository folder is not on sys.path: the install is used
        ok = check.run_steps(rec["python_bin"], env, check.summary["env"]["pytest_timeout"])
        return _end(check, 0 if ok else 1, "every step passed" if ok else "a step failed or was cut short")
    finally:
        if own_venv:
            shutil.rmtree(venv.parent, ignore_errors=True)


def _end(check: Check, code: int, message: str) -> int:
    check.summary.update(status="done", exit=code, message=message)
    check.save()
    print(f"gpu_check: {message} (summary: {check.out / SUMMARY})")
    return code


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point: ``--plan``, or the check into ``--out`` / ``$OUT``.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("outdir", nargs="?", default=None, help="the output folder (or --out, or $OUT)")
    p.add_argument("--out", default=None, help="the output folder (default: $OUT)")
    p.add_argument("--plan", action="store_true", help="print the stages and their time bounds, then exit")
    p.add_argument("--python", default=sys.executable,
                   help="the interpreter whose torch/triton/... the check uses (default: this one)")
    p.add_argument("--venv", default=None, help="make the venv here (default: a temporary folder, removed after)")
    p.add_argument("--install-only", action="store_true", help="install and probe only (works without a GPU)")
    p.add_argument("--link", action="store_true",
                   help="install by linking the sources, without pip (what happens anyway when pip cannot build)")
    args = p.parse_args(argv)
    if args.plan:
        print(plan_text())
        return 0
    out = args.out or args.outdir or os.environ.get("OUT")
    if not out:
        print("gpu_check: error: give the output folder: --out DIR, a positional DIR, or $OUT", file=sys.stderr)
        return 2
    if args.venv and Path(args.venv).exists():
        print(f"gpu_check: error: --venv {args.venv} exists; give a new folder", file=sys.stderr)
        return 2
    print(plan_text(), flush=True)
    return run_check(Path(out).resolve(), args.python, Path(args.venv).resolve() if args.venv else None,
                     install_only=args.install_only, link=args.link)


# ---------------------------------------------------------------------------- pytest plugin (-p gpu_check)
def pytest_runtest_logreport(report) -> None:
    """Append one JSON line per test outcome to ``$FASTGAN_GPU_CHECK_JSONL`` (pytest hook).

    Args:
        report: pytest's report of one phase (setup, call, teardown) of a test.
    """
    path = os.environ.get(JSONL_ENV)
    if not path or (report.when != "call" and report.passed):
        return
    outcome = "error" if report.failed and report.when != "call" else report.outcome
    rec = {"step": os.environ.get(STEP_ENV), "test": report.nodeid, "when": report.when, "outcome": outcome,
           "seconds": round(report.duration, 3)}
    if report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        rec["message"] = (crash.message if crash else str(report.longrepr))[:400]
    elif report.skipped and isinstance(report.longrepr, tuple):
        rec["message"] = str(report.longrepr[2])[:200]
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    sys.exit(main())
