"""Alternator++ ("Alternators with noise models"): learned noise networks in both factors.

    x_t = sqrt(beta_t) f(z_{t-1}) + sqrt(1 - beta_t - sigma_x^2) eps_psi(z_{t-1}) + sigma_x eps
    z_t = sqrt(alpha_t) g(x_t) + sqrt(1 - alpha_t - sigma_z^2) eps_nu(z_{t-1}, x_t) + sigma_z eps

The program, log-density, samplers and Eq. 12 term come from :class:`Alternator` through the
``x_loc`` / ``z_loc`` hooks. The latent mean is not affine in z_{t-1}, so rollouts step through
time. The loss adds a noise-matching term: each noise network regresses onto the noise that
produced an *observed* trajectory, in its own units (the residual it must explain, divided by
the coefficient it enters the mean with):

    r_x = (x_t - sqrt(beta_t) f(z_{t-1})) / sqrt(1 - beta_t - sigma_x^2)     (observed x_t)
    r_z = (z_t - sqrt(alpha_t) g(x_t)) / sqrt(1 - alpha_t - sigma_z^2)       (observed z_t only)

With eps_psi = r_x the mean x_loc reproduces x_t exactly, so this term and Eq. 12's x-term
share their minimiser (E[r_x | z_{t-1}]). A *drawn* latent path has no independent target: its
residual is eps_nu's own output plus the step's fresh noise sigma_z eps / sqrt(1 - alpha_t -
sigma_z^2), whose expected gradient is zero, so the z-term applies only when the latent path is
observed (``loss(..., z_target=...)``, sequence-to-sequence use). The targets carry no
gradient (as the noise does in denoising diffusion). See docs/variants.md for the comparison
with the Alternator++ paper.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from alternators_ppl.models.alternator import Alternator
from alternators_ppl.networks import MLP, output_linear

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

    @property
    def sigma_x_bound(self) -> float:
        """sqrt(1 - beta): sigma_x^2 < 1 - beta keeps the weight of eps_psi real."""
        return math.sqrt(1 - self.beta)

    def observation_mean_layer(self) -> torch.nn.Linear | None:
        """eps_psi's output layer: its output enters x_loc times sqrt(1 - beta - sigma_x^2)
        (the OTN's term does not depend on sigma_x)."""
        return output_linear(self.eps_psi)

    def observation_mean_scale(self, sigma_x):
        """sqrt(1 - beta - sigma_x^2), the weight of eps_psi in x_loc."""
        return (1 - self.beta - sigma_x**2) ** 0.5

    def x_loc(self, z_prev: torch.Tensor) -> torch.Tensor:
        """sqrt(beta) f(z) + sqrt(1 - beta - sigma_x^2) eps_psi(z): (..., Dz) -> (..., Dx)."""
        noise_scale = (1 - self.beta - self.sigma_x**2) ** 0.5
        return math.sqrt(self.beta) * self.otn(z_prev) + noise_scale * self.eps_psi(z_prev)

    def z_loc(self, x: torch.Tensor, z_prev: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """sqrt(alpha) g(x) + sqrt(1 - alpha - sigma_z^2) eps_nu(z_{t-1}, x)."""
        noise = self.eps_nu(torch.cat([z_prev, x.expand(*z_prev.shape[:-1], -1)], dim=-1))
        return torch.sqrt(alpha) * self.ftn(x) + self.latent_decay(alpha) * noise

    def noise_matching_loss(self, x, z, mask, x_ftn, z_observed: bool = False) -> torch.Tensor:
        """Mean squared error of eps_psi (and eps_nu when ``z_observed``) against the residual
        targets r_x, r_z of the module docstring (scalar).

        x (B, T, Dx) data (entries outside ``mask`` ignored), z (B, T+1, Dz) the path,
        x_ftn (B, T, Dx) what the FTN read; ``z_observed``: z_1..z_T are data (the z-term is
        left out for a drawn path, whose residual is the model's own noise).
        """
        z_prev = z[:, :-1].detach()
        with torch.no_grad():
            x_scale = math.sqrt(1 - self.beta - self.sigma_x**2)
            r_x = (x - math.sqrt(self.beta) * self.otn(z_prev)) / x_scale
        x_err = ((self.eps_psi(z_prev) - r_x) ** 2 * mask).sum() / mask.sum().clamp_min(1)
        if not z_observed:
            return x_err
        with torch.no_grad():
            alpha = self._alpha_for(x_ftn)
            z_scale = self.latent_decay(alpha)
            r_z = (z[:, 1:] - torch.sqrt(alpha) * self.ftn(x_ftn)) / z_scale
        z_err = ((self.eps_nu(torch.cat([z_prev, x_ftn.detach()], dim=-1)) - r_z) ** 2).mean()
        return x_err + z_err

    def auxiliary_loss(self, x, z, mask, x_ftn, z_observed: bool = False) -> torch.Tensor:
        """``noise_weight`` times :meth:`noise_matching_loss`, added to Eq. 12 by ``loss``."""
        return self.noise_weight * self.noise_matching_loss(x, z, mask, x_ftn, z_observed)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, beta={self.beta:.3g}, noise_weight={self.noise_weight:.3g}"
