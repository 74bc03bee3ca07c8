"""`fastgan info`: the report a bug report starts with; every yes / no comes from the engine's own plan."""

import json
import subprocess
import sys
import types

import pytest
import torch

import fastgan.kernels
from fastgan import ConfigError, TrainConfig
from fastgan.cli import main
from fastgan.engine_plan import resolve_plan
from fastgan.info import collect, format_text

CPU = torch.device("cpu")
needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the report of a machine without CUDA")


def _refusal(device=CPU, **fields):
    with pytest.raises(ConfigError) as e:
        resolve_plan(TrainConfig(**fields), device)
    return str(e.value)


@needs_no_cuda
def test_text_report_on_a_cpu_machine(capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert main(["info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    text = "\n".join(lines)
    assert f"torch {torch.__version__}" in text and "python 3." in text and "onnxruntime " in text
    assert "no CUDA device" in text
    assert f"torch {torch.get_num_threads()} intra-op" in text and "OMP_NUM_THREADS=3" in text

    def row(name):  # "modes        eager    yes  ..." or "             fp16  no   ..."
        return next(line for line in lines if name in line.split()[:2])

    assert " yes  eager, fp32" in row("eager")
    # graph mode and fp16 need CUDA: the "why not" is the engine's own refusal, word for word
    assert row("graph").endswith("no   " + _refusal(mode="graph"))
    assert row("fp16").endswith("no   " + _refusal(amp="fp16"))
    assert "bf16  yes" in row("bf16")
    fast = resolve_plan(TrainConfig(mode="fast"), CPU)
    assert lines[-2] == f"{'--mode fast':<12} {fast.summary()}"
    assert lines[-1].strip() == fast.notes[0]


def test_json_report_matches_the_engine(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["versions"]["torch"] == torch.__version__
    assert info["versions"]["fastgan"] == fastgan.__version__
    assert info["threads"]["intra_op"] == torch.get_num_threads()
    dev = torch.device(info["device"])
    assert info["fast"]["plan"] == resolve_plan(TrainConfig(mode="fast"), dev).summary()
    for section, field in (("modes", "mode"), ("amp", "amp")):
        for name, entry in info[section].items():
            try:
                plan = resolve_plan(TrainConfig(**{field: name}), dev)
            except ConfigError as e:
                assert entry == {"ok": False, "why_not": str(e)}, name
            else:
                assert entry["ok"] and entry["plan"] == plan.summary(), name
    assert info["kernels"]["ref"]["ok"]
    if not torch.cuda.is_available():
        assert info["cuda"]["devices"] == [] and info["cuda"]["why_none"]
        assert not info["modes"]["graph"]["ok"] and not info["amp"]["fp16"]["ok"]


def test_interpreter_row_says_how_to_turn_it_on(monkeypatch):
    # the engine reads these flags when it resolves kernels: without the interpreter, it refuses Triton on a CPU
    monkeypatch.setattr(fastgan.kernels, "TRITON_INTERPRETED", False)
    row = collect("cpu")["kernels"]["triton-interpreter"]
    assert not row["ok"] and "TRITON_INTERPRET=1" in row["why_not"]
    assert row["why_not"] == _refusal(kernels="triton")
    monkeypatch.setattr(fastgan.kernels, "TRITON_INTERPRETED", fastgan.kernels.HAS_TRITON)
    assert collect("cpu")["kernels"]["triton-interpreter"]["ok"] == fastgan.kernels.HAS_TRITON


def test_a_gpu_without_bf16_is_reported_with_the_engines_reasons(monkeypatch):
    props = types.SimpleNamespace(name="Fake T4", major=7, minor=5, total_memory=15 * 2**30)
    for name, value in (("is_available", lambda: True), ("device_count", lambda: 1),
                        ("get_device_properties", lambda i: props), ("get_device_capability", lambda d=None: (7, 5)),
                        ("get_device_name", lambda d=None: "Fake T4")):
        monkeypatch.setattr(torch.cuda, name, value)
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90100)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    info = collect("cuda")
    text = format_text(info)
    assert "cuda:0  Fake T4, capability 7.5, 15.0 GiB" in text
    assert "torch built for CUDA 12.8, cuDNN 90100" in text
    cuda = torch.device("cuda")
    assert info["amp"]["bf16"] == {"ok": False, "why_not": _refusal(cuda, amp="bf16")}
    assert "Fake T4 is 7.5" in info["amp"]["bf16"]["why_not"]
    assert info["amp"]["fp16"]["ok"]
    assert info["fast"]["plan"] == resolve_plan(TrainConfig(mode="fast"), cuda).summary()
    assert "fp16" in info["fast"]["plan"] and any("7.5 < 8.0" in n for n in info["fast"]["notes"])


@needs_no_cuda
def test_unusable_device_is_one_line(capsys):
    assert main(["info", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastgan: error: device 'cuda'") and err.count("\n") == 1


def test_command_imports_nothing_heavy():
    # a fresh interpreter: `python -m fastgan info --json` parses, and the report loaded no trainer, plots or ONNX
    code = ("import json, sys, runpy; sys.argv = ['fastgan', 'info', '--json']\n"
            "try:\n    runpy.run_module('fastgan', run_name='__main__')\nexcept SystemExit as e:\n    rc = e.code\n"
            "heavy = ('fastgan.train', 'matplotlib', 'onnxruntime', 'onnx', 'scipy', 'sklearn', 'tensorboard')\n"
            "print(json.dumps([m for m in heavy if m in sys.modules]), file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["versions"]["torch"] == torch.__version__
    assert json.loads(r.stderr.strip().splitlines()[-1]) == []
