"""Lorenz-63 system: vector field and a vectorised fixed-step RK4 simulator.

Arrays are batch-first: trajectories are ``(num_trajectories, num_steps, 3)``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["lorenz_vector_field", "integrate_lorenz", "simulate_lorenz"]

# Rough centre and spread of the classic attractor (sigma=10, rho=28, beta=8/3);
# initial conditions are drawn around it, and burn-in does the rest.
_INIT_CENTRE = np.array([0.0, 0.0, 25.0])
_INIT_SPREAD = np.array([8.0, 8.0, 8.0])


def _positive_int(name: str, value: object) -> int:
    """Return ``value`` as an int, or raise ValueError unless it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _nonnegative_int(name: str, value: object) -> int:
    """Return ``value`` as an int, or raise ValueError unless it is an integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _finite_float(name: str, value: object) -> float:
    """Return ``value`` as a float, or raise ValueError unless it is a finite real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return float(value)


def _positive_float(name: str, value: object) -> float:
    """Return ``value`` as a float, or raise ValueError unless it is finite and > 0."""
    out = _finite_float(name, value)
    if out <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return out


def _nonnegative_float(name: str, value: object) -> float:
    """Return ``value`` as a float, or raise ValueError unless it is finite and >= 0."""
    out = _finite_float(name, value)
    if out < 0:
        raise ValueError(f"{name} must be non-negative, got {value!r}")
    return out


def lorenz_vector_field(
    state: np.ndarray, sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0
) -> np.ndarray:
    """Time derivative of the Lorenz-63 system.

    Args:
        state: ``(..., 3)`` states ``(x, y, z)``.
        sigma, rho, beta: Lorenz parameters.

    Returns:
        ``(..., 3)`` derivatives ``(sigma (y - x), x (rho - z) - y, x y - beta z)``.
    """
    state = np.asarray(state, dtype=np.float64)
    if state.shape[-1:] != (3,):
        raise ValueError(f"state must have shape (..., 3), got {state.shape}")
    x, y, z = state[..., 0], state[..., 1], state[..., 2]
    return np.stack([sigma * (y - x), x * (rho - z) - y, x * y - beta * z], axis=-1)


def _rk4_step(state: np.ndarray, h: float, sigma: float, rho: float, beta: float) -> np.ndarray:
    """One classic RK4 step of size ``h`` for ``(N, 3)`` states."""
    k1 = lorenz_vector_field(state, sigma, rho, beta)
    k2 = lorenz_vector_field(state + 0.5 * h * k1, sigma, rho, beta)
    k3 = lorenz_vector_field(state + 0.5 * h * k2, sigma, rho, beta)
    k4 = lorenz_vector_field(state + h * k3, sigma, rho, beta)
    return state + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def integrate_lorenz(
    initial_states: np.ndarray,
    num_steps: int,
    dt: float = 0.01,
    sigma: float = 10.0,
    rho: float = 28.0,
    beta: float = 8.0 / 3.0,
    substeps: int = 4,
) -> np.ndarray:
    """Integrate many Lorenz trajectories at once with fixed-step RK4.

    Each recorded step of size ``dt`` is made of ``substeps`` RK4 steps of size
    ``dt / substeps``. The first recorded state is the initial state.

    Args:
        initial_states: ``(N, 3)`` starting states.
        num_steps: number of recorded states ``T`` (>= 1).
        dt: time between recorded states (> 0).
        sigma, rho, beta: Lorenz parameters.
        substeps: RK4 steps per recorded step (>= 1).

    Returns:
        ``(N, T, 3)`` float64 trajectories.
    """
    num_steps = _positive_int("num_steps", num_steps)
    dt = _positive_float("dt", dt)
    substeps = _positive_int("substeps", substeps)
    sigma = _finite_float("sigma", sigma)
    rho = _finite_float("rho", rho)
    beta = _finite_float("beta", beta)
    state = np.array(initial_states, dtype=np.float64)  # copy
    if state.ndim != 2 or state.shape[1] != 3:
        raise ValueError(f"initial_states must have shape (N, 3), got {state.shape}")
    if not np.all(np.isfinite(state)):
        raise ValueError("initial_states must be finite, got NaN or inf")

    h = dt / substeps
    out = np.empty((state.shape[0], num_steps, 3))
    out[:, 0] = state
    for t in range(1, num_steps):
        for _ in range(substeps):
            state = _rk4_step(state, h, sigma, rho, beta)
        out[:, t] = state
    return out


def simulate_lorenz(
    num_trajectories: int,
    num_steps: int,
    dt: float = 0.01,
    sigma: float = 10.0,
    rho: float = 28.0,
    beta: float = 8.0 / 3.0,
    substeps: int = 4,
    burn_in: int = 500,
    seed: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Simulate independent Lorenz trajectories that start on the attractor.

    Initial conditions are drawn from ``N((0, 0, 25), 8^2 I)`` (near the classic
    attractor); the first ``burn_in`` recorded steps are then integrated and
    discarded. The random draw does not depend on ``dt``/``substeps``, so the
    same seed gives the same initial conditions at any resolution.

    Args:
        num_trajectories: number of trajectories ``N`` (>= 1).
        num_steps: recorded states per trajectory ``T`` (>= 1).
        dt: time between recorded states (> 0).
        sigma, rho, beta: Lorenz parameters.
        substeps: RK4 steps per recorded step (>= 1).
        burn_in: recorded steps discarded before the first returned state (>= 0).
        seed: seed or ``np.random.Generator`` for ``np.random.default_rng``.

    Returns:
        ``(N, T, 3)`` float64 states.
    """
    num_trajectories = _positive_int("num_trajectories", num_trajectories)
    num_steps = _positive_int("num_steps", num_steps)
    burn_in = _nonnegative_int("burn_in", burn_in)
    rng = np.random.default_rng(seed)
    init = _INIT_CENTRE + _INIT_SPREAD * rng.standard_normal((num_trajectories, 3))
    params = dict(dt=dt, sigma=sigma, rho=rho, beta=beta, substeps=substeps)
    if burn_in > 0:
        init = integrate_lorenz(init, burn_in + 1, **params)[:, -1]
    return integrate_lorenz(init, num_steps, **params)
