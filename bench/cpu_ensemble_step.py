"""CPU cost per trained GAN of a 2-D step: standalone Trainer runs against MLP ensembles.

Times ``Trainer.run_steps`` on ``grid25`` with fastgan's defaults, one thread
per process, as ``bench/quality.py`` runs it: ``--procs`` processes at once
(one per core), each training either one standalone GAN or an ensemble of
``E`` (``fastgan.models.ensemble``, batch ``E * 512``). Every process reports
milliseconds per member-step (one step of one GAN); the forms run one after
the other, so the host's drift between them is not controlled: repeat it.

    python bench/cpu_ensemble_step.py --out bench/results/cpu-ensemble-step.json
    python bench/cpu_ensemble_step.py --members 1,3,5,10 --steps 1500

``effective_ms`` is the member-step cost with all processes' work counted:
the median per-process figure divided by ``--procs``. With ``--procs 1`` the
one worker runs in this process.

    python bench/cpu_ensemble_step.py --inplace-ab --out bench/results/cpu-ensemble-inplace.json

times instead, in one process, two five-member ensembles in interleaved
bursts, one activating its matrix products in place (fastgan's path) and one
not, checks that they trained bit-identically, and reports both medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time


def _worker(members: int, steps: int, data: str) -> float:
    """Milliseconds per member-step of ``steps`` member-steps (after a short warm-up)."""
    import torch

    import fastgan

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="fastgan-ens-step-") as out:
        if members == 1:
            trainer = fastgan.Trainer(fastgan.TrainConfig(data=data, out=out, seed=0, progress=False, device="cpu",
                                                          sample_every=0, ckpt_every=0), resume=False)
        else:
            trainer = _make_ensemble(members, data, out)
        trainer.run_steps(8)
        n = max(steps // members, 4)
        t0 = time.perf_counter()
        trainer.run_steps(n)
        return (time.perf_counter() - t0) / (n * members) * 1e3


def _make_ensemble(members: int, data: str, out: str):
    import dataclasses

    import fastgan
    from fastgan.data import load_data
    from fastgan.models import build_point_ensemble

    cfg = fastgan.TrainConfig(data=data, out=out, seed=0, progress=False, device="cpu", sample_every=0,
                              ckpt_every=0).resolved(points=True)
    G, D = build_point_ensemble(cfg, range(members), point_scale=load_data(data).scale)
    return fastgan.Trainer(dataclasses.replace(cfg, batch_size=cfg.batch_size * members),
                           generator=G, discriminator=D, resume=False)


def _inplace_ab(members: int, rounds: int, burst: int, data: str) -> dict:
    """Interleaved bursts of two ensembles, activations in place or not; ms per member-step."""
    import torch

    import fastgan.models.ensemble as ens

    torch.set_num_threads(1)
    act_ref, use_inplace = ens.act_ref, {"on": True}
    ens.act_ref = lambda x, act, alpha, inplace=False: act_ref(x, act, alpha, inplace and use_inplace["on"])
    times: dict[str, list[float]] = {"inplace": [], "out_of_place": []}
    try:
        with tempfile.TemporaryDirectory(prefix="fastgan-ens-ab-") as out:
            trainers = {k: _make_ensemble(members, data, f"{out}/{k}") for k in times}
            for r in range(rounds + 1):                      # round 0 warms up
                for k, tr in trainers.items():
                    use_inplace["on"] = k == "inplace"
                    t0 = time.perf_counter()
                    tr.run_steps(burst)
                    if r:
                        times[k].append((time.perf_counter() - t0) / (burst * members) * 1e3)
            same = all(torch.equal(a, b) for k in ("G", "D", "G_ema") for a, b in
                       zip(getattr(trainers["inplace"], k).parameters(),
                           getattr(trainers["out_of_place"], k).parameters()))
    finally:
        ens.act_ref = act_ref
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"members": members, "median_ms": {k: round(v, 3) for k, v in med.items()},
            "speedup": round(med["out_of_place"] / med["inplace"], 3), "bit_identical": same,
            "ms": {k: [round(x, 3) for x in v] for k, v in times.items()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--members", default="1,5", help="comma-separated ensemble sizes, 1 = standalone (default 1,5)")
    p.add_argument("--procs", type=int, default=2, help="processes running at once (default 2: one per core)")
    p.add_argument("--steps", type=int, default=1200, help="member-steps timed per process (default 1200)")
    p.add_argument("--data", default="grid25", help="point dataset (default grid25)")
    p.add_argument("--out", default=None, help="JSON file for the results (default: print only)")
    p.add_argument("--inplace-ab", action="store_true",
                   help="time in-place against out-of-place ensemble activations in one process instead")
    p.add_argument("--rounds", type=int, default=12, help="timed bursts per form with --inplace-ab (default 12)")
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is not None:
        print(json.dumps({"ms": _worker(args.worker, args.steps, args.data)}))
        return 0
    try:
        sizes = [int(s) for s in args.members.split(",") if s.strip()]
    except ValueError:
        p.error(f"--members expects comma-separated integers, got {args.members!r}")
    if not sizes or min(sizes) < 1 or args.procs < 1 or args.steps < 1:
        p.error("--members, --procs and --steps must be positive")

    import torch

    import fastgan
    from fastgan.benchmark import environment, write_results
    from fastgan.benchmark_telemetry import Telemetry

    cpu = torch.device("cpu")
    if args.inplace_ab:
        if args.rounds < 1:
            p.error("--rounds must be positive")
        members = max(sizes)
        res = _inplace_ab(members, args.rounds, max(args.steps // (members * args.rounds), 1), args.data)
        print(f"members={members}: in place {res['median_ms']['inplace']:.2f} ms, out of place "
              f"{res['median_ms']['out_of_place']:.2f} ms per member-step (x{res['speedup']:.2f}); "
              f"bit-identical: {res['bit_identical']}")
        if args.out:
            write_results({"benchmark": "MLP ensemble activations in place vs out of place (interleaved)",
                           "data": args.data, "results": res, "env": environment(cpu, Telemetry(cpu)),
                           "fastgan": fastgan.__version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}, args.out)
            print(f"wrote {args.out}")
        return 0 if res["bit_identical"] else 1

    results = {}
    for e in sizes:
        if args.procs == 1:   # nothing runs beside it: this process is the worker
            ms = [_worker(e, args.steps, args.data)]
        else:
            cmd = [sys.executable, __file__, "--worker", str(e), "--steps", str(args.steps), "--data", args.data]
            procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(args.procs)]
            outs = [pr.communicate()[0] for pr in procs]
            if any(pr.returncode for pr in procs):
                print(f"a worker for members={e} failed", file=sys.stderr)
                return 1
            ms = [json.loads(o.strip().splitlines()[-1])["ms"] for o in outs]
        med = statistics.median(ms)
        results[str(e)] = {"per_process_ms": [round(m, 3) for m in ms], "median_ms": round(med, 3),
                           "effective_ms": round(med / args.procs, 3)}
        print(f"members={e:<3} per process {', '.join(f'{m:.2f}' for m in ms)} ms per member-step; "
              f"effective {med / args.procs:.2f} ms with {args.procs} processes", flush=True)
    base = results.get("1")
    if base:
        for r in results.values():
            r["speedup_vs_standalone"] = round(base["median_ms"] / r["median_ms"], 3)
    if args.out:
        record = {"benchmark": "2-D step cost per trained GAN: standalone vs MLP ensembles", "data": args.data,
                  "procs": args.procs, "member_steps_per_process": args.steps, "results": results,
                  "env": environment(cpu, Telemetry(cpu)), "fastgan": fastgan.__version__,
                  "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_results(record, args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
