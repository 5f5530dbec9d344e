"""Ready-made Lorenz tasks with leak-free splits and train-only scaling.

All array fields are float32 and batch-first ``(batch, time, dim)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alternators_ppl.data.lorenz import (
    _nonnegative_float,
    _positive_float,
    _positive_int,
    simulate_lorenz,
)
from alternators_ppl.data.neurons import GaussianTuning, make_tuning, poisson_spikes
from alternators_ppl.data.scaling import Standardizer

__all__ = [
    "ForecastingTask",
    "SpikesTask",
    "lorenz_forecasting_task",
    "lorenz_spikes_task",
    "linear_gaussian_task",
]


@dataclass(frozen=True, eq=False)
class ForecastingTask:
    """Noisy Lorenz observations split into independent trajectories.

    Attributes:
        x_train, x_val, x_test: ``(B, T, 3)`` float32 standardised noisy observations.
        states_train, states_val, states_test: ``(B, T, 3)`` float32 standardised
            clean states.
        scaler: ``Standardizer`` fitted on the clean training states (original units).
        dt: time between steps.
        noise_std: observation-noise std in standardised units.
    """

    x_train: np.ndarray
    x_val: np.ndarray
    x_test: np.ndarray
    states_train: np.ndarray
    states_val: np.ndarray
    states_test: np.ndarray
    scaler: Standardizer
    dt: float
    noise_std: float


@dataclass(frozen=True, eq=False)
class SpikesTask:
    """Poisson spikes driven by one long Lorenz trajectory, split in time.

    Attributes:
        x_train: ``(B_train, window, N)`` float32 spike counts (non-overlapping windows).
        z_train: ``(B_train, window, 3)`` float32 standardised latent states.
        x_test: ``(1, T_test, N)`` float32 spike counts over the whole test span.
        z_test: ``(1, T_test, 3)`` float32 standardised latent states.
        tuning: the ``GaussianTuning`` that generated the spikes (over ``z``).
        scaler: ``Standardizer`` fitted on the train-span states (original units).
        dt: time between bins.
        mean_spikes_per_bin: measured mean count per neuron per bin in ``x_train``.
    """

    x_train: np.ndarray
    z_train: np.ndarray
    x_test: np.ndarray
    z_test: np.ndarray
    tuning: GaussianTuning
    scaler: Standardizer
    dt: float
    mean_spikes_per_bin: float


def lorenz_forecasting_task(
    num_train: int = 64,
    num_val: int = 16,
    num_test: int = 32,
    num_steps: int = 200,
    dt: float = 0.02,
    noise_std: float = 0.3,
    seed: int | None = 0,
) -> ForecastingTask:
    """Forecasting task on independent noisy Lorenz trajectories.

    Train, val and test are separate trajectories simulated from independent
    child generators of ``np.random.default_rng(seed)``, so they share no data.
    The ``Standardizer`` is fitted on the clean train states only; Gaussian
    noise of std ``noise_std`` is then added in standardised units, i.e. relative
    to each coordinate's (train) std.

    Args:
        num_train, num_val, num_test: trajectories per split (>= 1 each).
        num_steps: time steps per trajectory ``T`` (>= 1).
        dt: time between steps (> 0).
        noise_std: observation-noise std in standardised units (>= 0).
        seed: seed for ``np.random.default_rng``.

    Returns:
        ``ForecastingTask`` with ``(num_split, T, 3)`` float32 arrays.
    """
    sizes = {
        "num_train": _positive_int("num_train", num_train),
        "num_val": _positive_int("num_val", num_val),
        "num_test": _positive_int("num_test", num_test),
    }
    num_steps = _positive_int("num_steps", num_steps)
    dt = _positive_float("dt", dt)
    noise_std = _nonnegative_float("noise_std", noise_std)

    *sim_rngs, noise_rng = np.random.default_rng(seed).spawn(4)
    raw = [
        simulate_lorenz(n, num_steps, dt=dt, seed=r)
        for n, r in zip(sizes.values(), sim_rngs, strict=True)
    ]
    return _noisy_task(raw, noise_std, noise_rng, dt)


def linear_gaussian_task(
    num_train: int = 64,
    num_val: int = 16,
    num_test: int = 32,
    num_steps: int = 200,
    obs_dim: int = 3,
    latent_dim: int = 4,
    noise_std: float = 0.3,
    seed: int | None = 0,
) -> ForecastingTask:
    """Forecasting task simulated from a random stable linear-Gaussian state-space model.

    z_1 ~ N(0, I), z_t = A z_{t-1} + w_t (A: damped rotations, spectral radius 0.97, Q chosen so
    the latent is stationary with unit variance), signal s_t = H z_t, observations
    x_t = s_t + N(0, noise_std^2) after standardising s on the train split. The Kalman filter
    with ``latent_dim`` states is the true model class. ``states_*`` hold the signal s.
    Splits are independent trajectories, as in :func:`lorenz_forecasting_task`; dt is 1.
    """
    sizes = [
        _positive_int("num_train", num_train),
        _positive_int("num_val", num_val),
        _positive_int("num_test", num_test),
    ]
    num_steps = _positive_int("num_steps", num_steps)
    obs_dim = _positive_int("obs_dim", obs_dim)
    latent_dim = _positive_int("latent_dim", latent_dim)
    noise_std = _nonnegative_float("noise_std", noise_std)
    model_rng, *sim_rngs, noise_rng = np.random.default_rng(seed).spawn(5)
    blocks = []
    for k in range(0, latent_dim, 2):
        angle = model_rng.uniform(0.05, 0.3)
        rotation = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
        blocks.append(np.asarray(rotation)[: latent_dim - k, : latent_dim - k])
    A = 0.97 * _block_diag(blocks)
    Q = np.eye(latent_dim) - A @ A.T  # stationary covariance I
    H = model_rng.standard_normal((obs_dim, latent_dim)) / np.sqrt(latent_dim)
    chol_q = np.linalg.cholesky(Q)
    raw = []
    for n, rng in zip(sizes, sim_rngs, strict=True):
        z = rng.standard_normal((n, latent_dim))
        path = []
        for _ in range(num_steps):
            path.append(z @ H.T)
            z = z @ A.T + rng.standard_normal((n, latent_dim)) @ chol_q.T
        raw.append(np.stack(path, axis=1))
    return _noisy_task(raw, noise_std, noise_rng, 1.0)


def _noisy_task(raw: list, noise_std: float, noise_rng, dt: float) -> ForecastingTask:
    """Standardise the (train, val, test) signals on train, add observation noise, cast."""
    scaler = Standardizer().fit(raw[0])
    states = [scaler.transform(s) for s in raw]
    obs = [s + noise_std * noise_rng.standard_normal(s.shape) for s in states]
    f32 = [a.astype(np.float32) for a in obs + states]
    return ForecastingTask(*f32, scaler=scaler, dt=dt, noise_std=noise_std)


def _block_diag(blocks: list[np.ndarray]) -> np.ndarray:
    size = sum(len(b) for b in blocks)
    out, at = np.zeros((size, size)), 0
    for b in blocks:
        out[at : at + len(b), at : at + len(b)] = b
        at += len(b)
    return out


def lorenz_spikes_task(
    num_neurons: int = 100,
    mean_rate: float = 0.3,
    num_steps: int = 2200,
    train_fraction: float = 0.7,
    window: int = 100,
    dt: float = 0.01,
    width: float = 1.0,
    seed: int | None = 0,
) -> SpikesTask:
    """Latent-recovery task: Poisson spikes from one long Lorenz trajectory.

    The first ``int(train_fraction * num_steps)`` steps are the train span, the
    rest the test span. The spans are disjoint in time, but no guard window is
    dropped at the boundary: the test span starts on the step right after the
    train span, so its start is correlated with the end of training. The train
    span is cut into non-overlapping windows of ``window`` steps; its remainder
    is dropped (not given to test). Latents ``z`` are the Lorenz states
    standardised with a ``Standardizer`` fitted on the train span; tuning
    centres and gain come from ``make_tuning`` on the train-span ``z``.

    Args:
        num_neurons: number of neurons ``N`` (>= 1).
        mean_rate: target mean expected count per neuron per bin over the train span (> 0).
        num_steps: total time steps (>= 1).
        train_fraction: fraction of time used for training, in (0, 1).
        window: train window length (>= 1, <= train span).
        dt: time between bins (> 0).
        width: tuning width in standardised units (> 0).
        seed: seed for ``np.random.default_rng``.

    Returns:
        ``SpikesTask`` (see its attributes for shapes).
    """
    num_neurons = _positive_int("num_neurons", num_neurons)
    mean_rate = _positive_float("mean_rate", mean_rate)
    num_steps = _positive_int("num_steps", num_steps)
    train_fraction = _positive_float("train_fraction", train_fraction)
    if train_fraction >= 1:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction!r}")
    window = _positive_int("window", window)
    dt = _positive_float("dt", dt)
    width = _positive_float("width", width)
    num_train = int(train_fraction * num_steps)
    if num_train < window:
        raise ValueError(
            f"window must be <= the train span int(train_fraction * num_steps) = {num_train}, "
            f"got {window}"
        )
    if num_train >= num_steps:
        raise ValueError(f"num_steps={num_steps} leaves no test steps at {train_fraction=}")

    sim_rng, tuning_rng, spike_rng = np.random.default_rng(seed).spawn(3)
    states = simulate_lorenz(1, num_steps, dt=dt, seed=sim_rng)[0]  # (T, 3)
    scaler = Standardizer().fit(states[:num_train])
    z = scaler.transform(states)
    tuning = make_tuning(z[:num_train], num_neurons, mean_rate, width, seed=tuning_rng)
    spikes = poisson_spikes(tuning.rates(z), seed=spike_rng)  # (T, N)

    used = (num_train // window) * window
    x_train = spikes[:used].reshape(-1, window, num_neurons).astype(np.float32)
    z_train = z[:used].reshape(-1, window, 3).astype(np.float32)
    return SpikesTask(
        x_train=x_train,
        z_train=z_train,
        x_test=spikes[None, num_train:].astype(np.float32),
        z_test=z[None, num_train:].astype(np.float32),
        tuning=tuning,
        scaler=scaler,
        dt=dt,
        mean_spikes_per_bin=float(x_train.mean(dtype=np.float64)),
    )
