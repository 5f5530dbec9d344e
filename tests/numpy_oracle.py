"""An independent oracle: the Alternator's log-density and Eq. 12 path loss in plain numpy.

Written once from the equations of DESIGN.md section 1 (Algorithm 1 and Eq. 12), never calling
the model's ``x_dist``, ``z_dist``, ``x_loc`` or ``z_loc``: the OTN f and FTN g are evaluated
here from their weights (``alternators_ppl.networks.MLP``: Linear layers with an activation
between them), in float64::

    log p(x, z) = sum_d log N(z_0d; 0, 1)
                + sum_t sum_{d observed} log N(x_td; sqrt(1 - sigma_x^2) f(z_{t-1})_d, sigma_x^2)
                + sum_t sum_d log N(z_td; sqrt(alpha_t) g(x_t)_d
                                          + sqrt(1 - alpha_t - sigma_z^2) z_{t-1,d}, sigma_z^2)

    L = sum_t sigma_z^2 ||x_t - sqrt(1 - sigma_x^2) f(z_{t-1})||^2_observed
              + sigma_x^2 ||z_t - sqrt(alpha_t) g(x_t) - sqrt(1 - alpha_t - sigma_z^2) z_{t-1}||^2
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

__all__ = ["mlp_numpy", "alpha_numpy", "log_joint_numpy", "path_loss_numpy"]

_ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda a: np.maximum(a, 0.0),
    "gelu": lambda a: 0.5 * a * (1.0 + erf(a / math.sqrt(2.0))),
    "silu": lambda a: a / (1.0 + np.exp(-a)),
    "elu": lambda a: np.where(a > 0, a, np.expm1(np.minimum(a, 0.0))),
}


def _weights(mlp) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W (out, in), b (out,)) of every Linear layer of an MLP, as float64 numpy arrays."""
    layers = []
    for module in mlp.layers:
        if hasattr(module, "weight"):
            weight = module.weight.detach().cpu().numpy().astype(np.float64)
            bias = module.bias.detach().cpu().numpy().astype(np.float64)
            layers.append((weight, bias))
    return layers


def mlp_numpy(mlp, inputs: np.ndarray) -> np.ndarray:
    """The MLP (..., in) -> (..., out) evaluated in numpy from its weights."""
    act = _ACTIVATIONS[mlp.activation]
    layers = _weights(mlp)
    hidden = np.asarray(inputs, dtype=np.float64)
    for i, (weight, bias) in enumerate(layers):
        hidden = hidden @ weight.T + bias
        if i < len(layers) - 1:
            hidden = act(hidden)
    return hidden


def alpha_numpy(alpha_values, steps: int) -> np.ndarray:
    """alpha_1..alpha_T (T,) from a constant (one value) or a schedule (at least T values)."""
    values = np.asarray(alpha_values, dtype=np.float64).reshape(-1)
    if values.size == 1:
        return np.full(steps, values[0])
    assert values.size >= steps, "schedule shorter than the sequence"
    return values[:steps]


def _full_mask(mask, x: np.ndarray) -> np.ndarray:
    if mask is None:
        return np.ones(x.shape, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    return np.broadcast_to(mask[..., None] if mask.ndim == 2 else mask, x.shape)


def _log_normal(value, mean, std):
    return -0.5 * ((value - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)


def _means(otn, ftn, sigma_x, sigma_z, alpha_values, x, z):
    steps = x.shape[1]
    alpha = alpha_numpy(alpha_values, steps)[None, :, None]  # (1, T, 1)
    x_mean = math.sqrt(1 - sigma_x**2) * mlp_numpy(otn, z[:, :-1])
    z_mean = np.sqrt(alpha) * mlp_numpy(ftn, x) + np.sqrt(1 - alpha - sigma_z**2) * z[:, :-1]
    return x_mean, z_mean


def log_joint_numpy(otn, ftn, sigma_x, sigma_z, alpha_values, x, z, mask=None) -> np.ndarray:
    """log p(x^obs, z) per sequence (B,) for x (B, T, Dx), z (B, T+1, Dz), mask (B, T[, Dx])."""
    x, z = np.asarray(x, np.float64), np.asarray(z, np.float64)
    observed = _full_mask(mask, x)
    x_mean, z_mean = _means(otn, ftn, sigma_x, sigma_z, alpha_values, x, z)
    log_z0 = _log_normal(z[:, 0], 0.0, 1.0).sum(-1)
    log_x = np.where(observed, _log_normal(x, x_mean, sigma_x), 0.0).sum((1, 2))
    log_z = _log_normal(z[:, 1:], z_mean, sigma_z).sum((1, 2))
    return log_z0 + log_x + log_z


def path_loss_numpy(otn, ftn, sigma_x, sigma_z, alpha_values, x, z, mask=None) -> np.ndarray:
    """Eq. 12 integrand per sequence (B,) for one given path (same arguments as above)."""
    x, z = np.asarray(x, np.float64), np.asarray(z, np.float64)
    observed = _full_mask(mask, x)
    x_mean, z_mean = _means(otn, ftn, sigma_x, sigma_z, alpha_values, x, z)
    x_term = np.where(observed, (x - x_mean) ** 2, 0.0).sum((1, 2))
    z_term = ((z[:, 1:] - z_mean) ** 2).sum((1, 2))
    return sigma_z**2 * x_term + sigma_x**2 * z_term
