"""Tests for alternators_ppl.metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pyro.ops.stats import crps_empirical as pyro_crps_empirical
from scipy.stats import norm

from alternators_ppl import metrics
from alternators_ppl.metrics import (
    crps_empirical,
    crps_fair,
    crps_gaussian,
    interval_coverage,
    interval_score,
    interval_width,
    mae,
    pearson_cc,
    r2,
    rmse,
)

F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gaussian_crps_reference(mu, sigma, y):
    """Closed-form Gaussian CRPS (Gneiting & Raftery 2007), computed with numpy/scipy."""
    mu, sigma, y = (np.asarray(a, dtype=np.float64) for a in (mu, sigma, y))
    z = (y - mu) / sigma
    return sigma * (z * (2.0 * norm.cdf(z) - 1.0) + 2.0 * norm.pdf(z) - 1.0 / np.sqrt(np.pi))


def naive_crps(samples: torch.Tensor, truth: torch.Tensor, fair: bool) -> torch.Tensor:
    """O(S^2) energy-form CRPS per element."""
    s = samples.shape[0]
    spread = (samples.unsqueeze(0) - samples.unsqueeze(1)).abs().sum((0, 1))
    denom = 2 * s * (s - 1) if fair else 2 * s * s
    return (samples - truth).abs().mean(0) - spread / denom


# A uniform signature so shape tests can run over every metric.
ALL_METRICS = {
    "mae": lambda s, p, t, over: mae(p, t, over=over),
    "rmse": lambda s, p, t, over: rmse(p, t, over=over),
    "r2": lambda s, p, t, over: r2(p, t, over=over),
    "pearson_cc": lambda s, p, t, over: pearson_cc(p, t, over=over),
    "crps_empirical": lambda s, p, t, over: crps_empirical(s, t, over=over),
    "crps_fair": lambda s, p, t, over: crps_fair(s, t, over=over),
    "crps_gaussian": lambda s, p, t, over: crps_gaussian(s.mean(0), s.std(0), t, over=over),
    "interval_coverage": lambda s, p, t, over: interval_coverage(s, t, over=over),
    "interval_width": lambda s, p, t, over: interval_width(s, over=over),
    "interval_score": lambda s, p, t, over: interval_score(s, t, over=over),
}


def random_problem(shape=(4, 5, 3), num_samples=16, seed=0, dtype=F64):
    g = gen(seed)
    truth = torch.randn(shape, generator=g, dtype=dtype)
    pred = truth + 0.5 * torch.randn(shape, generator=g, dtype=dtype)
    samples = pred + torch.randn((num_samples, *shape), generator=g, dtype=dtype)
    return samples, pred, truth


def test_all_is_explicit():
    assert sorted(metrics.__all__) == sorted(ALL_METRICS)


# --------------------------------------------------------------------------- point metrics


def test_mae_rmse_hand_computed():
    pred = torch.tensor([[1.0, 2.0], [3.0, 5.0], [0.0, -1.0]], dtype=F64)
    truth = torch.tensor([[0.0, 2.0], [1.0, 1.0], [0.0, 1.0]], dtype=F64)
    # errors: column 0 -> [1, 2, 0]; column 1 -> [0, 4, -2]
    torch.testing.assert_close(mae(pred, truth), torch.tensor([1.0, 2.0], dtype=F64))
    torch.testing.assert_close(
        rmse(pred, truth), torch.tensor([math.sqrt(5 / 3), math.sqrt(20 / 3)], dtype=F64)
    )
    torch.testing.assert_close(mae(pred, truth, over=(0, 1)), torch.tensor(1.5, dtype=F64))
    torch.testing.assert_close(
        rmse(pred, truth, over=(0, 1)), torch.tensor(math.sqrt(25 / 6), dtype=F64)
    )
    torch.testing.assert_close(mae(pred, truth, over=1), torch.tensor([0.5, 3.0, 1.0], dtype=F64))


def test_r2_perfect_mean_and_bad_predictors():
    _, _, truth = random_problem(shape=(200, 3))
    torch.testing.assert_close(r2(truth, truth), torch.ones(3, dtype=F64))
    mean_pred = truth.mean(0, keepdim=True).expand_as(truth)
    torch.testing.assert_close(r2(mean_pred, truth), torch.zeros(3, dtype=F64))
    bad = -truth
    score = r2(bad, truth)
    assert (score < 0).all()
    # signed, never abs'd: compare with the textbook formula computed in numpy
    t, b = truth.numpy(), bad.numpy()
    expected = 1.0 - ((b - t) ** 2).sum(0) / ((t - t.mean(0)) ** 2).sum(0)
    np.testing.assert_allclose(score.numpy(), expected, rtol=1e-12)
    assert (score < -2.0).all()  # -truth has SSE = 4 sum t^2 > 4 SST


def test_pearson_matches_numpy_corrcoef():
    _, pred, truth = random_problem(shape=(300, 4), seed=1)
    pred = pred.clone()
    pred[:, 3] = -2.0 * truth[:, 3] + 1.0  # perfectly anti-correlated column
    got = pearson_cc(pred, truth)
    expected = [np.corrcoef(pred[:, j].numpy(), truth[:, j].numpy())[0, 1] for j in range(4)]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-14)
    assert got[3].item() == pytest.approx(-1.0, abs=1e-12)


def test_numpy_inputs_and_integer_inputs():
    _, pred, truth = random_problem(shape=(10, 2))
    out = rmse(pred.numpy(), truth.numpy())
    assert isinstance(out, torch.Tensor) and out.dtype == F64
    torch.testing.assert_close(out, rmse(pred, truth))
    mixed = mae(pred, truth.numpy())
    torch.testing.assert_close(mixed, mae(pred, truth))
    ints = mae(np.array([[1, 2], [3, 4]]), np.array([[1, 1], [1, 1]]))
    assert ints.is_floating_point()
    torch.testing.assert_close(ints, torch.tensor([1.0, 2.0]))


# --------------------------------------------------------------------------- CRPS


@pytest.mark.parametrize("num_samples", [1, 2, 7, 64])
def test_crps_empirical_matches_pyro(num_samples):
    samples, _, truth = random_problem(shape=(6, 5, 3), num_samples=num_samples, seed=2)
    per_elem = pyro_crps_empirical(samples, truth)  # reduces only the sample dim
    torch.testing.assert_close(crps_empirical(samples, truth, over=()), per_elem)
    torch.testing.assert_close(crps_empirical(samples, truth), per_elem.mean((0, 1)))
    torch.testing.assert_close(crps_empirical(samples, truth, over=(0,)), per_elem.mean(0))


@pytest.mark.parametrize("num_samples", [2, 3, 10])
def test_crps_sorting_matches_naive_quadratic(num_samples):
    samples, _, truth = random_problem(shape=(7, 2), num_samples=num_samples, seed=3)
    torch.testing.assert_close(
        crps_empirical(samples, truth, over=()), naive_crps(samples, truth, fair=False)
    )
    torch.testing.assert_close(
        crps_fair(samples, truth, over=()), naive_crps(samples, truth, fair=True)
    )


def test_crps_gaussian_matches_scipy_formula():
    g = gen(4)
    mu = torch.randn(50, 3, generator=g, dtype=F64)
    sigma = torch.rand(50, 3, generator=g, dtype=F64) * 2 + 0.1
    y = torch.randn(50, 3, generator=g, dtype=F64) * 2
    got = crps_gaussian(mu, sigma, y, over=())
    np.testing.assert_allclose(got.numpy(), gaussian_crps_reference(mu, sigma, y), rtol=1e-12)
    # scalar std broadcasts
    torch.testing.assert_close(
        crps_gaussian(mu, 0.7, y, over=()),
        torch.as_tensor(gaussian_crps_reference(mu, 0.7, y)),
    )


def test_large_ensemble_crps_approaches_gaussian_closed_form():
    g = gen(5)
    mu = torch.tensor([[0.0, 1.0, -2.0, 0.5]], dtype=F64)
    sigma = torch.tensor([[1.0, 0.5, 2.0, 3.0]], dtype=F64)
    y = torch.tensor([[0.3, -0.5, 1.0, 0.5]], dtype=F64)
    samples = mu + sigma * torch.randn((20000, 1, 4), generator=g, dtype=F64)
    expected = gaussian_crps_reference(mu, sigma, y)[0]
    tol = 0.01 * sigma.numpy()[0] + 1e-3
    for fn in (crps_empirical, crps_fair):
        got = fn(samples, y).numpy()
        assert got.shape == (4,)
        assert np.all(np.abs(got - expected) < tol), (fn.__name__, got, expected)
    # and the closed form in the module agrees too
    np.testing.assert_allclose(crps_gaussian(mu, sigma, y).numpy(), expected, rtol=1e-12)


def test_crps_fair_is_unbiased_for_small_ensembles():
    num_samples, reps, y = 3, 200_000, 0.4
    samples = torch.randn((num_samples, reps), generator=gen(6), dtype=F64)
    truth = torch.full((reps,), y, dtype=F64)
    true_crps = float(gaussian_crps_reference(0.0, 1.0, y))
    fair = crps_fair(samples, truth, over=(0,)).item()
    plug_in = crps_empirical(samples, truth, over=(0,)).item()
    # plug-in bias is E|X - X'| / (2 S) = 1 / (S sqrt(pi)) for N(0, 1): about 0.19 at S = 3
    assert abs(fair - true_crps) < 0.01
    assert plug_in - true_crps == pytest.approx(1.0 / (num_samples * math.sqrt(math.pi)), abs=0.01)
    assert abs(fair - true_crps) < abs(plug_in - true_crps) / 10


# --------------------------------------------------------------------------- intervals


def test_coverage_and_width_of_calibrated_gaussian():
    g = gen(7)
    samples = torch.randn((400, 5000, 2), generator=g, dtype=F64)
    truth = torch.randn((5000, 2), generator=g, dtype=F64)
    cov = interval_coverage(samples, truth, level=0.9)
    assert cov.shape == (2,)
    torch.testing.assert_close(cov, torch.full((2,), 0.9, dtype=F64), atol=0.02, rtol=0)
    cov50 = interval_coverage(samples, truth, level=0.5, over=(0, 1))
    assert cov50.item() == pytest.approx(0.5, abs=0.02)
    width = interval_width(samples, level=0.9)
    expected = 2 * norm.ppf(0.95)
    torch.testing.assert_close(width, torch.full((2,), expected, dtype=F64), atol=0.05, rtol=0)


def test_coverage_overconfident_and_hand_checked():
    # too-narrow ensemble under-covers
    g = gen(8)
    samples = 0.2 * torch.randn((500, 1000, 1), generator=g, dtype=F64)
    truth = torch.randn((1000, 1), generator=g, dtype=F64)
    assert interval_coverage(samples, truth).item() < 0.3
    # samples 0..10: 80% interval is [1, 9] with linear interpolation; endpoints count as inside
    s = torch.arange(11, dtype=F64).reshape(11, 1).expand(11, 5)
    t = torch.tensor([0.5, 1.0, 5.0, 9.0, 9.5], dtype=F64)
    torch.testing.assert_close(
        interval_coverage(s, t, level=0.8, over=()),
        torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0], dtype=F64),
    )
    torch.testing.assert_close(interval_width(s, level=0.8, over=0), torch.tensor(8.0, dtype=F64))


def test_interval_score_by_hand_and_its_gaussian_closed_form():
    # samples 0..10: the 80% interval is [1, 9] (width 8); a miss costs 2 / 0.2 = 10 per unit
    s = torch.arange(11, dtype=F64).reshape(11, 1).expand(11, 4)
    t = torch.tensor([0.5, 5.0, 9.0, 10.0], dtype=F64)
    torch.testing.assert_close(
        interval_score(s, t, level=0.8, over=()), torch.tensor([13.0, 8.0, 8.0, 18.0], dtype=F64)
    )
    # N(0, 1) draws of y ~ N(0, 1): E = 2 z + (2 / (1 - level)) * 2 (phi(z) - z (1 - Phi(z))),
    # z = Phi^-1((1 + level) / 2), the expected loss of each tail in closed form
    g = gen(9)
    samples = torch.randn((400, 4000, 1), generator=g, dtype=F64)
    truth = torch.randn((4000, 1), generator=g, dtype=F64)
    z = norm.ppf(0.95)
    expected = 2 * z + 20 * 2 * (norm.pdf(z) - z * (1 - norm.cdf(z)))
    assert interval_score(samples, truth).item() == pytest.approx(expected, rel=0.03)


# --------------------------------------------------------------------------- over= shapes


@pytest.mark.parametrize("name", sorted(ALL_METRICS))
@pytest.mark.parametrize(
    "over, shape",
    [
        (None, (3,)),
        ((0,), (5, 3)),
        ((-3,), (5, 3)),
        ((0, 1), (3,)),
        ((1, 0), (3,)),
        ((0, 2), (5,)),
        ((0, 1, 2), ()),
        (1, (4, 3)),
    ],
)
def test_over_shapes(name, over, shape):
    samples, pred, truth = random_problem(shape=(4, 5, 3))
    out = ALL_METRICS[name](samples, pred, truth, over)
    assert isinstance(out, torch.Tensor)
    assert out.shape == shape
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(set(ALL_METRICS) - {"r2", "pearson_cc"}))
def test_over_empty_is_per_element_and_reductions_are_means(name):
    samples, pred, truth = random_problem(shape=(4, 5, 3))
    fn = ALL_METRICS[name]
    elem = fn(samples, pred, truth, ())
    assert elem.shape == (4, 5, 3)
    if name == "rmse":
        elem = elem.square()  # rmse averages squared errors before the root
        torch.testing.assert_close(fn(samples, pred, truth, (0,)).square(), elem.mean(0))
        torch.testing.assert_close(fn(samples, pred, truth, None).square(), elem.mean((0, 1)))
    else:
        torch.testing.assert_close(fn(samples, pred, truth, (0,)), elem.mean(0))
        torch.testing.assert_close(fn(samples, pred, truth, None), elem.mean((0, 1)))


def test_r2_and_pearson_over_matches_per_slice():
    _, pred, truth = random_problem(shape=(40, 5, 3), seed=9)
    per_h = r2(pred, truth, over=(0,))
    per_h_p = pearson_cc(pred, truth, over=(0,))
    assert per_h.shape == per_h_p.shape == (5, 3)
    for h in range(5):
        torch.testing.assert_close(per_h[h], r2(pred[:, h], truth[:, h]))
        torch.testing.assert_close(per_h_p[h], pearson_cc(pred[:, h], truth[:, h]))


def test_one_dim_truth_default_is_per_element():
    samples, pred, truth = random_problem(shape=(6,))
    assert mae(pred, truth).shape == (6,)
    assert crps_empirical(samples, truth).shape == (6,)
    assert interval_width(samples).shape == (6,)


# --------------------------------------------------------------------------- bad input


def test_shape_mismatch_errors_name_argument():
    samples, pred, truth = random_problem(shape=(4, 3))
    with pytest.raises(ValueError, match=r"pred has shape \(4, 2\).*\(4, 3\)"):
        mae(pred[:, :2], truth)
    with pytest.raises(ValueError, match=r"samples has shape \(16, 4, 2\).*\(S, 4, 3\)"):
        crps_empirical(samples[..., :2], truth)
    # forgetting the sample axis is caught, not broadcast
    with pytest.raises(ValueError, match="samples has shape"):
        crps_fair(pred, truth)
    with pytest.raises(ValueError, match="mean has shape"):
        crps_gaussian(pred[:2], 1.0, truth)
    with pytest.raises(ValueError, match=r"std has shape \(5,\)"):
        crps_gaussian(pred, torch.ones(5, dtype=F64), truth)
    with pytest.raises(ValueError, match="samples has shape"):
        interval_coverage(samples[:, :1], truth)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("which", ["pred", "truth"])
def test_non_finite_point_inputs_raise(bad, which):
    _, pred, truth = random_problem(shape=(4, 3))
    args = {"pred": pred.clone(), "truth": truth.clone()}
    args[which][1, 2] = bad
    for fn in (mae, rmse, r2, pearson_cc):
        with pytest.raises(ValueError, match=rf"^{which} \(shape \(4, 3\)\).*finite"):
            fn(args["pred"], args["truth"])


@pytest.mark.parametrize("which", ["samples", "truth"])
def test_non_finite_sample_inputs_raise(which):
    samples, _, truth = random_problem(shape=(4, 3))
    args = {"samples": samples.clone(), "truth": truth.clone()}
    args[which].view(-1)[0] = math.nan
    for fn in (crps_empirical, crps_fair, interval_coverage):
        with pytest.raises(ValueError, match=rf"^{which} .*NaN"):
            fn(args["samples"], args["truth"])
    with pytest.raises(ValueError, match="^std .*inf"):
        crps_gaussian(truth, torch.full_like(truth, math.inf), truth)
    with pytest.raises(ValueError, match="^samples .*NaN"):
        interval_width(np.array([[1.0, np.nan], [2.0, 3.0]]))


def test_crps_fair_needs_two_samples():
    samples, _, truth = random_problem(shape=(4, 3), num_samples=1)
    with pytest.raises(ValueError, match=r"S >= 2.*samples.shape=\(1, 4, 3\)"):
        crps_fair(samples, truth)
    crps_empirical(samples, truth)  # S = 1 is fine for the plug-in estimator


@pytest.mark.parametrize("level", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_level_outside_open_unit_interval_raises(level):
    samples, _, truth = random_problem(shape=(4, 3))
    with pytest.raises(ValueError, match="level must lie in the open interval"):
        interval_coverage(samples, truth, level=level)
    with pytest.raises(ValueError, match="level must lie in the open interval"):
        interval_width(samples, level=level)


def test_other_bad_inputs():
    samples, pred, truth = random_problem(shape=(4, 3))
    with pytest.raises(ValueError, match=r"over=\(2,\).*out of range.*\(4, 3\)"):
        mae(pred, truth, over=(2,))
    with pytest.raises(ValueError, match="repeats a dim"):
        rmse(pred, truth, over=(0, -2))
    with pytest.raises(ValueError, match="std .* must be > 0"):
        crps_gaussian(pred, torch.zeros_like(truth), truth)
    with pytest.raises(ValueError, match="r2 needs >= 2 elements"):
        r2(pred, truth, over=())
    with pytest.raises(ValueError, match="pearson_cc needs >= 2 elements"):
        pearson_cc(pred[:1], truth[:1])
    with pytest.raises(ValueError, match=r"pred is empty: shape \(0, 3\)"):
        mae(pred[:0], truth[:0])
    with pytest.raises(TypeError, match="level must be a real number"):
        interval_width(samples, level="0.9")


# --------------------------------------------------------------------------- device


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    samples, pred, truth = random_problem(shape=(8, 5, 3), num_samples=32)
    dev = torch.device("cuda")
    for name, fn in ALL_METRICS.items():
        for over in (None, (0,), ()):
            if name in ("r2", "pearson_cc") and over == ():
                continue
            cpu = fn(samples, pred, truth, over)
            gpu = fn(samples.to(dev), pred.to(dev), truth.to(dev), over)
            assert gpu.device.type == "cuda", name
            torch.testing.assert_close(gpu.cpu(), cpu, msg=name)
    # a numpy truth follows the tensor input onto the GPU
    out = crps_empirical(samples.to(dev), truth.numpy())
    assert out.device.type == "cuda"
    with pytest.raises(ValueError, match="one device"):
        mae(pred.to(dev), truth)
