"""MCMC moves that rejuvenate smoothing paths of an Alternator (after FFBSi or a genealogy).

Backward simulation picks z_t among the N filtering particles of step t. Where the latent
noise sigma_z is small the backward kernel p(z_{t+1}^* | z_t^i, x_{t+1}^*) is far narrower than
the particle cloud, so near the start (where the filter's particles are prior draws) the S
path draws collapse onto a few particles, and independent particle systems disagree (large
R-hat, tiny ESS). :func:`mcmc_moves` applies Metropolis-within-Gibbs sweeps that leave the
smoothing posterior p(z_{0:T}, x^mis | x^obs) invariant, so they can only help:

- **z-moves.** z_t's full conditional is
  p(z_t | z_{t-1}, x_t) p(x_{t+1} | z_t) p(z_{t+1} | z_t, x_{t+1}) (p(z_0) = N(0, I) in place
  of the first factor; the last two are absent at t = T). Given its neighbours, the z_t of
  every even t (then every odd t) are independent, so one half-sweep updates them all at once:
  one FTN and one OTN call for all S x B paths and times. The proposal is a preconditioned
  Crank-Nicolson step z' = m + sqrt(1 - beta^2) (z - m) + beta s eps, reversible for the
  Gaussian reference N(m, s^2):

  - where the latent mean is affine in z_{t-1} (``affine_latent``, Gaussian z factors), the
    reference is the exact product of the two Gaussian z factors, and the acceptance ratio is
    the OTN's p(x_{t+1} | z') / p(x_{t+1} | z) (at t = T the move is an exact Gibbs draw);
  - otherwise the reference is p(z_t | z_{t-1}, x_t) and the ratio also holds
    p(z_{t+1} | z', x_{t+1}) / p(z_{t+1} | z, x_{t+1}).

- **x-moves** (missing entries, when alpha does not depend on the inputs): x_t^mis is proposed
  from p(x_t | z_{t-1}) and accepted with p(z_t | z_{t-1}, x') / p(z_t | z_{t-1}, x), all t at
  once.

``beta`` alternates between 1 (independent proposals: large jumps) and ``beta`` (local moves:
high acceptance when the OTN is sharp). Shapes: z (S, B, T+1, Dz), x (S, B, T, Dx),
mask (B, T, Dx). No gradients are recorded.
"""

from __future__ import annotations

import torch
from torch.distributions import Normal

from alternators_ppl.validation import check_positive_int

__all__ = ["DIAGNOSE_SWEEPS", "mcmc_moves"]

#: MCMC sweeps after backward simulation in ``diagnose`` (docs/smc.md: R-hat and ESS near t = 0)
DIAGNOSE_SWEEPS = 10


def _accept(log_ratio: torch.Tensor, new: torch.Tensor, old: torch.Tensor):
    """Metropolis decision per leading index; (chosen values, accepted flags)."""
    accept = torch.rand_like(log_ratio).log() < log_ratio
    return torch.where(accept.unsqueeze(-1), new, old), accept


def _emission(model, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x | z) summed over entries: z (..., Dz), x (..., Dx) -> (...)."""
    return model.x_dist(z).log_prob(x).sum(-1)


def _z_move(model, z, x, alpha, times: torch.Tensor, beta: float):
    """One Metropolis update of z at ``times`` (K,) of paths z (P, T+1, Dz), x (P, T, Dx);
    alpha (T, 1) or (P, T, 1). Returns (z, acceptance rate)."""
    steps = x.shape[1]
    first, last = times == 0, times == steps
    prev = (times - 1).clamp(min=0)
    nxt = times.clamp(max=steps - 1)
    a_prev = alpha[prev] if alpha.dim() == 2 else alpha[:, prev]
    a_next = alpha[nxt] if alpha.dim() == 2 else alpha[:, nxt]
    current = z[:, times]  # (P, K, Dz)
    forward = model.z_dist(x[:, prev], z[:, prev], a_prev)
    if not isinstance(forward, Normal):
        raise TypeError(
            f"{type(model).__name__}.z_dist must be Normal for MCMC moves, got "
            f"{type(forward).__name__}"
        )
    head = first.view(-1, 1)
    loc = torch.where(head, 0.0, forward.loc)
    var = torch.where(head, 1.0, forward.scale.expand_as(forward.loc).square())
    z_next = z[:, nxt + 1]
    if model.affine_latent:
        # p(z_{t+1} | z_t, x_{t+1}) = N(u + d z_t, s^2): a Gaussian factor in z_t
        drive = model.z_dist(x[:, nxt], torch.zeros_like(current), a_next)
        decay = model.latent_decay(a_next).expand_as(drive.loc)
        decay = torch.where(last.view(-1, 1), 0.0, decay)
        noise = drive.scale.expand_as(drive.loc).square()
        precision = 1 / var + decay.square() / noise
        loc = (loc / var + decay * (z_next - drive.loc) / noise) / precision
        var = 1 / precision
    scale = var.sqrt()
    proposal = loc + (1 - beta**2) ** 0.5 * (current - loc) + beta * scale * torch.randn_like(loc)
    inner = ~last.view(1, -1)
    both = _emission(model, torch.stack([proposal, current]), x[:, nxt])
    log_ratio = torch.where(inner, both[0] - both[1], 0.0)
    if not model.affine_latent:
        pair = torch.stack([proposal, current])
        log_pz = model.z_dist(x[:, nxt], pair, a_next).log_prob(z_next).sum(-1)
        log_ratio = log_ratio + torch.where(inner, log_pz[0] - log_pz[1], 0.0)
    chosen, accept = _accept(log_ratio, proposal, current)
    z = z.clone()
    z[:, times] = chosen
    return z, accept.float().mean()


def _x_move(model, z, x, mask, alpha):
    """One Metropolis update of every missing x_t (P, T, Dx) given z (P, T+1, Dz)."""
    proposal = torch.where(mask, x, model.x_dist(z[:, :-1]).sample())
    pair = torch.stack([proposal, x])
    log_pz = model.z_dist(pair, z[:, :-1], alpha).log_prob(z[:, 1:]).sum(-1)  # (2, P, T)
    chosen, accept = _accept(log_pz[0] - log_pz[1], proposal, x)
    touched = (~mask).any(-1)
    return chosen, accept[touched].float().mean() if touched.any() else None


@torch.no_grad()
def mcmc_moves(model, z, x, mask, sweeps: int = 10, beta: float = 0.3):
    """Metropolis-within-Gibbs sweeps on smoothing paths (module docstring).

    z (S, B, T+1, Dz) and x (S, B, T, Dx) are path draws (x holds the data where ``mask``
    (B, T, Dx) is True and the paths' imputations elsewhere); ``sweeps`` full sweeps, the even
    ones with independent proposals (beta = 1), the odd ones with ``beta`` in (0, 1]. Returns
    (z, x, acceptance) with acceptance a dict of mean acceptance rates ("z", and "x" where
    entries are missing and alpha does not depend on the inputs). Draws use the global
    generator.
    """
    sweeps = check_positive_int(sweeps, "sweeps")
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 < beta <= 1:
        raise ValueError(f"beta must lie in (0, 1], got {beta!r}")
    samples, batch, steps = x.shape[:3]
    flat_z = z.reshape(samples * batch, steps + 1, -1)
    flat_x = x.reshape(samples * batch, steps, -1)
    flat_mask = mask.repeat(samples, 1, 1)
    alpha = model._alpha_for(flat_x)
    times = torch.arange(steps + 1, device=z.device)
    x_moves = not model.data_dependent_alpha and not bool(mask.all())
    rates = {"z": [], "x": []}
    for sweep in range(sweeps):
        step = 1.0 if sweep % 2 == 0 else float(beta)
        for parity in (0, 1):
            flat_z, rate = _z_move(model, flat_z, flat_x, alpha, times[parity::2], step)
            rates["z"].append(rate)
        if x_moves:
            flat_x, rate = _x_move(model, flat_z, flat_x, flat_mask, alpha)
            if rate is not None:
                rates["x"].append(rate)
    acceptance = {k: float(torch.stack(v).mean()) for k, v in rates.items() if v}
    return flat_z.reshape(z.shape), flat_x.reshape(x.shape), acceptance
