"""OnnxGenerator (input checks, sampling, bad files) and the CLI-facing helpers
export_run / sample_onnx / format_report, on small exported generators."""

import json

import numpy as np
import pytest
import torch

from fastgan.errors import CheckpointError, ConfigError, DataError
from fastgan.models import DCGANGenerator, MLPGenerator

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from fastgan.export import (OnnxGenerator, export_onnx, export_run, format_report,  # noqa: E402
                            resolve_providers, sample_onnx)
from helpers import tiny_images, tiny_points  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """name -> (G, path) for an RGB DCGAN, a conditional DCGAN and an MLP."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("runtime")
    models = {
        "rgb": DCGANGenerator(z_dim=8, img_size=16, channels=3, width=4),
        "cond": DCGANGenerator(z_dim=8, img_size=16, channels=1, width=4, num_classes=3),
        "points": MLPGenerator(z_dim=2, width=16, depth=2),
    }
    out = {}
    for name, G in models.items():
        G.eval()
        out[name] = (G, export_onnx(G, root / f"{name}.onnx", verify_batches=(2,)).path)
    return out


@pytest.fixture(scope="module")
def gens(files):
    return {name: OnnxGenerator(path, providers="cpu") for name, (_, path) in files.items()}


# ----------------------------------------------------------------------------- properties, sampling
def test_properties(gens):
    g = gens["rgb"]
    assert (g.z_dim, g.out_shape, g.num_classes, g.value_range) == (8, (3, 16, 16), 0, (-1.0, 1.0))
    assert gens["cond"].num_classes == 3 and gens["points"].value_range is None
    assert gens["points"].out_shape == (2,)
    assert g.providers == ["CPUExecutionProvider"] and "DCGANGenerator" in repr(g)
    assert g.metadata["arch_config"]["img_size"] == 16


def test_sample_layouts_and_seeds(gens):
    g = gens["rgb"]
    u8 = g.sample(5, seed=1)
    assert u8.shape == (5, 16, 16, 3) and u8.dtype == np.uint8          # (N, H, W, C)
    x = g.sample(5, seed=1, output="float")
    assert x.shape == (5, 3, 16, 16) and x.dtype == np.float32           # (N, C, H, W)
    assert -1.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_array_equal(u8, np.clip(np.rint((x + 1) * 127.5), 0, 255).astype(np.uint8)
                                  .transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(g.sample(5, seed=1, output="float"), x)
    assert not np.array_equal(g.sample(5, seed=2, output="float"), x)
    assert g.sample(5, seed=1, batch_size=2).shape == (5, 16, 16, 3)
    p = gens["points"].sample(9, seed=0)
    assert p.shape == (9, 2) and p.dtype == np.float32


def test_same_seed_gives_the_samples_of_the_pytorch_generator(files, gens):
    from fastgan.sampling import generate

    for name in ("rgb", "cond", "points"):
        G, _ = files[name]
        want = generate(G, 6, z_dim=G.z_dim, seed=4, num_classes=G.num_classes).numpy()
        np.testing.assert_allclose(gens[name].sample(6, seed=4, output="float"), want, atol=1e-5, rtol=0)


def test_conditional_labels(files, gens):
    G, _ = files["cond"]
    g = gens["cond"]
    np.testing.assert_array_equal(g.sample_labels(5), [0, 1, 2, 0, 1])
    np.testing.assert_array_equal(g.sample_labels(3, 2), [2, 2, 2])
    np.testing.assert_array_equal(g.sample_labels(3, [1]), [1, 1, 1])
    z = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    labels = np.array([2, 0, 1, 2])
    with torch.no_grad():
        want = G(torch.from_numpy(z), torch.from_numpy(labels)).numpy()
    np.testing.assert_allclose(g.run(z, labels), want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(g.run(torch.from_numpy(z), torch.from_numpy(labels).int()), want, atol=1e-5)


# ----------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("z, labels, needle", [
    (np.zeros((2, 7), np.float32), [0, 1], r"shape \(N, 8\)"),
    (np.zeros((8,), np.float32), None, r"shape \(N, 8\)"),
    (np.zeros((0, 8), np.float32), np.zeros(0, np.int64), r"N >= 1"),
    (np.zeros((2, 8), np.int64), [0, 1], "floats"),
    (np.array([[np.nan] * 8, [0] * 8], np.float32), [0, 1], "NaN"),
    (np.full((2, 8), np.inf, np.float32), [0, 1], "NaN or infinite"),
    (np.zeros((2, 8), np.float32), None, "conditional"),
    (np.zeros((2, 8), np.float32), [0, 3], r"labels must be in \[0, 2\]"),
    (np.zeros((2, 8), np.float32), [-1, 0], r"labels must be in"),
    (np.zeros((2, 8), np.float32), [0.0, 1.0], "integers"),
    (np.zeros((2, 8), np.float32), [0, 1, 2], r"shape \(2,\)"),
    ("abc", None, "floats"),
])
def test_run_rejects_bad_inputs(gens, z, labels, needle):
    with pytest.raises(DataError, match=needle) as info:
        gens["cond"].run(z, labels)
    assert "\n" not in str(info.value)


def test_unconditional_rejects_labels_and_sample_checks_arguments(gens):
    with pytest.raises(DataError, match="unconditional"):
        gens["rgb"].run(np.zeros((1, 8), np.float32), labels=[0])
    with pytest.raises(DataError, match="unconditional"):
        gens["rgb"].sample(2, labels=1)
    with pytest.raises(DataError, match="labels must be in"):
        gens["cond"].sample(2, labels=5)
    for kwargs, needle in [(dict(n=0), "n must"), (dict(n=2.5), "n must"), (dict(n=2, output="png"), "output"),
                           (dict(n=2, seed="x"), "seed"), (dict(n=2, batch_size=0), "batch_size")]:
        with pytest.raises(ConfigError, match=needle):
            gens["rgb"].sample(**kwargs)


# ----------------------------------------------------------------------------- bad files
def test_bad_files(tmp_path, files):
    with pytest.raises(CheckpointError, match="does not exist"):
        OnnxGenerator(tmp_path / "missing.onnx")
    with pytest.raises(CheckpointError, match="not a file"):
        OnnxGenerator(tmp_path)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf \x00\xff" * 10)
    with pytest.raises(CheckpointError, match="not a loadable ONNX model") as info:
        OnnxGenerator(junk)
    assert "\n" not in str(info.value)
    # a valid ONNX model that fastgan did not write
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    foreign = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                                opset_imports=[helper.make_opsetid("", 20)])
    foreign.ir_version = 10
    onnx.save(foreign, tmp_path / "foreign.onnx")
    with pytest.raises(CheckpointError, match="not a fastgan generator"):
        OnnxGenerator(tmp_path / "foreign.onnx")
    # fastgan metadata that has been tampered with
    model = onnx.load(files["rgb"][1])
    for p in model.metadata_props:
        if p.key == "fastgan.out_shape":
            p.value = "not json"
    onnx.save(model, tmp_path / "tampered.onnx")
    with pytest.raises(CheckpointError, match="malformed fastgan metadata"):
        OnnxGenerator(tmp_path / "tampered.onnx")


def test_session_options(files):
    from fastgan.export import session_options

    opts = session_options(threads=2)
    assert opts.intra_op_num_threads == 2 and opts.inter_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert session_options(spin=True).get_session_config_entry("session.intra_op.allow_spinning") == "1"
    spinning = OnnxGenerator(files["points"][1], providers="cpu", threads=1, spin=True)
    assert spinning.sample(3).shape == (3, 2)


def test_providers():
    import onnxruntime as ort

    assert resolve_providers("cpu") == ["CPUExecutionProvider"]
    auto = resolve_providers("auto")
    assert auto[-1] == "CPUExecutionProvider"
    assert ("CUDAExecutionProvider" in auto) == ("CUDAExecutionProvider" in ort.get_available_providers())
    with pytest.raises(ConfigError, match="unknown or unavailable"):
        resolve_providers(["NoSuchExecutionProvider"])
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ConfigError, match="no CUDA provider"):
            resolve_providers("cuda")


# ----------------------------------------------------------------------------- sample_onnx
def test_sample_onnx_formats(tmp_path, files, gens):
    path = files["cond"][1]
    (png,) = sample_onnx(path, 6, tmp_path / "grid.png", seed=3)
    from PIL import Image

    assert Image.open(png).size[0] > 16
    (npy,) = sample_onnx(path, 6, tmp_path / "raw.npy", seed=3)
    np.testing.assert_array_equal(np.load(npy), gens["cond"].sample(6, seed=3, output="float"))
    (npz,) = sample_onnx(path, 6, tmp_path / "raw.npz", seed=3, labels=2)
    with np.load(npz) as f:
        assert f["samples"].shape == (6, 1, 16, 16) and list(f["labels"]) == [2] * 6
    written = sample_onnx(path, 4, str(tmp_path / "dir") + "/", seed=3)
    assert len(written) == 4 and all(p.suffix == ".png" for p in written)
    (plot,) = sample_onnx(files["points"][1], 50, tmp_path / "points.png")
    assert Image.open(plot).size == (384, 384)
    with pytest.raises(ConfigError):
        sample_onnx(path, 4, tmp_path / "x.jpg")


# ----------------------------------------------------------------------------- runs and the CLI
@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    from fastgan import Trainer

    run = tmp_path_factory.mktemp("run") / "digits"
    Trainer(tiny_images(run)).fit()
    return run


def test_export_run_stores_the_run_config(image_run, tmp_path):
    from fastgan import TrainConfig, load_generator
    from fastgan.sampling import generate

    report = export_run(image_run, tmp_path / "g.onnx")
    assert report.verified and max(report.max_abs_diff.values()) <= 1e-4
    assert "batch 64:" in format_report(report)
    gen = OnnxGenerator(report.path, providers="cpu")
    cfg = TrainConfig.from_dict(json.loads((image_run / "config.json").read_text()))
    assert gen.metadata["config_hash"] == cfg.config_hash()
    assert gen.metadata["train_config"]["data"] == "digits" and gen.metadata["extra"]["source_run"] == "digits"
    G = load_generator(image_run)  # EMA weights, like the export
    want = generate(G, 8, z_dim=G.z_dim, seed=5, num_classes=G.num_classes).numpy()
    np.testing.assert_allclose(gen.sample(8, seed=5, output="float"), want, atol=1e-4, rtol=0)


def test_export_run_without_a_run(tmp_path):
    with pytest.raises(CheckpointError):
        export_run(tmp_path / "nothing", tmp_path / "g.onnx")


def test_cli_export_then_sample(image_run, tmp_path, capsys):
    from fastgan.cli import main

    out = tmp_path / "cli.onnx"
    assert main(["export", "--run", str(image_run), "--out", str(out), "--fp16"]) == 0
    text = capsys.readouterr().out
    assert "fp16" in text and "batch 7:" in text and out.is_file()
    assert main(["sample", "--onnx", str(out), "--n", "4", "--out", str(tmp_path / "s.npy")]) == 0
    assert main(["sample", "--run", str(image_run), "--n", "4", "--out", str(tmp_path / "t.npy")]) == 0
    a, b = np.load(tmp_path / "s.npy"), np.load(tmp_path / "t.npy")
    assert a.shape == b.shape == (4, 1, 16, 16)
    np.testing.assert_allclose(a, b, atol=1e-2, rtol=0)  # fp16 file vs PyTorch, same seed


def test_point_run_plot_has_the_mixture_centres(tmp_path):
    from fastgan import Trainer

    run = tmp_path / "ring"
    Trainer(tiny_points(run, data="ring8", steps=2, ckpt_every=2, log_every=1)).fit()
    report = export_run(run, tmp_path / "p.onnx")
    assert OnnxGenerator(report.path).out_shape == (2,)
    (plot,) = sample_onnx(report.path, 100, tmp_path / "p.png")
    from PIL import Image

    pixels = np.asarray(Image.open(plot).convert("RGB")).reshape(-1, 3)
    assert ((pixels[:, 0] > 200) & (pixels[:, 1] < 60)).any()  # red crosses: the 8 ring centres


@pytest.mark.parametrize("key, value, needle", [
    ("fastgan.z_dim", "16", r"input 'z' has shape \['batch', 8\] but the metadata says z_dim=16"),
    ("fastgan.out_shape", "[3, 32, 32]", r"output 'images' has shape \['batch', 3, 16, 16\] but the metadata says "
                                         r"samples of shape \[3, 32, 32\]"),
    ("fastgan.out_shape", "[2]", r"samples of shape \[2\]"),
    ("fastgan.io", '{"inputs": ["z"], "output": "x"}', r"output is 'images' but the metadata names 'x'"),
])
def test_metadata_that_disagrees_with_the_graph_is_one_clear_error(tmp_path, files, key, value, needle):
    model = onnx.load(files["rgb"][1])
    for p in model.metadata_props:
        if p.key == key:
            p.value = value
    onnx.save(model, tmp_path / "edited.onnx")
    with pytest.raises(CheckpointError, match=needle) as info:
        OnnxGenerator(tmp_path / "edited.onnx", providers="cpu")
    assert "\n" not in str(info.value) and "export the generator again" in str(info.value)


@pytest.mark.parametrize("where", ["inside", "parent", "absolute", "symlink"])
def test_external_data_outside_the_models_folder_is_refused(tmp_path, files, where):
    """A model whose weights live in an external file is read only when that file is in the model's own
    folder: '../', an absolute path or a symlink out of the folder could read any file on the machine."""
    from onnx import numpy_helper

    model = onnx.load(files["points"][1])
    init = model.graph.initializer[0]
    data = numpy_helper.to_array(init).tobytes()
    folder, outside = tmp_path / "model", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    (outside / "w.bin").write_bytes(data)
    location = {"inside": "w.bin", "parent": "../outside/w.bin", "absolute": str(outside / "w.bin"),
                "symlink": "w.bin"}[where]
    if where == "inside":
        (folder / "w.bin").write_bytes(data)
    elif where == "symlink":
        (folder / "w.bin").symlink_to(outside / "w.bin")
    init.ClearField("raw_data")
    init.data_location = onnx.TensorProto.EXTERNAL
    init.external_data.add(key="location", value=location)
    onnx.save(model, folder / "g.onnx")
    if where == "inside":   # the same model with its data beside it loads, and gives the same samples
        got = OnnxGenerator(folder / "g.onnx", providers="cpu").sample(4, seed=1)
        np.testing.assert_array_equal(got, OnnxGenerator(files["points"][1], providers="cpu").sample(4, seed=1))
        return
    with pytest.raises(CheckpointError, match="not a loadable ONNX model .*External data path") as info:
        OnnxGenerator(folder / "g.onnx", providers="cpu")
    assert "\n" not in str(info.value)
