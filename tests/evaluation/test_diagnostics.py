"""Tests for alternators_ppl.diagnostics: InferenceData layout, NetCDF, log-likelihood oracle,
calibration (PIT, coverage), ArviZ wrappers, figures and bad input."""

from __future__ import annotations

import json
import warnings

import arviz as az
import matplotlib.image
import numpy as np
import pytest
import torch
import xarray as xr
from pyro import poutine
from scipy import stats

from alternators_ppl import metrics
from alternators_ppl.evaluation import calibration, diagnostic_figures, inference_data
from alternators_ppl.evaluation.calibration import coverage_table, pit_values
from alternators_ppl.evaluation.diagnostic_figures import plot_pit, plot_ppc, plot_trace_and_rank
from alternators_ppl.evaluation.inference_data import (
    DiagnosticsExistError,
    loo_over_time,
    pointwise_log_likelihood,
    save_netcdf,
    summary_table,
    to_inference_data,
)
from alternators_ppl.experiments import diagnose
from alternators_ppl.experiments.diagnose import diagnose_run
from alternators_ppl.inference import save_checkpoint
from alternators_ppl.models import Alternator
from tests.oracles import program_log_density

C, D, B, T, DZ, DX = 2, 30, 3, 6, 2, 3
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _model() -> Alternator:
    return Alternator(DX, DZ, hidden=(16,)).double()


def _gappy_x() -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, T, Dx) float64 with a fully missing step, a partly missing step and NaNs there."""
    x = torch.randn(B, T, DX, dtype=torch.float64)
    mask = torch.ones(B, T, DX, dtype=torch.bool)
    mask[0, 2] = False  # a whole step of sequence 0
    mask[1, 4, 1] = False  # one entry of sequence 1
    mask[2, -1, :2] = False
    return torch.where(mask, x, torch.nan), mask


def _idata(model=None, with_stats=True):
    """InferenceData of a small model's draws (C, D) for gappy x, with all groups."""
    model = model or _model()
    x, mask = _gappy_x()
    z = model.infer_latents(x, num_samples=C * D)  # (C*D, B, T+1, Dz)
    with torch.no_grad():
        log_lik = pointwise_log_likelihood(model, x, z)
        x_pred = model.x_loc(z[..., :-1, :]) + model.sigma_x * torch.randn(C * D, B, T, DX)
    return to_inference_data(
        z=z.reshape(C, D, B, T + 1, DZ),
        params={"scale": torch.rand(C, D), "w": torch.randn(C, D, 2)},
        x_pred=x_pred.reshape(C, D, B, T, DX),
        x_obs=x,
        log_likelihood=log_lik.reshape(C, D, B, T),
        sample_stats={"lp": torch.randn(C, D), "diverging": torch.zeros(C, D, dtype=torch.bool)}
        if with_stats
        else None,
        mask=mask,
    )


def _png(path, height=None, width=None) -> np.ndarray:
    assert path.is_file() and path.read_bytes()[:8] == PNG_SIGNATURE
    img = matplotlib.image.imread(path)
    if height is not None:
        assert img.shape[:2] == (height, width)
    assert img.std() > 0
    return img


# --------------------------------------------------------------------------- log-likelihood


def test_pointwise_log_likelihood_equals_pyro_site_log_probs():
    """Oracle: each entry is the log_prob of site x_t in a trace of model.model given z."""
    model = _model()
    x, mask = _gappy_x()
    z = model.infer_latents(x, num_samples=3)  # (3, B, T+1, Dz)
    log_lik = pointwise_log_likelihood(model, x, z)
    assert log_lik.shape == (3, B, T) and log_lik.dtype == torch.float64
    assert torch.equal(log_lik, pointwise_log_likelihood(model, x.nan_to_num(), z, mask))
    for s in range(3):
        data = {f"z_{t}": z[s, :, t] for t in range(T + 1)}
        trace = poutine.trace(poutine.condition(model.model, data=data)).get_trace(x)
        trace.compute_log_prob()
        assert "x_missing_3" in trace.nodes  # the fully missing step became a latent site
        site = torch.stack([trace.nodes[f"x_{t}"]["log_prob"] for t in range(1, T + 1)], -1)
        torch.testing.assert_close(log_lik[s], site, rtol=0, atol=1e-12)
    assert (log_lik[:, 0, 2] == 0).all()  # no observed entry at that step

    # leading sample axes of any rank; one path at a time gives the same numbers
    z4 = z[:2].unsqueeze(0).expand(2, 2, B, T + 1, DZ)
    assert pointwise_log_likelihood(model, x, z4).shape == (2, 2, B, T)
    torch.testing.assert_close(pointwise_log_likelihood(model, x, z[1]), log_lik[1])


def test_pointwise_log_likelihood_follows_autograd_and_chunks(monkeypatch):
    model = _model()
    x, _ = _gappy_x()
    z = model.infer_latents(x, num_samples=5)
    full = pointwise_log_likelihood(model, x, z)
    monkeypatch.setattr(inference_data, "_ROWS_PER_CHUNK", 1)  # one path per OTN call
    torch.testing.assert_close(pointwise_log_likelihood(model, x, z), full)
    full.sum().backward()
    assert all(p.grad is not None for p in model.otn.parameters())


def test_sample_stat_lp_equals_model_log_joint():
    """diagnose_run's "lp" per (chain, draw) is the Pyro program's log-density of its path,
    summed over sequences (an oracle that never calls log_joint)."""
    model = _model()
    x = torch.randn(B, T, DX, dtype=torch.float64)
    with torch.no_grad():
        z, _, log_lik, lp = diagnose._draw(model, x, chains=2, draws=3)
        paths = z.reshape(6, B, T + 1, DZ)
        expected = torch.stack([program_log_density(model, x, path).sum() for path in paths])
    torch.testing.assert_close(lp.reshape(6), expected, rtol=0, atol=1e-9)
    assert log_lik.shape == (2, 3, B, T)


@pytest.mark.parametrize(
    "z_shape, x_shape, match",
    [
        ((B, T, DZ), (B, T, DX), r"z has shape"),
        ((4, B, T + 1, DZ + 1), (B, T, DX), r"z has shape"),
        ((B + 1, T + 1, DZ), (B, T, DX), r"z has shape"),
        ((B, T + 1, DZ), (B, T, DX + 1), r"x has feature dim"),
        ((B, T + 1, DZ), (B, T), r"x must have shape"),
    ],
)
def test_pointwise_log_likelihood_bad_shapes(z_shape, x_shape, match):
    with pytest.raises(ValueError, match=match):
        pointwise_log_likelihood(_model(), torch.zeros(x_shape), torch.zeros(z_shape))


def test_pointwise_log_likelihood_rejects_non_finite_z_and_bad_types():
    z = torch.zeros(B, T + 1, DZ)
    z[0, 1, 0] = torch.nan
    with pytest.raises(ValueError, match="z contains NaN"):
        pointwise_log_likelihood(_model(), torch.zeros(B, T, DX), z)
    with pytest.raises(TypeError, match="z must"):
        pointwise_log_likelihood(_model(), torch.zeros(B, T, DX), [[0.0]])


# --------------------------------------------------------------------------- InferenceData


def test_to_inference_data_groups_dims_and_coords():
    idata = _idata()
    assert set(idata.groups()) == {
        "posterior",
        "posterior_predictive",
        "observed_data",
        "log_likelihood",
        "sample_stats",
    }
    post = idata.posterior
    assert post["z"].dims == ("chain", "draw", "sequence", "time_z", "latent")
    assert post["z"].shape == (C, D, B, T + 1, DZ)
    assert post["scale"].dims == ("chain", "draw")
    assert post["w"].dims == ("chain", "draw", "w_dim_0")
    assert idata.posterior_predictive["x"].dims == ("chain", "draw", "sequence", "time", "obs_dim")
    assert idata.observed_data["x"].dims == ("sequence", "time", "obs_dim")
    assert idata.log_likelihood["x"].dims == ("chain", "draw", "sequence", "time")
    assert idata.sample_stats["diverging"].dtype == bool
    np.testing.assert_array_equal(post["time_z"], np.arange(T + 1))
    np.testing.assert_array_equal(idata.log_likelihood["time"], np.arange(1, T + 1))
    np.testing.assert_array_equal(post["chain"], np.arange(C))
    np.testing.assert_array_equal(post["draw"], np.arange(D))
    np.testing.assert_array_equal(idata.observed_data["obs_dim"], np.arange(DX))
    x, mask = _gappy_x()
    observed = idata.observed_data["x"].values
    assert np.isnan(observed[~mask.numpy()]).all() and np.isfinite(observed[mask.numpy()]).all()
    assert post.attrs["inference_library"] == "alternators_ppl"


def test_to_inference_data_masks_observed_and_keeps_dtype():
    x = np.arange(B * T * DX, dtype=np.float32).reshape(B, T, DX)
    mask = np.ones((B, T), dtype=bool)
    mask[1, 2] = False
    idata = to_inference_data(x_obs=x, mask=mask, z=np.zeros((1, 4, B, T + 1, DZ), np.float32))
    observed = idata.observed_data["x"].values
    assert observed.dtype == np.float32 and idata.posterior["z"].dtype == np.float32
    assert np.isnan(observed[1, 2]).all() and not np.isnan(np.delete(observed, 1, 0)).any()
    assert set(idata.groups()) == {"posterior", "observed_data"}


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({}, ValueError, "nothing to convert"),
        ({"z": np.zeros((C, D, B, T + 1))}, ValueError, r"z must have shape \(C, D, B, T\+1, Dz\)"),
        ({"z": np.zeros((C, D, B, 1, DZ))}, ValueError, "T\\+1 >= 2"),
        (
            {"z": np.zeros((C, D, B, T + 1, DZ)), "log_likelihood": np.zeros((C + 1, D, B, T))},
            ValueError,
            r"log_likelihood has \(chain, draw\)",
        ),
        (
            {"z": np.zeros((C, D, B, T + 1, DZ)), "log_likelihood": np.zeros((C, D, B + 1, T))},
            ValueError,
            "log_likelihood has B = 4, but z has B = 3",
        ),
        (
            {"z": np.zeros((C, D, B, T + 1, DZ)), "x_pred": np.zeros((C, D, B, T + 2, DX))},
            ValueError,
            "x_pred has T",
        ),
        (
            {"x_pred": np.zeros((C, D, B, T, DX)), "x_obs": np.zeros((B, T, DX + 1))},
            ValueError,
            "x_obs has Dx",
        ),
        ({"x_obs": np.zeros((B, T))}, ValueError, r"x_obs must have shape \(B, T, Dx\)"),
        ({"x_obs": np.full((B, T, DX), np.inf)}, ValueError, "x_obs contains inf"),
        ({"log_likelihood": np.full((C, D, B, T), np.nan)}, ValueError, "log_likelihood contains"),
        ({"mask": np.ones((B, T), bool)}, ValueError, "mask needs x_obs"),
        ({"x_obs": np.zeros((B, T, DX)), "mask": np.ones((B, T))}, TypeError, "mask must be bool"),
        ({"x_obs": np.zeros((B, T, DX)), "mask": np.ones((B, 2), bool)}, ValueError, "mask has"),
        ({"params": {"z": np.zeros((C, D))}}, ValueError, "invalid name 'z'"),
        ({"params": {"a": np.zeros(C)}}, ValueError, r"params\['a'\] must have shape"),
        ({"sample_stats": [1, 2]}, TypeError, "sample_stats must be a dict"),
        ({"z": [[0.0]]}, TypeError, "z must be a torch.Tensor or numpy array"),
        ({"z": np.zeros((0, D, B, T + 1, DZ))}, ValueError, ">= 1 chain"),
    ],
)
def test_to_inference_data_bad_inputs(kwargs, error, match):
    with pytest.raises(error, match=match):
        to_inference_data(**kwargs)


def test_save_netcdf_round_trip_with_open_datatree(tmp_path):
    idata = _idata()
    path = save_netcdf(idata, tmp_path / "sub" / "d.nc")
    assert path == tmp_path / "sub" / "d.nc"
    with xr.open_datatree(path) as tree:
        assert set(tree.children) == {
            "posterior",
            "posterior_predictive",
            "observed_data",
            "log_likelihood",
            "sample_stats",
        }
        z = tree["posterior"]["z"]
        assert z.dims == ("chain", "draw", "sequence", "time_z", "latent")
        assert dict(z.sizes) == {
            "chain": C,
            "draw": D,
            "sequence": B,
            "time_z": T + 1,
            "latent": DZ,
        }
        np.testing.assert_array_equal(z.values, idata.posterior["z"].values)
        ll = tree["log_likelihood"]["x"]
        assert ll.dims == ("chain", "draw", "sequence", "time")
        np.testing.assert_array_equal(ll["time"].values, np.arange(1, T + 1))
        np.testing.assert_array_equal(ll.values, idata.log_likelihood["x"].values)
        pp = tree["posterior_predictive"]["x"]
        assert pp.dims == ("chain", "draw", "sequence", "time", "obs_dim")
        obs = tree["observed_data"]["x"]
        assert obs.dims == ("sequence", "time", "obs_dim")
        np.testing.assert_array_equal(obs.values, idata.observed_data["x"].values)  # NaNs too
        assert set(tree["sample_stats"].data_vars) == {"lp", "diverging"}
    assert [p.name for p in path.parent.iterdir()] == ["d.nc"]  # no temp files left

    with pytest.raises(DiagnosticsExistError, match="overwrite"):
        save_netcdf(idata, path)
    no_stats = _idata(with_stats=False)
    save_netcdf(no_stats, path, overwrite=True)
    with xr.open_datatree(path) as tree:
        assert "sample_stats" not in tree.children
    with pytest.raises(TypeError, match="idata must be an arviz.InferenceData"):
        save_netcdf({"z": 1}, tmp_path / "e.nc")


# --------------------------------------------------------------------------- calibration


def _gaussian_case(width: float = 1.0, n: int = 4000, s: int = 200, seed: int = 1):
    """Truth ~ N(mu, sd) per point, samples ~ N(mu, width * sd): calibrated when width = 1."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(n // 2, 2))
    sd = rng.uniform(0.2, 2.0, size=(n // 2, 2))
    truth = mu + sd * rng.standard_normal(mu.shape)
    samples = mu + width * sd * rng.standard_normal((s, *mu.shape))
    return samples, truth, sd


def test_pit_of_true_distribution_is_uniform_and_coverage_nominal():
    samples, truth, sd = _gaussian_case()
    pit = pit_values(samples, truth)
    assert pit.shape == truth.shape and pit.min() > 0 and pit.max() < 1
    assert stats.kstest(pit.ravel(), "uniform").statistic < 0.03
    table = coverage_table(samples, truth, levels=(0.5, 0.9))
    assert list(table) == [0.5, 0.9]
    for level, row in table.items():
        assert row["nominal"] == level and row["n"] == truth.size
        assert abs(row["coverage"] - level) < 0.025, row
        assert len(row["coverage_per_dim"]) == 2 and len(row["width_per_dim"]) == 2
    # the 90% interval of N(0, sd) is 2 * 1.645 sd wide on average
    assert table[0.9]["width"] == pytest.approx(2 * stats.norm.ppf(0.95) * sd.mean(), rel=0.05)


def test_pit_and_coverage_detect_overconfidence():
    samples, truth, _ = _gaussian_case(width=0.5)
    pit = pit_values(samples, truth)
    counts, _ = np.histogram(pit, bins=10, range=(0, 1))
    assert counts[0] + counts[-1] > 3 * (counts[4] + counts[5])  # U-shaped
    assert coverage_table(samples, truth, levels=0.9)[0.9]["coverage"] < 0.75


def test_pit_randomises_ties():
    """Integer-valued forecasts: without randomisation the PIT would pile up at rank ties."""
    rng = np.random.default_rng(2)
    truth = rng.poisson(2.0, size=3000).astype(float)
    samples = rng.poisson(2.0, size=(100, 3000)).astype(float)
    pit = pit_values(samples, truth, seed=3)
    assert stats.kstest(pit, "uniform").statistic < 0.03
    np.testing.assert_array_equal(pit, pit_values(samples, truth, seed=3))
    assert not np.array_equal(pit, pit_values(samples, truth, seed=4))


def test_coverage_table_chunks_past_the_quantile_limit(monkeypatch):
    samples, truth, _ = _gaussian_case(n=200, s=50)
    whole = coverage_table(samples, truth)
    monkeypatch.setattr(calibration, "_QUANTILE_LIMIT", 50 * 7)  # 7 elements per chunk
    assert coverage_table(samples, truth) == whole
    metric = metrics.interval_coverage(samples, truth, 0.9, over=(0, 1))
    assert whole[0.9]["coverage"] == pytest.approx(float(metric))


@pytest.mark.parametrize(
    "samples, truth, levels, error, match",
    [
        (np.zeros((5, 3)), np.zeros(4), (0.9,), ValueError, r"samples has shape"),
        (np.zeros((5, 3)), np.full(3, np.nan), (0.9,), ValueError, "truth contains NaN"),
        (np.zeros((5, 3)), np.zeros(3), (1.5,), ValueError, "level"),
        (np.zeros((5, 3)), np.zeros(3), (), ValueError, "levels"),
        ([1.0, 2.0], np.zeros(3), (0.9,), TypeError, "samples must be"),
    ],
)
def test_coverage_and_pit_bad_inputs(samples, truth, levels, error, match):
    with pytest.raises(error, match=match):
        coverage_table(samples, truth, levels)
    if levels == (0.9,):
        with pytest.raises(error, match=match):
            pit_values(samples, truth)


# --------------------------------------------------------------------------- ArviZ wrappers


def test_loo_over_time_returns_finite_elpd_per_point():
    idata = _idata()
    loo = loo_over_time(idata)
    for key in ("elpd_loo", "se", "p_loo", "lppd", "pareto_k_max"):
        assert np.isfinite(loo[key]), key
    assert loo["n_points"] == B * T and loo["n_samples"] == C * D
    assert loo["loo_i"].shape == (B, T) and loo["pareto_k"].shape == (B, T)
    assert loo["elpd_loo"] == pytest.approx(loo["loo_i"].sum())
    assert loo["lppd"] == pytest.approx(loo["elpd_loo"] + loo["p_loo"])
    # the fully missing step scores 0 in every draw: exact, no Pareto k
    assert loo["n_constant"] == 1 and loo["loo_i"][0, 2] == 0.0
    assert np.isnan(loo["pareto_k"][0, 2]) and np.isfinite(np.delete(loo["pareto_k"], 2, 1)).all()
    assert isinstance(loo["messages"], list)
    assert "NOT a forecasting metric" in loo_over_time.__doc__


def test_loo_over_time_matches_az_loo_on_complete_data():
    model = _model()
    x = torch.randn(B, T, DX, dtype=torch.float64)
    z = model.infer_latents(x, num_samples=C * D)
    log_lik = pointwise_log_likelihood(model, x, z).reshape(C, D, B, T)
    idata = to_inference_data(z=z.reshape(C, D, B, T + 1, DZ), log_likelihood=log_lik)
    loo = loo_over_time(idata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Pareto k notices, reported by both
        reference = az.loo(idata, pointwise=True, var_name="x")
    assert loo["n_constant"] == 0
    assert loo["elpd_loo"] == pytest.approx(float(reference.elpd_loo))
    assert loo["se"] == pytest.approx(float(reference.se))
    assert loo["p_loo"] == pytest.approx(float(reference.p_loo))
    np.testing.assert_allclose(loo["pareto_k"], reference.pareto_k.values)
    assert loo["lppd"] >= loo["elpd_loo"]
    iid = loo_over_time(az.InferenceData(log_likelihood=idata.log_likelihood), reff=1.0)
    assert np.isfinite(iid["elpd_loo"])


def test_loo_over_time_bad_inputs():
    idata = _idata()
    with pytest.raises(ValueError, match="no log_likelihood group"):
        loo_over_time(az.InferenceData(posterior=idata.posterior))
    with pytest.raises(ValueError, match=r"var_names \['y'\] not in log_likelihood"):
        loo_over_time(idata, var_name="y")
    with pytest.raises(ValueError, match="needs a posterior group"):
        loo_over_time(az.InferenceData(log_likelihood=idata.log_likelihood))
    flat = to_inference_data(z=np.zeros((C, D, B, T + 1, DZ)), log_likelihood=np.ones((C, D, B, T)))
    with pytest.raises(ValueError, match="same in every draw"):
        loo_over_time(flat)


def test_summary_table_wraps_az_summary():
    idata = _idata()
    table = summary_table(idata, ["z", "scale"], coords={"sequence": [0], "time_z": [1, T]})
    assert len(table) == 2 * DZ + 1
    assert {"mean", "sd", "ess_bulk", "ess_tail", "r_hat"} <= set(table.columns)
    assert "z[0, 1, 0]" in table.index and "scale" in table.index
    diag = summary_table(idata, ["w"], kind="diagnostics")
    assert list(diag.index) == ["w[0]", "w[1]"] and "mean" not in diag.columns
    with pytest.raises(ValueError, match="var_names"):
        summary_table(idata, "z")
    with pytest.raises(ValueError, match="coords"):
        summary_table(idata, ["z"], coords={"time_z": [T + 5]})


# --------------------------------------------------------------------------- figures


def test_figures_write_pngs(tmp_path):
    idata = _idata()
    samples, truth, _ = _gaussian_case(n=400, s=50)
    _png(plot_pit(pit_values(samples, truth), tmp_path / "f" / "pit.png"), 480, 720)
    out = plot_trace_and_rank(
        idata, ["z", "scale"], tmp_path / "tr.png", coords={"sequence": [1], "latent": [0]}
    )
    _png(out, 4 * 264, 1200)  # 6 rows // 2 variables = 3 z components + scale's one
    _png(plot_ppc(idata, tmp_path / "ppc.png", sequence=2), 3 * 300, 960)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "ppc.png", "tr.png"]


def test_rank_histogram_counts_ranks_of_each_chain_among_all_draws():
    rng = np.random.default_rng(0)
    same = rng.normal(size=(3, 100))
    fig = diagnostic_figures._trace_rank_figure([("same", same)])
    counts = [p.get_data().values for p in fig.axes[1].patches]
    assert len(counts) == 3 and all(c.sum() == 100 for c in counts)
    assert max(c.max() for c in counts) < 15  # 20 bins of 5 expected each
    shifted = same.copy()
    shifted[2] += 10.0  # chain 2 sits above the others: all its ranks are the top 100
    fig = diagnostic_figures._trace_rank_figure([("shifted", shifted)])
    top = fig.axes[1].patches[2].get_data().values
    assert top[:-7].sum() == 0 and top.sum() == 100


def test_figure_bad_inputs(tmp_path):
    idata = _idata()
    with pytest.raises(ValueError, match="pit values"):
        plot_pit(np.array([0.5, 1.5]), tmp_path / "p.png")
    with pytest.raises(ValueError, match="bins"):
        plot_pit(np.array([0.5]), tmp_path / "p.png", bins=0)
    with pytest.raises(ValueError, match=r"var_names \['nope'\] not in posterior"):
        plot_trace_and_rank(idata, ["nope"], tmp_path / "t.png")
    with pytest.raises(ValueError, match="coords"):
        plot_trace_and_rank(idata, ["z"], tmp_path / "t.png", coords={"latent": [7]})
    with pytest.raises(ValueError, match="sequence must lie"):
        plot_ppc(idata, tmp_path / "c.png", sequence=B)
    with pytest.raises(ValueError, match="no posterior_predictive group"):
        plot_ppc(az.InferenceData(posterior=idata.posterior), tmp_path / "c.png")
    with pytest.raises(TypeError, match="idata must be"):
        plot_ppc(idata.posterior, tmp_path / "c.png")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- run folders


def test_diagnose_run_refuses_incomplete_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="run folder not found"):
        diagnose_run(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        diagnose_run(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"job": "lorenz"}))
    with pytest.raises(FileNotFoundError, match="no forecaster checkpoint"):
        diagnose_run(tmp_path)
    ckpt = tmp_path / "checkpoints" / "forecaster" / "best.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"")
    (tmp_path / "config.json").write_text(json.dumps({"job": "compare"}))
    with pytest.raises(ValueError, match="not a lorenz run"):
        diagnose_run(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a lorenz run"):
        diagnose_run(tmp_path)
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        diagnose_run(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"job": "lorenz", "latent_dim": 8}))
    save_checkpoint(ckpt, Alternator(3, 4, hidden=(64, 64)))  # latent_dim 4, not 8
    with pytest.raises(ValueError, match="does not fit the model of config.json"):
        diagnose_run(tmp_path)
    assert not (tmp_path / "diagnostics.nc").exists()
    with pytest.raises(ValueError, match="R-hat needs >= 2 chains"):
        diagnose_run(tmp_path, num_chains=1)
    with pytest.raises(ValueError, match="num_draws must be a positive integer"):
        diagnose_run(tmp_path, num_draws=0)


# --------------------------------------------------------------------------- CUDA


@pytest.mark.gpu
def test_diagnostics_accept_cuda_tensors(tmp_path):
    model = _model()
    x, mask = _gappy_x()
    z = model.infer_latents(x, num_samples=C * D)
    cpu_ll = pointwise_log_likelihood(model, x, z).detach()
    model_cuda = model.to("cuda")
    cuda_ll = pointwise_log_likelihood(model_cuda, x.cuda(), z.cuda())
    assert cuda_ll.device.type == "cuda"
    torch.testing.assert_close(cuda_ll.cpu(), cpu_ll)

    idata = to_inference_data(
        z=z.cuda().reshape(C, D, B, T + 1, DZ),
        x_obs=x.cuda(),
        mask=mask.cuda(),
        log_likelihood=cuda_ll.reshape(C, D, B, T),
        sample_stats={"lp": torch.zeros(C, D, device="cuda")},
    )
    stored = idata.log_likelihood["x"].values.reshape(-1, B, T)
    np.testing.assert_array_equal(stored, cuda_ll.detach().cpu().numpy())
    save_netcdf(idata, tmp_path / "cuda.nc")
    assert np.isfinite(loo_over_time(idata)["elpd_loo"])

    samples, truth, _ = _gaussian_case(n=400, s=50)
    samples_cuda = torch.as_tensor(samples, device="cuda")
    truth_cuda = torch.as_tensor(truth, device="cuda")
    on_cuda, on_cpu = coverage_table(samples_cuda, truth_cuda), coverage_table(samples, truth)
    for level in (0.5, 0.9):
        assert on_cuda[level]["coverage"] == pytest.approx(on_cpu[level]["coverage"], abs=0.01)
        assert on_cuda[level]["width"] == pytest.approx(on_cpu[level]["width"])
    np.testing.assert_array_equal(pit_values(samples_cuda, truth_cuda), pit_values(samples, truth))
    np.testing.assert_array_equal(pit_values(samples_cuda, truth), pit_values(samples, truth))
