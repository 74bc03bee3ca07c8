"""Synthetic dataset export: image-folder layout, manifest, interrupted exports resumed, refusals."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fastgan.cli import main
from fastgan.dataset_export import (DatasetSource, class_noise, export_dataset, read_manifest, run_source)
from fastgan.errors import ConfigError, DataError
from helpers import trained_tiny_run


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
    return trained_tiny_run(tmp_path_factory.mktemp("ds") / "run")


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def _toy_source(calls=None, fail_after=None, names=("a", "b", "c")):
    """A 3-class generator whose image is a function of (z, label): cheap and deterministic."""
    def generate(z, labels):
        if calls is not None:
            calls.append(len(z))
            if fail_after is not None and len(calls) > fail_after:
                raise KeyboardInterrupt
        v = torch.tanh(z[:, :1, None, None] + labels[:, None, None, None].float())     # (B, 1, 1, 1)
        return v.expand(len(z), 1, 8, 8)

    return DatasetSource(3, list(names), 4, (1, 8, 8), {"kind": "toy"}, generate)


def test_layout_and_manifest_from_a_run(cond_run, tmp_path):
    out = tmp_path / "synthetic"
    assert main(["sample", "--run", str(cond_run), "--per_class", "3", "--seed", "5", "--out", f"{out}/"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [str(i) for i in range(10)] + ["manifest.json"]
    for c in range(10):
        files = sorted((out / str(c)).iterdir())
        assert [p.name for p in files] == ["00000.png", "00001.png", "00002.png"]
        with Image.open(files[0]) as im:
            assert im.size == (16, 16) and im.mode == "L"
    m = read_manifest(out)
    assert m["source"]["kind"] == "run" and m["source"]["step"] == 2
    assert m["source"]["checkpoint"] == "step_00000002" and m["source"]["ema"] is True
    assert m["seed"] == 5 and m["per_class"] == 3 and m["total"] == 30
    assert m["class_names"] == [str(i) for i in range(10)] and m["counts"] == {str(i): 3 for i in range(10)}
    assert m["image_shape"] == [1, 16, 16] and m["files"] == "{class_name}/{index:05d}.png"
    assert not list(tmp_path.glob(".*"))          # no partial folder left behind
    # what an image-folder loader does: classes = sorted sub-folders, label = class index
    classes = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert classes == m["class_names"]
    # image i of class c is G(z_c[i], c): the same as sampling that noise by hand
    from fastgan import load_generator

    G = load_generator(cond_run)
    with torch.no_grad():
        x = G(class_noise(5, 7, 3, G.z_dim), torch.full((3,), 7))
    want = np.clip(np.rint((x.numpy() + 1) * 127.5), 0, 255).astype(np.uint8)[2, 0]
    np.testing.assert_array_equal(np.asarray(Image.open(out / "7" / "00002.png")), want)


def test_rerun_of_a_finished_export_does_nothing_and_others_are_refused(cond_run, tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["sample", "--run", str(cond_run), "--per_class", "2", "--out", f"{out}/"]) == 0
    before = _files(out)
    capsys.readouterr()
    assert main(["sample", "--run", str(cond_run), "--per_class", "2", "--out", f"{out}/"]) == 0
    assert "already complete" in capsys.readouterr().out and _files(out) == before
    # another seed into the same folder: refused, nothing touched
    assert main(["sample", "--run", str(cond_run), "--per_class", "2", "--seed", "1", "--out", f"{out}/"]) == 2
    err = capsys.readouterr().err
    assert "already exists and is not an empty folder" in err and len(err.strip().splitlines()) == 1
    assert _files(out) == before
    # a folder of the user's: refused, kept
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="already exists"):
        export_dataset(run_source(cond_run), mine, 2)
    assert (mine / "notes.txt").read_text() == "keep me" and len(list(mine.iterdir())) == 1
    # an empty folder is fine
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export_dataset(run_source(cond_run), empty, 1).manifest["total"] == 10


def test_interrupted_export_leaves_no_dataset_and_a_rerun_completes_it(tmp_path):
    whole = export_dataset(_toy_source(), tmp_path / "whole", 7, seed=3, batch_size=2, progress=False)
    assert whole.generated == 21 and whole.reused == 0
    out = tmp_path / "ds"
    calls = []
    with pytest.raises(KeyboardInterrupt):
        export_dataset(_toy_source(calls, fail_after=5), out, 7, seed=3, batch_size=2, progress=False)
    assert not out.exists()                                  # no half-written dataset under the name
    partial = tmp_path / ".ds.partial"
    assert partial.is_dir() and not (partial / "manifest.json").exists()
    done_before = len(list(partial.rglob("*.png")))
    assert done_before == 9                                  # five batches: class a (2+2+2+1), then 2 of b
    # a writer killed inside a PNG leaves its temporary file: the rerun removes it
    (partial / "b" / ".00005.png.tmp-123-abcd").write_bytes(b"torn")
    calls = []
    again = export_dataset(_toy_source(calls), out, 7, seed=3, batch_size=2, progress=False)
    assert again.reused == done_before and again.generated == 21 - done_before
    assert sum(calls) == 21 - done_before                    # only the missing images were generated
    assert not partial.exists() and not list(out.rglob(".*tmp*"))
    assert _files(out) == _files(tmp_path / "whole")         # identical to the uninterrupted export
    m = read_manifest(out)
    assert m["counts"] == {"a": 7, "b": 7, "c": 7} and m["seed"] == 3


def test_partial_of_another_plan_is_started_afresh(tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(KeyboardInterrupt):
        export_dataset(_toy_source([], fail_after=2), out, 4, seed=0, batch_size=1, progress=False)
    calls = []
    done = export_dataset(_toy_source(calls), out, 4, seed=1, batch_size=1, progress=False)   # another seed
    assert done.reused == 0 and sum(calls) == 12
    assert _files(out) == _files(export_dataset(_toy_source(), tmp_path / "ref", 4, seed=1, progress=False).path)


def test_noise_depends_on_seed_class_and_index_only():
    a = class_noise(0, 1, 10, 4)
    torch.testing.assert_close(class_noise(0, 1, 4, 4), a[:4], rtol=0, atol=0)
    assert not torch.equal(class_noise(0, 2, 10, 4), a) and not torch.equal(class_noise(1, 1, 10, 4), a)


@pytest.mark.parametrize("names, needle", [(["a", "a", "b"], "distinct"), (["a", "b/c", "d"], "folder name"),
                                           (["a", "..", "b"], "folder name"), (["a", "b"], "3 classes but 2")])
def test_bad_class_names_are_refused_before_writing(tmp_path, names, needle):
    src = _toy_source(names=names)
    with pytest.raises(ConfigError, match=needle):
        export_dataset(src, tmp_path / "ds", 2, progress=False)
    assert not list(tmp_path.iterdir())


def test_manifest_reader_refuses_other_folders(tmp_path):
    with pytest.raises(DataError, match="no manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataError, match="not a fastgan dataset manifest"):
        read_manifest(tmp_path)


def test_onnx_export_writes_the_same_dataset(cond_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from fastgan.export import export_run

    export_run(cond_run, tmp_path / "G.onnx", verify=False)
    assert main(["sample", "--run", str(cond_run), "--per_class", "2", "--out", str(tmp_path / "a") + "/"]) == 0
    assert main(["sample", "--onnx", str(tmp_path / "G.onnx"), "--per_class", "2",
                 "--out", str(tmp_path / "b") + "/"]) == 0
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:   # the export's parity is ~1e-7: a pixel can round the other way at most
        pa = np.asarray(Image.open(tmp_path / "a" / k), dtype=int)
        pb = np.asarray(Image.open(tmp_path / "b" / k), dtype=int)
        assert np.abs(pa - pb).max() <= 1
    m = read_manifest(tmp_path / "b")
    assert m["source"]["kind"] == "onnx" and m["source"]["step"] == 2 and m["source"]["source_run"] == "run"
