"""Noise scales selected on validation data around an Eq. 12 fit (networks fixed).

Eq. 12 is the trajectory cross-entropy scaled by 2 sigma_x^2 sigma_z^2 with the
sigma-dependent normalisers dropped, so it cannot learn sigma_x, sigma_z or alpha; and under the
conditioned reading -log p of the model's own z draws would drive sigma_z to 0. So the networks
are trained by Eq. 12 at the starting scales, and then :func:`calibrate_noise` chooses

- sigma_x per observed dimension, as c * sqrt(v_d), where v_d is the filtering one-step
  predictive mean squared residual of dimension d on the validation data and c is one scalar;
- sigma_z, and alpha = u (1 - sigma_z^2) with u in (0, 1), so alpha + sigma_z^2 < 1 by
  construction (a sigma_z stored per latent coordinate is scaled as a whole: its largest
  coordinate takes the grid value, the others keep their ratios to it, and sigma_z in the
  formula for alpha is that largest one);

by maximising the particle filter's log-marginal likelihood log p^(x_val) (the SMC estimate of
:func:`alternators_ppl.models.smc.particle_filter`, with a fixed seed so every candidate sees
the same random numbers) by coordinate search over grids of (c, sigma_z, u). With
``preserve_mean`` the layer that the model's ``observation_mean_layer`` names is rescaled by
the ratio of its ``observation_mean_scale`` at the old and the new sigma_x, so the mean of
x_t given z_{t-1} that Eq. 12 fitted is unchanged and only the noise moves: for the Alternator
the OTN's output layer and sqrt(1 - sigma_x^2) (x_loc = sqrt(1 - sigma_x^2) f(z)); for
Alternator++ eps_psi's output layer and sqrt(1 - beta - sigma_x^2).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from alternators_ppl.models.alternator import Alternator
from alternators_ppl.models.smc import particle_filter
from alternators_ppl.validation import check_positive_int

__all__ = ["apply_noise", "calibrate_noise", "can_calibrate_noise", "DEFAULT_GRIDS"]

#: search grids: c (scale of the per-dimension residual sd), sigma_z, u = alpha / (1 - sigma_z^2)
DEFAULT_GRIDS = {
    "c": tuple(float(v) for v in torch.logspace(math.log10(0.1), 0.0, 10).tolist()),
    "sigma_z": tuple(float(v) for v in torch.logspace(math.log10(0.02), math.log10(0.8), 9)),
    "u": (0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.75, 0.9, 0.97),
}


def can_calibrate_noise(model) -> bool:
    """Whether :func:`calibrate_noise` knows how ``model``'s observation mean depends on
    sigma_x: an Alternator with the base ``x_loc``, or a variant that overrides
    ``observation_mean_scale`` with its own ``x_loc`` (Alternator++)."""
    if not isinstance(model, Alternator):
        return False
    own_mean = type(model).x_loc is not Alternator.x_loc
    described = type(model).observation_mean_scale is not Alternator.observation_mean_scale
    return not own_mean or described


@contextlib.contextmanager
def _saved(model: Alternator, layer: nn.Linear | None) -> Iterator[None]:
    """Restore the model's noise (and the observation mean layer) on exit."""
    state = (model.stored_sigma_x(), model.stored_sigma_z(), model.alpha_values,
             model.alpha_is_constant)  # fmt: skip
    weights = None if layer is None else [p.detach().clone() for p in layer.parameters()]
    try:
        yield
    finally:
        model._set_sigma_x(state[0])
        model._set_sigma_z(state[1])
        model.alpha_values, model.alpha_is_constant = state[2:]
        if layer is not None:
            with torch.no_grad():
                for p, w in zip(layer.parameters(), weights, strict=True):
                    p.copy_(w)


def _apply(model, layer, base_weights, old_sx, sigma_x, sigma_z, alpha) -> None:
    """Set the noise; rescale the observation mean layer so x_loc stays as Eq. 12 fitted it."""
    if layer is not None:
        old = torch.as_tensor(old_sx, dtype=model.dtype, device=model.device)
        new = torch.as_tensor(sigma_x, dtype=model.dtype, device=model.device)
        gain = model.observation_mean_scale(old) / model.observation_mean_scale(new)
        gain = gain.expand(model.obs_dim)
        with torch.no_grad():
            layer.weight.copy_(base_weights[0] * gain.unsqueeze(-1))
            if layer.bias is not None:
                layer.bias.copy_(base_weights[1] * gain)
    if model._own_alpha():
        model.set_noise(sigma_x=sigma_x, sigma_z=sigma_z if model.alpha_below_cap else None)
    else:
        model.set_noise(sigma_x=sigma_x, sigma_z=sigma_z, alpha=alpha)


@torch.no_grad()
def _residual_sd(model, x, mask, num_particles: int, seed: int) -> torch.Tensor:
    """sqrt of the filtering one-step predictive mean squared residual per dimension (Dx,):
    mean over observed (b, t) of sum_i W_{t-1}^i (x_t - x_loc(z_{t-1}^i))^2."""
    result = particle_filter(model, x, mask, num_particles, seed)
    total = torch.zeros(model.obs_dim, dtype=x.dtype, device=x.device)
    count = torch.zeros_like(total)
    for t in range(x.shape[1]):
        weights = torch.softmax(result.log_weights[:, :, t], dim=0)  # (N, B)
        loc = model.x_loc(result.particles[:, :, t])  # (N, B, Dx)
        sq = (weights.unsqueeze(-1) * (x[:, t] - loc) ** 2).sum(0)  # (B, Dx)
        observed = mask[:, t].to(x.dtype)
        total += (sq * observed).sum(0)
        count += observed.sum(0)
    return torch.sqrt(total / count.clamp(min=1))


def calibrate_noise(
    model: Alternator,
    x_val,
    mask_val=None,
    *,
    num_particles: int = 128,
    seed: int = 0,
    sweeps: int = 2,
    preserve_mean: bool = True,
    grids: dict[str, Sequence[float]] | None = None,
    max_sequences: int | None = 32,
) -> dict:
    """Select sigma_x (per dimension), sigma_z and alpha of a trained ``model`` on validation
    data x_val (B, T, Dx) (NaN or ``mask_val`` = missing) and set them on the model in place.

    Criterion: the SMC log-marginal log p^(x_val) per observed entry (``num_particles``, fixed
    ``seed``), maximised by ``sweeps`` rounds of coordinate search over ``grids`` (keys ``c``,
    ``sigma_z``, ``u``; defaults :data:`DEFAULT_GRIDS`). sigma_x = clip(c * r_d) with r_d the
    per-dimension one-step residual sd, recomputed after each sweep; alpha = u (1 - sigma_z^2).
    A variant that computes alpha_t itself gets sigma_x, and sigma_z when its alpha_t follow
    the cap 1 - sigma_z^2 (``alpha_below_cap``: the alpha- and learned-alpha Alternators;
    ``alpha`` and ``u`` are then None). ``preserve_mean`` keeps the observation mean fixed by
    rescaling the model's ``observation_mean_layer`` (an error when it has none; pass False to
    let the mean move with sigma_x). Returns a JSON-ready report: the chosen
    ``sigma_x`` (list), ``sigma_z``, ``alpha``, ``c``, ``u``, the log-marginal per entry
    ``before`` and ``after``, ``criterion``, ``num_particles`` and ``evaluations``.
    ``max_sequences`` (default 32; None = all) scores that many evenly spaced sequences of
    x_val (overlapping windows of one series repeat each other; this bounds the cost).
    """
    if not isinstance(model, Alternator):
        raise TypeError(f"model must be an Alternator, got {type(model).__name__}")
    if not can_calibrate_noise(model):
        raise ValueError(
            f"calibrate_noise needs to know how the observation mean depends on sigma_x; "
            f"{type(model).__name__} changes x_loc without observation_mean_scale"
        )
    num_particles = check_positive_int(num_particles, "num_particles")
    sweeps = check_positive_int(sweeps, "sweeps")
    grids = {**DEFAULT_GRIDS, **(grids or {})}
    for key in ("c", "sigma_z", "u"):
        values = [float(v) for v in grids[key]]
        bounds = {"c": (0, math.inf), "sigma_z": (0, 1), "u": (0, 1)}[key]
        if not values or not all(bounds[0] < v < bounds[1] for v in values):
            raise ValueError(f"grids[{key!r}] must be non-empty values in {bounds}, got {values}")
        grids[key] = values
    x, mask = model._prepare(x_val, mask_val)
    if max_sequences is not None:
        max_sequences = check_positive_int(max_sequences, "max_sequences")
        if x.shape[0] > max_sequences:
            keep = torch.linspace(0, x.shape[0] - 1, max_sequences, device=x.device).round()
            x, mask = x[keep.long()], mask[keep.long()]
    if not mask.any():
        raise ValueError("x_val has no observed entry (all values missing)")
    entries = float(mask.sum())
    layer = model.observation_mean_layer() if preserve_mean else None
    if preserve_mean and layer is None:
        raise ValueError(
            "preserve_mean needs an observation mean layer that is nn.Linear (an MLP OTN); "
            "pass preserve_mean=False"
        )
    own_alpha = model._own_alpha()
    old_sx = model.sigma_x_values()
    sigma_x_range = model.calibration_sigma_x_range  # Alternator++: below sqrt(1 - beta)
    base = None if layer is None else [p.detach().clone() for p in layer.parameters()]

    def score() -> float:
        pf = particle_filter(model, x, mask, num_particles, seed, history=False)
        value = float(pf.log_marginal.sum()) / entries
        return value if math.isfinite(value) else -math.inf

    evaluations = 0
    with _saved(model, layer):
        before = score()
        # the search scales sigma_z: its largest coordinate takes each grid value, the others
        # keep their ratios to it (their latent timescales stay ordered as trained)
        sz = max(model.sigma_z_values())
        ratios = [v / sz for v in model.sigma_z_values()] if model.sigma_z_per_dim else None
        u = model.alpha_values[0] / (1 - sz**2) if model.alpha_is_constant else 0.3
        c = 1.0
        best = (-math.inf, None)
        for _ in range(sweeps):
            with _saved(model, layer):
                if best[1] is not None:
                    _apply(model, layer, base, old_sx, *best[1][1:])
                r = _residual_sd(model, x, mask, num_particles, seed)

            def candidate(c, sz, u, r=r):
                sx = (c * r).clamp(*sigma_x_range).tolist()
                scaled = sz if ratios is None else [sz * v for v in ratios]
                return (c, sx, scaled, u * (1 - sz**2))

            coords = ("c", "sigma_z", "u")
            if own_alpha:  # alpha_t is the variant's; sigma_z moves it under the cap
                coords = ("c", "sigma_z") if model.alpha_below_cap else ("c",)
            for coord in coords:
                for value in grids[coord]:
                    cand = {"c": c, "sigma_z": sz, "u": u, coord: value}
                    params = candidate(cand["c"], cand["sigma_z"], cand["u"])
                    _apply(model, layer, base, old_sx, *params[1:])
                    value_score = score()
                    evaluations += 1
                    if value_score > best[0]:
                        best = (value_score, params)
                        c, sz, u = cand["c"], cand["sigma_z"], cand["u"]
    if best[1] is None:
        raise ValueError("every candidate gave a non-finite log-marginal on x_val")
    c, sx, scaled, alpha = best[1]
    _apply(model, layer, base, old_sx, sx, scaled, alpha)
    sz = max(model.sigma_z_values())
    return {
        "criterion": "smc_log_marginal_per_entry",
        "sigma_x": [float(v) for v in model.sigma_x_values()],
        "sigma_z": model.stored_sigma_z(),
        # a variant's own alpha_t are not one stored value
        "alpha": (
            float(model.alpha_values[0]) if model.alpha_is_constant and not own_alpha else None
        ),
        "c": float(c),
        "u": None if own_alpha else float(alpha / (1 - sz**2)),
        "before": before,
        "after": best[0],
        "num_particles": num_particles,
        "evaluations": evaluations,
        "preserve_mean": bool(preserve_mean),
        "sequences": int(x.shape[0]),
    }


@torch.no_grad()
def apply_noise(model: Alternator, report: dict) -> None:
    """Set the noise that :func:`calibrate_noise` chose (its ``report``: ``sigma_x`` (Dx,),
    ``sigma_z``, ``alpha``, ``preserve_mean``) on a model holding the weights it was trained
    with (a run's checkpoint), in place, rescaling the OTN output layer as the calibration did,
    so the model equals the calibrated one."""
    if not isinstance(model, Alternator):
        raise TypeError(f"model must be an Alternator, got {type(model).__name__}")
    layer = model.observation_mean_layer() if report.get("preserve_mean", True) else None
    base = None if layer is None else [p.detach().clone() for p in layer.parameters()]
    _apply(
        model, layer, base, model.sigma_x_values(), report["sigma_x"], report["sigma_z"],
        report["alpha"],
    )  # fmt: skip
