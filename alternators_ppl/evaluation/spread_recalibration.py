"""Forecast spread recalibrated per lead on validation data.

A model calibrated by a one-step criterion (the Alternator's noise by the SMC likelihood) can
still spread its multi-step forecasts too little or too much at some leads: on Niño the 90%
interval of the five-network Alternator covered 0.95 at lead 1 and 0.79-0.82 at leads 4-6.
:func:`fit_lead_spread` chooses, for each lead h, the factor s_h that moves forecast draws about
their mean, x -> mean + s_h (x - mean), so that the 90% interval score against held-out truth
is lowest (:func:`alternators_ppl.metrics.interval_score`, a proper score of the interval:
width and misses together, lowest in expectation at the true 5% and 95% quantiles);
:class:`SpreadRecalibrated` fits the factors on forecasts of the last third of each validation
sequence and applies them to every forecast. The mean is never moved.
"""

from __future__ import annotations

import numpy as np
import torch

from alternators_ppl import metrics
from alternators_ppl.evaluation.masked_scoring import holdout_forecast, score_masked_forecast
from alternators_ppl.models.interface import SequenceModel
from alternators_ppl.validation import check_positive_int

__all__ = [
    "SPREAD_FACTORS",
    "scale_spread",
    "fit_lead_spread",
    "fit_validation_spread",
    "SpreadRecalibrated",
]

#: the candidate factors s_h: 0.5 * 8^(k / 40) for k = -13 ... 40, 54 values from 0.254 to 4
#: evenly spaced on a log scale (the ninth session's 41 from 0.5 to 4, extended below: a
#: forecast given a known input was 3.6x too wide, and 0.5 was the floor it stopped at)
SPREAD_FACTORS = tuple(0.5 * 8.0 ** (k / 40) for k in range(-13, 41))


def scale_spread(draws, factors) -> torch.Tensor:
    """Draws (S, N, H, D) moved about their mean over S by ``factors`` (H',), one per lead:
    mean + s_h (draw - mean); leads past H' take the last factor. Returns (S, N, H, D)."""
    draws = torch.as_tensor(draws)
    factors = torch.as_tensor(factors, dtype=draws.dtype, device=draws.device).flatten()
    if draws.dim() != 4 or not factors.numel() or not bool((factors > 0).all()):
        raise ValueError(
            f"draws must be (S, N, H, D) and factors positive, got draws of shape "
            f"{tuple(draws.shape)} and factors {factors.tolist()}"
        )
    horizon = draws.shape[2]
    if factors.numel() < horizon:
        factors = torch.cat([factors, factors[-1:].expand(horizon - factors.numel())])
    mean = draws.mean(0, keepdim=True)
    return mean + factors[:horizon].view(1, 1, -1, 1) * (draws - mean)


def fit_lead_spread(draws, truth, factors=SPREAD_FACTORS) -> list[float]:
    """Per lead h, the factor of ``factors`` whose scaled draws (S, N, H, D) score the lowest
    mean 90% interval score against ``truth`` (N, H, D) (NaN = missing, never scored; a lead
    with nothing observed keeps 1). Returns the H factors."""
    draws = torch.as_tensor(draws)
    truth = torch.as_tensor(truth).to(draws)
    observed = torch.isfinite(truth)
    filled = torch.where(observed, truth, torch.zeros((), dtype=truth.dtype, device=truth.device))
    weight = observed.to(draws.dtype)
    count = weight.sum((0, 2))
    scores = []  # (factors, H): only the interval score, not score_masked_forecast's every score
    for factor in factors:
        score = metrics.interval_score(scale_spread(draws, [factor]), filled, 0.9, over=())
        per_lead = (score * weight).sum((0, 2)) / count  # NaN where nothing is observed
        scores.append(torch.nan_to_num(per_lead, nan=np.inf).tolist())
    scores = np.asarray(scores)
    best = [float(factors[i]) for i in scores.argmin(0)]
    return [b if np.isfinite(scores[:, h]).any() else 1.0 for h, b in enumerate(best)]


def fit_validation_spread(model, x_val, num_samples: int = 200, seed: int = 0, n_targets=None):
    """:func:`fit_lead_spread` on :func:`holdout_forecast` draws of the last third (H = max(1,
    T // 3) steps) of each validation sequence x_val (B, T, D) from the steps before
    (``num_samples`` draws under ``seed``, the global RNG restored; with ``n_targets`` < D
    forecasts of the targets given the known inputs after them). Returns (the H factors, a
    record: factors, the validation interval score and CRPS before and after, criterion)."""
    draws, truth = holdout_forecast(model, x_val, num_samples, seed, n_targets)
    factors = fit_lead_spread(draws, truth)
    before = score_masked_forecast(draws, truth)
    after = score_masked_forecast(scale_spread(draws, factors), truth)
    record = {
        "factors": factors,
        **{
            f"validation_{key}": {"before": _mean(before[key]), "after": _mean(after[key])}
            for key in ("interval_score_90", "crps")
        },
        "criterion": "90% interval score per lead of forecasts of the last third of each "
        "validation sequence",
        "n_targets": n_targets,  # None: every column forecast; else the targets given the rest
    }
    return factors, record


class SpreadRecalibrated(SequenceModel):
    """``model`` with its forecast spread recalibrated per lead on validation data.

    :meth:`fit` trains ``model`` on x_train and keeps the factors of
    :func:`fit_validation_spread` (``num_samples`` draws, the fit's ``seed``);
    :meth:`forecast` applies them (past lead H, the last one). With ``n_targets`` (the first
    n_targets columns are targets, the rest known inputs) the factors are fitted on forecasts
    of the targets given the inputs, and :meth:`forecast_given` applies them. Without x_val
    nothing is recalibrated. Imputation, free-running samples and the likelihood are
    ``model``'s own.
    """

    def __init__(self, model: SequenceModel, num_samples: int = 200, n_targets: int | None = None):
        self.model = model
        self.num_samples = check_positive_int(num_samples, "num_samples")
        self.n_targets = None if n_targets is None else check_positive_int(n_targets, "n_targets")
        self.name = model.name
        self.has_exact_likelihood = model.has_exact_likelihood
        self.has_likelihood_estimate = model.has_likelihood_estimate
        self.factors: list[float] | None = None

    def fit(self, x_train, x_val=None, *, seed: int = 0, budget_s: float | None = None) -> dict:
        """Fit ``model``, then the factors on x_val. The history is ``model``'s, its
        ``chosen`` extended by ``forecast_spread`` ({"factors", "validation_interval_score"
        and "validation_crps" before and after, "criterion"}; None without x_val)."""
        history = dict(self.model.fit(x_train, x_val, seed=seed, budget_s=budget_s) or {})
        record = None
        if x_val is not None:
            self.factors, record = fit_validation_spread(
                self.model, x_val, self.num_samples, seed, self.n_targets
            )
        chosen = history.get("chosen")
        chosen = chosen if isinstance(chosen, dict) else {}
        history["chosen"] = {**chosen, "forecast_spread": record}
        return history

    def forecast(self, x_context, horizon: int, num_samples: int) -> torch.Tensor:
        """``model``'s draws (S, B, horizon, D), their spread about the mean scaled per lead."""
        return self._recalibrated(self.model.forecast(x_context, horizon, num_samples))

    def forecast_given(self, x_context, known_future, num_samples: int) -> torch.Tensor:
        """``model``'s draws (S, B, H, D) given the known entries of known_future (B, H, D),
        their spread about the mean scaled per lead (known entries do not vary: unchanged)."""
        return self._recalibrated(self.model.forecast_given(x_context, known_future, num_samples))

    def _recalibrated(self, draws: torch.Tensor) -> torch.Tensor:
        """draws (S, B, H, D) with the fitted factors applied (unchanged before any fit)."""
        return draws if self.factors is None else scale_spread(draws, self.factors)

    def impute(self, x, mask, num_samples: int) -> torch.Tensor:
        """``model``'s imputation draws (S, B, T, D), unchanged."""
        return self.model.impute(x, mask, num_samples)

    def sample(self, num_samples: int, num_steps: int) -> torch.Tensor:
        """``model``'s free-running draws (S, T, D), unchanged."""
        return self.model.sample(num_samples, num_steps)

    def log_likelihood(self, x, mask=None) -> torch.Tensor:
        """``model``'s log p(x) (B,) (of the model, not of the recalibrated forecasts)."""
        return self.model.log_likelihood(x, mask)


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None
