"""Alternator++ ("Alternators with noise models"): learned noise networks in both factors.

    x_t = sqrt(beta_t) f(z_{t-1}) + sqrt(1 - beta_t - sigma_x^2) eps_psi(z_{t-1}) + sigma_x eps
    z_t = sqrt(alpha_t) g(x_t) + sqrt(1 - alpha_t - sigma_z^2) eps_nu(z_{t-1}, x_t) + sigma_z eps

The program, log-density, samplers and Eq. 12 term come from :class:`Alternator` through the
``x_loc`` / ``z_loc`` hooks. The latent mean is not affine in z_{t-1}, so rollouts step through
time. The loss adds a noise-matching term: eps_psi and eps_nu regress onto the standardised
residuals that produced the trajectory,

    r_x = (x_t - sqrt(beta_t) f(z_{t-1})) / sqrt(1 - beta_t),
    r_z = (z_t - sqrt(alpha_t) g(x_t)) / sqrt(1 - alpha_t),

the part of each step the mean networks f and g do not explain, scaled to unit variance when
the noise network is perfect (as in denoising diffusion, where the network predicts the noise
that produced a sample). The residuals are treated as fixed targets (no gradient into f, g).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from alternators_ppl.models.alternator import Alternator
from alternators_ppl.networks import MLP

__all__ = ["AlternatorPlusPlus"]


class AlternatorPlusPlus(Alternator):
    """Alternator++ (a subclass of :class:`Alternator`, whose arguments it takes too).

    ``beta`` (0 < beta < 1 - sigma_x^2) weighs the OTN against the observation noise network
    eps_psi: z -> x-space; eps_nu: [z_{t-1}, x_t] -> z-space; ``noise_weight`` scales the
    noise-matching term that :meth:`loss` adds to Eq. 12.
    """

    affine_latent = False

    def __init__(
        self,
        obs_dim: int,
        latent_dim: int,
        *args,
        beta: float = 0.5,
        noise_weight: float = 1.0,
        noise_hidden: Sequence[int] = (64,),
        **kwargs,
    ):
        super().__init__(obs_dim, latent_dim, *args, **kwargs)
        if not 0.0 < float(beta) < 1.0 - self.sigma_x**2:
            raise ValueError(f"beta must lie in (0, 1 - sigma_x^2), got {beta}")
        if not float(noise_weight) >= 0.0:
            raise ValueError(f"noise_weight must be >= 0, got {noise_weight}")
        self.beta, self.noise_weight = float(beta), float(noise_weight)
        activation = getattr(self.otn, "activation", "tanh")
        self.eps_psi = MLP(latent_dim, obs_dim, noise_hidden, activation)
        self.eps_nu = MLP(latent_dim + obs_dim, latent_dim, noise_hidden, activation)

    def x_loc(self, z_prev: torch.Tensor) -> torch.Tensor:
        """sqrt(beta) f(z) + sqrt(1 - beta - sigma_x^2) eps_psi(z): (..., Dz) -> (..., Dx)."""
        noise_scale = (1 - self.beta - self.sigma_x**2) ** 0.5
        return math.sqrt(self.beta) * self.otn(z_prev) + noise_scale * self.eps_psi(z_prev)

    def z_loc(self, x: torch.Tensor, z_prev: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """sqrt(alpha) g(x) + sqrt(1 - alpha - sigma_z^2) eps_nu(z_{t-1}, x)."""
        noise = self.eps_nu(torch.cat([z_prev, x.expand(*z_prev.shape[:-1], -1)], dim=-1))
        return torch.sqrt(alpha) * self.ftn(x) + torch.sqrt(1 - alpha - self.sigma_z**2) * noise

    def noise_matching_loss(self, x, z, mask, x_ftn) -> torch.Tensor:
        """Mean squared error of eps_psi, eps_nu against the residual targets (scalar).

        x (B, T, Dx) data (entries outside ``mask`` ignored), z (B, T+1, Dz) the path,
        x_ftn (B, T, Dx) what the FTN read.
        """
        alpha = self.alpha_schedule(x.shape[1]).unsqueeze(-1)
        z_prev = z[:, :-1]
        with torch.no_grad():
            r_x = (x - math.sqrt(self.beta) * self.otn(z_prev)) / math.sqrt(1 - self.beta)
            r_z = (z[:, 1:] - torch.sqrt(alpha) * self.ftn(x_ftn)) / torch.sqrt(1 - alpha)
        x_err = ((self.eps_psi(z_prev.detach()) - r_x) ** 2 * mask).sum() / mask.sum().clamp_min(1)
        nu_in = torch.cat([z_prev.detach(), x_ftn.detach()], dim=-1)
        z_err = ((self.eps_nu(nu_in) - r_z) ** 2).mean()
        return x_err + z_err

    def auxiliary_loss(self, x, z, mask, x_ftn) -> torch.Tensor:
        """``noise_weight`` times :meth:`noise_matching_loss`, added to Eq. 12 by ``loss``."""
        return self.noise_weight * self.noise_matching_loss(x, z, mask, x_ftn)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, beta={self.beta:.3g}, noise_weight={self.noise_weight:.3g}"
