"""Checkpoints written by older code resume bit-exactly.

``tests/fixtures/old_run_<case>/`` holds a checkpoint at step 4 written before
the Trainer was split into loop, engine and task (see make_old_runs.py there);
``old_run_<case>_step8.json`` holds what that older code reached when it resumed
the same checkpoint to step 8: the SHA-256 of every network tensor and of the
loss buffer, and the logged losses. A few CPU kernels give other bits on another
instruction set, so ``also_seen`` adds what the older code reached on other
kinds of CPU (``make_old_runs.py --also-here``); the new code must reach, bit
for bit, one of those. On a kind of CPU that none of them saw, the tensors are
compared within a tolerance with the saved ones of a recorded kind.
"""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

import fastgan
from helpers import one_thread  # noqa: F401  (fixture)
from fastgan import TrainConfig, Trainer
from fastgan.checkpoint import latest_checkpoint, read_state

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
from make_old_runs import CASES, FULL, PART, logged_losses, network_tensors, tensor_sha256  # noqa: E402


def _copy_run(case: str, tmp_path: Path) -> Path:
    run = tmp_path / case
    shutil.copytree(FIXTURES / f"old_run_{case}", run)
    return run


def _assert_tensors_as_the_old_code(run: Path, case: str, ref: dict) -> dict:
    """Check the resumed run against the old code's result on this kind of CPU; returns that result."""
    flat = network_tensors(run)
    got = {k: tensor_sha256(v) for k, v in flat.items()}
    got["stats"] = tensor_sha256(read_state(latest_checkpoint(run))["stats"])  # the saved loss-buffer layout
    assert sorted(got) == sorted(ref["tensors"])
    seen = [ref] + ref.get("also_seen", [])
    here = torch.backends.cpu.get_cpu_capability()
    match = next((s for s in seen if s["tensors"] == got), None)
    if match is not None:
        return match
    kinds = {s["cpu_capability"] for s in ref.get("also_seen", [])}
    differ = [k for k in ref["tensors"] if got[k] != ref["tensors"][k]]
    assert kinds and here not in kinds, (f"{len(differ)} tensors differ from the old code's on this CPU kind "
                                         f"({here}), e.g. {differ[:3]}")
    from safetensors.torch import load_file   # a CPU kind no reference saw: the same within float noise

    kind = sorted(kinds)[0]
    saved = load_file(str(FIXTURES / f"old_run_{case}_step{FULL}_{kind}.safetensors"))
    for k, v in saved.items():
        torch.testing.assert_close(flat[k], v, rtol=1e-3, atol=1e-5, msg=lambda m: f"{k}: {m}")
    return None


@pytest.mark.parametrize("case", sorted(CASES))
def test_old_checkpoint_resumes_bit_exactly(case, tmp_path, one_thread):
    run = _copy_run(case, tmp_path)
    ref = json.loads((FIXTURES / f"old_run_{case}_step{FULL}.json").read_text())
    saved = json.loads((run / "config.json").read_text())
    tr = Trainer(TrainConfig.from_dict(dict(saved, out=str(run), steps=FULL)))  # as `fastgan train --steps 8`
    assert tr.step == PART
    # saved before digits_upscale existed: the digits keep their plain bicubic upscaling
    assert tr.cfg.digits_upscale == ("bicubic" if saved["data"] == "digits" else None)
    tr.fit()
    assert tr.step == ref["step"] == FULL
    match = _assert_tensors_as_the_old_code(run, case, ref)
    logged = logged_losses(tr.history)
    if match is not None:
        assert logged == match["logged"]
    else:
        assert [r["step"] for r in logged] == [r["step"] for r in ref["logged"]]


def test_old_checkpoint_loads_as_a_generator(tmp_path):
    G = fastgan.load_generator(FIXTURES / "old_run_digits")
    assert G.num_classes == 10 and tuple(G.out_shape) == (1, 16, 16)
    x = G(torch.randn(3, G.z_dim), torch.tensor([0, 1, 2]))
    assert x.shape == (3, 1, 16, 16) and torch.isfinite(x).all()


def test_old_digits_run_continues_from_the_command_line_on_its_own_settings(tmp_path, one_thread):
    from fastgan.cli import main

    run = _copy_run("digits_bn", tmp_path)    # saved with DCGAN's settings, before digits had their own
    assert main(["train", "--data", "digits", "--out", str(run), "--steps", str(FULL)]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["steps"], cfg["lr_g"], cfg["beta1"], cfg["r1_gamma"], cfg["digits_upscale"]) == (
        FULL, 2e-4, 0.5, 0.0, "bicubic")
    _assert_tensors_as_the_old_code(run, "digits_bn",
                                    json.loads((FIXTURES / f"old_run_digits_bn_step{FULL}.json").read_text()))
