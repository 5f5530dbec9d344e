"""Particle Gibbs with ancestor sampling (PGAS) for Alternators: MCMC over whole latent paths.

Backward simulation (``smc.backward_simulation``) draws from one particle system, and its error
is that system's: where the early posterior is wide and sigma_z small, independent systems
disagree near t = 0 (docs/smc.md). Particle Gibbs instead runs a Markov chain whose stationary
law is exactly p(z_{0:T}, x^mis | x^obs) for any number of particles N >= 2 (Andrieu, Doucet
& Holenstein 2010; ancestor sampling: Lindsten, Jordan & Schon 2014). One iteration is a
*conditional* run of the fully adapted filter of ``models/smc.py``:

- particle N-1 is the current path (z*, x*): it is kept, the others are drawn as in the filter
  (weights p(x_t^obs | z_{t-1}), multinomial resampling at every step, x_t^mis ~ p(x_t | z_{t-1}),
  z_t ~ p(z_t | z_{t-1}, x_t));
- the kept path's ancestor at each step is re-drawn with probability proportional to
  W_{t-1}^i p(x_t^* | z_{t-1}^i) p(z_t^* | z_{t-1}^i, x_t^*), the backward kernel of FFBSi, so
  the path's past is refreshed at every step and the chain mixes with few particles;
- the next path is the genealogy of one particle drawn at T (all equally weighted).

K chains run batched (x repeated K times), so R-hat and ESS across them are MCMC diagnostics
of one sampler. Models whose alpha_t depends on imputed inputs (alpha-Alternator with gaps)
are refused: there the kernel is not Markov. Shapes: x (B, T, Dx); draws z (K, S, B, T+1, Dz),
x (K, S, B, T, Dx).
"""

from __future__ import annotations

import math

import torch

from alternators_ppl.models.smc import SmoothingPaths, smoothing_paths
from alternators_ppl.models.smc_kernels import (
    backward_logits,
    check_smc_model,
    gather,
    initial_particles,
    inverse_cdf,
    seeded,
)
from alternators_ppl.validation import check_positive_int

__all__ = ["conditional_smc", "particle_gibbs"]


def _alpha_step(alphas: torch.Tensor, t: int) -> torch.Tensor:
    return alphas[t] if alphas.dim() == 2 else alphas[:, t]


def conditional_smc(model, x, mask, z_ref, x_ref, num_particles: int) -> SmoothingPaths:
    """One PGAS iteration on checked inputs: x (B, T, Dx) zeroed where missing, mask (B, T, Dx),
    the current path z_ref (B, T+1, Dz) and its inputs x_ref (B, T, Dx) (data where observed).
    Returns the next path, z (B, T+1, Dz) and x (B, T, Dx). Uses the global generator."""
    num = num_particles
    batch, steps, _ = x.shape
    alphas = model._alpha_for(x_ref)  # (T, 1), or (B, T, 1) from the complete inputs
    log_uniform = torch.full((num, batch), -math.log(num), dtype=x.dtype, device=x.device)
    z = initial_particles(model, num, batch, x)
    z[-1] = z_ref[:, 0]
    zs, xs, ancestors = [z], [], []
    for t in range(steps):
        x_dist = model.x_dist(z)  # (N, B, Dx)
        observed = mask[:, t]
        log_px = torch.where(observed, x_dist.log_prob(x[:, t]), 0.0).sum(-1)  # (N, B)
        x_read = torch.where(observed, x[:, t], x_dist.sample())
        alpha = _alpha_step(alphas, t)
        free = torch.multinomial(torch.softmax(log_px.T, -1), num - 1, replacement=True).T
        star = backward_logits(model, log_uniform, z, x_ref[None, :, t], z_ref[None, :, t + 1],
                                alpha)  # fmt: skip
        kept = inverse_cdf(star).T  # (1, B): the kept path's new ancestor
        ancestor = torch.cat([free, kept])  # (N, B)
        x_read = gather(x_read, ancestor)
        x_read[-1] = x_ref[:, t]
        z = model.z_dist(x_read, gather(z, ancestor), alpha).sample()
        z[-1] = z_ref[:, t + 1]
        zs.append(z)
        xs.append(x_read)
        ancestors.append(ancestor)
    index = torch.randint(num, (1, batch), device=x.device)  # equal weights after the move
    path_z, path_x = [gather(zs[-1], index)], []
    for t in range(steps - 1, -1, -1):
        path_x.append(gather(xs[t], index))
        index = gather(ancestors[t], index)
        path_z.append(gather(zs[t], index))
    return SmoothingPaths(torch.stack(path_z[::-1], 2)[0], torch.stack(path_x[::-1], 2)[0])


@torch.no_grad()
def particle_gibbs(
    model,
    x,
    mask=None,
    num_chains: int = 4,
    num_draws: int = 100,
    num_particles: int = 64,
    burn_in: int = 50,
    seed: int | None = None,
) -> SmoothingPaths:
    """``num_chains`` PGAS chains of ``num_draws`` paths each (after ``burn_in`` iterations)
    for x (B, T, Dx) (``mask`` / NaN: missing). Each chain starts from one backward-simulation
    draw of its own ``num_particles``-particle system. Returns z (K, S, B, T+1, Dz) and x
    (K, S, B, T, Dx), chains first, as ArviZ expects. ``seed`` draws from a private generator.
    """
    check_smc_model(model)
    num_chains = check_positive_int(num_chains, "num_chains")
    num_draws = check_positive_int(num_draws, "num_draws")
    num_particles = check_positive_int(num_particles, "num_particles")
    if num_particles < 2:
        raise ValueError(f"num_particles must be >= 2 for particle Gibbs, got {num_particles}")
    if isinstance(burn_in, bool) or not isinstance(burn_in, int) or burn_in < 0:
        raise ValueError(f"burn_in must be a non-negative integer, got {burn_in!r}")
    x, mask = model._prepare(x, mask)
    if model.data_dependent_alpha and not bool(mask.all()):
        raise ValueError(
            f"{type(model).__name__}: alpha_t depends on imputed inputs at missing entries, so "
            "the conditional SMC kernel is not Markov; use smoothing_paths"
        )
    batch = x.shape[0]
    x_rep, mask_rep = x.repeat(num_chains, 1, 1), mask.repeat(num_chains, 1, 1)
    with seeded(seed, x.device):
        start = smoothing_paths(model, x_rep, mask_rep, 1, num_particles, smoother="ffbsi")
        z_ref, x_ref = start.z[0], start.x[0]
        draws_z, draws_x = [], []
        for it in range(burn_in + num_draws):
            z_ref, x_ref = conditional_smc(model, x_rep, mask_rep, z_ref, x_ref, num_particles)
            if it >= burn_in:
                draws_z.append(z_ref)
                draws_x.append(x_ref)

    def split(draws: list[torch.Tensor]) -> torch.Tensor:
        v = torch.stack(draws)  # (S, K * B, ...)
        return v.reshape(v.shape[0], num_chains, batch, *v.shape[2:]).transpose(0, 1)

    return SmoothingPaths(split(draws_z), split(draws_x))
