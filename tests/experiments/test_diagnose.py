"""``alternators-ppl diagnose RUN_DIR``: files written, their content, refusals and errors.

One quick lorenz run (module-scoped) is diagnosed once with few draws; tests that change a run
folder work on a copy.
"""

from __future__ import annotations

import io
import json
import shutil
from contextlib import redirect_stdout

import numpy as np
import pytest
import torch
import xarray as xr

from alternators_ppl.cli import main
from alternators_ppl.data.tasks import lorenz_forecasting_task
from alternators_ppl.experiments.lorenz import LorenzJobConfig, run_lorenz_job
from alternators_ppl.inference import load_checkpoint
from alternators_ppl.models import Alternator

CHAINS, DRAWS = 2, 40
CFG = LorenzJobConfig.quick()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ERROR_PREFIX = "alternators-ppl: error: "
GROUPS = {"posterior", "posterior_predictive", "observed_data", "log_likelihood", "sample_stats"}


def _args(run, *extra):
    return ["diagnose", str(run), "--chains", str(CHAINS), "--draws", str(DRAWS), *extra]


def _status(argv) -> int:
    """Exit status of ``main(argv)``, whether it returns or exits (argparse exits)."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
    assert lines[0].startswith(ERROR_PREFIX), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def lorenz_run(tmp_path_factory):
    run, _ = run_lorenz_job(CFG, tmp_path_factory.mktemp("runs"), "run")
    return run


@pytest.fixture(scope="module")
def diagnosed(lorenz_run):
    """The quick run diagnosed once: (exit status, stdout, run folder)."""
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        status = main(_args(lorenz_run))
    return status, stdout.getvalue(), lorenz_run


def _copy(run, tmp_path):
    return shutil.copytree(run, tmp_path / "copy")


# ---------------------------------------------------------------------------- a diagnosed run


def test_diagnose_prints_summary_and_writes_files(diagnosed):
    status, out, run = diagnosed
    assert status == 0
    lines = out.rstrip().splitlines()
    assert lines[0].startswith(f"diagnostics of {CHAINS} x {DRAWS} latent paths")
    assert "not a forecasting metric" in out and "coverage" in out
    assert f"(across {CHAINS} independent particle systems)" in out
    assert lines[-1] == f"run folder: {run}"
    for name in ("pit.png", "trace_rank.png", "ppc.png"):
        assert (run / "figures" / name).read_bytes()[:8] == PNG_SIGNATURE, name
    assert (run / "diagnostics.md").is_file() and (run / "diagnostics.nc").is_file()
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]


def test_netcdf_has_the_groups_arviz_1_expects(diagnosed):
    _, _, run = diagnosed
    b, t = CFG.num_test, CFG.num_steps  # quick: 4 test sequences (< the default 8 used)
    with xr.open_datatree(run / "diagnostics.nc") as tree:
        assert set(tree.children) == GROUPS
        z = tree["posterior"]["z"]
        assert z.dims == ("chain", "draw", "sequence", "time_z", "latent")
        assert z.shape == (CHAINS, DRAWS, b, t + 1, CFG.latent_dim)
        pp = tree["posterior_predictive"]["x"]
        assert pp.dims == ("chain", "draw", "sequence", "time", "obs_dim")
        assert pp.shape == (CHAINS, DRAWS, b, t, 3)
        assert tree["observed_data"]["x"].shape == (b, t, 3)
        assert tree["log_likelihood"]["x"].dims == ("chain", "draw", "sequence", "time")
        assert tree["sample_stats"]["lp"].dims == ("chain", "draw")
        np.testing.assert_array_equal(tree["log_likelihood"]["time"], np.arange(1, t + 1))
        np.testing.assert_array_equal(tree["posterior"]["time_z"], np.arange(t + 1))
        assert tree["posterior"].attrs["inference_library"] == "alternators_ppl"


def test_netcdf_log_likelihood_is_the_models_and_observed_is_the_test_split(diagnosed):
    _, _, run = diagnosed
    model = Alternator(
        3,
        CFG.latent_dim,
        sigma_x=CFG.sigma_x,
        sigma_z=CFG.sigma_z,
        alpha=CFG.alpha,
        hidden=(CFG.hidden, CFG.hidden),
    )
    load_checkpoint(run / "checkpoints" / "forecaster" / "best.pt", model, restore_rng=False)
    task = lorenz_forecasting_task(
        num_train=CFG.num_train,
        num_val=CFG.num_val,
        num_test=CFG.num_test,
        num_steps=CFG.num_steps,
        dt=CFG.dt,
        noise_std=CFG.noise_std,
        seed=CFG.seed,
    )
    with xr.open_datatree(run / "diagnostics.nc") as tree:
        z = torch.as_tensor(tree["posterior"]["z"].values)
        stored = tree["log_likelihood"]["x"].values
        observed = tree["observed_data"]["x"].values
        x_pred = tree["posterior_predictive"]["x"].values
    np.testing.assert_array_equal(observed, task.x_test)
    # diagnose scores the calibrated forecaster: the trained mean (calibration keeps it) with
    # the noise of calibration.json, written out here from the trained weights
    noise = json.loads((run / "calibration.json").read_text())["noise"]
    sigma_x = torch.tensor(noise["sigma_x"] if noise else [CFG.sigma_x] * 3, dtype=torch.float32)
    assert noise is None or not np.allclose(noise["sigma_x"], CFG.sigma_x)  # it did calibrate
    with torch.no_grad():
        loc = model.x_loc(z[..., :-1, :])
        x = torch.as_tensor(task.x_test, dtype=torch.float32)
        log_lik = torch.distributions.Normal(loc, sigma_x).log_prob(x).sum(-1).numpy()
    np.testing.assert_allclose(stored, log_lik, rtol=1e-5, atol=1e-4)
    # one-step predictive draws scatter around the OTN mean with sd sigma_x (per dimension)
    spread = (x_pred - loc.numpy()).reshape(-1, 3).std(0)
    np.testing.assert_allclose(spread, sigma_x.numpy(), rtol=0.05)


def test_markdown_report_holds_every_section_and_caveat(diagnosed):
    _, _, run = diagnosed
    text = (run / "diagnostics.md").read_text()
    for heading in (
        "## Posterior summary of z",
        "## ESS and R-hat",
        "## PSIS-LOO over time points",
        "## One-step predictive: interval coverage",
        "## One-step predictive: PIT histogram",
    ):
        assert heading in text, heading
    assert "independent particle system" in text and "not a forecasting metric" in text
    assert "exact independent draws" not in text  # that is the ancestral sampler's caveat
    assert "| 50% |" in text and "| 90% |" in text
    assert "figures/pit.png" in text


# ---------------------------------------------------------------------------- refusals


def test_existing_diagnostics_need_overwrite_and_rerun_is_reproducible(diagnosed, tmp_path, capsys):
    _, _, run = diagnosed
    copy = _copy(run, tmp_path)
    before = (copy / "diagnostics.nc").read_bytes()
    assert _status(_args(copy)) == 2
    out, err = capsys.readouterr()
    line = _one_error_line(err)
    assert "diagnostics.nc exists" in line and "--overwrite" in line
    assert out == "" and (copy / "diagnostics.nc").read_bytes() == before

    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    assert _status(_args(copy, "--overwrite")) == 0
    assert torch.equal(torch.rand(3), expected_next)  # the caller's random stream is untouched
    with (
        xr.open_datatree(run / "diagnostics.nc") as a,
        xr.open_datatree(copy / "diagnostics.nc") as b,
    ):
        for group, var in (("posterior", "z"), ("log_likelihood", "x")):
            np.testing.assert_array_equal(a[group][var].values, b[group][var].values)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: root / "absent", "run folder not found"),
        (lambda root: root, "no config.json"),
    ],
    ids=["missing-folder", "not-a-run"],
)
def test_missing_run_folder_is_one_line_error(tmp_path, capsys, make, message):
    assert _status(_args(make(tmp_path))) == 2
    out, err = capsys.readouterr()
    assert message in _one_error_line(err) and out == ""


def test_run_without_checkpoint_is_one_line_error(diagnosed, tmp_path, capsys):
    copy = _copy(diagnosed[2], tmp_path)
    shutil.rmtree(copy / "checkpoints")
    (copy / "diagnostics.nc").unlink()
    assert _status(_args(copy)) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "no forecaster checkpoint" in line
    assert not (copy / "diagnostics.nc").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--chains", "0"], "--chains: must be a positive integer"),
        (["--draws", "x"], "--draws: must be a positive integer"),
        (["--chains", "1"], "R-hat needs >= 2 chains"),
        (["--device", "nonsense"], ""),
    ],
)
def test_bad_arguments_are_one_line_errors(diagnosed, capsys, extra, message):
    run = diagnosed[2]
    before = (run / "diagnostics.nc").stat().st_mtime_ns
    assert _status([*_args(run), "--overwrite", *extra]) == 2
    assert message in _one_error_line(capsys.readouterr().err)
    assert (run / "diagnostics.nc").stat().st_mtime_ns == before


def test_cuda_without_cuda_is_one_line_error(diagnosed, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available")
    assert _status([*_args(diagnosed[2]), "--overwrite", "--device", "cuda"]) == 2
    assert "CUDA is not available" in _one_error_line(capsys.readouterr().err)


@pytest.mark.gpu
def test_diagnose_on_cuda(diagnosed, tmp_path):
    copy = _copy(diagnosed[2], tmp_path)
    assert _status(_args(copy, "--overwrite", "--device", "cuda")) == 0
    with xr.open_datatree(copy / "diagnostics.nc") as tree:
        assert np.isfinite(tree["log_likelihood"]["x"].values).all()
        assert set(tree.children) == GROUPS


def test_r_hat_across_particle_systems_can_fail(lorenz_run, tmp_path):
    """With 2 particles per system and no MCMC sweeps the systems disagree and R-hat says so;
    the sweeps (default) and 500 particles bring it down (R-hat of independent ancestral draws
    could never fail)."""
    from alternators_ppl.experiments.diagnose import diagnose_run
    from alternators_ppl.models.smc_moves import DIAGNOSE_SWEEPS

    def rhat_max(particles: int, folder: str, sweeps: int) -> float:
        run = shutil.copytree(lorenz_run, tmp_path / folder)
        result = diagnose_run(
            run,
            num_chains=4,
            num_draws=20,
            overwrite=True,
            num_sequences=2,
            num_particles=particles,
            mcmc_sweeps=sweeps,
        )
        assert result["sampler"] == "smc" and result["mcmc_sweeps"] == sweeps
        text = (run / "diagnostics.md").read_text()
        assert f"{particles} particles per system, {sweeps} sweeps" in text
        return result["rhat"][2]

    few = rhat_max(2, "few", 0)
    assert few > 1.2
    assert rhat_max(2, "few-swept", DIAGNOSE_SWEEPS) < few
    assert rhat_max(500, "many", 0) < few


def test_particle_gibbs_sampler(lorenz_run, tmp_path):
    from alternators_ppl.experiments.diagnose import diagnose_run

    run = shutil.copytree(lorenz_run, tmp_path / "pg")
    result = diagnose_run(
        run, num_chains=2, num_draws=8, num_sequences=1, num_particles=4,
        sampler="particle-gibbs", overwrite=True,
    )  # fmt: skip
    assert result["sampler"] == "particle-gibbs" and result["num_particles"] == 4
    assert "particle Gibbs with ancestor sampling" in (run / "diagnostics.md").read_text()
    with xr.open_datatree(run / "diagnostics.nc") as tree:
        assert tree["posterior"]["z"].shape[:2] == (2, 8)
        assert "particle Gibbs" in tree["posterior"].attrs["sampler"]
