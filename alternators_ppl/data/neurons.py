"""Poisson neurons with Gaussian tuning curves over a (standardised) latent state."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alternators_ppl.data.lorenz import _positive_float, _positive_int

__all__ = ["GaussianTuning", "make_tuning", "poisson_spikes"]


def _finite_states(name: str, states: object) -> np.ndarray:
    """Return ``states`` as a float64 array of shape ``(..., D)``; ValueError if empty/NaN."""
    arr = np.asarray(states, dtype=np.float64)
    if arr.ndim < 1 or arr.shape[-1] < 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty array of shape (..., D), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got NaN or inf")
    return arr


@dataclass(frozen=True, eq=False)
class GaussianTuning:
    """Gaussian tuning curves: ``rate_n(s) = gain * exp(-|s - c_n|^2 / (2 width^2))``.

    Attributes:
        centres: ``(N, D)`` preferred states, one row per neuron.
        width: tuning width (> 0), in the units of the state.
        gain: peak expected count per bin (> 0).
    """

    centres: np.ndarray
    width: float
    gain: float

    def __post_init__(self) -> None:
        centres = _finite_states("centres", self.centres)
        if centres.ndim != 2:
            raise ValueError(f"centres must have shape (N, D), got {centres.shape}")
        object.__setattr__(self, "centres", centres)
        object.__setattr__(self, "width", _positive_float("width", self.width))
        object.__setattr__(self, "gain", _positive_float("gain", self.gain))

    @property
    def num_neurons(self) -> int:
        """Number of neurons ``N``."""
        return self.centres.shape[0]

    def rates(self, states: np.ndarray) -> np.ndarray:
        """Expected spike counts per bin.

        Args:
            states: ``(..., D)`` latent states.

        Returns:
            ``(..., N)`` float64 non-negative rates.
        """
        s = _finite_states("states", states)
        if s.shape[-1] != self.centres.shape[1]:
            raise ValueError(
                f"states must have last dimension {self.centres.shape[1]}, got {s.shape}"
            )
        sq = (
            np.sum(s**2, axis=-1, keepdims=True)
            - 2.0 * s @ self.centres.T
            + np.sum(self.centres**2, axis=-1)
        )
        sq = np.maximum(sq, 0.0)
        return self.gain * np.exp(-sq / (2.0 * self.width**2))


def make_tuning(
    states: np.ndarray,
    num_neurons: int = 100,
    mean_rate: float = 0.3,
    width: float = 1.0,
    seed: int | np.random.Generator | None = None,
) -> GaussianTuning:
    """Build Gaussian tuning curves whose centres are states visited by the system.

    Centres are distinct random rows of ``states`` (drawn with replacement only
    if there are fewer states than neurons). The gain is set so that the
    expected count, averaged over all ``states`` and neurons, equals ``mean_rate``.

    Args:
        states: ``(..., D)`` states to place centres on and calibrate against.
        num_neurons: number of neurons ``N`` (>= 1).
        mean_rate: target mean expected count per neuron per bin (> 0).
        width: tuning width (> 0).
        seed: seed or ``np.random.Generator`` for ``np.random.default_rng``.

    Returns:
        ``GaussianTuning`` with ``centres`` of shape ``(N, D)``.
    """
    flat = _finite_states("states", states)
    flat = flat.reshape(-1, flat.shape[-1])
    num_neurons = _positive_int("num_neurons", num_neurons)
    mean_rate = _positive_float("mean_rate", mean_rate)
    width = _positive_float("width", width)
    rng = np.random.default_rng(seed)
    idx = rng.choice(flat.shape[0], size=num_neurons, replace=flat.shape[0] < num_neurons)
    unit = GaussianTuning(centres=flat[idx].copy(), width=width, gain=1.0)
    # Each neuron's rate is 1 at its own centre, so this mean is >= 1 / len(flat) > 0.
    unit_mean = float(np.mean(unit.rates(flat)))
    return GaussianTuning(centres=unit.centres, width=width, gain=mean_rate / unit_mean)


def poisson_spikes(rates: np.ndarray, seed: int | np.random.Generator | None = None) -> np.ndarray:
    """Draw Poisson spike counts.

    Args:
        rates: ``(...)`` non-negative expected counts per bin.
        seed: seed or ``np.random.Generator`` for ``np.random.default_rng``.

    Returns:
        ``(...)`` float64 counts, same shape as ``rates``.
    """
    lam = np.asarray(rates, dtype=np.float64)
    if not np.all(np.isfinite(lam)) or np.any(lam < 0):
        raise ValueError("rates must be finite and non-negative, got NaN, inf or negative")
    rng = np.random.default_rng(seed)
    return rng.poisson(lam).astype(np.float64)
