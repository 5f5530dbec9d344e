"""Tests for alternators_ppl.evaluation.figures."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
import torch

from alternators_ppl.evaluation import figures as plots
from alternators_ppl.evaluation.figures import (
    plot_attractor,
    plot_forecast_fan,
    plot_imputation,
    plot_latents,
    plot_loss,
)

RNG = np.random.default_rng(0)


def read_png(path, height: int, width: int) -> np.ndarray:
    """Check ``path`` is a non-empty PNG of ``height`` x ``width`` pixels and return it."""
    assert path.is_file() and path.stat().st_size > 0
    img = matplotlib.image.imread(path)
    assert img.shape[:2] == (height, width)
    assert img.std() > 0  # something was drawn
    return img


def forecast_data(tc=20, s=30, h=10, d=3):
    return RNG.normal(size=(tc, d)), RNG.normal(size=(s, h, d)), RNG.normal(size=(h, d))


def imputation_data(t=25, s=30, d=2):
    truth = RNG.normal(size=(t, d))
    mask = RNG.random((t, d)) > 0.4
    observed = np.where(mask, truth, np.nan)
    samples = truth + 0.3 * RNG.normal(size=(s, t, d))
    return observed, mask, samples, truth


# --------------------------------------------------------------------------- attractor


def test_attractor_writes_png(tmp_path):
    samples = np.cumsum(RNG.normal(size=(12, 50, 3)), axis=1)
    truth = np.cumsum(RNG.normal(size=(4, 60, 3)), axis=1)
    out = plot_attractor(samples, truth, tmp_path / "sub" / "attractor.png", title="test")
    assert out == tmp_path / "sub" / "attractor.png"
    read_png(out, 540, 1200)


@pytest.mark.parametrize(
    "samples_shape, truth_shape, name",
    [((4, 50, 2), (4, 50, 3), "samples"), ((4, 50, 3), (50, 3), "truth")],
)
def test_attractor_bad_shapes(tmp_path, samples_shape, truth_shape, name):
    with pytest.raises(ValueError, match=name):
        plot_attractor(np.zeros(samples_shape), np.zeros(truth_shape), tmp_path / "a.png")
    assert not (tmp_path / "a.png").exists()


# --------------------------------------------------------------------------- forecast fan


def test_forecast_fan_default_dims(tmp_path):
    context, samples, truth = forecast_data(d=5)
    out = plot_forecast_fan(context, samples, truth, tmp_path / "fan.png")
    read_png(out, 3 * 300, 960)


def test_forecast_fan_dims_dt_and_torch(tmp_path):
    context, samples, truth = (torch.as_tensor(a) for a in forecast_data())
    out = plot_forecast_fan(
        context, samples.requires_grad_(), truth, tmp_path / "fan.png", dims=[2], dt=0.01
    )
    read_png(out, 300, 960)


@pytest.mark.parametrize(
    "which, bad, match",
    [
        ("context", np.zeros((20, 2)), "context"),
        ("samples", np.zeros((30, 9, 3)), "samples"),
        ("truth", np.zeros(10), "truth"),
    ],
)
def test_forecast_fan_bad_shapes(tmp_path, which, bad, match):
    args = dict(zip(("context", "samples", "truth"), forecast_data(), strict=True))
    args[which] = bad
    with pytest.raises(ValueError, match=match):
        plot_forecast_fan(**args, path=tmp_path / "fan.png")


@pytest.mark.parametrize("dims", [[3], [], [-1]])
def test_forecast_fan_bad_dims(tmp_path, dims):
    with pytest.raises(ValueError, match="dims"):
        plot_forecast_fan(*forecast_data(), tmp_path / "fan.png", dims=dims)


# --------------------------------------------------------------------------- imputation


def test_imputation_writes_png(tmp_path):
    out = plot_imputation(*imputation_data(), tmp_path / "imp.png")
    read_png(out, 2 * 300, 960)


def test_imputation_torch_and_fully_observed_dim(tmp_path):
    observed, mask, samples, truth = imputation_data(d=3)
    mask[:, 1] = True
    observed[:, 1] = truth[:, 1]
    args = [torch.as_tensor(a) for a in (observed, mask, samples, truth)]
    out = plot_imputation(*args, tmp_path / "imp.png", dims=(1, 2))
    read_png(out, 2 * 300, 960)


@pytest.mark.parametrize("which, match", [(0, "observed"), (1, "mask"), (2, "samples")])
def test_imputation_bad_shapes(tmp_path, which, match):
    args = list(imputation_data())
    args[which] = args[which][..., :1]
    with pytest.raises(ValueError, match=match):
        plot_imputation(*args, tmp_path / "imp.png")


def test_imputation_nan_where_observed(tmp_path):
    observed, mask, samples, truth = imputation_data()
    observed[mask] = np.nan
    with pytest.raises(ValueError, match="observed"):
        plot_imputation(observed, mask, samples, truth, tmp_path / "imp.png")


# --------------------------------------------------------------------------- latents


def test_latents_writes_png(tmp_path):
    t = np.linspace(0, 6, 80)
    z_true = np.stack([np.sin(t), np.cos(t), t], axis=1)
    z_samples = torch.as_tensor(z_true + 0.2 * RNG.normal(size=(40, 80, 3)))
    out = plot_latents(z_true, z_samples, tmp_path / "z.png", dt=0.05)
    read_png(out, 3 * 300, 960)


def test_latents_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match="z_samples"):
        plot_latents(np.zeros((10, 2)), np.zeros((5, 10, 3)), tmp_path / "z.png")
    with pytest.raises(ValueError, match="z_true"):
        plot_latents(np.zeros(10), np.zeros((5, 10)), tmp_path / "z.png")


def test_r2_title_values():
    truth = np.array([0.0, 1.0, 2.0, 3.0])
    assert plots._r2_title(truth, truth, "z[0]") == "z[0]   R² = 1.000"
    # SSE = 1, SST = 5
    assert plots._r2_title(np.array([0.0, 1.0, 2.0, 4.0]), truth, "z") == "z   R² = 0.800"
    assert plots._r2_title(np.full(4, 1.5), truth, "z").endswith("R² = 0.000")
    assert plots._r2_title(truth, np.ones(4), "z").endswith("R² = n/a")


def test_latents_titles_carry_r2():
    z_true = RNG.normal(size=(30, 2))
    fig = plots._latents_figure(z_true, np.broadcast_to(z_true, (4, 30, 2)), None, None)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["z[0]   R² = 1.000", "z[1]   R² = 1.000"]


# --------------------------------------------------------------------------- loss


def test_loss_log_scale_with_val(tmp_path):
    history = {"train_loss": [10.0, 3.0, 1.0, 0.5], "val_loss": [12.0, 4.0, 2.0, 1.5]}
    assert plots._loss_figure(history).axes[0].get_yscale() == "log"
    read_png(plot_loss(history, tmp_path / "loss.png"), 480, 720)


@pytest.mark.parametrize("val", [None, [], np.array([])])
def test_loss_linear_scale_without_val(tmp_path, val):
    history = {"train_loss": [5.0, 1.0, -2.0]}
    if val is not None:
        history["val_loss"] = val
    fig = plots._loss_figure(history)
    assert fig.axes[0].get_yscale() == "linear"
    assert len(fig.axes[0].lines) == 1
    read_png(plot_loss(history, tmp_path / "loss.png"), 480, 720)


@pytest.mark.parametrize("history", [{}, {"train_loss": []}, {"val_loss": [1.0]}])
def test_loss_bad_history(tmp_path, history):
    with pytest.raises(ValueError, match="train_loss"):
        plot_loss(history, tmp_path / "loss.png")
