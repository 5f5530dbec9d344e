"""alpha-Alternator: alpha_t adapts to the diversity (a noise proxy) of the recent inputs.

    alpha_t = sigmoid(w * VS_t + b) * (1 - sigma_z^2 - 1e-4)

VS_t is the order-q Vendi score of the last ``window`` inputs the FTN read (x_{t-k+1..t}, the
data where observed, the model's draws where missing; the first steps of a sequence repeat
x_1 to fill the window), with the RBF similarity k(a, b) = exp(-||a - b||^2 / (2 l^2)), so
k(a, a) = 1: VS = exp(H_q(eigenvalues of K / k)), between 1 (all points alike) and k (all
distinct). VS_t is an input feature of the data (no gradient flows through it); w and b are
learned. A negative w lowers alpha_t (more weight on the latent memory, less on the new
observation) when the recent inputs are diverse, e.g. in noisy spans. Training hides a random
``mask_rate`` fraction of the observed steps (random observation masking), so the model learns
to fill in with its own draws.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from alternators_ppl.models.alternator import Alternator

__all__ = ["AlphaAlternator", "vendi_score"]


def vendi_score(points: torch.Tensor, order: float = 2.0, lengthscale: float = 1.0) -> torch.Tensor:
    """Order-q Vendi score of each set of k points, (..., k, D) -> (...,), RBF similarity.

    q = 2 uses the closed form k^2 / ||K||_F^2; other orders the eigenvalues of K / k
    (q = 1: the exponential of the Shannon entropy).
    """
    if not order > 0:
        raise ValueError(f"order must be > 0, got {order}")
    k = points.shape[-2]
    sq_dist = torch.cdist(points, points).square()
    kernel = torch.exp(-sq_dist / (2 * lengthscale**2))
    if order == 2.0:
        return k**2 / kernel.square().sum((-1, -2))
    eig = torch.linalg.eigvalsh(kernel / k).clamp_min(0)
    if order == 1.0:
        entropy = -(eig * torch.log(eig.clamp_min(1e-30))).sum(-1)
    else:
        entropy = torch.log(eig.pow(order).sum(-1)) / (1 - order)
    return torch.exp(entropy)


class AlphaAlternator(Alternator):
    """alpha-Alternator (a subclass of :class:`Alternator`, whose arguments it takes too).

    ``alpha`` (a float) sets the starting value of alpha_t (w = 0); ``window`` k, ``order`` q
    and ``lengthscale`` l define VS_t; ``mask_rate`` is the fraction of observed steps hidden
    at random in each training loss.
    """

    data_dependent_alpha = True
    alpha_below_cap = True

    def __init__(
        self,
        obs_dim: int,
        latent_dim: int,
        *args,
        window: int = 8,
        order: float = 2.0,
        lengthscale: float = 1.0,
        mask_rate: float = 0.2,
        **kwargs,
    ):
        super().__init__(obs_dim, latent_dim, *args, **kwargs)
        if not self.alpha_is_constant:
            raise ValueError("AlphaAlternator learns alpha_t; pass a float alpha as its start")
        if not (isinstance(window, int) and window >= 2):
            raise ValueError(f"window must be an integer >= 2, got {window!r}")
        if not 0.0 <= float(mask_rate) < 1.0:
            raise ValueError(f"mask_rate must lie in [0, 1), got {mask_rate}")
        if not float(lengthscale) > 0:
            raise ValueError(f"lengthscale must be > 0, got {lengthscale}")
        vendi_score(torch.zeros(1, 2, 1), order)  # validates the order
        self.alpha_window, self.order = window, float(order)
        self.lengthscale, self.mask_rate = float(lengthscale), float(mask_rate)
        start = min(self.alpha_values[0] / self.alpha_cap, 1 - 1e-6)
        self.w = nn.Parameter(torch.zeros(()))
        self.b = nn.Parameter(torch.tensor(math.log(start / (1 - start))))

    @property
    def learned_sign(self) -> int:
        """Sign of w: -1 when diverse (noisy) recent inputs lower alpha_t, +1 when they raise it."""
        return int(torch.sign(self.w.detach()).item())

    def alpha_from_inputs(self, x_window: torch.Tensor) -> torch.Tensor:
        """alpha_t = alpha_cap * sigmoid(w VS_t + b) for x_window (..., k, Dx) -> (...,)."""
        with torch.no_grad():
            score = vendi_score(x_window, self.order, self.lengthscale)
        return self.alpha_cap * torch.sigmoid(self.w * score + self.b)

    def loss(self, x, mask=None, z_target=None, parallel: bool = True) -> torch.Tensor:
        """Eq. 12 with a random ``mask_rate`` of the observed steps hidden while training."""
        x, mask = self._prepare(x, mask)
        if self.training and self.mask_rate > 0:
            keep = torch.rand(x.shape[:2], device=x.device) >= self.mask_rate
            mask = mask & keep.unsqueeze(-1)
        return super().loss(x, mask, z_target, parallel)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, window={self.alpha_window}, order={self.order:g}, "
            f"mask_rate={self.mask_rate:g}"
        )
