"""Metric functions against hand-computed, numpy and scipy values on small inputs."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from fastgan.errors import ConfigError, DataError, FastGANError
from fastgan.metrics import (class_coverage, feature_stats, frechet_distance, frechet_distance_from_stats, kid,
                             mixture_mode_metrics, precision_recall, reverse_kl)


def scipy_fd(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula with scipy's general matrix square root."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = scipy.linalg.sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))


# ------------------------------------------------------------------ Fréchet distance
@pytest.mark.parametrize("n,d", [(50, 1), (64, 3), (200, 17), (31, 8)])
def test_fd_matches_scipy_sqrtm(n, d):
    rng = np.random.default_rng(d)
    a = rng.normal(size=(n, d))
    b = rng.normal(size=(n + 7, d)) @ rng.normal(size=(d, d)) * 0.7 + 0.3
    got = frechet_distance(a, b)
    want = scipy_fd(a, b)
    assert got == pytest.approx(want, rel=1e-8, abs=1e-9)


def test_fd_identical_sets_is_zero_and_symmetric():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(100, 12))
    b = rng.normal(size=(90, 12)) * 2
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-10)


def test_fd_of_shifted_set_is_squared_shift():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(80, 5))
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-9)


def test_fd_stable_for_rank_deficient_covariances():
    # fewer samples than dimensions: both covariances are singular
    rng = np.random.default_rng(2)
    a = rng.normal(size=(10, 40))
    b = rng.normal(size=(12, 40)) + 0.1
    got = frechet_distance(a, b)
    assert math.isfinite(got) and got >= 0
    assert got == pytest.approx(scipy_fd(a, b), rel=1e-5)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_fd_from_stats_known_gaussians():
    # 1-D: (mu1-mu2)^2 + (s1-s2)^2 for variances s1^2, s2^2
    got = frechet_distance_from_stats([0.0], [[4.0]], [3.0], [[1.0]])
    assert got == pytest.approx(9.0 + (2.0 - 1.0) ** 2)
    mu, cov = feature_stats(torch.tensor([[1.0, 2.0], [3.0, 6.0]]))
    assert mu.tolist() == [2.0, 4.0]
    assert cov.tolist() == [[2.0, 4.0], [4.0, 8.0]]


# ------------------------------------------------------------------ KID
def numpy_kid(x, y, m, subsets):
    """Direct computation on the given index subsets."""
    vals = []
    d = x.shape[1]
    for ix, iy in subsets:
        a, b = x[ix], y[iy]
        kxx = (a @ a.T / d + 1) ** 3
        kyy = (b @ b.T / d + 1) ** 3
        kxy = (a @ b.T / d + 1) ** 3
        vals.append((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                    - 2 * kxy.mean())
    return float(np.mean(vals)), float(np.std(vals))


def test_kid_matches_numpy_on_full_sets():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(20, 6))
    y = rng.normal(size=(20, 6)) + 0.5
    mean, std = kid(x, y, subset_size=20, num_subsets=3)
    want, _ = numpy_kid(x, y, 20, [(np.arange(20), np.arange(20))])
    assert mean == pytest.approx(want, rel=1e-10)   # every subset is the whole set (permuted)
    assert math.isnan(std)   # one distinct subset: no spread to report (it was rounding noise before)


def test_kid_matches_numpy_on_the_same_subsets():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 5))
    y = rng.normal(size=(35, 5)) * 1.5
    m, s, seed = 10, 7, 123
    g = torch.Generator().manual_seed(seed)
    subsets = [(torch.randperm(40, generator=g)[:m].numpy(), torch.randperm(35, generator=g)[:m].numpy())
               for _ in range(s)]
    got = kid(x, y, subset_size=m, num_subsets=s, seed=seed)
    want = numpy_kid(x, y, m, subsets)
    assert got[0] == pytest.approx(want[0], rel=1e-10)
    assert got[1] == pytest.approx(want[1], rel=1e-10)


def test_kid_shared_kernel_path_matches_per_subset_path(monkeypatch):
    import fastgan.metrics.mmd as kid_mod
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(60, 7)), rng.normal(size=(50, 7)) + 0.3
    fast = kid(x, y, subset_size=20, num_subsets=9, seed=5)
    monkeypatch.setattr(kid_mod, "_FULL_KERNEL_LIMIT", 0)
    slow = kid(x, y, subset_size=20, num_subsets=9, seed=5)
    assert fast == pytest.approx(slow, rel=1e-10)


def test_kid_is_near_zero_for_same_distribution_and_positive_for_different():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    same, std = kid(x, y, subset_size=100, num_subsets=20)
    assert abs(same) < 3 * std + 1e-3
    diff, _ = kid(x, y + 1.0, subset_size=100, num_subsets=20)
    assert diff > 10 * abs(same) and diff > 0.1
    assert kid(x, y, subset_size=100, num_subsets=5, seed=1) == kid(x, y, subset_size=100, num_subsets=5, seed=1)


def test_kid_too_few_samples():
    x = np.zeros((50, 3))
    with pytest.raises(DataError, match="subset_size=100 needs at least that many real samples, got 50"):
        kid(x, np.zeros((200, 3)), subset_size=100)
    with pytest.raises(DataError, match="generated samples, got 50"):
        kid(np.zeros((200, 3)), x, subset_size=100)
    with pytest.raises(ConfigError):
        kid(x, x, subset_size=0)
    with pytest.raises(ConfigError):
        kid(x, x, subset_size=1)
    with pytest.raises(ConfigError):
        kid(x, x, subset_size=10, num_subsets=-1)


# ------------------------------------------------------------------ precision / recall
def test_precision_recall_identical_sets_are_one():
    x = np.random.default_rng(6).normal(size=(60, 4))
    assert precision_recall(x, x, k=3) == (1.0, 1.0)


def test_precision_recall_constructed_sets():
    # real: 10 points on a line at 0..9 (k=1 radius = 1 for every point)
    real = np.stack([np.arange(10.0), np.zeros(10)], 1)
    # fake: 4 points on the real line, 6 far away (each far point has a close neighbour)
    fake = np.concatenate([real[:4] + [0.0, 0.5],
                           np.stack([100 + np.arange(6.0), np.zeros(6)], 1)])
    p, r = precision_recall(real, fake, k=1)
    assert p == pytest.approx(4 / 10)          # the 4 near points are within 0.5 <= 1 of a real point
    # fake radii (k=1): the 4 near points are 1 apart; real points 0..3 lie within 0.5 of them, and
    # real 4 is 1.118 from fake (3, 0.5), beyond that point's radius 1
    assert r == pytest.approx(4 / 10)


def test_precision_recall_collapse_keeps_precision_loses_recall():
    rng = np.random.default_rng(7)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    real = np.concatenate([c + 0.1 * rng.normal(size=(100, 2)) for c in centres])
    collapsed = centres[0] + 0.1 * rng.normal(size=(400, 2))
    p, r = precision_recall(real, collapsed, k=3)
    assert p > 0.9
    assert r < 0.3


def test_precision_recall_chunking_matches_unchunked(monkeypatch):
    import fastgan.metrics.prdc as prdc
    rng = np.random.default_rng(8)
    real, fake = rng.normal(size=(70, 3)), rng.normal(size=(50, 3)) * 1.3
    want = precision_recall(real, fake, k=3)
    monkeypatch.setattr(prdc, "_CHUNK", 7)
    assert precision_recall(real, fake, k=3) == want


def test_precision_recall_needs_more_than_k_samples():
    with pytest.raises(DataError, match="more than 3 real samples, got 3"):
        precision_recall(np.zeros((3, 2)), np.zeros((10, 2)), k=3)
    with pytest.raises(ConfigError):
        precision_recall(np.zeros((10, 2)), np.zeros((10, 2)), k=0)


# ------------------------------------------------------------------ mixture modes
GRID = np.array([[x, y] for x in range(-4, 5, 2) for y in range(-4, 5, 2)], dtype=float)


def test_modes_all_covered_evenly():
    rng = np.random.default_rng(9)
    samples = np.repeat(GRID, 100, axis=0) + 0.05 * rng.normal(size=(2500, 2)).clip(-2, 2)
    m = mixture_mode_metrics(samples, GRID, std=0.05)
    assert m["modes"] == 25 and m["num_modes"] == 25
    assert m["high_quality"] == 1.0
    assert m["reverse_kl"] == pytest.approx(0.0, abs=1e-12)
    assert m["counts"] == [100] * 25


def test_modes_collapsed_generator():
    samples = np.tile(GRID[7], (2500, 1)) + 0.01
    m = mixture_mode_metrics(samples, GRID, std=0.05)
    assert m["modes"] == 1
    assert m["high_quality"] == 1.0
    assert m["reverse_kl"] == pytest.approx(math.log(25))


def test_modes_hand_computed_mixture():
    # 4 modes; 6 good samples split 3/2/1/0, 4 samples off every mode
    centres = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    std = 0.01
    good = np.array([[0.0, 0.0], [0.02, 0.0], [0.0, -0.029], [1.0, 0.0], [1.01, 0.01], [0.0, 1.0]])
    bad = np.array([[0.5, 0.5], [0.0, 0.031], [2.0, 2.0], [1.0, 0.5]])
    m = mixture_mode_metrics(np.concatenate([good, bad]), centres, std=std)
    p = np.array([3, 2, 1]) / 6
    assert m["counts"] == [3, 2, 1, 0]
    assert m["modes"] == 3
    assert m["high_quality"] == pytest.approx(0.6)
    assert m["reverse_kl"] == pytest.approx(float((p * np.log(p * 4)).sum()))


def test_modes_threshold_is_strict_three_std():
    centres = np.array([[0.0, 0.0], [10.0, 0.0]])
    inside = mixture_mode_metrics(np.array([[0.2999, 0.0]]), centres, std=0.1)
    outside = mixture_mode_metrics(np.array([[0.3001, 0.0]]), centres, std=0.1)
    assert inside["high_quality"] == 1.0 and outside["high_quality"] == 0.0
    assert outside["modes"] == 0 and outside["reverse_kl"] == math.inf


def test_modes_bad_inputs():
    with pytest.raises(DataError, match="NaN"):
        mixture_mode_metrics(np.array([[0.0, float("nan")]]), GRID, std=0.05)
    with pytest.raises(DataError, match="dimensions"):
        mixture_mode_metrics(np.zeros((5, 3)), GRID, std=0.05)
    with pytest.raises(DataError, match="empty"):
        mixture_mode_metrics(np.zeros((0, 2)), GRID, std=0.05)
    with pytest.raises(ConfigError):
        mixture_mode_metrics(np.zeros((5, 2)), GRID, std=0.0)


# ------------------------------------------------------------------ class coverage / reverse KL
def test_class_coverage_against_reference():
    pred = torch.tensor([0, 0, 1, 1, 1, 3])
    ref = [0.25, 0.25, 0.25, 0.25]
    c = class_coverage(pred, 4, reference=ref)
    p = np.array([2, 3, 1]) / 6
    assert c["classes"] == 3 and c["counts"] == [2, 3, 0, 1]
    assert c["reverse_kl"] == pytest.approx(float((p * np.log(p / 0.25)).sum()))
    assert class_coverage(pred, 4)["reverse_kl"] == pytest.approx(c["reverse_kl"])  # None = uniform
    # non-uniform reference given as counts
    ref_counts = np.array([10, 30, 0, 60])
    q = ref_counts / 100
    want = float(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q[[0, 1, 3]])))
    assert class_coverage(pred, 4, reference=ref_counts)["reverse_kl"] == pytest.approx(want)


def test_class_coverage_collapse_and_unsupported_class():
    assert class_coverage(torch.full((100,), 2), 10)["reverse_kl"] == pytest.approx(math.log(10))
    assert class_coverage(torch.tensor([0, 2]), 3, reference=[1, 1, 0])["reverse_kl"] == math.inf


def test_class_coverage_bad_inputs():
    with pytest.raises(DataError, match=r"\[0, 10\)"):
        class_coverage(torch.tensor([0, 10]), 10)
    with pytest.raises(DataError, match="integers"):
        class_coverage(torch.tensor([0.0, 1.0]), 10)
    with pytest.raises(DataError, match="at least one"):
        class_coverage(torch.tensor([], dtype=torch.long), 10)
    with pytest.raises(DataError, match="bins"):
        reverse_kl([1, 2], [1, 2, 3])
    assert reverse_kl([0, 0]) == math.inf


# ------------------------------------------------------------------ shared input checks
@pytest.mark.parametrize("fn", [frechet_distance, lambda a, b: kid(a, b, subset_size=2, num_subsets=1),
                                precision_recall])
def test_bad_feature_inputs(fn):
    good = np.random.default_rng(10).normal(size=(8, 3))
    with pytest.raises(DataError, match="have 3 dimensions but .* have 4"):
        fn(good, np.zeros((8, 4)))
    nan = good.copy()
    nan[2, 1] = np.nan
    with pytest.raises(DataError, match="NaN or infinite values \\(1 of 8 rows\\)"):
        fn(nan, good)
    inf = good.copy()
    inf[0, 0] = np.inf
    with pytest.raises(DataError, match="NaN or infinite"):
        fn(good, inf)
    with pytest.raises(DataError, match="empty"):
        fn(np.zeros((0, 3)), good)
    with pytest.raises(DataError, match=r"shape \(N, D\)"):
        fn(np.zeros((2, 2, 2)), good)
    with pytest.raises(DataError, match="torch tensor or numpy array"):
        fn([[1.0, 2.0, 3.0]], good)


def test_errors_are_fastgan_errors_with_one_line_messages():
    for call in (lambda: frechet_distance(np.zeros((1, 2)), np.zeros((5, 2))),
                 lambda: kid(np.zeros((5, 2)), np.zeros((5, 2)), subset_size=10),
                 lambda: precision_recall(np.zeros((5, 2)), np.zeros((5, 3)))):
        with pytest.raises(FastGANError) as e:
            call()
        assert "\n" not in str(e.value) and str(e.value)


def test_metrics_accept_torch_tensors_of_any_float_dtype():
    rng = np.random.default_rng(11)
    a = rng.normal(size=(30, 4))
    b = rng.normal(size=(30, 4)) + 0.2
    ref = frechet_distance(a, b)
    assert frechet_distance(torch.tensor(a, dtype=torch.float32), torch.tensor(b)) == pytest.approx(ref, rel=1e-5)


# ------------------------------------------------------------------ huge, tiny and invalid inputs
def _pair(seed=20, n=40, d=5):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(n, d)) * 1.3 + 0.4


@pytest.mark.parametrize("e", [300, -300])
def test_fd_of_huge_or_tiny_features_scales_exactly(e):
    """FD(2^e a, 2^e b) = 4^e FD(a, b); unscaled, 2^300 overflowed to 0.0 and 2^-300 underflowed."""
    a, b = _pair()
    ref = frechet_distance(a, b)
    got = frechet_distance(a * 2.0 ** e, b * 2.0 ** e)
    assert got == pytest.approx(ref * 4.0 ** e, rel=1e-12)


def test_fd_beyond_float64_is_one_error_naming_the_arguments():
    a, b = _pair()
    with pytest.raises(DataError) as e:
        frechet_distance(a * 1e200, b * 1e200)
    assert "features_a and features_b" in str(e.value) and "beyond float64" in str(e.value)
    assert "covariance" not in str(e.value) and "\n" not in str(e.value)


def test_fd_from_stats_refuses_what_is_not_a_covariance():
    mu = np.zeros(3)
    good = np.eye(3)
    with pytest.raises(DataError, match="cov_a is not positive semi-definite"):
        frechet_distance_from_stats(mu, -np.eye(3), mu, good)   # once returned 0.0
    with pytest.raises(DataError, match="cov_b is not positive semi-definite"):
        frechet_distance_from_stats(mu, good, mu, np.diag([1.0, 1.0, -0.5]))
    asym = np.eye(3)
    asym[0, 1] = 0.5
    with pytest.raises(DataError, match="cov_a is not symmetric"):
        frechet_distance_from_stats(mu, asym, mu, good)
    with pytest.raises(DataError, match="mu_a, cov_a and mu_b, cov_b"):
        frechet_distance_from_stats(mu + 1e200, good, mu, good)


def test_fd_from_stats_accepts_float32_rounding_of_a_rank_deficient_covariance():
    rng = np.random.default_rng(21)
    x = rng.normal(size=(50, 200)).astype(np.float32)   # fewer samples than dimensions
    xc = x - x.mean(0)
    cov = xc.T @ xc / 49
    assert np.linalg.eigvalsh(cov.astype(np.float64)).min() < 0   # rounding made it slightly indefinite
    mu_a, cov_a = feature_stats(x)
    assert frechet_distance_from_stats(x.mean(0), cov, mu_a.numpy(), cov_a.numpy()) == pytest.approx(0.0, abs=1e-3)


def test_kid_overflow_is_one_error_not_nan():
    a, b = _pair(n=30)
    with pytest.raises(DataError) as e:
        kid(a * 1e120, b * 1e120, subset_size=10, num_subsets=3)
    assert "KID of real and fake is beyond float64" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("scale", [1e200, 1e-200])
def test_precision_recall_of_huge_or_tiny_features_equal_the_unscaled_ones(scale):
    a, b = _pair(n=60)
    ref = precision_recall(a, b)
    assert 0.0 < ref[0] < 1.0 and 0.0 < ref[1] < 1.0
    assert precision_recall(a * scale, b * scale) == ref   # once (1.0, 0.0) for huge features
