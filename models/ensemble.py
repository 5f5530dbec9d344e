"""A uniform mixture of independently trained sequence models (a deep ensemble).

A network trained on a few hundred windows of one series is one of many that fit the training
data about equally well, and a single one forgets that uncertainty: its forecasts are too sure
where the members would disagree. :class:`Ensemble` trains ``members`` copies of one model
from different seeds and treats them as equally likely: every draw comes from one member, the
``num_samples`` draws are shared out evenly, and the likelihood is the mixture's,
log p(x) = logsumexp_k log p_k(x) - log K (Lakshminarayanan et al., 2017, for the method).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from alternators_ppl.models.interface import SequenceModel
from alternators_ppl.validation import check_positive_int

__all__ = ["Ensemble", "share_draws"]


def share_draws(num_samples: int, members: int) -> list[int]:
    """Draws per member when ``num_samples`` are shared out evenly over ``members`` (the first
    ``num_samples % members`` members take one more); sums to ``num_samples``."""
    base, extra = divmod(num_samples, members)
    return [base + (k < extra) for k in range(members)]


class Ensemble(SequenceModel):
    """``members`` models from ``build()`` (a callable returning a fresh, untrained
    :class:`SequenceModel`), trained from seeds ``members * seed + k``, k = 0 .. members - 1,
    and sampled as a uniform mixture. ``budget_s`` of :meth:`fit` holds for each member.
    Draws of every method are (S, ...) with the members' draws in a random order along S."""

    def __init__(self, build: Callable[[], SequenceModel], members: int = 5):
        self.members = [build() for _ in range(check_positive_int(members, "members"))]
        first = self.members[0]
        self.name = first.name
        self.has_exact_likelihood = all(m.has_exact_likelihood for m in self.members)
        self.has_likelihood_estimate = (
            all(m.has_exact_likelihood or m.has_likelihood_estimate for m in self.members)
            and not self.has_exact_likelihood
        )

    def fit(self, x_train, x_val=None, *, seed: int = 0, budget_s: float | None = None) -> dict:
        """Fit member k with seed ``members * seed + k``. Returns the total ``epochs_run`` and
        ``steps``, each member's history under ``member_histories`` and ``chosen`` =
        {"members", "member_seeds", "per_member" (what each member chose, or None)}."""
        seeds = [len(self.members) * seed + k for k in range(len(self.members))]
        histories = []
        for member, member_seed in zip(self.members, seeds, strict=True):
            histories.append(member.fit(x_train, x_val, seed=member_seed, budget_s=budget_s) or {})

        def total(key):
            values = [h.get(key) for h in histories]
            return None if any(v is None for v in values) else sum(values)

        return {
            "epochs_run": total("epochs_run"),
            "steps": total("steps"),
            "member_histories": histories,
            "chosen": {
                "members": len(self.members),
                "member_seeds": seeds,
                "per_member": [h.get("chosen") for h in histories],
            },
        }

    def _mixture(self, draw: Callable[[SequenceModel, int], torch.Tensor], num_samples: int):
        counts = share_draws(check_positive_int(num_samples, "num_samples"), len(self.members))
        parts = [draw(m, n) for m, n in zip(self.members, counts, strict=True) if n > 0]
        draws = torch.cat(parts, dim=0)
        return draws[torch.randperm(draws.shape[0], device=draws.device)]

    def forecast(self, x_context, horizon: int, num_samples: int) -> torch.Tensor:
        """Mixture draws of the ``horizon`` steps after x_context (B, Tc, D): (S, B, H, D)."""
        return self._mixture(lambda m, n: m.forecast(x_context, horizon, n), num_samples)

    def impute(self, x, mask, num_samples: int) -> torch.Tensor:
        """Mixture draws filling the missing entries of x (B, T, D): (S, B, T, D)."""
        return self._mixture(lambda m, n: m.impute(x, mask, n), num_samples)

    def sample(self, num_samples: int, num_steps: int) -> torch.Tensor:
        """Free-running mixture draws: (S, T, D)."""
        return self._mixture(lambda m, n: m.sample(n, num_steps), num_samples)

    def log_likelihood(self, x, mask=None) -> torch.Tensor:
        """The mixture's log p(x) per sequence (B,): logsumexp_k log p_k(x) - log K (exact when
        every member's is, an estimate otherwise)."""
        if not (self.has_exact_likelihood or self.has_likelihood_estimate):
            raise NotImplementedError(f"{self.name} members have no likelihood")
        each = torch.stack([m.log_likelihood(x, mask) for m in self.members])  # (K, B)
        return torch.logsumexp(each, dim=0) - math.log(len(self.members))
