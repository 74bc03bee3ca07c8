"""The digits demo on an idle CPU and beside other busy programs, side by side.

Runs ``fastgan train --data digits`` (the demo, as ``make demo`` runs it, into
a temporary folder) twice per thread policy: once alone, then while
``--busy`` other processes each keep ``--busy_threads`` threads busy with
matrix products (this script starts and stops them). The policies:

- ``adaptive``: what ``fastgan train`` does on the CPU (one thread while other
  programs keep the cores busy; see ``fastgan/cpu_threads.py``);
- ``fixed``: ``OMP_NUM_THREADS`` = the usable cores, torch's own count and
  the previous behaviour. Beside busy programs it is many times slower, so by
  default it runs ``--fixed_steps`` steps only and the per-step times are
  what to compare.

Writes a JSON record (``--out``) and prints a table. The machine must be
otherwise idle: the load average before each idle run is recorded, and a
warning printed when it is above 0.5.

    python bench/contention.py                     # full demo, both policies
    python bench/contention.py --steps 500         # a quicker look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fastgan.cpu_threads import THREAD_ENV, usable_cores  # noqa: E402
from fastgan.info import cpu_machine  # noqa: E402

BUSY_CODE = """
import sys, torch
torch.set_num_threads(int(sys.argv[1]))
a = torch.randn(384, 384)
while True:
    a = torch.tanh(a @ a * 0.01)
"""


def start_busy(n: int, threads: int) -> list[subprocess.Popen]:
    """Start ``n`` processes that each keep ``threads`` threads busy with matrix products.

    Args:
        n: processes.
        threads: torch threads each uses.
    """
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
    procs = [subprocess.Popen([sys.executable, "-c", BUSY_CODE, str(threads)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(n)]
    time.sleep(2.0)   # past torch's import: they are busy when the demo starts
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    """Kill the busy processes and wait for them.

    Args:
        procs: what :func:`start_busy` returned.
    """
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def run_demo(policy: str, steps: int | None, workdir: Path) -> dict:
    """One ``fastgan train --data digits`` run; its wall time and what it printed about threads.

    Args:
        policy: ``adaptive`` (fastgan's) or ``fixed`` (OMP_NUM_THREADS = usable cores).
        steps: ``--steps`` (None: the demo's default).
        workdir: a fresh folder for the run.
    """
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
    if policy == "fixed":
        env["OMP_NUM_THREADS"] = str(usable_cores())
    cmd = [sys.executable, "-m", "fastgan", "train", "--data", "digits", "--out", str(workdir / "run"),
           "--no-progress"] + (["--steps", str(steps)] if steps else [])
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"demo failed ({r.returncode}):\n{r.stderr[-2000:]}")
    done = [json.loads(line) for line in (workdir / "run" / "metrics.jsonl").read_text().splitlines()
            if line.strip()]
    trained = max(int(rec.get("step", 0)) for rec in done)
    return {"seconds": round(seconds, 2), "steps": trained, "ms_per_step": round(1000 * seconds / trained, 2),
            "adapted": "kept the CPU busy" in r.stderr}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=None, help="steps of the adaptive runs (default: the demo's)")
    ap.add_argument("--fixed_steps", type=int, default=300, help="steps of the fixed-thread runs (0: skip them)")
    ap.add_argument("--busy", type=int, default=2, help="other busy processes")
    ap.add_argument("--busy_threads", type=int, default=2, help="threads each busy process keeps busy")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "contention-digits-demo-cpu.json"))
    args = ap.parse_args(argv)

    plan = [("adaptive", args.steps)] + ([("fixed", args.fixed_steps)] if args.fixed_steps else [])
    rows = []
    for policy, steps in plan:
        row = {"policy": policy}
        for state in ("idle", "contended"):
            load = os.getloadavg()[0]
            if state == "idle" and load > 0.5:
                print(f"warning: load average {load:.2f} before the idle run: the machine is not idle",
                      file=sys.stderr)
            procs = start_busy(args.busy, args.busy_threads) if state == "contended" else []
            try:
                with tempfile.TemporaryDirectory() as d:
                    row[state] = {**run_demo(policy, steps, Path(d)), "load_before": round(load, 2)}
            finally:
                stop(procs)
            print(f"{policy:<9} {state:<10} {row[state]['seconds']:8.1f} s  {row[state]['steps']:5d} steps  "
                  f"{row[state]['ms_per_step']:7.1f} ms/step", flush=True)
        row["slowdown"] = round(row["contended"]["ms_per_step"] / row["idle"]["ms_per_step"], 2)
        print(f"{policy:<9} contended / idle: {row['slowdown']}x", flush=True)
        rows.append(row)

    record = {
        "command": "python bench/contention.py" + (f" --steps {args.steps}" if args.steps else ""),
        "what": f"fastgan train --data digits alone and beside {args.busy} processes keeping "
                f"{args.busy_threads} threads busy each",
        "device": f"cpu ({cpu_machine()})", "usable_cores": usable_cores(), "torch": torch.__version__,
        "platform": platform.platform(), "date": time.strftime("%Y-%m-%d"), "results": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
