"""``fastgan info``: this machine, and what fastgan can run on it; the text a bug report starts with.

It reports versions, the platform and CPU, the CUDA devices, which engine
modes, kernel implementations and AMP types the checked device can run (and,
for each that it cannot, the engine's own refusal, word for word: every
answer comes from :func:`fastgan.engine_plan.resolve_plan`), the threads in
use, and the plan ``fastgan train --mode fast`` would choose here.

It imports torch and the kernels (Triton, to know whether its interpreter is
on), nothing heavier: no compilation, no network, no ONNX Runtime session;
package versions are read from the installed metadata.
"""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from typing import Any, Optional

from .cpu_threads import THREAD_ENV, usable_cores, user_chose_threads

# Installed distributions reported, in order; the first name found wins (nightly torch ships "pytorch-triton").
PACKAGES = (("torch",), ("triton", "pytorch-triton"), ("onnxruntime", "onnxruntime-gpu"), ("onnx",), ("numpy",))
KERNEL_ROWS = ("triton", "triton-interpreter", "ref")


def package_version(*names: str) -> Optional[str]:
    """The installed version of the first of ``names`` that is installed, or ``None``.

    Args:
        names: distribution names to try, in order.
    """
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo``, else what the platform module reports."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _cuda() -> dict[str, Any]:
    import torch

    devices = []
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        p = torch.cuda.get_device_properties(i)
        devices.append({"index": i, "name": p.name, "capability": f"{p.major}.{p.minor}",
                        "memory_gib": round(p.total_memory / 2**30, 1)})
    cudnn = torch.backends.cudnn.version() if devices else None
    if devices:
        why = None
    elif torch.version.cuda is None:
        why = "this torch is a CPU build"
    else:
        why = f"torch is built for CUDA {torch.version.cuda} but sees no device (driver, CUDA_VISIBLE_DEVICES?)"
    return {"torch_cuda": torch.version.cuda, "cudnn": cudnn, "devices": devices, "why_none": why}


def cpu_machine() -> str:
    """This machine as result files name it: CPU model and usable cores (e.g. ``AMD EPYC, 2 cores``)."""
    return f"{cpu_name()}, {usable_cores()} cores"


def _threads() -> dict[str, Any]:
    import torch

    backend = next((line.split(":", 1)[1].strip() for line in torch.__config__.parallel_info().splitlines()
                    if line.startswith("ATen parallel backend")), None)
    return {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads(),
            "backend": backend, "env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ},
            "train_policy": _train_thread_policy(torch.get_num_threads())}


def _train_thread_policy(threads: int) -> str:
    """How ``fastgan train`` picks its CPU threads here (see :mod:`fastgan.cpu_threads`)."""
    from .cpu_threads import machine_busy_seconds

    chosen = user_chose_threads()
    if chosen:
        return f"{threads} (fixed by {chosen})"
    if threads < 2 or machine_busy_seconds() is None:
        return f"{threads} (torch's count; nothing to adapt here)"
    return f"adaptive: {threads}, or 1 while other programs keep the cores busy (2-D data: 1)"


def _probe(device, **fields: Any) -> dict[str, Any]:
    """Ask the engine whether a config with ``fields`` runs on ``device``: its plan, or its refusal."""
    from .config import TrainConfig
    from .engine_plan import resolve_plan
    from .errors import ConfigError

    try:
        plan = resolve_plan(TrainConfig(**fields), device)
    except ConfigError as e:
        return {"ok": False, "why_not": str(e)}
    return {"ok": True, "plan": plan.summary(), "notes": list(plan.notes)}


def _capabilities(device) -> dict[str, dict[str, Any]]:
    """Engine modes, kernel implementations and AMP types on ``device``, each with its plan or refusal."""
    import torch

    from .config import AMPS, MODES

    modes = {m: _probe(device, mode=m) for m in MODES}
    amp = {a: _probe(device, amp=a) for a in AMPS if a != "none"}
    cpu = torch.device("cpu")
    # Compiled Triton kernels are the engine's "triton" on a CUDA device; the interpreter is its "triton" on the CPU.
    if device.type == "cuda":
        compiled = _probe(device, kernels="triton")
    else:
        compiled = {"ok": False, "why_not": f"no CUDA device checked ({device}); Triton compiles its kernels for GPUs"}
    kernels = {"triton": compiled, "triton-interpreter": _probe(cpu, kernels="triton"),
               "ref": _probe(device, kernels="ref")}
    return {"modes": modes, "kernels": kernels, "amp": amp}


def collect(device: str = "auto") -> dict[str, Any]:
    """Everything ``fastgan info`` reports, as a JSON-ready dict.

    Args:
        device: the device whose capabilities are checked (``auto``: what
            ``fastgan train`` uses by default).
    """
    from .config import TrainConfig
    from .engine_plan import resolve_device, resolve_plan
    from .version import __version__

    dev = resolve_device(device)
    versions = {"fastgan": __version__, "python": platform.python_version()}
    versions.update({names[0]: package_version(*names) for names in PACKAGES})
    fast = resolve_plan(TrainConfig(mode="fast"), dev)
    return {
        "versions": versions,
        "platform": {"os": platform.platform(), "machine": platform.machine(), "cpu": cpu_name(),
                     "cpu_count": os.cpu_count(), "usable_cpus": usable_cores()},
        "cuda": _cuda(),
        "threads": _threads(),
        "device": str(dev),
        **_capabilities(dev),
        "fast": {"plan": fast.summary(), "notes": list(fast.notes), "details": fast.to_dict()},
    }


def _rows(title: str, entries: dict[str, dict[str, Any]]) -> list[str]:
    width = max(map(len, entries))
    lines = []
    for i, (name, e) in enumerate(entries.items()):
        verdict = "yes" + (f"  {e['plan']}" if title == "modes" else "") if e["ok"] else f"no   {e['why_not']}"
        lines.append(f"{title if i == 0 else '':<12} {name:<{width}}  {verdict}")
    return lines


def format_text(info: dict[str, Any]) -> str:
    """The report as the lines ``fastgan info`` prints.

    Args:
        info: what :func:`collect` returned.
    """
    v, p, c, t = info["versions"], info["platform"], info["cuda"], info["threads"]
    missing = "not installed"
    lines = [
        f"{'fastgan':<12} {v['fastgan']}",
        f"{'versions':<12} " + ", ".join(f"{k} {v[k] or missing}" for k in v if k != "fastgan"),
        f"{'platform':<12} {p['os']}",
        f"{'cpu':<12} {p['cpu']} ({p['cpu_count']} logical cores, {p['usable_cpus']} usable)",
        f"{'cuda':<12} " + (", ".join(([f"torch built for CUDA {c['torch_cuda']}"] if c["torch_cuda"] else [])
                                      + ([f"cuDNN {c['cudnn']}"] if c["cudnn"] else [])) or "none"),
    ]
    if c["devices"]:
        lines += [f"{'devices' if i == 0 else '':<12} cuda:{d['index']}  {d['name']}, capability {d['capability']}, "
                  f"{d['memory_gib']} GiB" for i, d in enumerate(c["devices"])]
    else:
        lines.append(f"{'devices':<12} no CUDA device ({c['why_none']})")
    env = ", ".join(f"{k}={val}" for k, val in t["env"].items()) or "OMP_NUM_THREADS, MKL_NUM_THREADS unset"
    lines.append(f"{'threads':<12} torch {t['intra_op']} intra-op, {t['inter_op']} inter-op"
                 + (f" ({t['backend']})" if t["backend"] else "") + f"; {env}")
    lines.append(f"{'':<12} fastgan train on the CPU: {t['train_policy']}")
    lines.append(f"{'checked on':<12} {info['device']}")
    for title in ("modes", "kernels", "amp"):
        lines += _rows(title, info[title])
    lines.append(f"{'--mode fast':<12} {info['fast']['plan']}")
    lines += [f"{'':<12} {n}" for n in info["fast"]["notes"]]
    return "\n".join(lines)


def main(device: str = "auto", as_json: bool = False) -> int:
    """Print the report (``fastgan info``).

    Args:
        device: the device whose capabilities are checked.
        as_json: print JSON instead of text.

    Returns:
        0.
    """
    info = collect(device)
    print(json.dumps(info, indent=2) if as_json else format_text(info))
    return 0
