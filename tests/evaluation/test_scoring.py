"""Held-out evaluation: forecast windows, naive references and the scoring helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alternators_ppl.evaluation.scoring import (
    forecast_windows,
    persistence_forecast,
    resampled_climatology_samples,
    score_forecasts,
    score_imputation,
    score_latents,
)
from alternators_ppl.models.naive import linear_interpolation

F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def coded_sequences(batch: int, steps: int, dim: int) -> torch.Tensor:
    """x[b, t, d] = 1000 b + 10 t + d: every entry tells where it came from."""
    b = torch.arange(batch, dtype=F64).view(-1, 1, 1)
    t = torch.arange(steps, dtype=F64).view(1, -1, 1)
    d = torch.arange(dim, dtype=F64).view(1, 1, -1)
    return 1000 * b + 10 * t + d


# ----------------------------------------------------------------------------- windows


@pytest.mark.parametrize(
    "steps,context,horizon,stride,origins",
    [(10, 3, 2, 2, [3, 5, 7]), (10, 3, 2, 1, [3, 4, 5, 6, 7, 8]), (5, 3, 2, 4, [3]),
     (12, 4, 4, 4, [4, 8])],
)
def test_forecast_windows_shapes_and_content(steps, context, horizon, stride, origins):
    batch, dim = 3, 2
    x = coded_sequences(batch, steps, dim)
    past, future = forecast_windows(x, context, horizon, stride)
    num = batch * len(origins)
    assert past.shape == (num, context, dim)
    assert future.shape == (num, horizon, dim)
    for i, origin in enumerate(origins):  # origin-major, then sequence
        for b in range(batch):
            row = i * batch + b
            assert torch.equal(past[row], x[b, origin - context : origin])
            assert torch.equal(future[row], x[b, origin : origin + horizon])
            # the future starts right where the context ends
            assert future[row, 0, 0] - past[row, -1, 0] == 10


def test_forecast_windows_errors():
    x = coded_sequences(2, 6, 1)
    with pytest.raises(ValueError, match="no window"):
        forecast_windows(x, 4, 3, 1)
    for name, args in (("context", (0, 2, 1)), ("horizon", (3, 0, 1)), ("stride", (3, 2, 0))):
        with pytest.raises(ValueError, match=name):
            forecast_windows(x, *args)


def test_persistence_forecast_repeats_last_context_step():
    x_context = torch.randn(5, 4, 3, generator=gen(1), dtype=F64)
    forecast = persistence_forecast(x_context, 6)
    assert forecast.shape == (5, 6, 3)
    for h in range(6):
        assert torch.equal(forecast[:, h], x_context[:, -1])


# ----------------------------------------------------------------------------- climatology


def test_climatology_draws_only_finite_training_rows():
    x_train = coded_sequences(3, 5, 2)
    x_train[0, 1, 0] = float("nan")  # a partly missing row: skipped as a whole
    x_train[2, 4] = float("nan")
    valid = {tuple(r) for r in x_train.reshape(-1, 2).tolist() if all(np.isfinite(r))}
    assert len(valid) == 13

    shape = (4, 7, 2)
    draws = resampled_climatology_samples(x_train, shape, 50, generator=gen(2))
    assert draws.shape == (50, *shape)
    assert torch.isfinite(draws).all()
    drawn = {tuple(r) for r in draws.reshape(-1, 2).tolist()}
    assert drawn <= valid  # whole training rows, never a mix of rows
    assert drawn == valid  # 1400 draws from 13 rows reach all of them

    again = resampled_climatology_samples(x_train, shape, 50, generator=gen(2))
    assert torch.equal(draws, again)


def test_climatology_without_observed_rows_is_an_error():
    x_train = torch.full((2, 3, 2), float("nan"))
    x_train[0, 0, 0] = 1.0  # not a whole row
    with pytest.raises(ValueError, match="x_train"):
        resampled_climatology_samples(x_train, (4, 2), 3)


# ----------------------------------------------------------------------------- interpolation


def test_linear_interpolation_matches_numpy_interp():
    batch, steps, dim = 4, 12, 3
    x = torch.randn(batch, steps, dim, generator=gen(3), dtype=F64)
    mask = torch.rand(batch, steps, generator=gen(4)) > 0.5
    mask[0, :3] = False  # gap at the start: nearest observed value
    mask[0, -2:] = False  # gap at the end
    mask[0, 5] = True
    mask[1] = False
    mask[1, 6] = True  # a single observed step: constant
    mask[2] = True  # nothing missing
    x_gappy = x.masked_fill(~mask.unsqueeze(-1), float("nan"))  # missing values never read

    filled = linear_interpolation(x_gappy, mask)
    assert filled.shape == x.shape and filled.dtype == x.dtype
    assert torch.isfinite(filled).all()
    grid = np.arange(steps)
    for b in range(batch):
        seen = mask[b].numpy()
        for d in range(dim):
            expected = np.interp(grid, grid[seen], x[b, :, d].numpy()[seen])
            np.testing.assert_allclose(filled[b, :, d].numpy(), expected, rtol=0, atol=1e-12)
    # observed steps untouched, edges held at the nearest observation
    assert torch.equal(filled[mask], x[mask])
    first = int(mask[0].nonzero()[0])
    last = int(mask[0].nonzero()[-1])
    assert torch.equal(filled[0, :first], x[0, first].expand(first, dim))
    assert torch.equal(filled[0, last + 1 :], x[0, last].expand(steps - last - 1, dim))
    assert torch.equal(filled[1], x[1, 6].expand(steps, dim))
    assert torch.equal(filled[2], x[2])


def test_linear_interpolation_midpoint_by_hand():
    x = torch.tensor([[[0.0, 10.0], [99.0, 99.0], [99.0, 99.0], [3.0, 4.0]]], dtype=F64)
    mask = torch.tensor([[True, False, False, True]])
    filled = linear_interpolation(x, mask)
    expected = torch.tensor([[[0.0, 10.0], [1.0, 8.0], [2.0, 6.0], [3.0, 4.0]]], dtype=F64)
    torch.testing.assert_close(filled, expected)


def test_linear_interpolation_all_missing_sequence_is_an_error():
    x = torch.randn(3, 5, 2, generator=gen(5))
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1] = False
    with pytest.raises(ValueError, match="sequence 1"):
        linear_interpolation(x, mask)


# ----------------------------------------------------------------------------- forecasts


def test_score_forecasts_keys_lengths_and_perfect_forecaster():
    x = torch.randn(4, 20, 2, generator=gen(6), dtype=F64).cumsum(1)
    past, future = forecast_windows(x, 5, 4, 5)
    x_train = torch.randn(6, 10, 2, generator=gen(7), dtype=F64)
    num_samples, horizon = 30, future.shape[1]

    perfect = future.expand(num_samples, *future.shape)
    scores = score_forecasts(perfect, future, past, x_train)
    assert set(scores) == {
        "crps", "rmse", "coverage_50", "coverage_90", "width_90",
        "persistence_crps", "persistence_rmse",
        "resampled_climatology_crps", "resampled_climatology_rmse",
    }
    for key, values in scores.items():
        assert isinstance(values, list) and len(values) == horizon, key
        assert all(np.isfinite(values)), key
    assert scores["crps"] == pytest.approx([0.0] * horizon, abs=1e-12)
    assert scores["rmse"] == pytest.approx([0.0] * horizon, abs=1e-12)
    assert scores["coverage_50"] == [1.0] * horizon
    assert scores["coverage_90"] == [1.0] * horizon
    assert scores["width_90"] == pytest.approx([0.0] * horizon, abs=1e-12)

    # the references are computed independently of the model's draws
    last = past[:, -1:].numpy()
    errors = np.abs(future.numpy() - last)
    assert scores["persistence_crps"] == pytest.approx(errors.mean((0, 2)).tolist())
    rmse = np.sqrt(((future.numpy() - last) ** 2).mean((0, 2)))
    assert scores["persistence_rmse"] == pytest.approx(rmse.tolist())
    assert all(v > 0 for v in scores["resampled_climatology_crps"])

    noisy = perfect + torch.randn(perfect.shape, generator=gen(8), dtype=F64)
    worse = score_forecasts(noisy, future, past, x_train)
    assert all(v > 0 for v in worse["crps"])
    assert all(v > 0 for v in worse["width_90"])
    references = ("persistence_crps", "persistence_rmse")
    references += ("resampled_climatology_crps", "resampled_climatology_rmse")
    for key in references:
        assert worse[key] == scores[key], key


# ----------------------------------------------------------------------------- imputation


def test_score_imputation_only_scores_missing_steps():
    batch, steps, dim, num = 3, 10, 2, 20
    x_true = torch.randn(batch, steps, dim, generator=gen(9), dtype=F64)
    mask = torch.rand(batch, steps, generator=gen(10)) > 0.4
    mask[:, 0] = True  # every sequence has an observed step
    samples = x_true + 0.3 * torch.randn(num, batch, steps, dim, generator=gen(11), dtype=F64)

    scores = score_imputation(samples, x_true, mask)
    assert set(scores) == {
        "rmse", "crps", "coverage_90", "linear_interpolation_rmse", "missing_fraction",
    }
    assert scores["missing_fraction"] == pytest.approx((~mask).double().mean().item())

    observed = mask.view(1, batch, steps, 1).expand_as(samples)
    garbage = torch.where(observed, torch.full_like(samples, 1e6), samples)
    assert score_imputation(garbage, x_true, mask) == scores

    changed = torch.where(observed, samples, samples + 1.0)
    assert score_imputation(changed, x_true, mask)["rmse"] > scores["rmse"]

    missing = ~mask
    draws = samples[:, missing]
    expected_rmse = draws.mean(0).sub(x_true[missing]).pow(2).mean().sqrt().item()
    assert scores["rmse"] == pytest.approx(expected_rmse)
    interp = linear_interpolation(x_true, mask)[missing]
    expected_interp = interp.sub(x_true[missing]).pow(2).mean().sqrt().item()
    assert scores["linear_interpolation_rmse"] == pytest.approx(expected_interp)

    exact = score_imputation(x_true.expand(num, -1, -1, -1), x_true, mask)
    assert exact["rmse"] == pytest.approx(0.0, abs=1e-12)
    assert exact["crps"] == pytest.approx(0.0, abs=1e-12)
    assert exact["coverage_90"] == 1.0


# ----------------------------------------------------------------------------- latents


def test_score_latents_exact_and_noisy():
    steps, dz, num = 40, 3, 25
    z_true = torch.randn(steps, dz, generator=gen(12), dtype=F64).cumsum(0)
    exact = score_latents(z_true.expand(num, steps, dz), z_true)
    assert set(exact) == {"r2", "pearson_cc", "rmse", "coverage_50", "coverage_90", "width_90"}
    for values in exact.values():
        assert len(values) == dz
    assert exact["r2"] == pytest.approx([1.0] * dz)
    assert exact["pearson_cc"] == pytest.approx([1.0] * dz)
    assert exact["rmse"] == pytest.approx([0.0] * dz, abs=1e-12)
    assert exact["coverage_90"] == [1.0] * dz

    noisy = z_true + 2.0 * torch.randn(num, steps, dz, generator=gen(13), dtype=F64)
    scores = score_latents(noisy, z_true)
    assert all(r < 1.0 for r in scores["r2"])
    assert all(r > 0.0 for r in scores["rmse"])
    assert all(w > 0.0 for w in scores["width_90"])
    shifted = score_latents(noisy + 100.0, z_true)  # intervals far from the truth
    assert shifted["coverage_50"] == [0.0] * dz
    assert shifted["coverage_90"] == [0.0] * dz


# ----------------------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_scores_on_cuda():
    x = torch.randn(3, 20, 2, generator=gen(14), dtype=F64).cuda()
    past, future = forecast_windows(x, 5, 4, 5)
    samples = future + torch.randn(10, *future.shape, dtype=F64, device="cuda")
    scores = score_forecasts(samples, future, past, x)
    assert all(len(v) == 4 for v in scores.values())
    mask = torch.ones(3, 20, dtype=torch.bool, device="cuda")
    mask[:, 3:7] = False
    filled = linear_interpolation(x, mask)
    assert filled.is_cuda
    imputed = score_imputation(x + torch.zeros(5, *x.shape, dtype=F64, device="cuda"), x, mask)
    assert imputed["rmse"] == pytest.approx(0.0, abs=1e-12)


def test_hide_random_steps_is_seeded_and_hides_whole_steps():
    from alternators_ppl.evaluation.scoring import hide_random_steps

    x = torch.randn(40, 50, 3)
    gappy, mask = hide_random_steps(x, 0.3, seed=4)
    again, mask_again = hide_random_steps(x, 0.3, seed=4)
    assert torch.equal(mask, mask_again) and mask.shape == (40, 50)
    assert abs((~mask).float().mean().item() - 0.3) < 4 * (0.21 / 2000) ** 0.5  # 4 std errors
    assert torch.isnan(gappy[~mask]).all() and torch.equal(gappy[mask], x[mask])
