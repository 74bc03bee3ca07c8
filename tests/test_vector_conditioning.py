"""Vector conditioning: networks, .npz data, training and resume, sampling from vectors (API, CLI, ONNX),
the digits_vectors demo data, and bad vectors refused with one clear error."""

import numpy as np
import pytest
import torch

from fastgan import Trainer, load_generator
from fastgan.cli import main
from fastgan.data import load_data
from fastgan.errors import ConfigError, DataError
from fastgan.models import DCGANDiscriminator, DCGANGenerator, set_kernel_impl
from fastgan.models.conditioning import ConditionalBatchNormAct
from fastgan.sampling import check_vectors, read_vectors
from fastgan.stroke_vectors import STROKE_NAMES, VECTOR_DIM, digit_vectors, make_vectors, measure_strokes
from helpers import one_thread, state_equal, tiny_images  # noqa: F401  (a fixture)
from kernel_helpers import needs_triton

V = 5


def _npz(path, n=24, vdim=V, **extra):
    rng = np.random.default_rng(0)
    arrays = {"images": rng.integers(0, 256, (n, 1, 16, 16), dtype=np.uint8),
              "vectors": rng.standard_normal((n, vdim)).astype(np.float32), **extra}
    np.savez(path, **arrays)
    return path


def _cfg(out, data, **kw):
    return tiny_images(out, data=str(data), vector_conditional=True, **kw)


@pytest.fixture(scope="module")
def vec_run(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("vec")
    data = _npz(root / "data.npz")
    Trainer(_cfg(root / "run", data, steps=3, ckpt_every=0)).fit()
    return root / "run"


# ----------------------------------------------------------------------------- networks
def test_networks_take_vectors_and_refuse_anything_else():
    torch.manual_seed(0)
    G = DCGANGenerator(z_dim=8, img_size=16, channels=1, width=8, vector_dim=V)
    D = DCGANDiscriminator(img_size=16, channels=1, width=8, vector_dim=V, pack=2)
    z, v = torch.randn(4, 8), torch.randn(4, V)
    x = G(z, v)
    assert x.shape == (4, 1, 16, 16) and D(x, v).shape == (2,)
    torch.testing.assert_close(G(z, torch.randn(4, V)), x)               # zero modulation: starts unconditional
    for m in G.modules():                                                # as after some training
        if isinstance(m, ConditionalBatchNormAct):
            torch.nn.init.normal_(m.modulation.weight, std=0.1)
    assert not torch.allclose(G(z, v), G(z, torch.randn(4, V)))          # the vector changes the image
    assert not torch.allclose(D(x, v), D(x, torch.randn(4, V)))          # and the logit
    for bad in (None, torch.randn(4, V + 1), torch.randint(0, 3, (4, V))):
        with pytest.raises(ValueError, match=f"conditioned on {V}-dim vectors"):
            G(z, bad)
        with pytest.raises(ValueError, match=f"conditioned on {V}-dim vectors"):
            D(x, bad)
    with pytest.raises(ValueError, match="classes or on vectors, not both"):
        DCGANGenerator(z_dim=8, img_size=16, channels=1, width=8, num_classes=3, vector_dim=V)
    assert G.arch_config()["vector_dim"] == V and "vector_dim" not in DCGANGenerator(img_size=16).arch_config()


def test_conditional_norm_starts_as_the_plain_batch_norm():
    from fastgan.kernels import BatchNormAct

    m, plain = ConditionalBatchNormAct(6, 4), BatchNormAct(6, act="relu")
    m.reset_modulation()
    x = torch.randn(5, 6, 3, 3)
    torch.testing.assert_close(m(x, torch.randn(5, 4)), plain(x))


@needs_triton
def test_vector_generator_runs_the_fused_kernels_like_the_reference():
    torch.manual_seed(0)
    G = DCGANGenerator(z_dim=8, img_size=16, channels=1, width=4, vector_dim=V)
    z, v = torch.randn(3, 8), torch.randn(3, V)
    outs, grads = [], []
    for impl in ("ref", "triton"):
        set_kernel_impl(G, impl)
        G.zero_grad()
        x = G(z, v)
        (x * torch.linspace(-1, 1, x.numel()).reshape(x.shape)).sum().backward()
        outs.append(x.detach())
        grads.append([p.grad.clone() for p in G.parameters()])
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


# ----------------------------------------------------------------------------- data
def test_npz_data_with_vectors_and_labels(tmp_path):
    path = _npz(tmp_path / "d.npz", labels=np.arange(24) % 3)
    data = load_data(str(path))
    assert data.vector_dim == V and data.num_classes == 3 and len(data) == 24
    g = torch.Generator().manual_seed(0)
    x, v = data.sample(6, g, condition="vectors")
    g.manual_seed(0)
    x2, y = data.sample(6, g)
    assert torch.equal(x, x2) and v.shape == (6, V) and y.shape == (6,)   # the same draws
    assert load_data({"images": np.zeros((2, 16, 16), np.uint8), "vectors": np.ones((2, 3))}).vector_dim == 3


@pytest.mark.parametrize("arrays, needle", [
    ({"vectors": np.zeros((4, 2))}, "must hold 'images'"),
    ({"images": np.zeros((4, 1, 16, 16), np.uint8), "vectors": np.zeros((3, 2))}, r"shaped \(4, V\)"),
    ({"images": np.zeros((4, 1, 16, 16), np.uint8), "vectors": np.zeros(4)}, r"shaped \(4, V\)"),
    ({"images": np.zeros((4, 1, 16, 16), np.uint8), "vectors": np.full((4, 2), np.nan)}, "NaN or infinite"),
    ({"images": np.zeros((4, 1, 16, 16), np.uint8), "extra": np.zeros(4)}, "it holds extra, images"),
])
def test_bad_npz_data_is_refused(tmp_path, arrays, needle):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=needle):
        load_data(str(tmp_path / "d.npz"))


def test_vector_config_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="exclude each other"):
        tiny_images(tmp_path, conditional=True, vector_conditional=True).validate()
    with pytest.raises(ConfigError, match="needs a vector per image"):
        Trainer(tiny_images(tmp_path / "r", vector_conditional=True))            # digits has no vectors
    with pytest.raises(DataError, match="does not exist"):
        Trainer(tiny_images(tmp_path / "r", data=str(tmp_path / "missing.npz"), vector_conditional=True))


def test_networks_the_user_brings_are_checked_with_vectors(tmp_path):
    data = _npz(tmp_path / "d.npz")
    D = DCGANDiscriminator(img_size=16, channels=1, width=8, vector_dim=V)
    G = DCGANGenerator(z_dim=16, img_size=16, channels=1, width=8, vector_dim=V)
    Trainer(_cfg(tmp_path / "ok", data), generator=G, discriminator=D)        # given vectors, both pass
    wrong = DCGANGenerator(z_dim=16, img_size=16, channels=1, width=8, vector_dim=V + 1)
    with pytest.raises(ConfigError, match=rf"generator fails on latents of shape \(2, 16\) and vectors of shape "
                                          rf"\(2, {V}\)"):
        Trainer(_cfg(tmp_path / "bad", data), generator=wrong, discriminator=D)


# ----------------------------------------------------------------------------- training, sampling
def test_trainer_samples_from_vectors_and_refuses_bad_ones(vec_run, tmp_path):
    tr = Trainer(_cfg(vec_run, vec_run.parent / "data.npz", steps=3, ckpt_every=0))
    assert tr.step == 3 and tr.vector_dim == V
    v = torch.randn(4, V)
    x = tr.sample(4, vectors=v, seed=1)
    assert x.shape == (4, 1, 16, 16)
    torch.testing.assert_close(tr.sample(4, vectors=v, seed=1), x)
    torch.testing.assert_close(tr.sample(4, vectors=v[0], seed=1)[0], x[0])     # one vector for all
    for bad, needle in [(None, f"conditioned on {V}-number vectors"), (torch.randn(3, V), "expected 4 vectors, got 3"),
                        (torch.randn(4, V + 2), f"must have {V} numbers each"),
                        (torch.full((4, V), float("nan")), "NaN or infinite"), (["a"] * V, "array of numbers")]:
        with pytest.raises(ConfigError, match=needle):
            tr.sample(4, vectors=bad)
    with pytest.raises(ConfigError, match="not conditioned on vectors"):
        check_vectors(v, 4, 0)
    G = load_generator(vec_run)
    assert G.vector_dim == V and G.class_names == []


def test_resume_of_a_vector_run_is_bit_exact(tmp_path, one_thread):
    data = _npz(tmp_path / "d.npz")
    kw = dict(steps=6, ckpt_every=2, r1_gamma=1.0, r1_every=2)
    full = Trainer(_cfg(tmp_path / "full", data, **kw)).fit()
    part = Trainer(_cfg(tmp_path / "part", data, **kw))
    part.fit(3)
    del part
    resumed = Trainer(_cfg(tmp_path / "part", data, **kw))
    resumed.fit()
    assert state_equal(full.G, resumed.G) and state_equal(full.D, resumed.D)


def test_compile_mode_with_vectors_and_ada_tracks_eager(tmp_path, one_thread):
    """The new networks and ADA's steps through compiled forward + loss pieces (no graph break: fullgraph)."""
    from fastgan.engine import EngineOptions

    data = _npz(tmp_path / "d.npz")
    kw = dict(steps=4, augment="translation,cutout", ada_target=0.6, ada_interval=2, ada_kimg=0.02)
    eager = Trainer(_cfg(tmp_path / "e", data, **kw))
    comp = Trainer(_cfg(tmp_path / "c", data, mode="compile", **kw),
                   engine_options=EngineOptions(compile_backend="aot_eager", compile_fullgraph=True))
    for tr in (eager, comp):
        tr.ada.p.fill_(0.5)   # so a move either way shows
        tr.run_steps(4)
    assert comp.engine.plan.compile_pieces and float(comp.ada.p) == float(eager.ada.p) != 0.5
    torch.testing.assert_close(comp.stats.buffer, eager.stats.buffer, rtol=1e-4, atol=1e-4)


def test_cli_vectors(vec_run, tmp_path, capsys):
    np.save(tmp_path / "v.npy", np.random.default_rng(1).standard_normal((3, V)).astype(np.float32))
    out = tmp_path / "s.npz"
    assert main(["sample", "--run", str(vec_run), "--vectors", str(tmp_path / "v.npy"), "--out", str(out)]) == 0
    with np.load(out) as f:
        assert f["samples"].shape == (3, 1, 16, 16)
        np.testing.assert_array_equal(f["vectors"], np.load(tmp_path / "v.npy"))
    one = ",".join(["0.5"] * V)
    assert main(["sample", "--run", str(vec_run), "--vectors", one, "--n", "2", "--out", str(out)]) == 0
    with np.load(out) as f:
        assert f["vectors"].shape == (2, V)
    capsys.readouterr()
    for args, needle in [([], "conditioned on 5-number vectors"), (["--vectors", "1,2"], "must have 5 numbers each"),
                         (["--vectors", str(tmp_path / "none.npy")], "does not exist"),
                         (["--vectors", one, "--labels", "1"], "leave out --labels"),
                         (["--vectors", f"{one};{one}", "--n", "3"], "expected 3 vectors, got 2")]:
        assert main(["sample", "--run", str(vec_run), *args, "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x.png").exists()


def test_read_vectors_forms(tmp_path):
    assert read_vectors("1,2,3").shape == (3,) and read_vectors("1,2;3,4").tolist() == [[1, 2], [3, 4]]
    np.savez(tmp_path / "v.npz", vectors=np.ones((2, 3)))
    assert read_vectors(str(tmp_path / "v.npz")).shape == (2, 3)
    np.savez(tmp_path / "w.npz", other=np.ones(2))
    with pytest.raises(ConfigError, match="no array named 'vectors'"):
        read_vectors(str(tmp_path / "w.npz"))
    with pytest.raises(ConfigError, match="rows of the same length"):
        read_vectors("1,2;3")


def test_onnx_parity_and_sampling_of_a_vector_generator(vec_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from fastgan.export import OnnxGenerator, export_run

    report = export_run(vec_run, tmp_path / "G.onnx")          # verified at batch 1, 7, 64 (tolerance 1e-4)
    assert report.inputs == ["z", "vectors"] and max(report.max_abs_diff.values()) < 1e-4
    gen = OnnxGenerator(tmp_path / "G.onnx", providers="cpu")
    assert gen.vector_dim == V and gen.metadata["vector_dim"] == V
    G = load_generator(vec_run)
    rng = np.random.default_rng(3)
    z, v = rng.standard_normal((5, G.z_dim)).astype(np.float32), rng.standard_normal((5, V)).astype(np.float32)
    with torch.no_grad():
        want = G(torch.from_numpy(z), torch.from_numpy(v)).numpy()
    np.testing.assert_allclose(gen.run(z, vectors=v), want, atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="conditioned on 5-number vectors"):
        gen.run(z)
    with pytest.raises(ConfigError, match="must have 5 numbers each"):
        gen.sample(2, vectors=np.ones((2, 4), np.float32))
    out = tmp_path / "o.npz"
    assert main(["sample", "--onnx", str(tmp_path / "G.onnx"), "--vectors", ",".join(["0.1"] * V), "--n", "2",
                 "--out", str(out)]) == 0
    assert np.load(out)["samples"].shape == (2, 1, 16, 16)


# ----------------------------------------------------------------------------- the digits demo data
def test_digits_vectors_are_the_class_and_measurable_stroke_statistics():
    v, y = digit_vectors()
    assert v.shape == (1797, VECTOR_DIM) and torch.equal(v[:, :10].argmax(1), y)
    strokes = v[:, 10:]
    for c in range(10):   # standardised within each class
        assert torch.allclose(strokes[y == c].mean(0), torch.zeros(4), atol=1e-5)
        assert torch.allclose(strokes[y == c].std(0), torch.ones(4), atol=1e-5)
    # read back from the images fastgan trains on (upscaled to 16 px), the statistics are the vectors' own
    data = load_data("digits_vectors", resolution=16)
    assert data.vector_dim == VECTOR_DIM and data.num_classes == 10
    measured = measure_strokes(data.images.float() / 127.5 - 1.0, y)
    for i, name in enumerate(STROKE_NAMES):
        assert np.corrcoef(measured[:, i], strokes[:, i])[0, 1] > 0.97, name
    assert make_vectors([3, 4]).shape == (2, VECTOR_DIM) and make_vectors([3])[0, 3] == 1
    with pytest.raises(DataError, match="strokes must have shape"):
        make_vectors([1, 2], torch.zeros(2, 3))


# ----------------------------------------------------------------------------- class-conditional norms
def test_conditional_runs_resolve_to_class_norm_spectral_norm_and_hinge(tmp_path):
    from fastgan import TrainConfig

    c = TrainConfig(conditional=True).resolved()
    assert (c.class_norm, c.spectral_norm, c.loss) == (True, True, "hinge")
    c = TrainConfig(vector_conditional=True, data="digits_vectors").resolved()
    assert (c.class_norm, c.spectral_norm, c.loss) == (False, True, "hinge")
    c = TrainConfig().resolved()
    assert (c.class_norm, c.spectral_norm, c.loss) == (False, False, "ns")
    c = TrainConfig(conditional=True, loss="ns", spectral_norm=False, class_norm=False).resolved()
    assert (c.class_norm, c.spectral_norm, c.loss) == (False, False, "ns")      # what is asked for is kept
    old = TrainConfig(conditional=True).resolved().to_dict()
    del old["class_norm"]                    # a resolved config written before the field existed
    assert TrainConfig.from_dict(old).class_norm is False


def test_class_norm_generator_takes_the_label_through_its_norms(tmp_path):
    """In eval mode a sample depends on its own label only; ONNX parity for this generator."""
    torch.manual_seed(0)
    G = DCGANGenerator(z_dim=8, img_size=16, channels=1, width=8, num_classes=3, class_norm=True)
    assert G.stem.in_channels == 8 and G.arch_config()["class_norm"] is True     # z alone enters the stem
    z = torch.randn(4, 8)
    for m in G.modules():   # away from the zero start, so the label shows
        if hasattr(m, "modulation"):
            torch.nn.init.normal_(m.modulation.weight, 0, 0.5)
    torch.testing.assert_close(G.eval()(z, torch.tensor([0, 0, 1, 1]))[:2], G(z, torch.tensor([0, 0, 2, 2]))[:2])
    assert not torch.allclose(G(z, torch.tensor([0, 0, 1, 1]))[2:], G(z, torch.tensor([0, 0, 2, 2]))[2:])
    with pytest.raises(ValueError, match="class-conditional"):
        G(z)
    pytest.importorskip("onnxruntime")
    from fastgan.export import OnnxGenerator, export_onnx

    report = export_onnx(G, tmp_path / "G.onnx", verify_batches=(1, 5))
    assert report.inputs == ["z", "labels"] and max(report.max_abs_diff.values()) < 1e-4
    gen = OnnxGenerator(tmp_path / "G.onnx", providers="cpu")
    with torch.no_grad():
        want = G(z, torch.tensor([0, 1, 2, 1])).numpy()
    np.testing.assert_allclose(gen.run(z.numpy(), np.array([0, 1, 2, 1])), want, atol=1e-5, rtol=0)
