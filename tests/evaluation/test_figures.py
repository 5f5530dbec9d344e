"""Tests for alternators_ppl.evaluation.figures."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg

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


# --------------------------------------------------------------------------- what a reader sees
# These read labels, titles and legend placement from the Figure objects (issue 11).


def _legend_texts(fig) -> list[str]:
    """Texts of every legend of ``fig`` (figure legends first, then axes legends)."""
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    return [t.get_text() for leg in legends for t in leg.get_texts()]


def _build(kind: str):
    """One figure of ``kind``, built with dt where the function takes it."""
    context, samples, truth = forecast_data()
    z_true = RNG.normal(size=(40, 3))
    builders = {
        "attractor": lambda: plots._attractor_figure(
            RNG.normal(size=(2, 30, 3)), RNG.normal(size=(2, 30, 3)), "t", "raw Lorenz units"
        ),
        "fan": lambda: plots._forecast_figure(context, samples, truth, None, 0.02),
        "imputation": lambda: plots._imputation_figure(*imputation_data(), None, 0.02),
        "latents": lambda: plots._latents_figure(
            z_true, z_true + RNG.normal(size=(5, 40, 3)), None, 0.01
        ),
        "loss": lambda: plots._loss_figure({"train_loss": [3.0, 2.0]}, "decoder"),
        "comparison": lambda: plots._comparison_figure(
            context, truth, {"a": samples, "b": samples + 1.0}, None, 0.02
        ),
    }
    return builders[kind]()


KINDS = ["attractor", "fan", "imputation", "latents", "loss", "comparison"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_panel_has_a_title_and_labelled_axes(kind):
    fig = _build(kind)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert panels
    for ax in panels:
        assert ax.get_title().strip(), f"{kind}: a panel has no title"
        assert ax.get_ylabel().strip() or not ax.get_subplotspec().is_first_col()
    bottom = [ax for ax in panels if ax.get_subplotspec().is_last_row()]
    assert all(ax.get_xlabel().strip() for ax in bottom), f"{kind}: unlabelled x axis"


@pytest.mark.parametrize("kind", ["fan", "imputation", "comparison"])
def test_truth_is_named_noisy_held_out_observations(kind):
    texts = _legend_texts(_build(kind))
    assert plots.OBS_LABEL == "held-out observations (noisy)"
    assert plots.OBS_LABEL in texts
    assert not any(t.strip() == "truth" for t in texts)


def test_attractor_names_noise_free_truth_and_units():
    fig = _build("attractor")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["model samples", "held-out trajectories (noise-free states)"]
    for ax in fig.axes:
        assert ax.get_xlabel() == "x (raw Lorenz units)"
        assert ax.get_ylabel() == "y (raw Lorenz units)"
        assert ax.get_zlabel() == "z (raw Lorenz units)"
    bare = plots._attractor_figure(np.zeros((1, 5, 3)), np.zeros((1, 5, 3)), None)
    assert bare.axes[0].get_xlabel() == "x"


@pytest.mark.parametrize("kind", ["fan", "imputation", "latents", "loss", "comparison"])
def test_legend_is_off_the_data(kind):
    fig = _build(kind)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # runs constrained layout, so positions are final
    renderer = canvas.get_renderer()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert legends, f"{kind}: no legend"
    suptitle = fig.get_suptitle() and fig._suptitle.get_window_extent(renderer)
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert not (suptitle and box.overlaps(suptitle)), f"{kind}: legend covers the title"
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), (
                f"{kind}: legend {box} overlaps the axes {ax.get_window_extent(renderer)}"
            )


@pytest.mark.parametrize(
    "dt, units, xlabel, ylabel",
    [
        (None, plots.STANDARDISED, "steps", "standardised units"),
        (None, None, "steps", "value"),  # no unit given: none claimed
        (0.02, "mV", "time (model time units)", "mV"),
    ],
)
def test_fan_and_imputation_axis_units(dt, units, xlabel, ylabel):
    context, samples, truth = forecast_data()
    fan = plots._forecast_figure(context, samples, truth, None, dt, units)
    imp = plots._imputation_figure(*imputation_data(), None, dt, units)
    for fig in (fan, imp):
        assert fig.axes[-1].get_xlabel() == xlabel
        assert all(ax.get_ylabel() == ylabel for ax in fig.axes)
    # with dt the forecast steps sit at dt, 2 dt, ...
    median = next(line for line in fan.axes[0].lines if line.get_label() == "forecast median")
    assert np.allclose(median.get_xdata(), np.arange(1, len(truth) + 1) * (dt or 1.0))


def test_latents_window_titles_and_units():
    steps = 6000
    t = np.linspace(0, 60, steps)
    z_true = np.stack([np.sin(t), np.cos(t), np.sin(2 * t)], axis=1)
    z_samples = z_true + 0.1 * RNG.normal(size=(3, steps, 3))
    fig = plots._latents_figure(z_true, z_samples, None, 0.01, units=plots.STANDARDISED)
    assert [ax.get_title().split()[0] for ax in fig.axes] == ["z[0]", "z[1]", "z[2]"]
    assert fig.get_suptitle() == (
        "latent recovery: first 500 of 6000 steps shown; R² over all 6000 steps"
    )
    for d, ax in enumerate(fig.axes):
        assert all(len(line.get_xdata()) == 500 for line in ax.lines)
        assert ax.get_ylabel() == f"z[{d}] (standardised units)"
        # R² in the title is over every step, not just the window
        assert ax.get_title() == plots._r2_title(z_samples.mean(0)[:, d], z_true[:, d], f"z[{d}]")
    assert fig.axes[-1].get_xlabel() == "time (model time units)"
    whole = plots._latents_figure(z_true[:50], z_samples[:, :50], [1], None, window=None)
    assert len(whole.axes[0].lines[0].get_xdata()) == 50
    assert "all 50 steps" in whole.get_suptitle()
    assert whole.axes[0].get_xlabel() == "steps"
    assert whole.axes[0].get_ylabel() == "z[1]"  # no unit given: none claimed


@pytest.mark.parametrize("window", [0, -3, 2.5])
def test_latents_bad_window(tmp_path, window):
    with pytest.raises(ValueError, match="window"):
        plot_latents(np.zeros((10, 2)), np.zeros((2, 10, 2)), tmp_path / "z.png", window=window)


def test_loss_title(tmp_path):
    assert plots._loss_figure({"train_loss": [1.0]}, "forecaster").axes[0].get_title() == (
        "forecaster: loss per epoch"
    )
    assert plots._loss_figure({"train_loss": [1.0]}).axes[0].get_title() == "loss per epoch"
    read_png(plot_loss({"train_loss": [2.0, 1.0]}, tmp_path / "l.png", title="decoder"), 480, 720)


def test_comparison_legend_names_each_model_and_labels_time(tmp_path):
    context, samples, truth = forecast_data()
    draws = {"alternator": samples, "dmm": samples + 1.0, "persistence": samples - 1.0}
    fig = plots._comparison_figure(context, truth, draws, [0, 2], None, plots.STANDARDISED)
    assert _legend_texts(fig) == [
        "alternator (median, 90% band)",
        "dmm (median, 90% band)",
        "persistence (median, 90% band)",
        "context (observed)",
        "held-out observations (noisy)",
    ]
    colours = {line.get_color() for ax in fig.axes for line in ax.lines[:1]}
    assert len(colours) == 3  # one colour per model
    grid = np.array(fig.axes).reshape(2, 3)
    assert [ax.get_xlabel() for ax in grid[-1]] == ["steps"] * 3
    assert [ax.get_title() for ax in grid[:, 1]] == ["dmm: dim 0", "dmm: dim 2"]
    assert grid[1, 0].get_ylabel() == "dim 2 (standardised units)"
    out = plots.plot_forecast_comparison(context, truth, draws, tmp_path / "c.png", dt=0.02)
    assert out.stat().st_size > 1000
