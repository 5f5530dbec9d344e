"""Per-dimension sigma_x, noise calibration on validation data, fit(calibrate=...)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alternators_ppl.inference import calibrate_noise, fit
from alternators_ppl.inference.calibration import DEFAULT_GRIDS
from alternators_ppl.models.alpha_alternator import AlphaAlternator
from alternators_ppl.models.alternator import Alternator
from alternators_ppl.models.alternator_pp import AlternatorPlusPlus
from alternators_ppl.models.learned_alpha import LearnedAlphaAlternator


def _model(sigma_x=0.3, sigma_z=0.1, alpha=0.3, seed=0, obs_dim=3, latent_dim=2):
    torch.manual_seed(seed)
    return Alternator(
        obs_dim, latent_dim, sigma_x=sigma_x, sigma_z=sigma_z, alpha=alpha, hidden=(16,)
    ).double()


def _data(batch=4, steps=12, obs_dim=3, latent_dim=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, steps, obs_dim, generator=g, dtype=torch.float64)
    z = torch.randn(batch, steps + 1, latent_dim, generator=g, dtype=torch.float64)
    return x, z


# ------------------------------------------------------------------ per-dimension sigma_x
def test_equal_vector_sigma_x_matches_scalar():
    x, z = _data()
    scalar, vector = _model(0.3), _model([0.3, 0.3, 0.3])
    assert vector.sigma_x_per_dim and not scalar.sigma_x_per_dim
    torch.testing.assert_close(vector.log_joint(x, z), scalar.log_joint(x, z))
    torch.testing.assert_close(vector.path_loss(x, z), scalar.path_loss(x, z))
    torch.manual_seed(5)
    a = scalar.forecast(x[:, :6], 4, num_samples=3, method="ancestral")
    torch.manual_seed(5)
    b = vector.forecast(x[:, :6], 4, num_samples=3, method="ancestral")
    torch.testing.assert_close(a, b)


def test_vector_sigma_x_log_joint_and_loss_against_hand_formula():
    x, z = _data()
    sx = torch.tensor([0.1, 0.4, 0.7], dtype=torch.float64)
    model = _model(sx, sigma_z=0.2, alpha=0.5)
    with torch.no_grad():
        f = model.otn(z[:, :-1])
        g = model.ftn(x)
    mean_x = torch.sqrt(1 - sx**2) * f
    mean_z = math.sqrt(0.5) * g + math.sqrt(1 - 0.5 - 0.04) * z[:, :-1]
    sq_x = ((x - mean_x) ** 2 / (2 * sx**2)).sum((1, 2))
    sq_z = ((z[:, 1:] - mean_z) ** 2 / (2 * 0.04)).sum((1, 2))
    log_norm = (
        -torch.log(sx).sum() * x.shape[1]
        - x.shape[1] * x.shape[2] * 0.5 * math.log(2 * math.pi)
        - x.shape[1] * z.shape[2] * (math.log(0.2) + 0.5 * math.log(2 * math.pi))
    )
    log_z0 = -0.5 * (z[:, 0] ** 2).sum(-1) - z.shape[2] * 0.5 * math.log(2 * math.pi)
    with torch.no_grad():
        torch.testing.assert_close(model.log_joint(x, z), -sq_x - sq_z + log_norm + log_z0)
        scale = 2 * (sx**2).mean() * 0.04
        torch.testing.assert_close(model.path_loss(x, z), scale * (sq_x + sq_z))


def test_vector_sigma_x_state_dict_device_dtype_and_repr():
    model = _model([0.1, 0.2, 0.3])
    clone = _model([0.5, 0.5, 0.5], seed=3)
    clone.load_state_dict(model.state_dict())
    assert clone.sigma_x_values() == pytest.approx([0.1, 0.2, 0.3])
    model.float()
    assert model.sigma_x.dtype == torch.float32
    assert "sigma_x=[0.1, 0.2, 0.3]" in repr(model)
    assert "sigma_x" not in dict(_model(0.3).state_dict())  # the scalar model is unchanged


@pytest.mark.parametrize(
    "value, match",
    [([0.3, 0.3], r"shape \(Dx,\) = \(3,\)"), ([0.3, 1.0, 0.2], "every dimension"), (0.0, "")],
)
def test_bad_sigma_x(value, match):
    with pytest.raises(ValueError, match="sigma_x"):
        _model(value)


def test_set_noise_checks_and_sets():
    model = _model()
    model.set_noise(sigma_x=[0.2, 0.3, 0.4], sigma_z=0.5, alpha=0.7)
    assert model.sigma_x_values() == pytest.approx([0.2, 0.3, 0.4])
    assert (model.sigma_z, model.alpha_values) == (0.5, (0.7,))
    with pytest.raises(ValueError, match="alpha"):
        model.set_noise(alpha=0.8)  # 0.8 + 0.25 >= 1
    model.set_noise(sigma_x=0.3)
    assert not model.sigma_x_per_dim and model.sigma_x == 0.3


def test_jax_refuses_per_dimension_sigma_x():
    pytest.importorskip("jax")
    from alternators_ppl.models.alternator_jax import JaxAlternator

    with pytest.raises(ValueError, match="scalar sigma_x"):
        JaxAlternator.from_torch(_model([0.1, 0.2, 0.3]))


# ------------------------------------------------------------------ calibration
def _simulated(model, batch, steps, seed):
    torch.manual_seed(seed)
    return model.sample(batch, steps)["x"]


@pytest.mark.slow
def test_calibration_recovers_the_noise_of_simulated_data():
    """Data simulated from a known model; the same networks with wrong noise; calibration on
    held-out sequences must find noise close to the truth and a likelihood close to its."""
    truth = _model([0.15, 0.5], sigma_z=0.3, alpha=0.5, obs_dim=2, seed=7)
    with torch.no_grad():
        for p in truth.parameters():
            p.mul_(2.0)  # a more informative OTN
    x_val = _simulated(truth, 16, 40, seed=11)
    model = _model(0.3, sigma_z=0.1, alpha=0.3, obs_dim=2, seed=7)
    model.load_state_dict(truth.state_dict(), strict=False)
    report = calibrate_noise(model, x_val, preserve_mean=False, num_particles=128)
    assert report["after"] > report["before"]
    assert report["sigma_x"] == pytest.approx([0.15, 0.5], rel=0.3)
    assert report["sigma_z"] == pytest.approx(0.3, rel=0.5)
    assert 0.2 < report["alpha"] < 0.8
    assert model.alpha_values[0] + model.sigma_z**2 < 1
    exact = truth.log_likelihood(x_val, num_particles=128, seed=0).sum() / x_val.numel()
    assert abs(report["after"] - float(exact)) < 0.05


@pytest.mark.parametrize("variant", ["alternator", "alternator++"])
def test_preserve_mean_keeps_the_observation_mean(variant):
    """The mean of x_t given z_{t-1} is the one Eq. 12 fitted after calibration: for
    Alternator++ eps_psi's weight sqrt(1 - beta - sigma_x^2) changes with sigma_x, and its
    output layer absorbs the change (the data are 4x wider than the model, so sigma_x grows
    towards its bound sqrt(1 - beta))."""
    torch.manual_seed(0)
    if variant == "alternator":
        model = _model(0.3, obs_dim=2)
    else:
        model = AlternatorPlusPlus(2, 2, sigma_x=0.3, beta=0.5, hidden=(16,)).double()
    x_val = torch.randn(4, 20, 2, dtype=torch.float64) * 4.0
    z = torch.randn(5, 2, dtype=torch.float64)
    with torch.no_grad():
        before = model.x_loc(z)
    report = calibrate_noise(model, x_val, num_particles=32, sweeps=1)
    assert model.sigma_x_per_dim and report["after"] > report["before"]
    assert max(report["sigma_x"]) < model.sigma_x_bound
    with torch.no_grad():
        torch.testing.assert_close(model.x_loc(z), before)


def test_calibrate_refusals():
    model = _model(obs_dim=2)
    x = torch.randn(2, 10, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"grids\['u'\]"):
        calibrate_noise(model, x, grids={"u": [1.2]})
    with pytest.raises(ValueError, match="no observed entry"):
        calibrate_noise(model, torch.full_like(x, float("nan")))


    class ShiftedMean(Alternator):  # a mean that calibration cannot keep: not described
        def x_loc(self, z_prev):
            return super().x_loc(z_prev) + self.sigma_x

    shifted = ShiftedMean(2, 2, hidden=(8,)).double()
    with pytest.raises(ValueError, match="x_loc"):
        calibrate_noise(shifted, x)
    with pytest.raises(TypeError, match="Alternator"):
        calibrate_noise(torch.nn.Linear(2, 2), x)


# ------------------------------------------------------------------ fit(calibrate=...)
def test_fit_calibrates_by_default_with_validation_data():
    x = torch.randn(8, 30, 3, dtype=torch.float64)
    model = _model()
    history = fit(model, x[:6], x_val=x[6:], epochs=2, progress=False, seed=0)
    assert history.calibration is not None and model.sigma_x_per_dim
    assert history.to_dict()["calibration"]["sigma_x"] == model.sigma_x_values()
    plain = _model()
    history = fit(plain, x[:6], x_val=x[6:], epochs=2, progress=False, seed=0, calibrate=False)
    assert history.calibration is None and plain.sigma_x == 0.3 and plain.sigma_z == 0.1
    with pytest.raises(ValueError, match="calibrate=True needs x_val"):
        fit(_model(), x[:6], epochs=1, progress=False, calibrate=True)
    with pytest.raises(ValueError, match="calibrate must be"):
        fit(_model(), x[:6], epochs=1, progress=False, calibrate="yes")


# ------------------------------------------------------------------ calibration report
def test_calibration_report_on_known_distributions():
    """Draws from the truth's own distribution are calibrated; draws half as wide are not."""
    from alternators_ppl.evaluation.forecast_calibration import calibration_report

    g = torch.Generator().manual_seed(0)
    truth = torch.randn(400, 3, 2, generator=g, dtype=torch.float64)
    good = torch.randn(300, 400, 3, 2, generator=g, dtype=torch.float64)
    report = calibration_report(good, truth)
    assert report["coverage_90_mean"] == pytest.approx(0.9, abs=0.03)
    assert report["coverage_50_mean"] == pytest.approx(0.5, abs=0.04)
    assert report["spread_skill_mean"] == pytest.approx(1.0, abs=0.06)
    assert report["pit_max_deviation"] < 0.03 and report["warning"] is None
    assert sum(report["pit_histogram"]) == pytest.approx(1.0)
    narrow = calibration_report(0.5 * good, truth)
    # N(0, 0.25): P(|Z| < 1.645 / 2) = 0.589; spread-skill 0.5 / sqrt(1 + 0.25 / 300) ~ 0.5
    assert narrow["coverage_90_mean"] == pytest.approx(0.589, abs=0.03)
    assert narrow["spread_skill_mean"] == pytest.approx(0.5, abs=0.04)
    assert "too narrow" in narrow["warning"]
    truth_gappy = truth.clone()
    truth_gappy[:, 1] = float("nan")
    gappy = calibration_report(good, truth_gappy)
    assert gappy["coverage_90"][1] is None and gappy["observed"] == 400 * 2 * 2


def test_coverage_warning_bounds():
    from alternators_ppl.evaluation.forecast_calibration import coverage_warning

    assert coverage_warning(0.85) is None and coverage_warning(0.95) is None
    assert "too wide" in coverage_warning(0.99)
    assert "0.800" in coverage_warning(0.8, where="test")


# ------------------------------------------------------------------ registry defaults
def test_adaptive_sizes_rule():
    from alternators_ppl.experiments.registry import adaptive_sizes

    assert adaptive_sizes(3, 38_400)[("latent_dim")] == 8 and adaptive_sizes(3, 38_400)[
        "hidden"
    ] == 64
    assert adaptive_sizes(4, 2_000)["hidden"] == 32 and adaptive_sizes(4, 2_000)["latent_dim"] == 10
    assert adaptive_sizes(300, 10**6) == {**adaptive_sizes(300, 10**6), "latent_dim": 32,
                                          "hidden": 128}


def _windows(series: np.ndarray, length: int, stride: int) -> tuple[np.ndarray, set]:
    """Windows of ``series`` (T, D) and the set of step indices they cover."""
    starts = range(0, len(series) - length + 1, stride)
    covered = {t for s in starts for t in range(s, s + length)}
    return np.stack([series[s : s + length] for s in starts]), covered


@pytest.mark.parametrize("stride", [1, 3, 12])
def test_distinct_observed_entries_counts_each_step_of_a_series_once(stride):
    from alternators_ppl.experiments.registry import adaptive_sizes, distinct_observed_entries

    rng = np.random.default_rng(stride)
    # rounded 1-D values repeat (as yearly sunspot numbers do): equal rows are not overlap
    series = rng.integers(0, 3, size=(400, 2)).astype(float)
    series[[5, 17, 200], [0, 1, 0]] = np.nan  # missing entries are not counted
    windows, covered = _windows(series, 36, stride)
    truth = int(np.isfinite(series[sorted(covered)]).sum())  # by index bookkeeping
    assert distinct_observed_entries(torch.as_tensor(windows)) == truth
    if stride == 1:  # 365 windows of 36 steps: 26,280 entries of which 800 - 3 distinct
        assert windows.size == 26_280 and adaptive_sizes(2, truth)["hidden"] == 32
    independent = rng.standard_normal((20, 36, 2))  # separate sequences keep every entry
    assert distinct_observed_entries(torch.as_tensor(independent)) == independent.size
    assert distinct_observed_entries(torch.zeros(0, 36, 2)) == 0  # fit then names the error


@pytest.mark.slow
def test_alternator_model_records_what_it_chose():
    from alternators_ppl.experiments.registry import build_model

    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 20, 2, generator=g)
    model = build_model("alternator", 2, members=1, epochs=4, check_every=1, patience=1,
                        recalibrate_spread=False)  # fmt: skip
    history = model.fit(x[:7], x[7:], seed=0)
    chosen = history["chosen"]
    assert chosen["latent_dim"] == 8 and chosen["hidden"] == 32  # 280 entries: small
    assert chosen["calibration"]["criterion"] == "smc_log_marginal_per_entry"
    assert chosen["sigma_x"] == model.model.sigma_x_values() and len(chosen["sigma_x"]) == 2
    assert chosen["early_stopping"]["best_epoch"] is not None
    assert chosen["epochs_run"] <= 4
    plain = build_model("alternator", 2, members=1, epochs=2, calibrate=False, patience=None,
                        recalibrate_spread=False)  # fmt: skip
    history = plain.fit(x[:7], x[7:], seed=0)
    assert history["chosen"]["calibration"] is None and plain.model.sigma_x == 0.3


@pytest.mark.parametrize("variant", ["learned-alpha", "alpha-alternator"])
def test_variants_with_their_own_alpha_get_sigma_z_under_the_cap(variant):
    """Their alpha_t = (1 - sigma_z^2 - 1e-4) sigmoid(...): a new sigma_z rescales every alpha_t
    with the cap, so alpha_t + sigma_z^2 < 1 holds; calibration then searches sigma_z too."""
    torch.manual_seed(0)
    cls = LearnedAlphaAlternator if variant == "learned-alpha" else AlphaAlternator
    kwargs = {"window": 4} if variant == "alpha-alternator" else {}
    model = cls(2, 2, sigma_z=0.1, alpha=0.5, hidden=(8,), **kwargs).double()
    x = torch.randn(6, 16, 2, dtype=torch.float64)
    alpha = model._alpha_for(x)
    model.set_noise(sigma_z=0.6)
    scaled = model._alpha_for(x)
    torch.testing.assert_close(scaled, alpha * (1 - 0.36 - 1e-4) / (1 - 0.01 - 1e-4))
    assert float(scaled.detach().max()) + 0.36 < 1
    with pytest.raises(ValueError, match="computes alpha_t itself"):
        model.set_noise(alpha=0.2)
    model.set_noise(sigma_z=0.1)
    report = calibrate_noise(model, x, num_particles=32, sweeps=1)
    assert report["after"] >= report["before"] and report["alpha"] is None
    assert report["evaluations"] == len(DEFAULT_GRIDS["c"]) + len(DEFAULT_GRIDS["sigma_z"])
    assert model.sigma_z == report["sigma_z"]


def test_a_variant_with_a_fixed_schedule_of_its_own_keeps_sigma_z():
    class Fixed(Alternator):  # computes alpha_t itself, not under the cap
        def alpha_schedule(self, num_steps):
            return torch.full((num_steps,), 0.9, dtype=self.dtype)

    model = Fixed(2, 2, sigma_z=[0.1, 0.2], hidden=(8,)).double()
    with pytest.raises(ValueError, match="only sigma_x"):
        model.set_noise(sigma_z=0.5)
    report = calibrate_noise(model, torch.randn(4, 12, 2, dtype=torch.float64), num_particles=16,
                             sweeps=1)  # fmt: skip
    assert report["evaluations"] == len(DEFAULT_GRIDS["c"])
    assert model.sigma_z_values() == pytest.approx([0.1, 0.2]) == list(report["sigma_z"])


def test_a_per_coordinate_sigma_z_is_scaled_keeping_its_ratios():
    """The search moves the largest sigma_z over the grid and the others with it, so the
    latent timescales keep their order (a spread trained at is not collapsed to one)."""
    model = _model(sigma_z=[0.1, 0.2, 0.4], latent_dim=3)
    x, _ = _data(batch=6, steps=16)
    report = calibrate_noise(model, x, num_particles=32, sweeps=1, grids={"sigma_z": (0.3, 0.6)})
    chosen = model.sigma_z_values()
    assert max(chosen) in (pytest.approx(0.3), pytest.approx(0.6))
    assert chosen == pytest.approx([max(chosen) / 4, max(chosen) / 2, max(chosen)])
    assert report["sigma_z"] == pytest.approx(chosen)
    assert report["u"] == pytest.approx(model.alpha_values[0] / (1 - max(chosen) ** 2))
