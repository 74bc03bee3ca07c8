"""Sampling by class: label parsing and checks, trainer.sample(labels=), the CLI's --labels / --per_class,
class names from the data to the checkpoint and the ONNX file."""

import re

import numpy as np
import pytest
import torch

from fastgan import Trainer, load_generator
from fastgan.cli import main
from fastgan.errors import ConfigError
from fastgan.sampling import check_labels, default_class_names, parse_labels, per_class_labels
from helpers import tiny_images, trained_tiny_run


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
    """A conditional digits run of two steps (weights are whatever they are: the tests check plumbing)."""
    return trained_tiny_run(tmp_path_factory.mktemp("cond") / "run")


@pytest.fixture(scope="module")
def uncond_run(tmp_path_factory):
    return trained_tiny_run(tmp_path_factory.mktemp("uncond") / "run", conditional=False, steps=1)


# ----------------------------------------------------------------------------- parsing and checks
@pytest.mark.parametrize("spec, want", [
    ("3,3,7", [3, 3, 7]), (["3", "3", "7"], [3, 3, 7]), (["3,3", "7"], [3, 3, 7]), (" 4 ", [4]), (5, [5]),
])
def test_parse_labels_accepts_commas_and_spaces(spec, want):
    assert parse_labels(spec) == want


def test_parse_labels_reads_class_names_first():
    assert parse_labels("cat,dog,cat", ["bird", "cat", "dog"]) == [1, 2, 1]
    assert parse_labels("1", ["bird", "cat"]) == [1]                 # an index when no class has that name
    assert parse_labels("1", ["1", "0"]) == [0]                      # a class named "1" wins over index 1
    with pytest.raises(ConfigError, match="'cow' is neither a class index nor a class name; classes are bird"):
        parse_labels("cat,cow", ["bird", "cat"])
    with pytest.raises(ConfigError, match="comma-separated"):
        parse_labels("3,,7")


def test_check_labels_rejects_with_one_clear_message():
    assert check_labels(None, 5, 3).tolist() == [0, 1, 2, 0, 1]
    assert check_labels(2, 3, 3).tolist() == [2, 2, 2]
    for bad, needle in [([0, 3], r"labels must lie in \[0, 3\)"), ([-1, 0], "labels must lie"),
                        ([0, 1, 2], "expected 2 labels, got 3"), ([0.5, 1.0], "must be integers"),
                        ([True, False], "must be integers"), (["a", "b"], "must be integers")]:
        with pytest.raises(ConfigError, match=needle):
            check_labels(bad, 2, 3)
    with pytest.raises(ConfigError, match="not conditional"):
        check_labels([0], 1, 0)


def test_per_class_labels_and_default_names():
    assert per_class_labels(2, 3).tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ConfigError, match="unconditional"):
        per_class_labels(2, 0)
    with pytest.raises(ConfigError, match="positive integer"):
        per_class_labels(0, 3)
    assert default_class_names(3) == ["0", "1", "2"]
    names = default_class_names(12)
    assert names[:2] == ["00", "01"] and sorted(names) == names       # they sort as the labels do


# ----------------------------------------------------------------------------- API and class names
def test_trainer_sample_by_label_and_class_names_in_checkpoint(cond_run):
    tr = Trainer(tiny_images(cond_run, conditional=True, steps=2, ckpt_every=0))
    assert tr.step == 2 and tr.class_names == [str(i) for i in range(10)]
    a = tr.sample(4, labels=[3, 3, 7, 7], seed=1)
    assert a.shape == (4, 1, 16, 16)
    b = tr.sample(4, labels=[0, 0, 7, 7], seed=1)     # same noise: only the first two labels differ
    torch.testing.assert_close(a[2:], b[2:])
    assert not torch.equal(a[:2], b[:2])
    G = load_generator(cond_run)
    assert G.class_names == [str(i) for i in range(10)] and G.fastgan_checkpoint.endswith("step_00000002")
    assert load_generator(cond_run).num_classes == 10


# ----------------------------------------------------------------------------- CLI
def test_cli_labels_and_per_class(cond_run, tmp_path):
    out = tmp_path / "a.npz"
    assert main(["sample", "--run", str(cond_run), "--labels", "3,3,7", "--out", str(out)]) == 0
    with np.load(out) as f:
        assert f["samples"].shape == (3, 1, 16, 16) and f["labels"].tolist() == [3, 3, 7]
    assert main(["sample", "--run", str(cond_run), "--labels", "3", "7", "--out", str(out)]) == 0
    with np.load(out) as f:
        assert f["labels"].tolist() == [3, 7]
    assert main(["sample", "--run", str(cond_run), "--labels", "5", "--n", "4", "--out", str(out)]) == 0
    with np.load(out) as f:
        assert f["labels"].tolist() == [5] * 4
    assert main(["sample", "--run", str(cond_run), "--per_class", "2", "--out", str(out)]) == 0
    with np.load(out) as f:
        assert f["labels"].tolist() == [c for c in range(10) for _ in range(2)]
    from PIL import Image

    assert main(["sample", "--run", str(cond_run), "--per_class", "3", "--out", str(tmp_path / "g.png")]) == 0
    w, h = Image.open(tmp_path / "g.png").size          # one row per class: 3 images wide, 10 high
    assert (w, h) == (2 + 3 * 18, 2 + 10 * 18)


@pytest.mark.parametrize("args, needle", [
    (["--labels", "3,10"], r"labels must lie in \[0, 10\), got values from 3 to 10"),
    (["--labels", "-1"], "labels must lie in"),
    (["--labels", "3,3", "--n", "5"], "expected 5 labels, got 2"),
    (["--labels", "seven"], "'seven' is neither a class index nor a class name"),
    (["--labels", "3.5"], "'3.5' is neither a class index nor a class name"),
    (["--per_class", "2", "--n", "4"], "leave out --n and --labels"),
    (["--per_class", "0"], "--per_class must be a positive integer"),
])
def test_cli_bad_labels_are_one_clear_line(cond_run, tmp_path, capsys, args, needle):
    assert main(["sample", "--run", str(cond_run), *args, "--out", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fastgan: error: ") and len(err.splitlines()) == 1
    assert re.search(needle, err), err
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.parametrize("args, needle", [(["--labels", "1"], "not conditional"),
                                          (["--per_class", "2"], "unconditional"),
                                          (["--per_class", "2", "--out_dir"], "unconditional")])
def test_cli_labels_on_an_unconditional_generator(uncond_run, tmp_path, capsys, args, needle):
    out = str(tmp_path / "d") + "/" if "--out_dir" in args else str(tmp_path / "x.png")
    args = [a for a in args if a != "--out_dir"]
    assert main(["sample", "--run", str(uncond_run), *args, "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "d").exists()


# ----------------------------------------------------------------------------- ONNX
def test_onnx_carries_class_names_and_samples_by_label(cond_run, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from fastgan.export import OnnxGenerator, export_run
    from fastgan.sampling import generate

    path = tmp_path / "G.onnx"
    export_run(cond_run, path, verify=False)
    gen = OnnxGenerator(path, providers="cpu")
    assert gen.class_names == [str(i) for i in range(10)] and gen.metadata["class_names"] == gen.class_names
    assert gen.info.extra["source_step"] == "2"
    out = tmp_path / "o.npz"
    assert main(["sample", "--onnx", str(path), "--labels", "3,3,7", "--out", str(out)]) == 0
    G = load_generator(cond_run)
    want = generate(G, 3, z_dim=G.z_dim, seed=0, labels=[3, 3, 7], num_classes=10).numpy()
    with np.load(out) as f:
        assert f["labels"].tolist() == [3, 3, 7]
        np.testing.assert_allclose(f["samples"], want, atol=1e-5, rtol=0)
    assert main(["sample", "--onnx", str(path), "--labels", "12", "--out", str(out)]) == 2
    assert "labels must lie in [0, 10)" in capsys.readouterr().err


def test_class_names_of_a_labelled_folder_reach_the_onnx_file(tmp_path):
    pytest.importorskip("onnxruntime")
    from PIL import Image

    from fastgan.export import OnnxGenerator, export_run

    rng = np.random.default_rng(0)
    for name in ("circle", "square"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(tmp_path / "data" / name / f"{i}.png")
    run = tmp_path / "run"
    Trainer(tiny_images(run, data=str(tmp_path / "data"), conditional=True, steps=1, ckpt_every=0)).fit()
    assert load_generator(run).class_names == ["circle", "square"]
    export_run(run, tmp_path / "G.onnx", verify=False)
    assert OnnxGenerator(tmp_path / "G.onnx", providers="cpu").class_names == ["circle", "square"]
    out = tmp_path / "s.npz"
    assert main(["sample", "--run", str(run), "--labels", "square,circle", "--out", str(out)]) == 0
    with np.load(out) as f:
        assert f["labels"].tolist() == [1, 0]
