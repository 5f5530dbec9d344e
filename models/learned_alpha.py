"""An Alternator whose alpha schedule is learned: alpha_t = (1 - sigma_z^2 - 1e-4) sigmoid(a_t)."""

from __future__ import annotations

import torch
from torch import nn

from alternators_ppl.models.alternator import Alternator

__all__ = ["LearnedAlphaAlternator"]


class LearnedAlphaAlternator(Alternator):
    """Alternator with a learned schedule alpha_1..alpha_L (one logit a_t per step; a float
    ``alpha`` learns one shared value). The constructor's ``alpha`` is the starting value, and
    every alpha_t stays in (0, 1 - sigma_z^2) by construction. The parallel scan still applies:
    only :meth:`alpha_schedule` changes, and it now carries gradients. (The JAX conversion,
    ``JaxAlternator.from_torch``, reads the current learned schedule.)"""

    alpha_below_cap = True

    def __init__(self, obs_dim: int, latent_dim: int, *args, **kwargs):
        super().__init__(obs_dim, latent_dim, *args, **kwargs)
        start = torch.tensor(self.alpha_values, dtype=torch.float64) / self.alpha_cap
        start = start.clamp(1e-6, 1 - 1e-6)
        self.alpha_logits = nn.Parameter(torch.log(start / (1 - start)).float())

    def alpha_schedule(self, num_steps: int) -> torch.Tensor:
        """alpha_1..alpha_T (T,) from the learned logits (differentiable)."""
        logits = self.alpha_logits
        if self.alpha_is_constant:
            logits = logits.expand(num_steps)
        elif num_steps > logits.numel():
            raise ValueError(
                f"sequence has {num_steps} steps but the alpha schedule has {logits.numel()}"
            )
        return self.alpha_cap * torch.sigmoid(logits[:num_steps])

    def extra_repr(self) -> str:
        values = self.alpha_schedule(1 if self.alpha_is_constant else self.alpha_logits.numel())
        return f"{super().extra_repr()}, learned alpha in [{values.min():.3g}, {values.max():.3g}]"
