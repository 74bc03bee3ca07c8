"""Deploying translators: the CLI (train --task, translate, export), the Python API, ONNX parity."""

import numpy as np
import pytest
import torch
from PIL import Image

import fastgan
from fastgan.cli import main
from fastgan.export import OnnxTranslator, export_translator
from fastgan.errors import DataError
from fastgan.models import UNetGenerator
from helpers import one_thread  # noqa: F401  (a fixture)
from translation_helpers import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def flags(cfg, **kw):
    d = {**{k: v for k, v in cfg.to_dict().items() if v is not None}, **kw}
    out = []
    for k, v in d.items():
        out += [f"--{k}" if v else f"--no-{k}"] if isinstance(v, bool) else [f"--{k}", str(v)]
    return out


def test_cli_trains_continues_translates_and_exports(tmp_path, capsys):
    cfg = tiny_config(tmp_path, "cyclegan", steps=2, ckpt_every=0)
    assert main(["train", *flags(cfg)]) == 0
    assert "trained to step 2" in capsys.readouterr().out
    run = cfg.out
    assert main(["train", "--out", run, "--steps", "3", "--no-progress"]) == 0   # a translation run continues
    captured = capsys.readouterr()
    assert "continuing run" in captured.err and "trained to step 3" in captured.out
    # translate through PyTorch, both directions
    assert main(["translate", "--run", run, "--input", cfg.data, "--out", str(tmp_path / "ab")]) == 0
    assert main(["translate", "--run", run, "--input", cfg.data_b + "/img0.png", "--out", str(tmp_path / "ba"),
                 "--direction", "BtoA"]) == 0
    assert sorted(p.name for p in (tmp_path / "ab").iterdir()) == [f"img{i}.png" for i in range(8)]
    assert [p.name for p in (tmp_path / "ba").iterdir()] == ["img0.png"]
    # export the BtoA generator; parity is checked at three shapes before anything is written
    onnx_path = tmp_path / "G_BA.onnx"
    assert main(["export", "--run", run, "--out", str(onnx_path), "--direction", "BtoA"]) == 0
    assert "height and width dynamic" in capsys.readouterr().out
    assert main(["translate", "--onnx", str(onnx_path), "--input", cfg.data_b + "/img0.png",
                 "--out", str(tmp_path / "ba_onnx")]) == 0
    torch_png = np.asarray(Image.open(tmp_path / "ba" / "img0.png"), dtype=np.int16)
    onnx_png = np.asarray(Image.open(tmp_path / "ba_onnx" / "img0.png"), dtype=np.int16)
    assert np.abs(torch_png - onnx_png).max() <= 1            # the same images to 1/255
    # the Python equivalents
    G = fastgan.load_translator(run, "BtoA")
    assert (G.direction, G.task, G.resolution, G.in_channels) == ("BtoA", "cyclegan", 16, 3)
    written = fastgan.translate(run, [cfg.data_b + "/img1.png"], tmp_path / "py", direction="BtoA", resolution=32)
    assert Image.open(written[0]).size == (32, 32)             # fully convolutional: another size works


def test_cli_ctrl_c_stops_with_status_3_and_the_run_continues(tmp_path, capsys, monkeypatch):
    import os
    import signal

    import fastgan.cli_common as cli_mod
    from fastgan.cli import EXIT_STOPPED

    real = cli_mod.announce_start

    def arm(trainer, out, saved):   # the CLI builds the Trainer: a Ctrl-C after its first step
        after = trainer.task.after_iteration

        def hook():
            after()
            if trainer.step == 1:
                os.kill(os.getpid(), signal.SIGINT)
        trainer.task.after_iteration = hook
        real(trainer, out, saved)
    monkeypatch.setattr(cli_mod, "announce_start", arm)
    cfg = tiny_config(tmp_path, "pix2pix", steps=3, ckpt_every=0)
    assert main(["train", *flags(cfg)]) == EXIT_STOPPED
    assert "stopped by SIGINT at step 1 of 3" in capsys.readouterr().err
    monkeypatch.setattr(cli_mod, "announce_start", real)
    assert main(["train", "--out", cfg.out, "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "continuing run" in captured.err and "from step 1" in captured.err and "trained to step 3" in captured.out


def test_pix2pix_generator_exports_with_dynamic_batch_and_size(tmp_path):
    G = UNetGenerator(1, 3, 16, width=4)
    report = export_translator(G, tmp_path / "u.onnx", resolution=16, task="pix2pix")
    assert set(report.max_abs_diff) == {"1x16x16", "3x16x32", "2x16x32"} and report.worst_diff < 1e-4
    model = OnnxTranslator(tmp_path / "u.onnx")
    x = torch.rand(5, 1, 32, 48) * 2 - 1                       # a batch and a size it was not traced at
    with torch.no_grad():
        want = G.eval()(x).numpy()
    assert np.abs(model.run(x) - want).max() < 1e-4
    with pytest.raises(DataError, match="multiples of 16"):
        model.run(np.zeros((1, 1, 20, 16), np.float32))


@pytest.mark.parametrize("argv,message", [
    (["train", "--task", "style"], "unknown task 'style'"),
    (["translate", "--run", "nowhere", "--input", ".", "--out", "o"], "no run or checkpoint at 'nowhere'"),
    (["export", "--run", "nowhere", "--out", "g.onnx"], "nowhere"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, argv, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0 and err.startswith("fastgan: error:")


def test_translate_refuses_bad_inputs(tmp_path):
    cfg = tiny_config(tmp_path, "pix2pix", steps=1, ckpt_every=0)
    fastgan.Trainer(cfg).fit()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        fastgan.translate(cfg.out, tmp_path / "empty", tmp_path / "o")
    with pytest.raises(fastgan.ConfigError, match="has no 'BtoA' generator"):
        fastgan.load_translator(cfg.out, "BtoA")
    with pytest.raises(fastgan.ConfigError, match="multiple of 16"):
        fastgan.translate(cfg.out, cfg.data, tmp_path / "o", resolution=24)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image"):
        fastgan.translate(cfg.out, tmp_path / "bad.png", tmp_path / "o")
    with pytest.raises(fastgan.ConfigError, match="open an ONNX file first"):
        fastgan.translate(str(tmp_path / "G.onnx"), cfg.data, tmp_path / "o")


def test_torchrun_is_refused_in_one_line_before_any_process_group(tmp_path, monkeypatch, capsys):
    cfg = tiny_config(tmp_path, "pix2pix", steps=2)
    for rank in (0, 1):
        for name, value in (("WORLD_SIZE", "2"), ("RANK", str(rank)), ("LOCAL_RANK", str(rank))):
            monkeypatch.setenv(name, value)
        assert main(["train", *flags(cfg)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        if rank == 0:
            assert len(err) == 1 and err[0].startswith("fastgan: error: pix2pix trains in one process"), err
        else:
            assert err == []   # every rank raises it; rank 0 says it
    assert not torch.distributed.is_initialized() and not (tmp_path / "run").exists()
    with pytest.raises(fastgan.errors.ConfigError, match="cyclegan trains in one process"):
        fastgan.Trainer(tiny_config(tmp_path, "cyclegan"), distributed=True)
