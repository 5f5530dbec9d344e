"""Scores of forecast and imputation draws against truth that has missing values (NaN).

Real series have gaps. Each score is computed per element with :mod:`alternators_ppl.metrics`
and averaged over the observed entries only: a missing truth value is never scored and never
filled in. Samples have the sample axis first, (S, N, H, D); truth is (N, H, D).
"""

from __future__ import annotations

import math

import torch

from alternators_ppl import metrics
from alternators_ppl.validation import check_positive_int

__all__ = [
    "covariate_window",
    "covariate_forecast",
    "holdout_forecast",
    "holdout_forecast_crps",
    "score_masked_forecast",
    "score_masked_imputation",
]


def _elementwise(samples: torch.Tensor, truth: torch.Tensor):
    """(observed (N, H, D) bool, per-element scores) with missing truth set to 0."""
    observed = torch.isfinite(truth)
    filled = torch.where(observed, truth, torch.zeros((), dtype=truth.dtype, device=truth.device))
    return observed, {
        "crps": metrics.crps_empirical(samples, filled, over=()),
        "sq_error": (samples.mean(0) - filled).square(),
        "coverage_50": metrics.interval_coverage(samples, filled, 0.5, over=()),
        "coverage_90": metrics.interval_coverage(samples, filled, 0.9, over=()),
        "width_90": metrics.interval_width(samples, 0.9, over=()),
        "interval_score_90": metrics.interval_score(samples, filled, 0.9, over=()),
    }


def _to_list(x: torch.Tensor) -> list:
    return [None if math.isnan(v) else v for v in x.tolist()]


def score_masked_forecast(samples, future, scale=None, shift=None) -> dict[str, list]:
    """Per-horizon scores (lists of H) of draws (S, N, H, D) against ``future`` (N, H, D).

    CRPS (empirical), RMSE of the sample mean, 50/90% coverage, 90% width, the 90% interval
    score (:func:`alternators_ppl.metrics.interval_score`) and the count of
    observed entries, averaged over problems and dimensions where ``future`` is observed
    (a horizon with none observed gets None). With ``scale`` and ``shift`` (D,), both draws and
    truth are first mapped to ``x * scale + shift`` (e.g. back to data units).
    """
    samples, future = torch.as_tensor(samples), torch.as_tensor(future)
    if samples.dim() != 4 or samples.shape[1:] != future.shape:
        raise ValueError(
            f"samples must be (S, *future.shape) = (S, {tuple(future.shape)}), "
            f"got {tuple(samples.shape)}"
        )
    if not torch.isfinite(samples).all():
        raise ValueError(f"samples (shape {tuple(samples.shape)}) contain NaN or inf")
    if scale is not None:
        scale = torch.as_tensor(scale, dtype=samples.dtype, device=samples.device)
        shift = torch.as_tensor(
            0.0 if shift is None else shift, dtype=samples.dtype, device=samples.device
        )
        samples, future = samples * scale + shift, future.to(samples.dtype) * scale + shift
    observed, scores = _elementwise(samples, future.to(samples.dtype))
    weight = observed.to(samples.dtype)
    count = weight.sum((0, 2))
    out = {}
    for key, value in scores.items():
        mean = (value * weight).sum((0, 2)) / count
        out["rmse" if key == "sq_error" else key] = mean.sqrt() if key == "sq_error" else mean
    out = {k: _to_list(v) for k, v in out.items()}
    out["observed"] = [int(c) for c in count.tolist()]
    return out


def score_masked_imputation(samples, x_true, hidden) -> dict[str, float | None]:
    """Scores of imputation draws (S, B, T, D) at the ``hidden`` steps (B, T) bool where
    ``x_true`` (B, T, D) is observed: RMSE of the mean, CRPS, 90% coverage; None if nothing
    hidden was observed."""
    samples, x_true = torch.as_tensor(samples), torch.as_tensor(x_true)
    hidden = torch.as_tensor(hidden, dtype=torch.bool, device=x_true.device)
    truth = torch.where(hidden.unsqueeze(-1), x_true, torch.nan)
    observed, scores = _elementwise(samples, truth.to(samples.dtype))
    total = observed.sum()
    if total == 0:
        return {"rmse": None, "crps": None, "coverage_90": None}

    def mean(value):
        return ((value * observed).sum() / total).item()

    return {
        "rmse": math.sqrt(mean(scores["sq_error"])),
        "crps": mean(scores["crps"]),
        "coverage_90": mean(scores["coverage_90"]),
    }


def covariate_window(past: torch.Tensor, future: torch.Tensor, n_targets: int) -> torch.Tensor:
    """[past, future] (N, C + H, D) with the target entries (the first ``n_targets`` columns)
    of the future set to NaN; the covariate columns of the future are kept."""
    if past.shape[0] != future.shape[0] or past.shape[-1] != future.shape[-1]:
        raise ValueError(
            f"past {tuple(past.shape)} and future {tuple(future.shape)} must share N and D"
        )
    if not 0 < n_targets < past.shape[-1]:
        raise ValueError(f"n_targets must be in [1, {past.shape[-1] - 1}], got {n_targets}")
    hidden = future.clone()
    hidden[..., :n_targets] = float("nan")
    return torch.cat([past, hidden], dim=1)


def covariate_forecast(
    model, past: torch.Tensor, future: torch.Tensor, n_targets: int, num_samples: int
) -> torch.Tensor:
    """Draws of the targets over the horizon given the covariates: (S, N, H, n_targets).

    past (N, C, D) and future (N, H, D) hold targets then covariates; only the covariate
    columns of ``future`` reach the model (:func:`covariate_window` hides its targets first;
    ``model.forecast_given`` draws the rest)."""
    num_samples = check_positive_int(num_samples, "num_samples")
    window = covariate_window(past, future, n_targets)
    context = past.shape[1]
    draws = model.forecast_given(window[:, :context], window[:, context:], num_samples)
    return draws[..., :n_targets]


def holdout_forecast(model, x, num_samples: int = 64, seed: int = 0, n_targets=None):
    """Forecast draws (S, B, H, D') of the last third (H = max(1, T // 3) steps) of each
    sequence of x (B, T, D) from the steps before, and that held-out truth (B, H, D') (NaN =
    missing) on the draws' device and dtype: ``num_samples`` draws under a fixed ``seed``
    (the global RNG is restored afterwards), so that candidate models see the same random
    numbers. ``model.forecast`` (D' = D), or with ``n_targets`` < D (the columns after them
    are known inputs, given over the horizon) :func:`covariate_forecast` of the targets
    (D' = n_targets)."""
    x = torch.as_tensor(x)
    horizon = max(1, x.shape[1] // 3)
    given = n_targets is not None and n_targets < x.shape[-1]
    with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []), torch.no_grad():
        torch.manual_seed(seed)
        if given:
            draws = covariate_forecast(
                model, x[:, :-horizon], x[:, -horizon:], n_targets, num_samples
            )
        else:
            draws = model.forecast(x[:, :-horizon], horizon, num_samples)
    return draws, x[:, -horizon:, : draws.shape[-1]].to(draws)


def holdout_forecast_crps(
    model, x, num_samples: int = 64, seed: int = 0, n_targets: int | None = None
) -> float:
    """Mean CRPS of :func:`holdout_forecast` draws against the last third of each sequence of
    x (B, T, D) (NaN = missing, never scored; with ``n_targets``, of the targets given the
    known inputs). A multi-step score of held-out data, for choosing between fitted models."""
    x = torch.as_tensor(x)
    horizon = max(1, x.shape[1] // 3)
    scores = score_masked_forecast(*holdout_forecast(model, x, num_samples, seed, n_targets))
    values = [v for v in scores["crps"] if v is not None]
    if not values:
        raise ValueError(f"x has no observed entry in its last {horizon} steps")
    return sum(values) / len(values)
