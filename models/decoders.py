"""Decoders of behaviour z from neural features x: Wiener (ridge), Kalman (Wu et al. 2006), GRU.

One interface (:class:`Decoder`): ``fit(x_train, z_train, x_val=None, z_val=None)`` on training
data, then ``predict(x)`` (point estimates, (B, T, Dz)) and ``sample(x, num_samples)`` (draws,
(S, B, T, Dz), or ``None`` for a decoder without uncertainty). Arrays are batch-first
(B, T, D); the decoders here treat each sequence as one stretch of time.

Plain algorithms first (``ridge_fit``, ``fit_linear_gaussian``, ``kalman_filter``), then the
classes that hold fitted parameters. The GRU network lives here; its gradient training is in
:mod:`alternators_ppl.inference.decoders` (nothing here trains by gradient).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from alternators_ppl.models.mamba import MambaBlock
from alternators_ppl.networks import ParameterPlacement
from alternators_ppl.validation import check_positive_int

__all__ = [
    "Decoder",
    "ridge_fit",
    "fit_linear_gaussian",
    "kalman_filter",
    "WienerDecoder",
    "KalmanDecoder",
    "GRUNetwork",
    "MambaDecoderNetwork",
    "as_sequences",
]


@runtime_checkable
class Decoder(Protocol):
    """What every decoder offers (see the module docstring for shapes)."""

    has_uncertainty: bool

    def fit(self, x_train, z_train, x_val=None, z_val=None) -> Decoder: ...

    def predict(self, x) -> np.ndarray: ...

    def sample(self, x, num_samples: int | None = None) -> np.ndarray | None: ...


def as_sequences(value, name: str, dim: int | None = None) -> np.ndarray:
    """``value`` as float64 (B, T, D), finite; ValueError naming ``name`` otherwise."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 3 or 0 in arr.shape:
        raise ValueError(f"{name} must have shape (B, T, D), got {arr.shape}")
    if dim is not None and arr.shape[-1] != dim:
        raise ValueError(f"{name} must have last dimension {dim}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def _pair(x, z, x_name: str, z_name: str) -> tuple[np.ndarray, np.ndarray]:
    x, z = as_sequences(x, x_name), as_sequences(z, z_name)
    if x.shape[:2] != z.shape[:2]:
        raise ValueError(f"{x_name} {x.shape} and {z_name} {z.shape} must share (B, T)")
    return x, z


# ----------------------------------------------------------------------------- plain algorithms
def ridge_fit(
    features: np.ndarray, targets: np.ndarray, lam: float
) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression with an unpenalised intercept: (W (D, K), b (K,)).

    Minimises ||targets - features W - b||^2 + lam ||W||^2 for features (n, D), targets (n, K)
    by the normal equations on centred data.
    """
    if lam < 0:
        raise ValueError(f"lam must be >= 0, got {lam}")
    mean_x, mean_y = features.mean(0), targets.mean(0)
    xc, yc = features - mean_x, targets - mean_y
    gram = xc.T @ xc + lam * np.eye(xc.shape[1])
    weights = np.linalg.solve(gram, xc.T @ yc)
    return weights, mean_y - mean_x @ weights


def fit_linear_gaussian(z: np.ndarray, x: np.ndarray, reg: float = 1e-6) -> dict[str, np.ndarray]:
    """Least-squares fit of the Kalman-filter decoder (Wu et al. 2006).

    z (B, T, Dz) behaviour, x (B, T, Dx) features (transition pairs stay within a sequence).
    Returns A (Dz, Dz), a (Dz,), Q: z_t = A z_{t-1} + a + w, w ~ N(0, Q); H (Dx, Dz), c (Dx,),
    R: x_t = H z_t + c + v, v ~ N(0, R); m0 (Dz,), P0 (Dz, Dz): the training mean and
    covariance of z. ``reg`` (times the mean variance) is added to the diagonals of Q and R so
    that they stay positive definite. Q and R are the maximum-likelihood residual covariances.
    """
    ones = np.ones((*z.shape[:2], 1))
    prev = np.concatenate([z, ones], -1)[:, :-1].reshape(-1, z.shape[-1] + 1)
    nxt = z[:, 1:].reshape(-1, z.shape[-1])
    coef = np.linalg.lstsq(prev, nxt, rcond=None)[0]
    enc = np.concatenate([z, ones], -1).reshape(-1, z.shape[-1] + 1)
    flat_x = x.reshape(-1, x.shape[-1])
    coef_x = np.linalg.lstsq(enc, flat_x, rcond=None)[0]

    def cov(res):
        out = res.T @ res / len(res)
        return out + reg * max(np.trace(out) / len(out), 1e-12) * np.eye(len(out))

    flat_z = z.reshape(-1, z.shape[-1])
    return {
        "A": coef[:-1].T, "a": coef[-1], "Q": cov(nxt - prev @ coef),
        "H": coef_x[:-1].T, "c": coef_x[-1], "R": cov(flat_x - enc @ coef_x),
        "m0": flat_z.mean(0), "P0": np.atleast_2d(np.cov(flat_z.T)),
    }  # fmt: skip


def kalman_filter(params: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Filtered means (T, Dz) and covariances (T, Dz, Dz) of z_t given x_1..x_t, x (T, Dx).

    The state before the first bin is N(m0, P0); step t predicts with (A, a, Q), then updates
    with (H, c, R). Same convention as pykalman's ``filter`` with initial_state_mean =
    A m0 + a and initial_state_covariance = A P0 A^T + Q.
    """
    A, a, Q, H, c, R = (params[k] for k in ("A", "a", "Q", "H", "c", "R"))
    # information form of the update: Dz x Dz solves per step (Dx is often >> Dz)
    r_inv_h = np.linalg.solve(R, H)  # R^-1 H (Dx, Dz)
    info_gain = H.T @ r_inv_h  # H^T R^-1 H
    info_x = (x - c) @ r_inv_h  # rows: H^T R^-1 (x_t - c)
    mean, covar = params["m0"], params["P0"]
    means, covs = np.empty((len(x), len(mean))), np.empty((len(x), len(mean), len(mean)))
    for t in range(len(x)):
        mean, covar = A @ mean + a, A @ covar @ A.T + Q
        prec_pred = np.linalg.inv(covar)
        covar = np.linalg.inv(prec_pred + info_gain)
        covar = (covar + covar.T) / 2
        mean = covar @ (prec_pred @ mean + info_x[t])
        means[t], covs[t] = mean, covar
    return means, covs


# ----------------------------------------------------------------------------- classes
RIDGE_GRID = tuple(10.0**k for k in range(-3, 5))


class WienerDecoder:
    """Wiener filter: ridge regression from features (already lagged bins) to behaviour.

    ``lams`` is the grid for the ridge penalty, chosen by R^2 on ``x_val``/``z_val``, or on the
    last ``val_fraction`` of each training sequence when no validation data is given; the
    final weights are refitted on all training data with the chosen penalty.
    """

    has_uncertainty = False

    def __init__(self, lams=RIDGE_GRID, val_fraction: float = 0.15):
        self.lams = tuple(float(v) for v in lams)
        if not self.lams or min(self.lams) < 0:
            raise ValueError(f"lams must be a non-empty grid of values >= 0, got {lams}")
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.val_fraction = val_fraction
        self.weights = self.bias = self.lam = None
        self.val_scores: dict[float, float] = {}

    def fit(self, x_train, z_train, x_val=None, z_val=None) -> WienerDecoder:
        """Choose the penalty on validation, refit on train; returns self."""
        x, z = _pair(x_train, z_train, "x_train", "z_train")
        if x_val is None:
            x_fit, z_fit, xv, zv = _tail_split(x, z, self.val_fraction)
        else:
            xv, zv = _pair(x_val, z_val, "x_val", "z_val")
            x_fit, z_fit = x, z
        flat = [a.reshape(-1, a.shape[-1]) for a in (x_fit, z_fit, xv, zv)]
        for lam in self.lams:
            w, b = ridge_fit(flat[0], flat[1], lam)
            resid = ((flat[3] - flat[2] @ w - b) ** 2).sum(0)
            total = ((flat[3] - flat[3].mean(0)) ** 2).sum(0)
            self.val_scores[lam] = float(np.mean(1 - resid / total))
        self.lam = max(self.val_scores, key=self.val_scores.get)
        self.weights, self.bias = ridge_fit(
            x.reshape(-1, x.shape[-1]), z.reshape(-1, z.shape[-1]), self.lam
        )
        return self

    def predict(self, x) -> np.ndarray:
        """Decoded behaviour (B, T, Dz) for features x (B, T, Dx)."""
        if self.weights is None:
            raise ValueError("WienerDecoder is not fitted; call fit() first")
        return as_sequences(x, "x", self.weights.shape[0]) @ self.weights + self.bias

    def sample(self, x, num_samples: int | None = None) -> None:
        """A point decoder has no draws: returns None."""
        return None


class KalmanDecoder:
    """Kalman-filter decoder (Wu et al. 2006): linear dynamics on z, linear-Gaussian encoding.

    Fitted in closed form by :func:`fit_linear_gaussian` on the training sequences (validation
    data, if given, is not needed), decoded by :func:`kalman_filter`; ``sample`` draws from the
    filtering marginals N(mean_t, P_t).
    """

    has_uncertainty = True

    def __init__(self, reg: float = 1e-6):
        self.reg = float(reg)
        self.params: dict[str, np.ndarray] | None = None

    def fit(self, x_train, z_train, x_val=None, z_val=None) -> KalmanDecoder:
        """Least-squares fit on the concatenated training sequences; returns self."""
        x, z = _pair(x_train, z_train, "x_train", "z_train")
        self.params = fit_linear_gaussian(z, x, self.reg)
        return self

    def filter(self, x) -> tuple[np.ndarray, np.ndarray]:
        """Filtered means (B, T, Dz) and covariances (B, T, Dz, Dz) for x (B, T, Dx)."""
        if self.params is None:
            raise ValueError("KalmanDecoder is not fitted; call fit() first")
        x = as_sequences(x, "x", self.params["H"].shape[0])
        out = [kalman_filter(self.params, seq) for seq in x]
        return np.stack([m for m, _ in out]), np.stack([c for _, c in out])

    def predict(self, x) -> np.ndarray:
        """Filtered means (B, T, Dz)."""
        return self.filter(x)[0]

    def sample(self, x, num_samples: int | None = 200, seed: int | None = 0) -> np.ndarray:
        """Draws (S, B, T, Dz) from the filtering marginals (default S = 200)."""
        num_samples = check_positive_int(200 if num_samples is None else num_samples, "num_samples")
        means, covs = self.filter(x)
        chol = np.linalg.cholesky(covs)
        eps = np.random.default_rng(seed).standard_normal((num_samples, *means.shape))
        return means + np.einsum("btij,sbtj->sbti", chol, eps)


class GRUNetwork(ParameterPlacement, nn.Module):
    """GRU decoder network (Glaser et al. 2020): x (B, T, Dx) -> z (B, T, Dz).

    A ``num_layers`` GRU of width ``hidden`` reads the features in time order; a linear
    read-out maps each hidden state to the behaviour at that bin (causal: z_t from x_1..x_t).
    ``loss(x, mask, z_target)`` is the mean squared error, the signature of
    :func:`alternators_ppl.inference.fit`'s ``loss_fn``.
    """

    def __init__(self, obs_dim: int, latent_dim: int, hidden: int = 64, num_layers: int = 1,
                 dropout: float = 0.0):  # fmt: skip
        super().__init__()
        self.obs_dim = check_positive_int(obs_dim, "obs_dim")
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.gru = nn.GRU(obs_dim, check_positive_int(hidden, "hidden"), num_layers,
                          batch_first=True, dropout=dropout if num_layers > 1 else 0.0)  # fmt: skip
        self.dropout = nn.Dropout(dropout)
        self.readout = nn.Linear(hidden, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.gru(x)
        return self.readout(self.dropout(hidden))

    def loss(self, x: torch.Tensor, mask=None, z_target: torch.Tensor | None = None):
        """Mean squared error of the decoded z against z_target (B, T, Dz)."""
        if z_target is None:
            raise ValueError("z_target is required: the GRU decoder is trained supervised")
        return (self(x) - z_target).square().mean()


class MambaDecoderNetwork(ParameterPlacement, nn.Module):
    """Mamba decoder network: x (B, T, Dx) -> Gaussian (loc, scale) of z (B, T, Dz) each.

    A linear embedding, ``num_layers`` residual Mamba blocks of
    :mod:`alternators_ppl.models.mamba` (causal convolution + selective SSM, the parallel
    scan) and a Gaussian head per bin (causal: z_t from x_1..x_t). ``loss(x, mask, z_target)``
    is the mean Gaussian negative log-likelihood per entry of z_target, the signature of
    :func:`alternators_ppl.inference.fit`'s ``loss_fn``.
    """

    def __init__(self, obs_dim: int, latent_dim: int, d_model: int = 32, d_state: int = 8,
                 num_layers: int = 2, min_scale: float = 1e-3):  # fmt: skip
        super().__init__()
        self.obs_dim = check_positive_int(obs_dim, "obs_dim")
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.embed = nn.Linear(obs_dim, check_positive_int(d_model, "d_model"))
        self.blocks = nn.ModuleList(
            MambaBlock(d_model, check_positive_int(d_state, "d_state"))
            for _ in range(check_positive_int(num_layers, "num_layers"))
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, 2 * latent_dim)
        self.min_scale = min_scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, Dx) -> (loc, scale), each (B, T, Dz)."""
        h = self.embed(x)
        for block in self.blocks:
            h, _ = block(h, parallel=True)
        loc, raw = self.head(self.norm(h)).chunk(2, dim=-1)
        return loc, nn.functional.softplus(raw) + self.min_scale

    def loss(self, x: torch.Tensor, mask=None, z_target: torch.Tensor | None = None):
        """Mean Gaussian negative log-likelihood of z_target (B, T, Dz) given x."""
        if z_target is None:
            raise ValueError("z_target is required: the Mamba decoder is trained supervised")
        loc, scale = self(x)
        return -torch.distributions.Normal(loc, scale).log_prob(z_target).mean()


def _tail_split(x: np.ndarray, z: np.ndarray, fraction: float):
    """Split each sequence in time: the last ``fraction`` becomes validation."""
    steps = x.shape[1]
    cut = steps - max(1, int(round(fraction * steps)))
    if cut < 2:
        raise ValueError(f"training sequences of {steps} steps are too short for a validation tail")
    return x[:, :cut], z[:, :cut], x[:, cut:], z[:, cut:]
