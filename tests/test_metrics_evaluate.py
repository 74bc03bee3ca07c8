"""evaluate(): sampling, feature spaces, metric selection, errors; Inception loading; plots; the CLI entry."""

import json
import math
import os
import warnings

import pytest
import torch
from torch import nn

from fastgan.data import load_data
from fastgan.errors import ConfigError, DataError
from fastgan.metrics import (InceptionFeatures, check_metrics, default_metrics, evaluate, evaluate_cli,
                             evaluate_samples, plot_history)


@pytest.fixture(scope="module", autouse=True)
def shared_cache(tmp_path_factory):
    """The same session-wide cache folder as test_metrics_classifier (the classifier trains once)."""
    path = tmp_path_factory.getbasetemp() / "fastgan-cache"
    old = {k: os.environ.get(k) for k in ("FASTGAN_CACHE_DIR", "FASTGAN_INCEPTION")}
    os.environ["FASTGAN_CACHE_DIR"] = str(path)
    os.environ.pop("FASTGAN_INCEPTION", None)
    yield path
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tests share 2 cores with other jobs: one intra-op thread avoids oversubscription stalls."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class MixtureG(nn.Module):
    """A 'generator' that samples a 2-D mixture exactly (optionally only some of its modes)."""

    def __init__(self, modes: torch.Tensor, std: float, use: int | None = None):
        super().__init__()
        self.z_dim, self.num_classes = 3, 0
        self.register_buffer("modes", modes[:use] if use else modes)
        self.std = std

    def forward(self, z, labels=None):
        k = (torch.special.ndtr(z[:, 0]) * len(self.modes)).long().clamp(max=len(self.modes) - 1)
        return self.modes[k] + self.std * z[:, 1:]


@pytest.fixture(scope="module")
def grid():
    return load_data("grid25")


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", resolution=16)


# ------------------------------------------------------------------ points
def test_points_perfect_generator(grid):
    r = evaluate(MixtureG(grid.modes, grid.mode_std), grid, [], seed=1)
    assert set(r) == {"modes", "num_modes", "high_quality", "reverse_kl", "fd", "precision", "recall"}
    assert r["modes"] == 25 and r["num_modes"] == 25
    assert r["high_quality"] == pytest.approx(1 - math.exp(-4.5), abs=0.01)   # 2-D: P(r < 3 sigma)
    assert r["reverse_kl"] < 0.02
    assert r["fd"] < 0.2          # the grid's variance is 8 per axis: FD noise at n = 2,500
    assert r["precision"] > 0.9 and r["recall"] > 0.9


def test_points_collapsed_generator(grid):
    r = evaluate(MixtureG(grid.modes[12:13], grid.mode_std), grid, ["modes", "pr", "kid"], n=500)
    assert r["modes"] == 1
    assert r["reverse_kl"] == pytest.approx(math.log(25))
    assert r["recall"] < 0.1 and r["precision"] > 0.9
    assert r["kid"] > 1.0


def test_evaluate_is_seeded_and_keeps_the_global_rng(grid):
    G = MixtureG(grid.modes, grid.mode_std, use=20)
    state = torch.get_rng_state()
    a = evaluate(G, grid, ["modes", "kid"], n=400, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert a == evaluate(G, grid, ["modes", "kid"], n=400, seed=3)
    assert a["modes"] == 20


def test_evaluate_callable_generator(grid):
    class OnnxLike:  # what fastgan.export's OnnxGenerator offers: z_dim, num_classes, run(z, labels)
        z_dim, num_classes = 3, 0

        def run(self, z, labels=None):
            return MixtureG(grid.modes, grid.mode_std)(torch.as_tensor(z)).numpy()

    r = evaluate(OnnxLike(), grid, "modes", n=600)
    assert r["modes"] == 25


def test_kid_std_is_not_reported_when_every_subset_is_the_whole_set(grid):
    """With <= 1,000 samples each of the 100 KID subsets is the whole set: its "std" was rounding noise."""
    G = MixtureG(grid.modes.cpu(), grid.mode_std)
    with pytest.warns(UserWarning, match=r"KID std not reported: with 600 real and 600 generated samples"):
        small = evaluate(G, grid, "kid", n=600)
    assert small["kid_std"] is None and math.isfinite(small["kid"])
    json.dumps(small)   # still JSON-ready
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        big = evaluate(G, grid, "kid", n=1100)
    assert isinstance(big["kid_std"], float) and big["kid_std"] > 0


# ------------------------------------------------------------------ digits
def test_digits_real_images_score_well(digits):
    # two disjoint halves of the digits: one plays the data, the other the generator
    perm = torch.randperm(len(digits), generator=torch.Generator().manual_seed(0))
    half = load_data(digits.images[perm[:900]], labels=digits.labels[perm[:900]])
    half.name = "digits"
    fake = digits.images[perm[900:]].float() / 127.5 - 1
    r = evaluate_samples(fake, half, seed=0)
    assert set(r) == {"fd", "kid", "kid_std", "precision", "recall", "classes", "num_classes",
                      "classes_reverse_kl", "pixel_fd"}
    assert r["classes"] == 10 and r["num_classes"] == 10
    assert r["classes_reverse_kl"] < 0.02
    assert r["precision"] > 0.8 and r["recall"] > 0.8
    assert abs(r["kid"]) < 0.02   # a collapsed set scores ~1.5 in this feature space


def test_digits_collapse_is_caught(digits):
    real = digits.images[:1000].float() / 127.5 - 1
    ones = real[digits.labels[:1000].cpu() == 1]
    collapsed = ones[:1].expand(500, -1, -1, -1)
    good = evaluate_samples(real, digits, ["fd", "classes"])
    bad = evaluate_samples(collapsed + 0.01 * torch.randn(collapsed.shape), digits, ["fd", "classes"])
    assert bad["classes"] == 1
    assert bad["classes_reverse_kl"] == pytest.approx(math.log(10), abs=0.02)   # real labels ~uniform
    assert bad["fd"] > 10 * good["fd"]


def test_dcgan_generator_smoke(digits):
    from fastgan.models import DCGANGenerator

    torch.manual_seed(0)
    G = DCGANGenerator(z_dim=8, img_size=16, channels=1, width=8)
    r = evaluate(G, digits, ["fd", "classes", "pr"], n=64, seed=0)
    assert all(math.isfinite(v) for v in r.values())
    assert G.training  # the generator's mode is restored


def test_stacked_digits_count_1000_modes():
    data = load_data("stacked_digits", resolution=16)
    real = data.images.float() / 127.5 - 1
    r = evaluate_samples(real, data, ["classes", "fd"])
    assert r["num_classes"] == 1000 and r["classes"] > 990
    assert r["classes_reverse_kl"] < 0.1 and r["fd"] < 1.0
    one_digit = real[:, :1].expand(-1, 3, -1, -1)            # b = c = a: only 10 of the 1,000 modes
    r = evaluate_samples(one_digit[:2000], data, ["classes"])
    assert 10 <= r["classes"] <= 40
    assert r["classes_reverse_kl"] > math.log(1000 / 40)


def test_user_feature_callable_on_folder_like_data():
    data = load_data(torch.rand(200, 3, 16, 16) * 2 - 1)
    fake = torch.rand(150, 3, 16, 16) * 2 - 1
    feats = lambda x: x.mean(dim=(2, 3))  # noqa: E731
    r = evaluate_samples(fake, data, ["fd", "kid", "pr"], features=feats)
    assert set(r) == {"fd", "kid", "kid_std", "precision", "recall"}
    assert r["fd"] < 0.01


# ------------------------------------------------------------------ metric selection and errors
def test_default_metrics_per_kind(grid, digits):
    assert default_metrics(grid) == ["modes", "fd", "pr"]
    assert default_metrics(digits) == ["fd", "kid", "pr", "classes", "pixel_fd"]
    assert check_metrics(digits, " classes, fd ,fd") == ["classes", "fd"]


def test_metric_errors(grid, digits):
    with pytest.raises(ConfigError, match="unknown metric 'fid'; choose from fd, kid, pr, modes, classes, pixel_fd"):
        check_metrics(grid, ["fid"])
    with pytest.raises(ConfigError, match="'modes' needs 2-D mixture data"):
        check_metrics(digits, ["modes"])
    with pytest.raises(ConfigError, match="'classes' needs digits"):
        check_metrics(grid, ["classes"])
    folder = load_data(torch.zeros(4, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ConfigError, match="need Inception weights: download https://.*inception-2015-12-05.pt"):
        check_metrics(folder, [])
    with pytest.raises(ConfigError, match="n must be an integer >= 2"):
        evaluate(MixtureG(grid.modes, 0.05), grid, ["modes"], n=1)


def test_bad_generated_samples(grid, digits):
    with pytest.raises(DataError, match=r"shape \(3,\) per sample but the data have \(2,\)"):
        evaluate_samples(torch.zeros(10, 3), grid, ["modes"])
    with pytest.raises(DataError, match=r"\(1, 16, 16\)"):
        evaluate_samples(torch.zeros(10, 1, 32, 32), digits, ["fd"])
    x = torch.zeros(10, 2)
    x[3, 0] = float("nan")
    with pytest.raises(DataError, match="NaN or infinite values \\(1 of 10 samples\\)"):
        evaluate_samples(x, grid, ["modes"])
    with pytest.raises(DataError, match="empty"):
        evaluate_samples(torch.zeros(0, 2), grid, ["modes"])
    with pytest.raises(DataError, match="KID subset_size=2 needs at least that many (real|generated) samples, got 1"):
        evaluate_samples(torch.zeros(1, 2), grid, ["kid"])


# ------------------------------------------------------------------ Inception (TorchScript file)
class _FakeInception(nn.Module):
    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        f = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)
        return f if return_features else f.sum(dim=1)


def test_inception_loads_a_torchscript_file(tmp_path, monkeypatch):
    path = tmp_path / "inception-2015-12-05.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(_FakeInception()).save(str(path))
    monkeypatch.setenv("FASTGAN_INCEPTION", str(path))
    net = InceptionFeatures()
    x = torch.full((5, 1, 8, 8), -1.0)
    x[:, :, 0, 0] = 1.0
    f = net(x, batch_size=2)
    assert f.shape == (5, 6)
    assert torch.allclose(f[:, 3:], torch.full((5, 3), 255.0))        # [-1, 1] -> [0, 255], grey -> RGB
    assert torch.allclose(f[:, :3], torch.full((5, 3), 255.0 / 64))
    data = load_data(torch.rand(40, 3, 16, 16) * 2 - 1)
    r = evaluate_samples(torch.rand(30, 3, 16, 16) * 2 - 1, data)     # default metrics use Inception
    assert set(r) == {"fd", "kid", "kid_std", "precision", "recall"}


def test_inception_missing_or_broken_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTGAN_INCEPTION", str(tmp_path / "nope.pt"))
    with pytest.raises(ConfigError, match="Inception weights not found at .*nope.pt.*: download https://"):
        InceptionFeatures()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="not a loadable TorchScript"):
        InceptionFeatures(bad)


# ------------------------------------------------------------------ plot
def test_plot_history(tmp_path):
    log = tmp_path / "metrics.jsonl"
    lines = [{"step": s, "d_loss": 1.0 / s, "g_loss": 0.5 + s / 100, "d_real": 0.3, "d_fake": -0.2,
              "step_time_ms": 3.0, "images_per_s": 900.0, "time": 1e9 + s} for s in range(10, 110, 10)]
    lines += [{"step": 50, "eval": {"modes": 20, "num_modes": 25, "reverse_kl": float("inf")}, "time": 1e9},
              {"step": 100, "eval": {"modes": 25, "num_modes": 25, "reverse_kl": 0.01}, "time": 1e9}]
    log.write_text("\n".join(json.dumps(x) for x in lines) + "\n{truncated")
    out = plot_history(log, tmp_path / "plots" / "history.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(DataError, match="no metrics log"):
        plot_history(tmp_path / "missing.jsonl", tmp_path / "x.png")
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"step": 1}\n')
    with pytest.raises(DataError, match="no numeric records"):
        plot_history(empty, tmp_path / "x.png")


# ------------------------------------------------------------------ CLI entry
def test_evaluate_cli_on_a_trained_run(tmp_path, capsys):
    import fastgan
    from helpers import tiny_points

    fastgan.Trainer(tiny_points(tmp_path / "run")).fit()
    assert evaluate_cli(str(tmp_path / "run"), metrics="modes", n=300) == 0
    saved = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert saved["data"] == "grid25" and set(saved["metrics"]) == {"modes", "num_modes", "high_quality", "reverse_kl"}
    assert "num_modes" in capsys.readouterr().out


# ------------------------------------------------------------------ evaluation during training
def test_eval_every_logs_metrics_and_plots(tmp_path):
    import fastgan
    from helpers import tiny_points

    fastgan.Trainer(tiny_points(tmp_path / "run", eval_every=6, eval_metrics="modes")).fit()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [rec for rec in lines if "eval" in rec]
    assert [rec["step"] for rec in evals] == [6, 12]
    assert all(rec["eval"]["num_modes"] == 25 for rec in evals)
    assert (tmp_path / "run" / "history.png").stat().st_size > 0


@pytest.mark.parametrize("metrics, message", [("modez", "unknown metric 'modez'"),
                                              ("classes", "needs digits or stacked_digits")])
def test_bad_eval_metrics_fail_before_training(tmp_path, metrics, message):
    import fastgan
    from helpers import tiny_points

    with pytest.raises(ConfigError, match=message):
        fastgan.Trainer(tiny_points(tmp_path / "run", eval_every=6, eval_metrics=metrics))
    assert not (tmp_path / "run" / "checkpoints").exists()
