"""The paper's Lorenz-spikes decoding setting (Rezaei & Dieng, TMLR 2025, Section 5).

One noisy Euler trajectory of Lorenz-63 (s=10, r=18, b=8/3, dt=0.03, from the origin, 1,600
steps), min-max scaled to [-2, 2] per coordinate, drives 100 binary neurons with Gaussian
tuning. Features: neurons with fewer than 10 training spikes are dropped, counts are smoothed
by a Gaussian window (6 taps, sigma 2), the bins t-2 and t-1 are stacked (not t), and the
features are scaled to [-1, 1] on the training span. The first 70% of the time steps are
train, the last 30% test.
"""

from __future__ import annotations

import numpy as np

from alternators_ppl.data.decoding import DecodingTask, MinMaxScaler, lagged_bins, smooth_counts
from alternators_ppl.data.lorenz import _positive_int

__all__ = ["noisy_euler_lorenz", "paper_tuning_rates", "paper_spikes_task"]


def noisy_euler_lorenz(
    num_steps: int = 1600,
    dt: float = 0.03,
    sigma: float = 10.0,
    rho: float = 18.0,
    beta: float = 8.0 / 3.0,
    noise_var: float = 0.1,
    seed: int | np.random.Generator | None = 0,
) -> np.ndarray:
    """Euler steps of Lorenz-63 from (0, 0, 0) plus mixed process noise; (num_steps, 3).

    Each step adds ((n0+n1)/2, (n0+n2)/2, (n0+n1+n2)/3) with n ~ N(0, noise_var I) (so the
    noise is correlated across coordinates). Row 0 is the first step after the origin.
    """
    num_steps = _positive_int("num_steps", num_steps)
    if not noise_var >= 0:
        raise ValueError(f"noise_var must be >= 0, got {noise_var}")
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, np.sqrt(noise_var), size=(num_steps, 3))
    mixed = np.stack(
        [
            (noise[:, 0] + noise[:, 1]) / 2,
            (noise[:, 0] + noise[:, 2]) / 2,
            noise.sum(1) / 3,
        ],
        axis=1,
    )
    out = np.empty((num_steps, 3))
    x = y = z = 0.0
    for t in range(num_steps):
        dx, dy, dz = sigma * (y - x), x * (rho - z) - y, x * y - beta * z
        x, y, z = x + dt * dx + mixed[t, 0], y + dt * dy + mixed[t, 1], z + dt * dz + mixed[t, 2]
        out[t] = (x, y, z)
    return out


def paper_tuning_rates(states: np.ndarray, baseline, centres, widths) -> np.ndarray:
    """Rates exp(b_n - sum_d (s_d - mu_nd)^2 / (2 w_nd^2)): states (T, D) -> (T, N).

    baseline (N,), centres (N, D), widths (N, D) (one width per neuron and dimension).
    """
    diff = np.asarray(states)[:, None, :] - np.asarray(centres)[None]
    return np.exp(np.asarray(baseline)[None] - np.sum(diff**2 / (2 * np.asarray(widths) ** 2), -1))


def paper_spikes_task(
    seed: int = 0,
    num_steps: int = 1600,
    num_neurons: int = 100,
    train_fraction: float = 0.7,
    min_spikes: int = 10,
    lags=(2, 1),
    causal_smoothing: bool = False,
) -> DecodingTask:
    """One seeded instance of the paper's Lorenz-spikes decoding task.

    Returns a :class:`DecodingTask` with x (1, T, 2 N_kept) features and z (1, T, 3) scaled
    states, train = the first ``train_fraction`` of the ``num_steps`` bins (minus the first
    max(lags) bins, which have no lagged features), test = the rest; no validation span.
    ``arrays`` holds the raw spikes (T, N), the scaled states (T, 3), the kept neurons and the
    feature scaler. Smoothing is
    centred like the paper's (``causal_smoothing=False``: a feature at t-1 mixes bins up to
    t+2); pass True for a strictly causal decoder input.
    """
    num_steps = _positive_int("num_steps", num_steps)
    num_neurons = _positive_int("num_neurons", num_neurons)
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    sim_rng, tuning_rng, spike_rng = np.random.default_rng(seed).spawn(3)
    raw = noisy_euler_lorenz(num_steps, seed=sim_rng)
    lo, hi = raw.min(0), raw.max(0)
    states = -2 + 4 * (raw - lo) / np.where(hi > lo, hi - lo, 1.0)
    baseline = tuning_rng.uniform(0, 10, num_neurons)
    centres = tuning_rng.uniform(-2, 2, (num_neurons, 3))
    widths = tuning_rng.uniform(0.2, 1.0, (num_neurons, 3))
    rates = paper_tuning_rates(states, baseline, centres, widths)
    spikes = np.minimum(spike_rng.poisson(rates), 1).astype(np.float64)

    num_train = int(train_fraction * num_steps)
    if not max(lags) < num_train < num_steps:
        raise ValueError(f"num_steps={num_steps} leaves no train or test span")
    train_counts = spikes[:num_train].sum(0)
    kept = np.flatnonzero(train_counts >= min_spikes)
    if kept.size == 0:
        raise ValueError(f"no neuron has >= {min_spikes} training spikes")
    smoothed = smooth_counts(spikes[:, kept], 6, 2.0, causal=causal_smoothing)
    features = lagged_bins(smoothed, lags)  # row i is time max(lags) + i
    top = max(lags)
    z = states[top:]
    cut = num_train - top
    scaler = MinMaxScaler(-1, 1).fit(features[:cut])
    x = scaler.transform(features)

    def span(a, s):
        return a[None, s].astype(np.float32)

    train, test = slice(0, cut), slice(cut, None)
    info = {
        "task": "lorenz-paper",
        "seed": seed,
        "num_steps": num_steps,
        "num_neurons": num_neurons,
        "neurons_kept": int(kept.size),
        "spikes_per_bin": float(spikes.mean()),
        "silent_fraction": float(np.mean(spikes.mean(0) < 0.01)),
        "lags": list(lags),
        "causal_smoothing": causal_smoothing,
    }
    task = DecodingTask(
        x_train=span(x, train),
        z_train=span(z, train),
        x_val=None,
        z_val=None,
        x_test=span(x, test),
        z_test=span(z, test),
        names=("s1", "s2", "s3"),
        info=info,
        arrays={"spikes": spikes, "states": states, "kept": kept, "scaler": scaler},
    )
    return task
