"""NUTS over an Alternator's latent path: exact linear-Gaussian oracle, convergence, SBC."""

import arviz as az
import jax
import numpy as np
import numpyro.distributions as dist
import pytest
import torch
from numpyro.infer import MCMC, NUTS

from alternators_ppl.inference.nuts import (
    GLOBAL_SITES,
    alternator_posterior_model,
    nuts_inference_data,
    run_nuts,
)
from alternators_ppl.models import Alternator
from alternators_ppl.models.alternator_jax import JaxAlternator
from alternators_ppl.networks import MLP

pytestmark = pytest.mark.usefixtures("jax_x64")


def linear_alternator(obs_dim=2, latent_dim=2, sigma_x=0.3, sigma_z=0.4, alpha=0.5, seed=0):
    """A torch Alternator with linear OTN/FTN (single-layer MLPs) of unit-scale weights."""
    gen = torch.Generator().manual_seed(seed)
    otn, ftn = MLP(latent_dim, obs_dim, hidden=()), MLP(obs_dim, latent_dim, hidden=())
    with torch.no_grad():
        for net in (otn, ftn):
            layer = net.layers[0]
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen))
            layer.bias.copy_(0.3 * torch.randn(layer.bias.shape, generator=gen))
    model = Alternator(obs_dim, latent_dim, sigma_x, sigma_z, alpha, otn=otn, ftn=ftn)
    return model.double()


def exact_path_posterior(model, x):
    """Exact p(z_{0:T} | x_{1:T}) of a linear Alternator, one sequence x (T, Dx): mean and sd
    (T+1, Dz), by writing the joint of v = (z_0, x_1, z_1, ..., x_T, z_T) as
    v = A v + c + S e, e ~ N(0, I), and conditioning the Gaussian on the x-blocks."""
    steps, dx = x.shape
    dz = model.latent_dim
    sx, sz, alpha = model.sigma_x, model.sigma_z, model.alpha_schedule(steps).numpy()
    otn, ftn = model.otn.layers[0], model.ftn.layers[0]
    f_w, f_b = otn.weight.detach().numpy(), otn.bias.detach().numpy()  # f(z) = f_w z + f_b
    g_w, g_b = ftn.weight.detach().numpy(), ftn.bias.detach().numpy()
    n = dz + steps * (dx + dz)
    a, c, s = np.zeros((n, n)), np.zeros(n), np.zeros(n)
    z_idx = [np.arange(dz)]
    x_idx = []
    s[:dz] = 1.0
    for t in range(steps):
        xi = z_idx[-1][-1] + 1 + np.arange(dx)
        zi = xi[-1] + 1 + np.arange(dz)
        root = np.sqrt(1 - sx**2)
        a[np.ix_(xi, z_idx[-1])] = root * f_w
        c[xi], s[xi] = root * f_b, sx
        a[np.ix_(zi, xi)] = np.sqrt(alpha[t]) * g_w
        a[np.ix_(zi, z_idx[-1])] = np.sqrt(1 - alpha[t] - sz**2) * np.eye(dz)
        c[zi], s[zi] = np.sqrt(alpha[t]) * g_b, sz
        x_idx.append(xi)
        z_idx.append(zi)
    solve = np.linalg.inv(np.eye(n) - a)
    mean, cov = solve @ c, solve @ np.diag(s**2) @ solve.T
    zs, xs = np.concatenate(z_idx), np.concatenate(x_idx)
    gain = cov[np.ix_(zs, xs)] @ np.linalg.inv(cov[np.ix_(xs, xs)])
    post_mean = mean[zs] + gain @ (x.reshape(-1) - mean[xs])
    post_cov = cov[np.ix_(zs, zs)] - gain @ cov[np.ix_(xs, zs)]
    return post_mean.reshape(steps + 1, dz), np.sqrt(np.diag(post_cov)).reshape(steps + 1, dz)


def z_draws(mcmc):
    return np.asarray(mcmc.get_samples(group_by_chain=True)["z"])  # (C, S, B, T+1, Dz)


# ---------------------------------------------------------------------- exact oracle
def test_linear_alternator_path_posterior_matches_exact_gaussian():
    model = linear_alternator()
    x = model.sample(2, 8)["x"]  # (B=2, T=8, Dx=2)
    jax_model, params = JaxAlternator.from_torch(model)
    mcmc = run_nuts(
        jax_model, params, x.numpy(), num_warmup=300, num_samples=500, learn_globals=False
    )
    draws = z_draws(mcmc)
    assert draws.shape == (4, 500, 2, 9, 2)
    ess = az.ess(az.convert_to_dataset(draws)).x.values  # bulk ESS per element (B, T+1, Dz)
    mean, sd = draws.mean((0, 1)), draws.std((0, 1))
    for b in range(2):
        exact_mean, exact_sd = exact_path_posterior(model, x[b].numpy())
        assert exact_sd.mean() < 0.6  # the data are informative: not the N(0, 1) prior
        # |error| in Monte Carlo standard errors: mean ~ sd/sqrt(ESS), sd ~ sd/sqrt(2 ESS)
        z_mean = (mean[b] - exact_mean) / (exact_sd / np.sqrt(ess[b]))
        z_sd = (sd[b] / exact_sd - 1) * np.sqrt(2 * ess[b])
        assert np.abs(z_mean).max() < 4.5, np.abs(z_mean).max()
        assert np.abs(z_sd).max() < 4.5, np.abs(z_sd).max()
        # the check has power: a 20-25% error in alpha or sigma_z moves the exact posterior
        # mean by more than the tolerance
        for wrong in (linear_alternator(alpha=0.4), linear_alternator(sigma_z=0.5)):
            wrong_mean, _ = exact_path_posterior(wrong, x[b].numpy())
            assert np.abs((wrong_mean - exact_mean) / (exact_sd / np.sqrt(ess[b]))).max() > 4.5


# ---------------------------------------------------------------------- convergence
def test_nuts_globals_converge_rhat_and_ess():
    jax.config.update("jax_enable_x64", False)  # JAX's default float32 (the fixture restores)
    torch.manual_seed(1)
    model = Alternator(2, 1, sigma_x=0.3, sigma_z=0.2, alpha=0.4, hidden=(8,)).double()
    x = model.sample(1, 25)["x"].numpy()
    jax_model, params = JaxAlternator.from_torch(model)
    mcmc = run_nuts(jax_model, params, x, num_chains=4, num_warmup=300, num_samples=300)
    idata = nuts_inference_data(mcmc)
    summary = az.summary(idata, var_names=list(GLOBAL_SITES), round_to="none")
    assert (summary["r_hat"] < 1.01).all(), summary
    assert (summary["ess_bulk"] > 400).all(), summary
    assert int(idata.sample_stats.diverging.sum()) == 0
    assert (az.bfmi(idata) > 0.3).all()
    # the posterior of sigma_x concentrates around the truth (it is well identified)
    assert abs(summary.loc["sigma_x", "mean"] - 0.3) < 3 * summary.loc["sigma_x", "sd"]
    alpha, sigma_z = idata.posterior["alpha"], idata.posterior["sigma_z"]
    assert float((alpha + sigma_z**2).max()) < 1.0
    # named dims
    assert idata.posterior["z"].dims == ("chain", "draw", "sequence", "time_z", "latent")
    assert idata.posterior["z"].shape == (4, 300, 1, 26, 1)
    assert idata.posterior["z"].dtype == np.float32
    assert idata.observed_data["x"].dims == ("sequence", "time", "obs")
    assert idata.log_likelihood["x"].dims == ("chain", "draw", "sequence", "time")
    assert list(idata.posterior["time_z"].values) == list(range(26))


# ---------------------------------------------------------------------- calibration
def test_simulation_based_calibration_of_latent_path():
    """40 sequences from a known Alternator are 40 independent data sets: with the networks and
    globals fixed the path posterior factorises over sequences, so one NUTS run samples all
    40 posteriors. The central 90% (50%) intervals must cover the true path 85-95% (40-60%)."""
    torch.manual_seed(2)
    model = Alternator(2, 1, sigma_x=0.3, sigma_z=0.3, alpha=0.5, hidden=(8,)).double()
    with torch.no_grad():
        model.otn.layers[-1].weight.mul_(3.0)  # x carries more information about z
    data = model.sample(40, 20)  # the torch sampler: x (40, 20, 2), z (40, 21, 1)
    jax_model, params = JaxAlternator.from_torch(model)
    mcmc = run_nuts(
        jax_model,
        params,
        data["x"].numpy(),
        num_chains=2,
        num_warmup=300,
        num_samples=300,
        learn_globals=False,
    )
    draws = z_draws(mcmc).reshape(-1, 40, 21, 1)
    truth = data["z"].numpy()
    coverage = {}
    for level in (0.9, 0.5):
        low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0)
        coverage[level] = float(((low <= truth) & (truth <= high)).mean())
    assert 0.85 <= coverage[0.9] <= 0.95, coverage
    assert 0.40 <= coverage[0.5] <= 0.60, coverage
    # the intervals are informative: narrower than the spread of the true paths
    assert draws.std(0).mean() < 0.6 * truth.std(), (draws.std(0).mean(), truth.std())


# ---------------------------------------------------------------------- bad input
def test_bad_inputs_raise_named_errors():
    model = linear_alternator()
    jax_model, params = JaxAlternator.from_torch(model)
    x = np.zeros((1, 5, 2))
    with pytest.raises(TypeError, match="jax_model must be a JaxAlternator"):
        run_nuts(model, params, x)
    with pytest.raises(ValueError, match=r"x has shape \(5, 2\), expected \(B, T, Dx\)"):
        run_nuts(jax_model, params, x[0])
    with pytest.raises(ValueError, match=r"x has shape \(1, 5, 3\).*Dx = 2"):
        run_nuts(jax_model, params, np.zeros((1, 5, 3)))
    with pytest.raises(TypeError, match="x must have a floating-point dtype"):
        run_nuts(jax_model, params, np.zeros((1, 5, 2), dtype=int))
    with pytest.raises(ValueError, match="NaN or inf.*fully observed"):
        run_nuts(jax_model, params, np.where(np.eye(5, 2)[None] > 0, np.nan, 0.0))
    with pytest.raises(TypeError, match="params must be a mapping"):
        run_nuts(jax_model, {"otn": params["otn"]}, x)
    _, other = JaxAlternator.from_torch(linear_alternator(obs_dim=3))
    with pytest.raises(ValueError, match=r"params\['otn'\] maps 2 -> 3 dims, expected 2 -> 2"):
        run_nuts(jax_model, other, x)
    with pytest.raises(ValueError, match="num_chains must be a positive integer"):
        run_nuts(jax_model, params, x, num_chains=0)
    with pytest.raises(ValueError, match="num_warmup must be a positive integer"):
        run_nuts(jax_model, params, x, num_warmup=1.5)
    with pytest.raises(ValueError, match="chain_method must be one of"):
        run_nuts(jax_model, params, x, chain_method="threads")
    with pytest.raises(ValueError, match="'parallel' needs 64 devices"):
        run_nuts(jax_model, params, x, num_chains=64, chain_method="parallel")
    with pytest.raises(TypeError, match="learn_globals must be a bool"):
        run_nuts(jax_model, params, x, learn_globals="yes")
    with pytest.raises(ValueError, match=r"unknown keys \['alpha'\]"):
        run_nuts(jax_model, params, x, priors={"alpha": dist.Beta(2.0, 2.0)})
    with pytest.raises(ValueError, match=r"priors\['sigma_z'\] must have support inside"):
        run_nuts(jax_model, params, x, priors={"sigma_z": dist.LogNormal(0.0, 1.0)})
    with pytest.raises(TypeError, match=r"priors\['sigma_x'\] must be a numpyro Distribution"):
        run_nuts(jax_model, params, x, priors={"sigma_x": 0.3})
    with pytest.raises(ValueError, match=r"priors\['sigma_x'\] must be scalar"):
        run_nuts(jax_model, params, x, priors={"sigma_x": dist.Beta(np.ones(2), 2.0)})
    with pytest.raises(TypeError, match="mcmc must be a numpyro.infer.MCMC"):
        nuts_inference_data({"z": x})
    unrun = MCMC(NUTS(alternator_posterior_model), num_warmup=1, num_samples=1)
    with pytest.raises(ValueError, match="mcmc has no samples yet"):
        nuts_inference_data(unrun)
    with pytest.raises(ValueError, match="alpha schedule has 3"):
        schedule_model = linear_alternator(alpha=[0.2, 0.3, 0.4])
        run_nuts(*JaxAlternator.from_torch(schedule_model), x, learn_globals=False)
