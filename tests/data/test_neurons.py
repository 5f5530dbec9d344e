"""Tests for Gaussian tuning curves and Poisson spikes."""

import dataclasses

import numpy as np
import pytest

from alternators_ppl.data.lorenz import simulate_lorenz
from alternators_ppl.data.neurons import GaussianTuning, make_tuning, poisson_spikes
from alternators_ppl.data.scaling import Standardizer


@pytest.fixture(scope="module")
def states():
    x = simulate_lorenz(1, 2000, dt=0.01, seed=0)[0]
    return Standardizer().fit(x).transform(x)  # (2000, 3)


def test_rates_values_and_shape():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 3))
    tuning = GaussianTuning(centres=centres, width=0.7, gain=2.5)
    s = rng.normal(size=(4, 5, 3))
    r = tuning.rates(s)
    assert r.shape == (4, 5, 6)
    sq = np.sum((s[..., None, :] - centres) ** 2, axis=-1)
    np.testing.assert_allclose(r, 2.5 * np.exp(-sq / (2 * 0.7**2)), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(tuning.rates(centres).diagonal(), 2.5)
    assert tuning.num_neurons == 6


def test_make_tuning_centres_are_visited_states(states):
    tuning = make_tuning(states, num_neurons=50, seed=1)
    assert tuning.centres.shape == (50, 3)
    match = np.all(tuning.centres[:, None, :] == states[None, :, :], axis=-1)
    assert np.all(match.any(axis=1))
    assert len(np.unique(tuning.centres, axis=0)) == 50


def test_make_tuning_gain_sets_mean_rate(states):
    tuning = make_tuning(states, num_neurons=100, mean_rate=0.3, width=1.0, seed=2)
    rates = tuning.rates(states)
    np.testing.assert_allclose(rates.mean(), 0.3, rtol=1e-10)
    spikes = poisson_spikes(rates, seed=3)
    assert abs(spikes.mean() - 0.3) < 0.05 * 0.3


def test_make_tuning_with_fewer_states_than_neurons():
    tuning = make_tuning(np.zeros((3, 2)) + [[0.0], [1.0], [2.0]], num_neurons=10, seed=0)
    assert tuning.centres.shape == (10, 2)


def test_poisson_counts_match_rates():
    lam = np.array([0.1, 0.5, 2.0, 7.0])
    counts = poisson_spikes(np.broadcast_to(lam, (20000, 4)), seed=0)
    assert counts.shape == (20000, 4) and counts.dtype == np.float64
    np.testing.assert_array_equal(counts, np.round(counts))
    assert counts.min() >= 0
    np.testing.assert_allclose(counts.mean(axis=0), lam, rtol=0.05)
    np.testing.assert_allclose(counts.var(axis=0), lam, rtol=0.05)
    assert np.all(poisson_spikes(np.zeros((3, 4)), seed=0) == 0)


def test_seeded_reproducibility(states):
    a = make_tuning(states, num_neurons=20, seed=7)
    b = make_tuning(states, num_neurons=20, seed=7)
    np.testing.assert_array_equal(a.centres, b.centres)
    assert a.gain == b.gain
    assert not np.array_equal(a.centres, make_tuning(states, num_neurons=20, seed=8).centres)
    r = a.rates(states[:100])
    np.testing.assert_array_equal(poisson_spikes(r, seed=1), poisson_spikes(r, seed=1))
    assert not np.array_equal(poisson_spikes(r, seed=1), poisson_spikes(r, seed=2))


def test_tuning_is_frozen():
    tuning = GaussianTuning(centres=np.zeros((2, 3)), width=1.0, gain=1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        tuning.gain = 2.0


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(num_neurons=0), "num_neurons"),
        (dict(num_neurons=2.5), "num_neurons"),
        (dict(mean_rate=0.0), "mean_rate"),
        (dict(mean_rate=float("nan")), "mean_rate"),
        (dict(width=-1.0), "width"),
    ],
)
def test_make_tuning_bad_arguments(states, kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_tuning(states, **kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="states"):
        make_tuning(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="width"):
        GaussianTuning(centres=np.zeros((2, 3)), width=0.0, gain=1.0)
    with pytest.raises(ValueError, match="gain"):
        GaussianTuning(centres=np.zeros((2, 3)), width=1.0, gain=-1.0)
    with pytest.raises(ValueError, match="centres"):
        GaussianTuning(centres=np.zeros(3), width=1.0, gain=1.0)
    tuning = GaussianTuning(centres=np.zeros((2, 3)), width=1.0, gain=1.0)
    with pytest.raises(ValueError, match="states"):
        tuning.rates(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="rates"):
        poisson_spikes(np.array([0.5, -0.1]))
    with pytest.raises(ValueError, match="rates"):
        poisson_spikes(np.array([0.5, np.nan]))
