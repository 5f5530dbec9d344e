"""Tests for the Standardizer."""

import json

import numpy as np
import pytest

from alternators_ppl.data.scaling import Standardizer


def _data(seed=0, shape=(10, 20)):
    rng = np.random.default_rng(seed)
    return rng.normal(loc=[5.0, -2.0, 100.0], scale=[0.1, 3.0, 40.0], size=(*shape, 3))


def test_round_trip_and_standardised_stats():
    x = _data()
    sc = Standardizer().fit(x)
    assert sc.mean.shape == (3,) and sc.scale.shape == (3,)
    z = sc.transform(x)
    np.testing.assert_allclose(z.reshape(-1, 3).mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z.reshape(-1, 3).std(axis=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(sc.inverse_transform(z), x, rtol=1e-12)
    np.testing.assert_allclose(sc.scale, x.reshape(-1, 3).std(axis=0), rtol=1e-12)


def test_train_only_fitting():
    train, test = _data(0), _data(1) * 1.5 + 3.0
    sc = Standardizer().fit(train)
    z_test = sc.transform(test).reshape(-1, 3)
    np.testing.assert_allclose(sc.mean, train.reshape(-1, 3).mean(axis=0), rtol=1e-12)
    assert np.all(np.abs(z_test.mean(axis=0)) > 0.5)
    assert np.all(np.abs(z_test.std(axis=0) - 1.0) > 0.2)


def test_nan_aware():
    x = _data()
    x[0, :5, 1] = np.nan
    x[3, 2, :] = np.nan
    sc = Standardizer().fit(x)  # filterwarnings=error: must not warn either
    flat = x.reshape(-1, 3)
    np.testing.assert_allclose(sc.mean, np.nanmean(flat, axis=0), rtol=1e-12)
    np.testing.assert_allclose(sc.scale, np.nanstd(flat, axis=0), rtol=1e-12)
    z = sc.transform(x)
    np.testing.assert_array_equal(np.isnan(z), np.isnan(x))


def test_constant_dimension_gets_unit_scale():
    x = np.stack([np.full(7, 0.1), np.arange(7.0), np.zeros(7)], axis=-1)
    sc = Standardizer().fit(x)
    np.testing.assert_array_equal(sc.scale[[0, 2]], [1.0, 1.0])
    assert sc.scale[1] == pytest.approx(np.arange(7.0).std())
    assert np.all(np.isfinite(sc.transform(x)))


def test_json_round_trip_and_dtype():
    sc = Standardizer().fit(_data())
    back = Standardizer.from_dict(json.loads(json.dumps(sc.to_dict())))
    x = _data(2).astype(np.float32)
    np.testing.assert_array_equal(back.transform(x), sc.transform(x))
    assert sc.transform(x).dtype == np.float32
    assert sc.transform(np.ones((2, 3), dtype=np.int64)).dtype == np.float64


def test_unfitted_raises():
    sc = Standardizer()
    for method in (sc.transform, sc.inverse_transform):
        with pytest.raises(ValueError, match="not fitted"):
            method(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="not fitted"):
        sc.to_dict()


def test_bad_inputs():
    sc = Standardizer()
    with pytest.raises(ValueError, match="dimension"):
        sc.fit(np.array([[1.0, np.nan], [2.0, np.nan]]))
    with pytest.raises(ValueError, match="inf"):
        sc.fit(np.array([[1.0, np.inf]]))
    sc.fit(_data())
    with pytest.raises(ValueError, match="shape"):
        sc.transform(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="scale"):
        Standardizer.from_dict({"mean": [0.0, 1.0], "scale": [1.0, 0.0]})
    with pytest.raises(ValueError, match="mean"):
        Standardizer.from_dict({"scale": [1.0]})
