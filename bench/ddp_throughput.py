"""Data-parallel throughput: one process against N (torchrun) with the same global batch, side by side.

Each round runs its variants back to back. On the CPU (the default): one
process with one thread, one process with two threads, and two processes
with one thread each (gloo). On CUDA (``--device cuda``): one process on one
GPU, then ``--nproc`` processes on as many GPUs (NCCL). Every run trains the
same preset on synthetic images (the benchmark's data, global batch
``--batch_size``), warms up, then times ``--steps`` training iterations
(``Trainer.run_steps``; wall clock on rank 0, after a barrier and a device
synchronisation). A data-parallel run then times, on its own, the
all-reduces one iteration makes (the bucket sizes DDP uses for G and D: one
D and one G update) and reports them as the communication share of its step.
``/proc/loadavg`` is recorded before and after every run.

Usage:
    python bench/ddp_throughput.py --json bench/results/ddp-cpu-throughput.json          # this CPU
    python bench/ddp_throughput.py --device cuda --nproc 8 --json bench/results/ddp-gpu-throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve()


def _worker(args: argparse.Namespace) -> None:
    import torch

    from fastgan import TrainConfig, Trainer
    from fastgan.benchmark_context import get_preset, synthetic_data

    sys.path.insert(0, str(HERE.parent))
    from ddp_comm_model import buckets

    torch.set_num_threads(args.threads)
    preset = get_preset(args.preset)
    # the run folder is only named: nothing trains through fit, nothing is written
    cfg = TrainConfig(out=args.out, batch_size=args.batch_size, g_width=preset.width, d_width=preset.width,
                      z_dim=preset.z_dim, steps=10**6, progress=False, device=args.device, mode=args.mode,
                      log_every=10**6, sample_every=0, ckpt_every=0)
    tr = Trainer(cfg, data=synthetic_data(preset, torch.device("cpu")), resume=False)
    cuda = tr.device.type == "cuda"

    def settle() -> None:
        if cuda:
            torch.cuda.synchronize(tr.device)
        tr.parallel.barrier()

    tr.run_steps(args.warmup)
    settle()
    t0 = time.perf_counter()
    tr.run_steps(args.steps)
    settle()
    step_ms = (time.perf_counter() - t0) * 1e3 / args.steps
    out = {"processes": tr.parallel.world_size, "threads": args.threads, "ms_per_step": step_ms,
           "images_per_s": args.batch_size * 1e3 / step_ms, "plan": tr.engine.plan.summary()}
    if cuda:
        out["device_name"] = torch.cuda.get_device_name(tr.device)
    if tr.parallel.active:
        sizes = [b for net in (tr.G, tr.D) for b in buckets(net)]   # one G and one D update per iteration
        bufs = [torch.zeros(b // 4, device=tr.device) for b in sizes]
        for buf in bufs:  # warm-up
            torch.distributed.all_reduce(buf)
        reps = 20
        settle()
        t0 = time.perf_counter()
        for _ in range(reps):
            for buf in bufs:
                torch.distributed.all_reduce(buf)
        settle()
        comm_ms = (time.perf_counter() - t0) * 1e3 / reps
        out.update(allreduce_ms_per_step=comm_ms, comm_share=comm_ms / step_ms, bucket_bytes=sizes)
    if tr.parallel.writes:
        print("RESULT " + json.dumps(out), flush=True)


def _load() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def _run(procs: int, threads: int, args: argparse.Namespace) -> dict:
    worker = [str(HERE), "--worker", "--threads", str(threads), "--batch_size", str(args.batch_size),
              "--steps", str(args.steps), "--warmup", str(args.warmup), "--preset", args.preset,
              "--device", args.device, "--mode", args.mode,
              "--out", os.path.join(tempfile.gettempdir(), "fastgan-ddp-bench-unused")]
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), *worker]
           if procs > 1 else [sys.executable, *worker])
    before = _load()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)},
                       timeout=1800)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if r.returncode or line is None:
        raise SystemExit(f"run failed ({r.returncode}): {(r.stdout + r.stderr)[-2000:]}")
    return {**json.loads(line[len("RESULT "):]), "load_before": before, "load_after": _load()}


def main(argv: Optional[list[str]] = None) -> int:
    """Run the comparison (or, with ``--worker``, one timed run) and print the medians.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="cpu (gloo) or cuda (NCCL)")
    p.add_argument("--nproc", type=int, default=2, help="processes of the data-parallel variant (default 2)")
    p.add_argument("--preset", default=None, help="benchmark preset (default: dcgan16 on cpu, dcgan64 on cuda)")
    p.add_argument("--batch_size", type=int, default=None, help="global batch (default: 64 on cpu, 512 on cuda)")
    p.add_argument("--mode", default=None, help="engine mode (default: eager on cpu, fast on cuda)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the variants (default 3)")
    p.add_argument("--steps", type=int, default=30, help="timed iterations per run (default 30)")
    p.add_argument("--warmup", type=int, default=15, help="untimed iterations first (default 15: graph capture "
                   "with DDP warms up 11)")
    p.add_argument("--json", default=None, help="write the runs and medians to this JSON file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    cuda = args.device == "cuda"
    args.preset = args.preset or ("dcgan64" if cuda else "dcgan16")
    args.batch_size = args.batch_size or (512 if cuda else 64)
    args.mode = args.mode or ("fast" if cuda else "eager")
    if args.worker:
        _worker(args)
        return 0
    import torch

    variants = [(1, 1), (args.nproc, 1)] if cuda else [(1, 1), (1, 2), (args.nproc, 1)]
    runs: list[dict] = []
    for _ in range(args.rounds):
        for procs, threads in variants:
            runs.append(_run(procs, threads, args))
            print(json.dumps(runs[-1]), flush=True)
    summary = {}
    for procs, threads in variants:
        mine = [r for r in runs if (r["processes"], r["threads"]) == (procs, threads)]
        key = f"{procs}proc_x{threads}thread"
        summary[key] = {k: statistics.median(r[k] for r in mine) for k in ("ms_per_step", "images_per_s")}
        if procs > 1:
            summary[key].update({k: statistics.median(r[k] for r in mine)
                                 for k in ("allreduce_ms_per_step", "comm_share")})
    result = {"command": "python bench/ddp_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "torch": torch.__version__, "cpus": os.cpu_count(), "device": args.device, "preset": args.preset,
              "global_batch": args.batch_size, "mode": args.mode, "steps": args.steps, "median": summary,
              "runs": runs}
    print(json.dumps(summary, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
