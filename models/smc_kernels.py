"""Building blocks of the Alternator's particle methods, shared by the particle filter and
smoother (:mod:`alternators_ppl.models.smc`) and particle Gibbs
(:mod:`alternators_ppl.models.particle_gibbs`): the model check, seeded draws, per-sequence
indexing and resampling of particles (N, B, ...), z_0 particles, and the backward-kernel
log-weights of FFBSi and ancestor sampling as one batched matrix product.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

__all__ = [
    "check_smc_model",
    "seeded",
    "gather",
    "systematic_resample",
    "categorical",
    "inverse_cdf",
    "initial_particles",
    "backward_logits",
]

#: what a model needs for the particle methods (every Alternator variant has them)
_HOOKS = ("x_dist", "z_dist", "alpha_schedule", "_step_alpha", "_prepare", "latent_dim")
_LOG_2PI = math.log(2 * math.pi)


def check_smc_model(model) -> None:
    """Refuse what the particle methods cannot run: a model with random global sites
    (``HyperpriorAlternator``), one without the Alternator's per-step hooks, or batched
    hyperparameters (a stored per-dimension sigma_x (Dx,) or sigma_z (Dz,) is fine)."""
    if hasattr(model, "sample_globals") and hasattr(model, "alternator"):
        raise ValueError(
            f"{type(model).__name__} has random global sites (sigma_x, sigma_z, alpha); this SMC "
            "conditions on fixed globals: run it on model.alternator, inside "
            "model.alternator.hyperparameters(...) for chosen values"
        )
    missing = [name for name in _HOOKS if not hasattr(model, name)]
    if missing:
        raise TypeError(
            f"model must be an Alternator or a variant of it; {type(model).__name__} lacks "
            f"{missing}"
        )
    override = getattr(model, "_alpha_override", None)
    for name, value in (
        ("sigma_x", model.sigma_x),
        ("sigma_z", model.sigma_z),
        ("alpha", override),
    ):
        if name != "alpha" and model.uses_stored_vector(name):
            continue  # a stored per-dimension sigma_x (Dx,) or sigma_z (Dz,) broadcasts
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            raise ValueError(
                f"{name} is batched {tuple(value.shape)} (from hyperparameters()); SMC needs "
                "scalar hyperparameters"
            )


@contextlib.contextmanager
def seeded(seed, device: torch.device) -> Iterator[None]:
    """Draw from a generator seeded with ``seed`` inside the block; the global state is
    restored afterwards. ``None`` uses (and advances) the global generators."""
    if seed is None:
        yield
        return
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def gather(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values (N, B, ...) at particle index (S, B) per sequence: (S, B, ...)."""
    batch = values.shape[1]
    flat = values.reshape(values.shape[0] * batch, *values.shape[2:])
    offsets = torch.arange(batch, device=index.device)
    return flat[index * batch + offsets]


def systematic_resample(log_w: torch.Tensor) -> torch.Tensor:
    """Systematic resampling per sequence from normalised log weights (N, B): indices (N, B)."""
    num, batch = log_w.shape
    cdf = torch.cumsum(torch.exp(log_w - log_w.max(0).values).T, dim=-1)  # (B, N)
    cdf = cdf / cdf[:, -1:]
    offsets = torch.rand(batch, 1, dtype=cdf.dtype, device=cdf.device)
    points = (offsets + torch.arange(num, dtype=cdf.dtype, device=cdf.device)) / num
    index = torch.searchsorted(cdf.contiguous(), points.contiguous(), right=True)
    return index.clamp_max(num - 1).T


def categorical(logits: torch.Tensor, num: int) -> torch.Tensor:
    """``num`` draws per sequence from unnormalised log weights (N, B): indices (num, B)."""
    probs = torch.softmax(logits.T, dim=-1)  # (B, N)
    return torch.multinomial(probs, num, replacement=True).T


def inverse_cdf(logits: torch.Tensor) -> torch.Tensor:
    """One draw per row from unnormalised log weights (..., N): indices (...)."""
    cdf = torch.cumsum(torch.softmax(logits, dim=-1), dim=-1)
    u = torch.rand(*cdf.shape[:-1], 1, dtype=cdf.dtype, device=cdf.device) * cdf[..., -1:]
    index = torch.searchsorted(cdf, u, right=True).squeeze(-1)
    return index.clamp_max(logits.shape[-1] - 1)


def initial_particles(model, num: int, batch: int, like: torch.Tensor) -> torch.Tensor:
    """z_0 ~ N(0, I) for N particles x B sequences: (N, B, Dz)."""
    return torch.randn(num, batch, model.latent_dim, dtype=like.dtype, device=like.device)


def _normal_features(values, loc, scale, scale_on_values: bool):
    """Features (S, B, K), (N, B, K) whose inner product over K is
    sum_d log N(values[s, b, d] | loc[i, b, d], scale) for every pair (s, i).

    values (S, B, D), loc (N, B, D); ``scale`` broadcasts to values (``scale_on_values``) or to
    loc. Both sides are centred first (the density depends on values - loc only), which keeps
    the expanded square accurate.
    """
    centre = loc.mean(0)
    values, loc = values - centre, loc - centre
    dim = values.shape[-1]
    if scale_on_values:
        scale = scale.expand_as(values)
        prec = scale.pow(-2)
        lead = (prec * values.square() + 2 * torch.log(scale)).sum(-1, keepdim=True)
        left = torch.cat([lead + dim * _LOG_2PI, prec * values, prec], dim=-1)
        right = torch.cat([torch.ones_like(loc[..., :1]), -2 * loc, loc.square()], dim=-1)
    else:
        scale = scale.expand_as(loc)
        prec = scale.pow(-2)
        lead = (prec * loc.square() + 2 * torch.log(scale)).sum(-1, keepdim=True)
        left = torch.cat([torch.ones_like(values[..., :1]), -2 * values, values.square()], dim=-1)
        right = torch.cat([lead + dim * _LOG_2PI, prec * loc, prec], dim=-1)
    return left, -0.5 * right


def backward_logits(model, log_w, cand, x_star, z_star, alpha) -> torch.Tensor:
    """log W_t^i + log p(x_{t+1}^* | z_t^i) + log p(z_{t+1}^* | z_t^i, x_{t+1}^*): (B, S, N)
    for filtering weights log_w (N, B), candidates cand (N, B, Dz) and draws x_star (S, B, Dx),
    z_star (S, B, Dz).

    With Gaussian factors and a latent mean affine in z_{t-1} (the default Alternator and
    every variant with ``affine_latent``) all three terms are one batched matrix product over
    features; otherwise the densities are evaluated on the broadcast (S, N, B) grid.
    """
    num, batch, _ = cand.shape
    samples = x_star.shape[0]
    left = [torch.ones_like(x_star[..., :1])]
    right = [log_w.unsqueeze(-1)]
    dense = None
    x_dist = model.x_dist(cand)  # one OTN call on N x B
    if isinstance(x_dist, torch.distributions.Normal):
        features = _normal_features(x_star, x_dist.loc, x_dist.scale, scale_on_values=False)
        left.append(features[0])
        right.append(features[1])
    else:
        dense = x_dist.log_prob(x_star.unsqueeze(1)).sum(-1).permute(2, 0, 1)
    z_dist = None
    if model.affine_latent:
        # z_loc(x, z) = u(x) + sqrt(1 - alpha - sigma_z^2) z (what the parallel scan assumes):
        # the FTN reads the S inputs once and the N candidates enter through the product
        z_dist = model.z_dist(x_star, torch.zeros_like(z_star), alpha)  # (S, B, Dz)
    if isinstance(z_dist, torch.distributions.Normal):
        decay = model.latent_decay(alpha)
        features = _normal_features(
            z_star - z_dist.loc, decay * cand, z_dist.scale, scale_on_values=True
        )
        left.append(features[0])
        right.append(features[1])
    else:
        shape = (samples, num, batch)
        z_dist = model.z_dist(
            x_star.unsqueeze(1).expand(*shape, -1), cand.expand(*shape, -1), alpha
        )
        log_pz = z_dist.log_prob(z_star.unsqueeze(1)).sum(-1).permute(2, 0, 1)
        dense = log_pz if dense is None else dense + log_pz
    logits = torch.bmm(torch.cat(left, -1).transpose(0, 1), torch.cat(right, -1).permute(1, 2, 0))
    return logits if dense is None else logits + dense
