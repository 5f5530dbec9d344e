"""Tests for the ready-made Lorenz tasks."""

import dataclasses

import numpy as np
import pytest

from alternators_ppl.data.tasks import lorenz_forecasting_task, lorenz_spikes_task


@pytest.fixture(scope="module")
def fc():
    return lorenz_forecasting_task()


@pytest.fixture(scope="module")
def sp():
    return lorenz_spikes_task()


def _rows(a):
    return {r.tobytes() for r in a.reshape(-1, a.shape[-1])}


def test_forecasting_shapes_and_dtypes(fc):
    for name, b in [("train", 64), ("val", 16), ("test", 32)]:
        for prefix in ("x", "states"):
            arr = getattr(fc, f"{prefix}_{name}")
            assert arr.shape == (b, 200, 3) and arr.dtype == np.float32
    assert fc.dt == 0.02 and fc.noise_std == 0.3
    with pytest.raises(dataclasses.FrozenInstanceError):
        fc.dt = 0.1


def test_forecasting_scaling_fitted_on_train(fc):
    flat = fc.states_train.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(flat.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(flat.std(axis=0), 1.0, atol=1e-5)
    test_mean = fc.states_test.reshape(-1, 3).astype(np.float64).mean(axis=0)
    assert not np.allclose(test_mean, 0.0, atol=1e-3)
    assert 20.0 < fc.scaler.mean[2] < 27.0  # z is the attractor's z, in original units


def test_forecasting_noise_is_relative(fc):
    noise = (fc.x_train - fc.states_train).reshape(-1, 3)
    np.testing.assert_allclose(noise.std(axis=0), 0.3, rtol=0.03)
    np.testing.assert_allclose(noise.mean(axis=0), 0.0, atol=0.01)
    clean = lorenz_forecasting_task(2, 2, 2, num_steps=10, noise_std=0.0)
    np.testing.assert_array_equal(clean.x_val, clean.states_val)


def test_forecasting_splits_disjoint(fc):
    for a, b in [("train", "test"), ("train", "val"), ("val", "test")]:
        assert not _rows(getattr(fc, f"states_{a}")) & _rows(getattr(fc, f"states_{b}"))
        assert not _rows(getattr(fc, f"x_{a}")) & _rows(getattr(fc, f"x_{b}"))


def test_forecasting_reproducible():
    a = lorenz_forecasting_task(3, 2, 2, num_steps=20, seed=5)
    b = lorenz_forecasting_task(3, 2, 2, num_steps=20, seed=5)
    c = lorenz_forecasting_task(3, 2, 2, num_steps=20, seed=6)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.allclose(a.x_test, c.x_test)


def test_spikes_shapes_and_dtypes(sp):
    assert sp.x_train.shape == (15, 100, 100) and sp.z_train.shape == (15, 100, 3)
    assert sp.x_test.shape == (1, 660, 100) and sp.z_test.shape == (1, 660, 3)
    for arr in (sp.x_train, sp.z_train, sp.x_test, sp.z_test):
        assert arr.dtype == np.float32
    for x in (sp.x_train, sp.x_test):
        assert x.min() >= 0 and np.array_equal(x, np.round(x))
    assert sp.tuning.centres.shape == (100, 3) and sp.dt == 0.01


def test_spikes_mean_rate(sp):
    assert sp.mean_spikes_per_bin == pytest.approx(float(sp.x_train.mean()), rel=1e-6)
    assert abs(sp.mean_spikes_per_bin - 0.3) < 0.05 * 0.3
    # Spikes follow the tuning curves of the latents.
    np.testing.assert_allclose(
        sp.x_test.mean(axis=1)[0], sp.tuning.rates(sp.z_test).mean(axis=1)[0], atol=0.15
    )
    np.testing.assert_allclose(sp.x_test.mean(), sp.tuning.rates(sp.z_test).mean(), rtol=0.05)


def test_spikes_splits_disjoint_and_scaled_on_train():
    sp = lorenz_spikes_task(num_neurons=20, num_steps=1000, train_fraction=0.8, window=50)
    assert sp.x_train.shape == (16, 50, 20) and sp.z_test.shape == (1, 200, 3)
    assert not _rows(sp.z_train) & _rows(sp.z_test)
    flat = sp.z_train.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(flat.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(flat.std(axis=0), 1.0, atol=1e-5)
    test_mean = sp.z_test[0].astype(np.float64).mean(axis=0)
    assert not np.allclose(test_mean, 0.0, atol=1e-3)
    # Test span continues the trajectory right after the train span (no gap, no overlap).
    step = np.abs(np.diff(sp.z_train[-1], axis=0)).max()
    assert np.abs(sp.z_test[0, 0] - sp.z_train[-1, -1]).max() < 3 * step


def test_spikes_reproducible():
    kwargs = dict(num_neurons=10, num_steps=300, window=50)
    a, b = lorenz_spikes_task(seed=1, **kwargs), lorenz_spikes_task(seed=1, **kwargs)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.z_test, b.z_test)
    assert not np.array_equal(a.x_train, lorenz_spikes_task(seed=2, **kwargs).x_train)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(num_train=0), "num_train"),
        (dict(num_val=-1), "num_val"),
        (dict(num_test=1.0), "num_test"),
        (dict(num_steps=0), "num_steps"),
        (dict(dt=0.0), "dt"),
        (dict(dt=float("nan")), "dt"),
        (dict(noise_std=-0.1), "noise_std"),
        (dict(noise_std=float("nan")), "noise_std"),
    ],
)
def test_forecasting_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        lorenz_forecasting_task(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(num_neurons=0), "num_neurons"),
        (dict(mean_rate=-0.3), "mean_rate"),
        (dict(num_steps=0), "num_steps"),
        (dict(train_fraction=0.0), "train_fraction"),
        (dict(train_fraction=1.0), "train_fraction"),
        (dict(train_fraction=float("nan")), "train_fraction"),
        (dict(window=0), "window"),
        (dict(window=2000), "window"),
        (dict(dt=-0.01), "dt"),
        (dict(width=0.0), "width"),
        (dict(num_steps=50), "window"),
    ],
)
def test_spikes_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        lorenz_spikes_task(**kwargs)
