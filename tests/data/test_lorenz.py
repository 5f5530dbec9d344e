"""Tests for the Lorenz vector field and RK4 simulator."""

import numpy as np
import pytest

from alternators_ppl.data.lorenz import integrate_lorenz, lorenz_vector_field, simulate_lorenz


def test_vector_field_known_value_and_batch_shape():
    np.testing.assert_allclose(
        lorenz_vector_field(np.array([1.0, 2.0, 3.0]), 10.0, 28.0, 8.0 / 3.0),
        [10.0, 23.0, 2.0 - 8.0],
    )
    states = np.random.default_rng(0).normal(size=(4, 5, 3))
    out = lorenz_vector_field(states, 10.0, 28.0, 8.0 / 3.0)
    assert out.shape == (4, 5, 3)
    np.testing.assert_allclose(out[2, 3], lorenz_vector_field(states[2, 3], 10.0, 28.0, 8.0 / 3.0))


def test_rk4_is_fourth_order():
    # Short horizon (0.2 time units) so chaos does not amplify the error.
    kwargs = dict(num_trajectories=4, num_steps=21, dt=0.01, burn_in=0, seed=3)
    ref = simulate_lorenz(substeps=256, **kwargs)[:, -1]
    errors = [np.max(np.abs(simulate_lorenz(substeps=k, **kwargs)[:, -1] - ref)) for k in (1, 2, 4)]
    assert errors[0] > 1e-6  # the coarse step really is inexact
    for coarse, fine in zip(errors[:-1], errors[1:], strict=True):
        assert 14.0 < coarse / fine < 18.5


def test_shapes_dtype_and_first_state_is_initial_state():
    init = np.array([[1.0, 1.0, 20.0], [-3.0, 2.0, 30.0]])
    out = integrate_lorenz(init, 7, dt=0.01)
    assert out.shape == (2, 7, 3) and out.dtype == np.float64
    np.testing.assert_array_equal(out[:, 0], init)
    assert simulate_lorenz(3, 11, burn_in=5, seed=0).shape == (3, 11, 3)


def test_burn_in_discards_leading_steps():
    full = simulate_lorenz(2, 31, burn_in=0, seed=5)
    burned = simulate_lorenz(2, 11, burn_in=20, seed=5)
    np.testing.assert_allclose(burned, full[:, 20:], rtol=1e-12, atol=1e-12)


def test_attractor_invariants():
    x = simulate_lorenz(64, 2000, dt=0.01, seed=1)
    assert np.all(np.isfinite(x))
    # Bounded on the classic attractor, and already there at t=0 thanks to burn-in.
    assert np.all(np.abs(x[..., 0]) < 25.0)
    assert np.all(np.abs(x[..., 1]) < 35.0)
    assert np.all((x[..., 2] > 0.0) & (x[..., 2] < 55.0))
    # Long-run mean of z is about 23.55; x and y average to 0 by symmetry.
    assert abs(x[..., 2].mean() - 23.55) < 0.6
    assert abs(x[..., 0].mean()) < 0.75
    assert abs(x[..., 1].mean()) < 0.75


def test_reproducible_with_seed():
    a = simulate_lorenz(3, 20, seed=42)
    np.testing.assert_array_equal(a, simulate_lorenz(3, 20, seed=42))
    np.testing.assert_array_equal(a, simulate_lorenz(3, 20, seed=np.random.default_rng(42)))
    assert not np.allclose(a, simulate_lorenz(3, 20, seed=43))
    # Trajectories within a batch are different.
    assert not np.allclose(a[0], a[1])


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("num_trajectories", 0),
        ("num_trajectories", -2),
        ("num_trajectories", 1.5),
        ("num_trajectories", True),
        ("num_steps", 0),
        ("dt", 0.0),
        ("dt", -0.01),
        ("dt", float("nan")),
        ("dt", float("inf")),
        ("substeps", 0),
        ("burn_in", -1),
        ("sigma", float("nan")),
        ("rho", float("inf")),
    ],
)
def test_bad_arguments(name, value):
    kwargs = dict(num_trajectories=2, num_steps=5, burn_in=0, seed=0)
    kwargs[name] = value
    with pytest.raises(ValueError, match=name):
        simulate_lorenz(**kwargs)


def test_bad_initial_states():
    with pytest.raises(ValueError, match="initial_states"):
        integrate_lorenz(np.zeros((2, 2)), 5)
    with pytest.raises(ValueError, match="initial_states"):
        integrate_lorenz(np.array([[np.nan, 0.0, 0.0]]), 5)
