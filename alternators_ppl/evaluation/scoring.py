"""Held-out evaluation of forecasts, imputations and latent estimates, with naive references.

Everything is scored on data the model never saw. Predictive samples have the sample axis
first, (S, B, T, D); truth is (B, T, D). Metrics come from :mod:`alternators_ppl.metrics`.
"""

from __future__ import annotations

import numpy as np
import torch

from alternators_ppl import metrics
from alternators_ppl.models.naive import linear_interpolation
from alternators_ppl.validation import check_positive_int

__all__ = [
    "forecast_windows",
    "persistence_forecast",
    "resampled_climatology_samples",
    "hide_random_steps",
    "score_forecast_draws",
    "score_forecasts",
    "score_imputation",
    "score_latents",
]


def forecast_windows(x: torch.Tensor, context: int, horizon: int, stride: int):
    """Cut (B, T, D) sequences into forecast problems at origins context, context+stride, ...

    Returns (x_context (N, context, D), x_future (N, horizon, D)), N = B * origins.
    """
    context = check_positive_int(context, "context")
    horizon = check_positive_int(horizon, "horizon")
    stride = check_positive_int(stride, "stride")
    steps = x.shape[1]
    origins = list(range(context, steps - horizon + 1, stride))
    if not origins:
        raise ValueError(
            f"sequences of {steps} steps hold no window of context {context} + horizon {horizon}"
        )
    past = torch.cat([x[:, o - context : o] for o in origins], dim=0)
    future = torch.cat([x[:, o : o + horizon] for o in origins], dim=0)
    return past, future


def persistence_forecast(x_context: torch.Tensor, horizon: int) -> torch.Tensor:
    """Point forecast repeating the last observation: (N, Tc, D) -> (N, horizon, D)."""
    return x_context[:, -1:].expand(-1, horizon, -1)


def resampled_climatology_samples(
    x_train: torch.Tensor, shape: tuple[int, ...], num_samples: int, generator=None
):
    """Draws from the training marginal (every observed train vector equally likely).

    x_train (B, T, D) (NaN rows skipped) -> samples (S, *shape) with shape (..., D).
    """
    pool = x_train.reshape(-1, x_train.shape[-1])
    pool = pool[torch.isfinite(pool).all(-1)]
    if len(pool) == 0:
        raise ValueError(f"x_train (shape {tuple(x_train.shape)}) has no fully observed step")
    count = int(np.prod(shape[:-1])) * num_samples
    index = torch.randint(len(pool), (count,), generator=generator, device="cpu").to(pool.device)
    return pool[index].reshape(num_samples, *shape)


def _interval_scores(samples, truth, over):
    return {
        "coverage_50": metrics.interval_coverage(samples, truth, 0.5, over=over),
        "coverage_90": metrics.interval_coverage(samples, truth, 0.9, over=over),
        "width_90": metrics.interval_width(samples, 0.9, over=over),
    }


def hide_random_steps(x: torch.Tensor, fraction: float, seed: int):
    """Hide a random ``fraction`` of the time steps of x (B, T, D), drawn from ``seed``.

    Returns (x with NaN at the hidden steps, mask (B, T) with True = kept).
    """
    generator = torch.Generator().manual_seed(seed)
    mask = (torch.rand(x.shape[:2], generator=generator) >= fraction).to(x.device)
    return torch.where(mask.unsqueeze(-1), x, torch.nan), mask


def score_forecast_draws(samples, future) -> dict[str, torch.Tensor]:
    """Per-horizon scores (H,) of forecast draws (S, N, H, D) against futures (N, H, D):
    CRPS (empirical), RMSE of the sample mean, 50/90% coverage and 90% width, averaged over
    problems and dimensions."""
    per_h = (0, 2)
    return {
        "crps": metrics.crps_empirical(samples, future, over=per_h),
        "rmse": metrics.rmse(samples.mean(0), future, over=per_h),
        **_interval_scores(samples, future, per_h),
    }


def score_forecasts(samples, future, x_context, x_train) -> dict[str, list[float]]:
    """:func:`score_forecast_draws` of the model plus the references, as lists over horizons.

    References: persistence (a point forecast: its CRPS is its absolute error) and resampled
    climatology (draws of whole training vectors of ``x_train``; not the Gaussian
    ``climatology`` model of the comparison), on the same problems.
    """
    horizon = future.shape[1]
    per_h = (0, 2)
    generator = torch.Generator().manual_seed(0)
    shape = tuple(future.shape)
    climate = resampled_climatology_samples(x_train, shape, samples.shape[0], generator)
    persist = persistence_forecast(x_context, horizon)
    scores = {
        **score_forecast_draws(samples, future),
        "persistence_crps": metrics.mae(persist, future, over=per_h),
        "persistence_rmse": metrics.rmse(persist, future, over=per_h),
        "resampled_climatology_crps": metrics.crps_empirical(climate, future, over=per_h),
        "resampled_climatology_rmse": metrics.rmse(climate.mean(0), future, over=per_h),
    }
    return {k: v.tolist() for k, v in scores.items()}


def score_imputation(samples, x_true, mask) -> dict[str, float]:
    """Scores of imputation draws (S, B, T, D) at the missing steps (``mask`` (B, T) False).

    RMSE of the sample mean, CRPS and 90% coverage against the held-out values ``x_true``,
    and the RMSE of linear interpolation on the same gaps.
    """
    missing = ~mask
    hidden = x_true[missing]  # (M, D)
    draws = samples[:, missing]  # (S, M, D)
    interp = linear_interpolation(x_true, mask)[missing]
    over = (0, 1)
    return {
        "rmse": metrics.rmse(draws.mean(0), hidden, over=over).item(),
        "crps": metrics.crps_empirical(draws, hidden, over=over).item(),
        "coverage_90": metrics.interval_coverage(draws, hidden, 0.9, over=over).item(),
        "linear_interpolation_rmse": metrics.rmse(interp, hidden, over=over).item(),
        "missing_fraction": missing.float().mean().item(),
    }


def score_latents(z_samples, z_true) -> dict[str, list[float]]:
    """Per-coordinate scores of latent draws (S, T, Dz) against the true latents (T, Dz).

    R^2 and Pearson CC of the sample-mean trajectory, and 50/90% interval coverage.
    """
    mean = z_samples.mean(0)
    over = (0,)
    scores = {
        "r2": metrics.r2(mean, z_true, over=over),
        "pearson_cc": metrics.pearson_cc(mean, z_true, over=over),
        "rmse": metrics.rmse(mean, z_true, over=over),
        **_interval_scores(z_samples, z_true, over),
    }
    return {k: v.tolist() for k, v in scores.items()}
