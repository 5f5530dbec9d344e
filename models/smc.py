"""Sequential Monte Carlo for Alternators: filtering, log p(x), smoothing paths, forecasts.

The Alternator's own order makes a *fully adapted* particle filter. Read the state at step t
as w_t = z_{t-1}: x_t is emitted by p(x_t | z_{t-1}) (the OTN) and the next state is drawn by
p(z_t | z_{t-1}, x_t) (the FTN), with x_t a known input where it is observed. Each step

1. weighs particle i by p(x_t^obs | z_{t-1}^i), the OTN's density of the *observed* entries only
   (the x-factor is a product over entries, so missing ones integrate out exactly);
2. resamples (systematic, per sequence) when the effective sample size of those weights falls
   below ``ess_threshold * N``, otherwise carries the weights on;
3. moves: the missing entries of x_t are drawn from p(x_t | z_{t-1}) (drawn before resampling and
   resampled with their particle, which is the same in distribution) and
   z_t ~ p(z_t | z_{t-1}, x_t), the FTN reading the data where observed and the draws elsewhere.

The sum over steps of log sum_i W_{t-1}^i p(x_t^obs | z_{t-1}^i) is an unbiased estimate of
p(x^obs) on the natural scale (``log_marginal``). Everything runs in log space and is batched
over particles x sequences: one OTN call and one FTN call per step for all of them.

Smoothing paths p(z_{0:T}, x^mis | x^obs) come from backward simulation (FFBSi): from a draw
(z_{t+1}^*, x_{t+1}^*) pick z_t^i with probability proportional to
W_t^i p(x_{t+1}^* | z_t^i) p(z_{t+1}^* | z_t^i, x_{t+1}^*), where x_{t+1}^* holds the data at
observed entries and the path's own draw at missing ones (O(N S) per step, batched). A variant
whose alpha_t depends on the imputed inputs (alpha-Alternator with gaps) makes the state
non-Markov; there the paths are traced through the filter's genealogy instead.

The model must expose the Alternator's per-step hooks (``x_dist``, ``z_dist``,
``alpha_schedule``, ``_step_alpha``), which every variant overrides, so Alternator++,
alpha-Alternator and the learned-alpha schedule run exactly. ``HyperpriorAlternator`` (random
global sites) is refused: filter its ``alternator`` at chosen values instead.

Shapes are batch-first: x (B, T, Dx); particles (N, B, T+1, Dz) including z_0; path draws
(S, B, T+1, Dz). No gradients are recorded.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from alternators_ppl.models.smc_kernels import (
    backward_logits,
    categorical,
    check_smc_model,
    gather,
    initial_particles,
    inverse_cdf,
    seeded,
    systematic_resample,
)
from alternators_ppl.models.smc_moves import mcmc_moves
from alternators_ppl.validation import check_positive_int

__all__ = [
    "ParticleFilterResult",
    "SmoothingPaths",
    "SMOOTHERS",
    "particle_filter",
    "backward_simulation",
    "smoothing_paths",
    "smc_chains",
    "smc_forecast",
]

#: ways to draw smoothing paths from a filter run
SMOOTHERS = ("auto", "ffbsi", "genealogy")
#: default number of MCMC sweeps that rejuvenate smoothing draws (``smc_moves``)
MCMC_SWEEPS = 0


class ParticleFilterResult(NamedTuple):
    """Output of :func:`particle_filter` (N particles, B sequences, T steps).

    particles: (N, B, T+1, Dz) filtering particles z_t^i, t = 0..T (only t = T with
        ``history=False``: (N, B, 1, Dz)).
    x_read: (N, B, T, Dx) the x_t each particle's FTN read: the data at observed entries, the
        particle's draw at missing ones ((N, B, 1, Dx), the last step, without history).
    log_weights: (N, B, T+1) normalised log filtering weights of ``particles``.
    ancestors: (N, B, T) index at step t-1 of the parent of particle i at step t.
    ess: (B, T) effective sample size of the incremental weights at each step (before any
        resampling).
    resampled: (B, T) bool, whether each step resampled.
    log_marginal: (B,) log of the unbiased estimate of p(x^obs) per sequence.
    mask: (B, T, Dx) bool, the observed entries used.
    """

    particles: torch.Tensor
    x_read: torch.Tensor
    log_weights: torch.Tensor
    ancestors: torch.Tensor
    ess: torch.Tensor
    resampled: torch.Tensor
    log_marginal: torch.Tensor
    mask: torch.Tensor


class SmoothingPaths(NamedTuple):
    """Joint draws from the smoothing posterior p(z_{0:T}, x^mis | x^obs).

    z: (..., S, B, T+1, Dz) latent paths; x: (..., S, B, T, Dx) the inputs along each path (the
    data at observed entries, the path's draw at missing ones).
    """

    z: torch.Tensor
    x: torch.Tensor


# ---------------------------------------------------------------------- checks and helpers
def _check_threshold(ess_threshold) -> float:
    if isinstance(ess_threshold, bool) or not isinstance(ess_threshold, int | float):
        raise TypeError(f"ess_threshold must be a number in [0, 1], got {ess_threshold!r}")
    if not 0.0 <= float(ess_threshold) <= 1.0:
        raise ValueError(f"ess_threshold must lie in [0, 1], got {ess_threshold!r}")
    return float(ess_threshold)


def _check_smoother(smoother: str) -> str:
    if smoother not in SMOOTHERS:
        raise ValueError(f"smoother must be one of {SMOOTHERS}, got {smoother!r}")
    return smoother


def _trace(ancestors: torch.Tensor, index: torch.Tensor, steps: int) -> list[torch.Tensor]:
    """Genealogy of particles ``index`` (S, B) at the last step: their indices at the last
    ``steps`` + 1 times, latest first (ancestors (N, B, T))."""
    lineage = [index]
    for t in range(ancestors.shape[2] - 1, ancestors.shape[2] - 1 - steps, -1):
        index = gather(ancestors[:, :, t], index)
        lineage.append(index)
    return lineage


def _alpha_at(model, t: int, schedule, read: list[torch.Tensor]):
    """alpha_t (0-based t) for particles whose last inputs are ``read`` ((N, B, Dx) each)."""
    if schedule is not None:
        return schedule[t]
    num, batch, dim = read[-1].shape
    flat = [r.reshape(num * batch, dim) for r in read]
    return model._step_alpha(t, None, flat).reshape(num, batch, 1)


def _schedule(model, steps: int):
    return None if model.data_dependent_alpha else model.alpha_schedule(steps)


# ---------------------------------------------------------------------- the filter
def _filter(
    model,
    x: torch.Tensor,
    mask: torch.Tensor,
    z: torch.Tensor,
    read: list[torch.Tensor],
    schedule,
    t0: int,
    ess_threshold: float,
    history: bool,
) -> ParticleFilterResult:
    """Fully adapted filter on checked inputs: x (B, T, Dx) zeroed where missing, mask
    (B, T, Dx), starting particles z (N, B, Dz) with uniform weights, ``read`` the last inputs
    before the first step ((N, B, Dx) each, for a data-dependent alpha), alpha from
    ``schedule[t0 + t]``."""
    num, batch, _ = z.shape
    steps, dim = x.shape[1], x.shape[2]
    window = model.alpha_window if model.data_dependent_alpha else 0
    identity = torch.arange(num, device=x.device).unsqueeze(1).expand(num, batch)
    log_n = math.log(num)
    log_w = torch.full((num, batch), -log_n, dtype=x.dtype, device=x.device)
    log_marginal = x.new_zeros(batch)
    zs, xs, lws, ancs, esss, flags, norms = [z], [], [log_w], [], [], [], []
    for t in range(steps):
        x_dist = model.x_dist(z)  # one OTN call for all N x B particles
        if t == 0 and (x_dist.event_shape != () or x_dist.batch_shape[-1:] != (dim,)):
            raise TypeError(
                f"{type(model).__name__}.x_dist must factorise over the {dim} entries of x_t "
                f"(batch shape (..., {dim}), event shape ()), got batch "
                f"{tuple(x_dist.batch_shape)} event {tuple(x_dist.event_shape)}"
            )
        observed, x_t = mask[:, t], x[:, t]
        log_px = torch.where(observed, x_dist.log_prob(x_t), 0.0).sum(-1)  # (N, B)
        x_read = torch.where(observed, x_t, x_dist.sample())
        log_v = log_w + log_px
        norm = torch.logsumexp(log_v, dim=0)  # (B,)
        log_marginal = log_marginal + norm
        norms.append(norm)
        log_v = log_v - norm
        ess = torch.exp(-torch.logsumexp(2 * log_v, dim=0))
        resample = ess < ess_threshold * num
        ancestor = torch.where(resample, systematic_resample(log_v), identity)
        z, x_read = gather(z, ancestor), gather(x_read, ancestor)
        read = [gather(r, ancestor) for r in read]
        log_w = torch.where(resample, -log_n, log_v)
        read = (read + [x_read])[-window:] if window else []
        alpha = _alpha_at(model, t0 + t, schedule, read or [x_read])
        z = model.z_dist(x_read, z, alpha).sample()  # one FTN call for all of them
        if history or t == steps - 1:
            zs.append(z)
            xs.append(x_read)
            lws.append(log_w)
        ancs.append(ancestor)
        esss.append(ess)
        flags.append(resample)
    _check_support(torch.stack(norms, dim=1), t0)
    if not history:
        zs, lws = zs[-1:], lws[-1:]
    return ParticleFilterResult(
        particles=torch.stack(zs, dim=2),
        x_read=torch.stack(xs, dim=2),
        log_weights=torch.stack(lws, dim=2),
        ancestors=torch.stack(ancs, dim=2),
        ess=torch.stack(esss, dim=1),
        resampled=torch.stack(flags, dim=1),
        log_marginal=log_marginal,
        mask=mask,
    )


def _check_support(norms: torch.Tensor, t0: int) -> None:
    """One host check after the loop: a step whose N weights are all zero (or NaN) is an error
    naming the sequence and step (norms: (B, T) log normalisers of the incremental weights)."""
    bad = ~torch.isfinite(norms)
    if bad.any():
        b, t = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"x: every particle gives zero density to the observed entries of sequence {b} at "
            f"step {t0 + t + 1}; the data lie outside what the model can emit (check their "
            "scale, or use more particles)"
        )


@torch.no_grad()
def particle_filter(
    model,
    x,
    mask=None,
    num_particles: int = 1000,
    seed: int | None = None,
    ess_threshold: float = 0.5,
    history: bool = True,
) -> ParticleFilterResult:
    """Fully adapted particle filter of an Alternator (or variant) on x (B, T, Dx).

    ``mask`` (B, T) or (B, T, Dx), True = observed; NaN entries of x are missing too. Only the
    observed entries weigh a particle; missing ones are drawn from p(x_t | z_{t-1}). Resamples
    systematically, per sequence, when the ESS falls below ``ess_threshold * num_particles``
    (0: never, 1: at every step with uneven weights). ``seed`` draws from a private generator
    (the global one is left as it was). ``history=False`` keeps only the last step (memory
    O(N B)). Returns a :class:`ParticleFilterResult`; ``log_marginal`` (B,) estimates log p(x).
    """
    check_smc_model(model)
    num_particles = check_positive_int(num_particles, "num_particles")
    ess_threshold = _check_threshold(ess_threshold)
    x, mask = model._prepare(x, mask)
    with seeded(seed, x.device):
        z0 = initial_particles(model, num_particles, x.shape[0], x)
        return _filter(
            model, x, mask, z0, [], _schedule(model, x.shape[1]), 0, ess_threshold, history
        )


# ---------------------------------------------------------------------- smoothing
def _ffbsi(model, result: ParticleFilterResult, num_samples: int) -> SmoothingPaths:
    particles, x_read, log_w = result.particles, result.x_read, result.log_weights
    steps = particles.shape[2] - 1
    if model.data_dependent_alpha:
        schedule = None
        alpha_data = model._alpha_for(x_read[0])  # fully observed: the data (B, T, 1)
    else:
        schedule = model.alpha_schedule(steps)
    index = categorical(log_w[:, :, steps], num_samples)
    z_star = gather(particles[:, :, steps], index)  # (S, B, Dz)
    x_star = gather(x_read[:, :, steps - 1], index)  # (S, B, Dx)
    zs, xs = [z_star], [x_star]
    for t in range(steps - 1, -1, -1):
        cand = particles[:, :, t]  # (N, B, Dz)
        alpha = schedule[t] if schedule is not None else alpha_data[:, t]
        logits = backward_logits(model, log_w[:, :, t], cand, x_star, z_star, alpha)
        index = inverse_cdf(logits).T  # (S, B)
        z_star = gather(cand, index)
        zs.append(z_star)
        if t > 0:
            x_star = gather(x_read[:, :, t - 1], index)
            xs.append(x_star)
    return SmoothingPaths(torch.stack(zs[::-1], dim=2), torch.stack(xs[::-1], dim=2))


def _genealogy(result: ParticleFilterResult, num_samples: int) -> SmoothingPaths:
    particles, x_read = result.particles, result.x_read
    steps = particles.shape[2] - 1
    index = categorical(result.log_weights[:, :, steps], num_samples)
    lineage = _trace(result.ancestors, index, steps)[::-1]  # times 0..T
    z = torch.stack([gather(particles[:, :, t], i) for t, i in enumerate(lineage)], dim=2)
    x = torch.stack([gather(x_read[:, :, t - 1], lineage[t]) for t in range(1, steps + 1)], 2)
    return SmoothingPaths(z, x)


@torch.no_grad()
def backward_simulation(
    model,
    result: ParticleFilterResult,
    num_samples: int = 100,
    smoother: str = "auto",
    mcmc_sweeps: int = MCMC_SWEEPS,
) -> SmoothingPaths:
    """Smoothing path draws (S, B, T+1, Dz) from a filter run with ``history=True``.

    ``smoother``: ``"ffbsi"`` backward simulation with the kernel
    W_t^i p(x_{t+1}^* | z_t^i) p(z_{t+1}^* | z_t^i, x_{t+1}^*) (O(N S) per step);
    ``"genealogy"`` traces the ancestry of S particles drawn at T (cheap, degenerate far back);
    ``"auto"`` uses FFBSi except where it does not apply (a data-dependent alpha with missing
    entries, whose alpha_t depends on imputed inputs). ``mcmc_sweeps`` Metropolis-within-Gibbs
    sweeps (:func:`~alternators_ppl.models.smc_moves.mcmc_moves`, 0: none) then rejuvenate the
    draws; they leave the smoothing posterior invariant and undo the collapse of backward
    simulation onto few particles where sigma_z is small. Draws use the global generator.
    """
    check_smc_model(model)
    num_samples = check_positive_int(num_samples, "num_samples")
    smoother = _check_smoother(smoother)
    if (
        result.particles.shape[2] != result.x_read.shape[2] + 1
        or result.x_read.shape[2] != (result.ancestors.shape[2])
    ):
        raise ValueError("result must come from particle_filter(..., history=True)")
    non_markov = model.data_dependent_alpha and not bool(result.mask.all())
    if smoother == "ffbsi" and non_markov:
        raise ValueError(
            f"{type(model).__name__}: alpha_t depends on imputed inputs at missing entries, so "
            "the backward kernel is not Markov; use smoother='genealogy' (or 'auto')"
        )
    if isinstance(mcmc_sweeps, bool) or not isinstance(mcmc_sweeps, int) or mcmc_sweeps < 0:
        raise ValueError(f"mcmc_sweeps must be a non-negative integer, got {mcmc_sweeps!r}")
    if smoother == "genealogy" or (smoother == "auto" and non_markov):
        paths = _genealogy(result, num_samples)
    else:
        paths = _ffbsi(model, result, num_samples)
    if mcmc_sweeps == 0:
        return paths
    z, x, _ = mcmc_moves(model, paths.z, paths.x, result.mask, mcmc_sweeps)
    return SmoothingPaths(z, x)


@torch.no_grad()
def smoothing_paths(
    model,
    x,
    mask=None,
    num_samples: int = 100,
    num_particles: int = 500,
    seed: int | None = None,
    ess_threshold: float = 0.5,
    smoother: str = "auto",
    mcmc_sweeps: int = MCMC_SWEEPS,
) -> SmoothingPaths:
    """Draws from p(z_{0:T}, x^mis | x^obs) given x (B, T, Dx): z (S, B, T+1, Dz) and the
    inputs x (S, B, T, Dx) along each path (data where observed, imputations elsewhere).

    Runs :func:`particle_filter` then :func:`backward_simulation` (with ``mcmc_sweeps``);
    ``seed`` covers both.
    """
    check_smc_model(model)
    num_samples = check_positive_int(num_samples, "num_samples")
    _check_smoother(smoother)
    result = particle_filter(model, x, mask, num_particles, seed, ess_threshold)
    with seeded(None if seed is None else seed + 1, result.particles.device):
        return backward_simulation(model, result, num_samples, smoother, mcmc_sweeps)


@torch.no_grad()
def smc_chains(
    model,
    x,
    mask=None,
    num_chains: int = 4,
    num_draws: int = 100,
    num_particles: int = 500,
    seed: int | None = None,
    ess_threshold: float = 0.5,
    smoother: str = "auto",
    mcmc_sweeps: int = MCMC_SWEEPS,
) -> SmoothingPaths:
    """Smoothing draws from ``num_chains`` independent particle systems, for R-hat/ESS.

    One batched filter runs all K systems (x repeated K times). Returns z (K, S, B, T+1, Dz)
    and x (K, S, B, T, Dx): chains first, then draws, as ArviZ expects.
    """
    check_smc_model(model)
    num_chains = check_positive_int(num_chains, "num_chains")
    x, mask = model._prepare(x, mask)
    batch = x.shape[0]
    x_rep = x.repeat(num_chains, 1, 1)
    mask_rep = mask.repeat(num_chains, 1, 1)
    paths = smoothing_paths(
        model,
        x_rep,
        mask_rep,
        num_draws,
        num_particles,
        seed,
        ess_threshold,
        smoother,
        mcmc_sweeps,
    )

    def split(v: torch.Tensor) -> torch.Tensor:
        return v.reshape(v.shape[0], num_chains, batch, *v.shape[2:]).transpose(0, 1)

    return SmoothingPaths(split(paths.z), split(paths.x))


@torch.no_grad()
def smc_forecast(
    model,
    x_context,
    horizon: int,
    num_samples: int = 100,
    num_particles: int = 500,
    seed: int | None = None,
    ess_threshold: float = 0.5,
    mask=None,
) -> SmoothingPaths:
    """Forecast draws that start from the filtering posterior at the end of x_context (B, Tc, Dx).

    Filters the context with ``num_particles``, draws S particles by their final weights (with
    their genealogy's last inputs, for a data-dependent alpha), then runs the model forward for
    ``horizon`` steps. Returns z (S, B, horizon, Dz) (z_{Tc+1..Tc+H}) and x (S, B, horizon, Dx).
    """
    check_smc_model(model)
    horizon = check_positive_int(horizon, "horizon")
    num_samples = check_positive_int(num_samples, "num_samples")
    num_particles = check_positive_int(num_particles, "num_particles")
    ess_threshold = _check_threshold(ess_threshold)
    x, mask = model._prepare(x_context, mask)
    batch, steps, dim = x.shape
    schedule = _schedule(model, steps + horizon)
    with seeded(seed, x.device):
        z0 = initial_particles(model, num_particles, batch, x)
        result = _filter(model, x, mask, z0, [], schedule, 0, ess_threshold, True)
        index = categorical(result.log_weights[:, :, -1], num_samples)
        z_start = gather(result.particles[:, :, -1], index)
        read = []
        if model.data_dependent_alpha:
            back = min(model.alpha_window, steps) - 1
            lineage = _trace(result.ancestors, index, back)
            read = [gather(result.x_read[:, :, steps - 1 - j], i) for j, i in enumerate(lineage)]
            read = read[::-1]
        tail = x.new_zeros(batch, horizon, dim)
        hidden = torch.zeros(batch, horizon, dim, dtype=torch.bool, device=x.device)
        ahead = _filter(model, tail, hidden, z_start, read, schedule, steps, 0.0, True)
    return SmoothingPaths(ahead.particles[:, :, 1:], ahead.x_read)
