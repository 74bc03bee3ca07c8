"""ONNX export: parity with PyTorch for every generator family, fp16, metadata, fused ops.

Exports take a few seconds each (dynamo tracing), so every exported file is
made once per module by a fixture and shared by the tests that read it.
Weights are re-drawn at a realistic scale (outputs spread over [-1, 1], batch
norm with non-trivial statistics) so that parity figures mean something: a
freshly initialised DCGAN outputs values near 0, where any export looks exact.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

import fastgan
from fastgan.errors import ConfigError, FastGANError
from fastgan.kernels import BatchNormAct, BiasAct
from fastgan.models import DCGANGenerator, MLPGenerator, generator_from_arch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from fastgan.export import (DEFAULT_OPSET, ExportError, OnnxGenerator, choose_opset,  # noqa: E402
                            export_onnx, format_report, max_runtime_opset)

BATCHES = (1, 7, 64)
FP32_TOL, FP16_TOL = 1e-4, 1e-2


@torch.no_grad()
def realistic_(G: nn.Module, seed: int = 0) -> nn.Module:
    """Re-draw every weight at a scale where the outputs use the whole value range."""
    g = torch.Generator().manual_seed(seed)

    def draw(t, std, mean=0.0):
        t.copy_(torch.randn(t.shape, generator=g) * std + mean)

    for m in G.modules():
        if isinstance(m, nn.ConvTranspose2d):
            fan = m.weight.shape[0] * m.weight[0, 0].numel() / (m.stride[0] * m.stride[1])
            draw(m.weight, 1.5 / math.sqrt(fan))
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            draw(m.weight, 1.5 / math.sqrt(m.weight[0].numel()))
            if m.bias is not None:
                draw(m.bias, 0.2)
        elif isinstance(m, BatchNormAct):
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            draw(m.bias, 0.2)
            draw(m.running_mean, 0.2)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
        elif isinstance(m, BiasAct) and getattr(m, "bias", None) is not None:
            draw(m.bias, 0.2)
        elif isinstance(m, nn.Embedding):
            draw(m.weight, 1.0)
    return G.eval()


def torch_out(G, z, labels=None):
    with torch.no_grad():
        return G(torch.as_tensor(z), None if labels is None else torch.as_tensor(labels)).numpy()


def inputs(G, batch, seed):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((batch, G.z_dim), dtype=np.float32)
    labels = rng.integers(0, G.num_classes, batch) if G.num_classes else None
    return z, labels


def weight_bytes(path):
    return sum(len(t.raw_data) for t in onnx.load(str(path)).graph.initializer
               if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16))


def graph_ops(path):
    return {n.op_type for n in onnx.load(str(path)).graph.node}


# ----------------------------------------------------------------------------- fixtures
IMAGE_CASES = {  # name -> constructor kwargs (small widths keep the suite fast)
    "dcgan16_gray": dict(z_dim=16, img_size=16, channels=1, width=4),
    "dcgan32_rgb": dict(z_dim=20, img_size=32, channels=3, width=4),
    "dcgan64_rgb": dict(z_dim=16, img_size=64, channels=3, width=4),
    "dcgan128_rgb": dict(z_dim=16, img_size=128, channels=3, width=2),
    "dcgan32_cond": dict(z_dim=16, img_size=32, channels=3, width=4, num_classes=10),
}
POINT_CASES = {
    "mlp": dict(z_dim=2, width=16, depth=3),
    "mlp_cond": dict(z_dim=4, width=16, depth=2, num_classes=5),
}


def build(name):
    if name in IMAGE_CASES:
        return realistic_(DCGANGenerator(**IMAGE_CASES[name]), seed=len(name))
    return realistic_(MLPGenerator(**POINT_CASES[name]), seed=len(name))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (G, report) for every generator family, exported once in fp32."""
    root = tmp_path_factory.mktemp("onnx")
    out = {}
    for name in [*IMAGE_CASES, *POINT_CASES]:
        G = build(name)
        out[name] = (G, export_onnx(G, root / f"{name}.onnx"))
    return out


@pytest.fixture(scope="module")
def exported_fp16(exported, tmp_path_factory):
    """name -> (G, fp16 report, fp32 report) for a conditional DCGAN and the MLP."""
    root = tmp_path_factory.mktemp("onnx16")
    return {name: (exported[name][0], export_onnx(exported[name][0], root / f"{name}16.onnx", fp16=True),
                   exported[name][1])
            for name in ("dcgan32_cond", "mlp")}


# ----------------------------------------------------------------------------- parity
@pytest.mark.parametrize("name", [*IMAGE_CASES, *POINT_CASES])
def test_report_parity_at_every_batch(exported, name):
    G, report = exported[name]
    assert report.verified and set(report.max_abs_diff) == set(BATCHES)
    assert all(0.0 <= d <= FP32_TOL for d in report.max_abs_diff.values()), report.max_abs_diff
    assert report.opset == DEFAULT_OPSET and report.precision == "fp32"
    assert report.generator_class == type(G).__name__
    assert report.file_size == __import__("os").path.getsize(report.path) > 0
    assert report.inputs == (["z", "labels"] if G.num_classes else ["z"])
    assert report.output == ("images" if len(G.out_shape) == 3 else "points")


@pytest.mark.parametrize("name", [*IMAGE_CASES, *POINT_CASES])
def test_onnx_runtime_matches_pytorch(exported, name):
    """Independent of the built-in check: fresh inputs, batch 1, 7 and 64."""
    G, report = exported[name]
    gen = OnnxGenerator(report.path, providers="cpu")
    for batch in BATCHES:
        z, labels = inputs(G, batch, seed=batch + 11)
        want = torch_out(G, z, labels)
        got = gen.run(z, labels)
        assert got.shape == (batch, *G.out_shape) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=FP32_TOL)
    assert want.std() > 0.1  # the outputs are not a near-constant that would hide errors


@pytest.mark.parametrize("name", list(IMAGE_CASES))
def test_graph_is_standard_onnx_with_batch_norm_folded(exported, name):
    _, report = exported[name]
    model = onnx.load(report.path)
    onnx.checker.check_model(model, full_check=True)
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    assert "BatchNormalization" not in graph_ops(report.path)  # folded into ConvTranspose
    assert "ConvTranspose" in graph_ops(report.path)
    assert len(model.graph.initializer) and not any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)  # one file
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.HasField("dim_value")  # dynamic batch axis


def test_conditional_output_depends_on_labels(exported):
    G, report = exported["dcgan32_cond"]
    gen = OnnxGenerator(report.path, providers="cpu")
    z = np.repeat(inputs(G, 1, seed=3)[0], 2, axis=0)
    x = gen.run(z, np.array([0, 9]))
    assert np.abs(x[0] - x[1]).max() > 0.05


# ----------------------------------------------------------------------------- fp16
@pytest.mark.parametrize("name", ["dcgan32_cond", "mlp"])
def test_fp16_export(exported_fp16, name):
    G, r16, r32 = exported_fp16[name]
    assert r16.precision == "fp16" and set(r16.max_abs_diff) == set(BATCHES)
    assert max(r16.max_abs_diff.values()) <= FP16_TOL
    model = onnx.load(r16.path)
    floats = [t for t in model.graph.initializer
              if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    assert floats and all(t.data_type == onnx.TensorProto.FLOAT16 for t in floats)
    # the interface stays fp32 and the weights take half the bytes of the fp32 file's
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert weight_bytes(r16.path) > 0
    assert weight_bytes(r16.path) == pytest.approx(weight_bytes(r32.path) / 2, rel=0.05)
    assert r16.file_size < r32.file_size
    gen = OnnxGenerator(r16.path, providers="cpu")
    assert gen.info.precision == "fp16"
    z, labels = inputs(G, 64, seed=5)
    diff = np.abs(gen.run(z, labels) - torch_out(G, z, labels)).max()
    assert 0 < diff <= FP16_TOL  # > 0: it really computes in half precision


def test_failed_parity_writes_nothing(tmp_path):
    path = tmp_path / "g.onnx"
    path.write_bytes(b"previous")
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_onnx(build("mlp"), path, fp16=True, tolerance=1e-12)
    assert path.read_bytes() == b"previous" and list(tmp_path.iterdir()) == [path]


def test_fp16_conversion_rejects_overflow():
    from onnx import TensorProto, helper, numpy_helper

    from fastgan.export.fp16 import convert_to_fp16

    w = numpy_helper.from_array(np.array([1.0, 1e6], dtype=np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"])], "g", [x], [y], [w])
    with pytest.raises(ExportError, match="float16 range"):
        convert_to_fp16(helper.make_model(graph))


# ----------------------------------------------------------------------------- metadata
@pytest.mark.parametrize("name", ["dcgan16_gray", "dcgan32_cond", "mlp_cond"])
def test_metadata_round_trip(exported, name):
    G, report = exported[name]
    gen = OnnxGenerator(report.path, providers="cpu")
    assert gen.z_dim == G.z_dim and gen.out_shape == tuple(G.out_shape)
    assert gen.num_classes == G.num_classes and gen.value_range == G.value_range
    meta = gen.metadata
    assert meta["generator_class"] == type(G).__name__ and meta["arch_config"] == G.arch_config()
    assert meta["version"] == fastgan.__version__ and meta["precision"] == "fp32"
    rebuilt = generator_from_arch(meta["generator_class"], meta["arch_config"])
    assert rebuilt.arch_config() == G.arch_config()
    props = {p.key: p.value for p in onnx.load(report.path).metadata_props}
    assert props["fastgan.format"] == "fastgan-generator-1" and props["fastgan.latent"] == "normal"


def test_metadata_carries_config_and_user_keys(tmp_path):
    cfg = fastgan.TrainConfig(data="grid25", g_width=16, z_dim=2).resolved()
    G = build("mlp")
    report = export_onnx(G, tmp_path / "g.onnx", config=cfg, metadata={"note": "hello", "step": 7},
                         verify=False)
    assert not report.verified and report.max_abs_diff == {} and "skipped" in format_report(report)
    gen = OnnxGenerator(report.path, providers="cpu")
    assert gen.metadata["config_hash"] == cfg.config_hash() != ""
    assert gen.metadata["train_config"]["data"] == "grid25" and "out" not in gen.metadata["train_config"]
    assert gen.metadata["extra"] == {"note": "hello", "step": "7"}
    with pytest.raises(ConfigError, match="reserved"):
        export_onnx(G, tmp_path / "h.onnx", metadata={"fastgan.z_dim": "3"}, verify=False)


# ----------------------------------------------------------------------------- fused ops
def test_export_forces_reference_ops_even_when_triton_is_the_default(tmp_path):
    from fastgan.kernels import get_default_impl, set_default_impl
    from fastgan.models import set_kernel_impl

    G = set_kernel_impl(build("dcgan16_gray"), "triton")
    before = {k: v.clone() for k, v in G.state_dict().items()}
    z, _ = inputs(G, 7, seed=1)
    want = torch_out(set_kernel_impl(build("dcgan16_gray"), "ref"), z)
    previous = get_default_impl()
    set_default_impl("triton")
    try:
        try:  # on CPU the Triton path either runs in the interpreter or refuses: both must export
            torch_out(G, z)
        except RuntimeError as e:
            assert "triton" in str(e).lower()
        report = export_onnx(G, tmp_path / "fused.onnx")
        assert get_default_impl() == "triton"  # the caller's setting is restored
    finally:
        set_default_impl(previous)
    assert max(report.max_abs_diff.values()) <= FP32_TOL
    assert graph_ops(report.path) <= {"ConvTranspose", "Relu", "Tanh", "Add", "Reshape", "Unsqueeze"}
    np.testing.assert_allclose(OnnxGenerator(report.path, providers="cpu").run(z), want, atol=FP32_TOL, rtol=0)
    # the caller's model is untouched: same weights, modules still set to triton
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())
    assert all(m.impl == "triton" for m in G.modules() if isinstance(m, (BatchNormAct, BiasAct)))


# ----------------------------------------------------------------------------- arguments
def test_opset_choice():
    assert max_runtime_opset() >= DEFAULT_OPSET
    assert choose_opset() == DEFAULT_OPSET and choose_opset(18) == 18
    assert choose_opset(max_runtime_opset()) == max_runtime_opset()
    for bad in (17, max_runtime_opset() + 1, "20", 20.0, True):
        with pytest.raises(ConfigError, match="opset"):
            choose_opset(bad)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # raised by importing torch._dynamo
def test_export_at_another_opset_of_a_compiled_training_model(tmp_path):
    G = build("mlp_cond").train()
    compiled = torch.compile(G)  # the torch.compile wrapper is unwrapped, never compiled
    report = export_onnx(compiled, tmp_path / "g.onnx", opset=21, verify_batches=(3,))
    model = onnx.load(report.path)
    assert report.opset == 21 and {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {21}
    assert set(report.max_abs_diff) == {3} and report.generator_class == "MLPGenerator"
    assert G.training  # the caller's model keeps its mode; the export used an eval copy


class _NoInterface(nn.Module):
    def forward(self, z):
        return z


def test_bad_export_arguments(tmp_path):
    G = build("mlp")
    with pytest.raises(ConfigError, match="nn.Module"):
        export_onnx("not a model", tmp_path / "g.onnx")
    with pytest.raises(ConfigError, match="not a fastgan generator"):
        export_onnx(_NoInterface(), tmp_path / "g.onnx")
    with pytest.raises(ConfigError, match="folder"):
        export_onnx(G, tmp_path)
    with pytest.raises(ConfigError, match="opset"):
        export_onnx(G, tmp_path / "g.onnx", opset=12)
    with pytest.raises(ConfigError, match="verify_batches"):
        export_onnx(G, tmp_path / "g.onnx", verify_batches=(0,))
    assert issubclass(ExportError, FastGANError)
    assert list(tmp_path.iterdir()) == []


def test_format_report_shows_parity_figures(exported):
    text = format_report(exported["dcgan32_rgb"][1])
    assert "batch 1:" in text and "batch 7:" in text and "batch 64:" in text and "opset 20" in text
    assert len(text.splitlines()) == 3
