"""What ``fastgan bench`` makes of its results: the headline, the table, the JSON files, the --compare gate."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

from .errors import ConfigError
from .files import atomic_write

DEFAULT_THRESHOLD = 0.10


def add_speedups(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Set ``speedup_vs_best_plain`` on every timed result; return the headline per preset and batch.

    The headline compares fastgan's fastest recipe with the fastest plain-PyTorch
    recipe of the same run, and says whether every timed recipe trained the
    same networks (equal :func:`~fastgan.benchmark_context.network_signature`).

    Args:
        results: result records of one run (changed in place).
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in results:
        if r["status"] == "ok":
            groups.setdefault((r["preset"], r["batch_size"]), []).append(r)
    headline = []
    for (preset, batch), rs in groups.items():
        plain = min((r for r in rs if r.get("plain")), key=lambda r: r["ms_per_step"]["median"], default=None)
        ours = min((r for r in rs if not r.get("plain")), key=lambda r: r["ms_per_step"]["median"], default=None)
        for r in rs:
            if plain is not None:
                r["speedup_vs_best_plain"] = plain["ms_per_step"]["median"] / r["ms_per_step"]["median"]
        entry: dict[str, Any] = {
            "preset": preset, "batch_size": batch,
            "same_networks": len({r["networks"]["digest"] for r in rs if "networks" in r}) <= 1,
            "fastest_fastgan": None if ours is None else ours["recipe"],
            "fastest_fastgan_ms": None if ours is None else ours["ms_per_step"]["median"],
            "fastest_plain": None if plain is None else plain["recipe"],
            "fastest_plain_ms": None if plain is None else plain["ms_per_step"]["median"],
            "speedup": None if ours is None or plain is None else
            plain["ms_per_step"]["median"] / ours["ms_per_step"]["median"]}
        headline.append(entry)
    return headline


def _fmt(v: Optional[float], spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def progress_line(r: dict[str, Any]) -> str:
    """One line on stderr per finished recipe.

    Args:
        r: a result record.
    """
    head = f"[bench] {r['preset']} b{r['batch_size']} {r['recipe']}"
    if r["status"] != "ok":
        return f"{head}: {r['status']}: {r['reason']}"
    return f"{head}: {r['ms_per_step']['median']:.3f} ms/step"


def format_table(report: dict[str, Any]) -> str:
    """The results as a fixed-width text table (one row per recipe and batch).

    Args:
        report: a report from :func:`run_benchmark` or :func:`read_results`.
    """
    env = report["env"]
    head = (f"fastgan bench on {env.get('device_name')} (torch {env.get('torch')}, triton {env.get('triton')}, "
            f"CUDA {env.get('cuda')}, driver {env.get('driver')})")
    cols = ("preset", "batch", "recipe", "ms/step", "min-max", "img/s", "TFLOP/s", "peak MiB", "W", "J/step",
            "MHz", "vs plain")
    rows = []
    for r in report["results"]:
        if r["status"] != "ok":
            rows.append((r["preset"], str(r["batch_size"]), r["recipe"], f"{r['status']}: {r['reason']}"))
            continue
        ms = r["ms_per_step"]
        rows.append((r["preset"], str(r["batch_size"]), r["recipe"], f"{ms['median']:.3f}",
                     f"{ms['min']:.3f}-{ms['max']:.3f}", _fmt(r.get("images_per_s"), ",.0f"),
                     _fmt(r.get("tflops"), ".3g"), _fmt(r.get("peak_mem_mb"), ",.0f"),
                     _fmt(r.get("power_w"), ".0f"), _fmt(r.get("energy_j_per_step"), ".3f"),
                     _fmt(r.get("sm_clock_mhz"), ".0f"), _fmt(r.get("speedup_vs_best_plain"), ".2f") + "x"
                     if r.get("speedup_vs_best_plain") else "-"))
    full = [row for row in rows if len(row) == len(cols)]
    widths = [max([len(c)] + [len(row[i]) for row in (rows if i < 3 else full)]) for i, c in enumerate(cols)]
    lines = [head, "  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip()]
    for row in rows:
        if len(row) == len(cols):
            lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
        else:
            lines.append("  ".join(v.ljust(w) for v, w in zip(row[:3], widths)) + "  " + row[3])
    lines += [headline_line(h) for h in report.get("headline", [])]
    return "\n".join(lines)


def headline_line(h: dict[str, Any]) -> str:
    """One line: fastgan's fastest recipe against the fastest plain one for a preset and batch.

    Args:
        h: an entry of a report's ``headline`` list.
    """
    head = f"headline {h['preset']} b{h['batch_size']}: "
    if h["speedup"] is None:
        return head + "no ratio (fastgan or plain PyTorch had no timed recipe)"
    text = (f"{h['fastest_fastgan']} {h['fastest_fastgan_ms']:.3f} ms vs {h['fastest_plain']} "
            f"{h['fastest_plain_ms']:.3f} ms: {h['speedup']:.2f}x")
    return head + text + ("" if h["same_networks"] else "  WARNING: the recipes trained different networks")


def write_results(report: dict[str, Any], path: str) -> None:
    """Write a report as JSON (folders created; atomically, so a reader never sees half a file).

    Args:
        report: the report dict.
        path: destination file.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(p, json.dumps(report, indent=2, default=str) + "\n")


def read_results(path: str) -> dict[str, Any]:
    """Read a report written by :func:`write_results`, with a clear error when it is not one.

    Args:
        path: the JSON file.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"no benchmark results at '{path}'")
    try:
        report = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"'{path}' is not valid JSON ({getattr(e, 'msg', e)})") from None
    if not isinstance(report, dict) or not isinstance(report.get("results"), list):
        raise ConfigError(f"'{path}' is not a fastgan bench result file (no 'results' list)")
    return report


def compare(current: dict[str, Any], baseline: dict[str, Any],
            threshold: float = DEFAULT_THRESHOLD) -> tuple[list[str], list[str]]:
    """Compare median ms/step of recipes present (status ok) in both reports.

    Args:
        current: the new report.
        baseline: the stored baseline report.
        threshold: allowed slowdown as a fraction (0.10 = 10%).

    Returns:
        (regressions, lines): the keys that are slower than allowed, and
        printable lines describing every comparison.
    """
    def index(rep):
        return {(r["recipe"], r["preset"], r["batch_size"]): r["ms_per_step"]["median"]
                for r in rep["results"] if r.get("status") == "ok"}

    cur, base = index(current), index(baseline)
    common = sorted(set(cur) & set(base), key=lambda k: (k[1], k[2], k[0]))
    lines = [f"compare against baseline ({len(common)} recipe(s) in common, threshold +{threshold:.0%}):"]
    dev_now, dev_base = current.get("env", {}).get("device_name"), baseline.get("env", {}).get("device_name")
    if dev_now != dev_base:
        lines.append(f"  warning: baseline ran on {dev_base!r}, this run on {dev_now!r}")
    if not common:
        lines.append("  warning: no recipe in common; nothing compared")
    regressions = []
    for key in common:
        ratio = cur[key] / base[key]
        slow = ratio > 1.0 + threshold
        if slow:
            regressions.append("/".join(map(str, key)))
        lines.append(f"  {'REGRESSION' if slow else 'ok':10s} {key[1]} b{key[2]} {key[0]}: "
                     f"{cur[key]:.3f} ms vs {base[key]:.3f} ms ({ratio - 1.0:+.1%})")
    if regressions:
        lines.append(f"{len(regressions)} recipe(s) more than {threshold:.0%} slower than the baseline: "
                     + ", ".join(regressions))
    return regressions, lines
