"""Every model of the comparison behind :class:`SequenceModel`: Alternator, Kalman, DMM, naive.

``build_model(name, obs_dim, device=..., **options)`` makes one by name (see ``MODEL_NAMES``).
"""

from __future__ import annotations

import torch

from alternators_ppl.inference.dmm import fit_dmm
from alternators_ppl.inference.training import fit
from alternators_ppl.models.alpha_alternator import AlphaAlternator
from alternators_ppl.models.alternator import Alternator
from alternators_ppl.models.alternator_pp import AlternatorPlusPlus
from alternators_ppl.models.dmm import DeepMarkovModel
from alternators_ppl.models.interface import SequenceModel
from alternators_ppl.models.kalman import LinearGaussianSSM
from alternators_ppl.models.learned_alpha import LearnedAlphaAlternator
from alternators_ppl.models.naive import Climatology, Persistence
from alternators_ppl.validation import as_float_tensor, check_positive_int

__all__ = [
    "AlternatorModel",
    "KalmanModel",
    "DMMModel",
    "MODEL_NAMES",
    "VARIANTS",
    "build_model",
]

#: model variants the job can train, by CLI name
VARIANTS = {
    "alternator": Alternator,
    "alternator++": AlternatorPlusPlus,
    "alpha-alternator": AlphaAlternator,
    "learned-alpha": LearnedAlphaAlternator,
}


class _Wrapped(SequenceModel):
    """Delegates sampling to ``self.model`` (forecast, impute, sample()["x"])."""

    model = None

    def forecast(self, x_context, horizon: int, num_samples: int) -> torch.Tensor:
        return self.model.forecast(x_context, horizon, num_samples)

    def impute(self, x, mask, num_samples: int) -> torch.Tensor:
        return self.model.impute(x, mask, num_samples)

    def sample(self, num_samples: int, num_steps: int) -> torch.Tensor:
        return self.model.sample(num_samples, num_steps)["x"]


class AlternatorModel(_Wrapped):
    """The Alternator trained by Eq. 12 (:func:`alternators_ppl.inference.fit`)."""

    name = "alternator"

    def __init__(
        self,
        obs_dim: int,
        latent_dim: int = 8,
        hidden: int = 64,
        sigma_x: float = 0.3,
        sigma_z: float = 0.1,
        alpha: float = 0.3,
        epochs: int = 200,
        batch_size: int = 16,
        lr: float = 1e-2,
        device=None,
    ):
        self.model = Alternator(
            obs_dim,
            latent_dim,
            sigma_x=sigma_x,
            sigma_z=sigma_z,
            alpha=alpha,
            hidden=(hidden, hidden),
        )
        self.model.to(device or "cpu")
        self.epochs, self.batch_size, self.lr = epochs, batch_size, lr

    def fit(self, x_train, x_val=None, *, seed: int = 0, budget_s: float | None = None) -> dict:
        history = fit(
            self.model,
            x_train,
            x_val=x_val,
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            seed=seed,
            progress=False,
            budget_s=budget_s,
        )
        return history.to_dict()

    def log_likelihood(self, x, mask=None) -> torch.Tensor:
        """SMC estimate of log p(x^obs) (B,): :meth:`Alternator.log_likelihood` (1,000 particles;
        exp of it is unbiased, the log is not exact, so ``has_exact_likelihood`` stays False)."""
        return self.model.log_likelihood(x, mask)


class KalmanModel(_Wrapped):
    """Linear-Gaussian state-space model fitted by exact EM; exact likelihood."""

    name = "kalman"
    has_exact_likelihood = True

    def __init__(self, obs_dim: int, latent_dim: int = 6, em_iters: int = 100, device=None):
        self.model = LinearGaussianSSM(obs_dim, latent_dim, device=device or "cpu")
        self.em_iters = check_positive_int(em_iters, "em_iters")

    def fit(self, x_train, x_val=None, *, seed: int = 0, budget_s: float | None = None) -> dict:
        """EM from a seeded start for ``em_iters`` iterations or until the budget is spent;
        the history holds the log-likelihood after each iteration."""
        torch.manual_seed(seed)
        with torch.no_grad():
            self.model.H.copy_(torch.randn_like(self.model.H) / self.model.latent_dim**0.5)
        x = as_float_tensor(x_train, "x_train", self.model.device, self.model.dtype)
        history = self.model.fit_em(x, num_iters=self.em_iters, budget_s=budget_s)
        return {"log_likelihood": history[1:], "epochs_run": len(history) - 1}

    def log_likelihood(self, x, mask=None) -> torch.Tensor:
        with torch.no_grad():
            return self.model.log_likelihood(x, mask)


class DMMModel(_Wrapped):
    """Deep Markov Model trained by SVI (Trace_ELBO) with a backward-RNN combiner guide."""

    name = "dmm"

    def __init__(
        self,
        obs_dim: int,
        latent_dim: int = 8,
        hidden: int = 64,
        epochs: int = 200,
        batch_size: int = 16,
        lr: float = 1e-2,
        device=None,
    ):
        self.model = DeepMarkovModel(obs_dim, latent_dim, hidden, hidden, hidden)
        self.model.to(device or "cpu")
        self.epochs, self.batch_size, self.lr = epochs, batch_size, lr

    def fit(self, x_train, x_val=None, *, seed: int = 0, budget_s: float | None = None) -> dict:
        history = fit_dmm(
            self.model,
            x_train,
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            seed=seed,
            x_val=x_val,
            budget_s=budget_s,
        )
        return history.to_dict()


_BUILDERS = {
    "alternator": AlternatorModel,
    "kalman": KalmanModel,
    "dmm": DMMModel,
    "persistence": lambda obs_dim, device=None, **_: Persistence(device),
    "climatology": lambda obs_dim, device=None, **_: Climatology(device),
}
MODEL_NAMES = tuple(_BUILDERS)


def build_model(name: str, obs_dim: int, device=None, **options) -> SequenceModel:
    """A fresh model by name (one of ``MODEL_NAMES``) with ``options`` for its constructor."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    return _BUILDERS[name](obs_dim, device=device, **options)
