"""NUTS over an Alternator's latent path (and its global parameters) in NumPyro.

The networks are fixed (trained weights are constants); what NUTS samples is

- the latent path z_{0:T}, written non-centred: standardised innovations ``eps`` (B, T+1, Dz)
  ~ N(0, I) and, by ``jax.lax.scan``,

      z_0 = eps_0,   z_t = sqrt(alpha_t) g(x_t) + sqrt(1 - alpha_t - sigma_z^2) z_{t-1}
                           + sigma_z eps_t,

  exposed as the deterministic site ``"z"`` (B, T+1, Dz);
- with ``learn_globals=True``, the scalars sigma_x, sigma_z and a constant alpha, with priors on
  the unit interval (defaults: sigma_x ~ Beta(2, 5), sigma_z ~ Beta(2, 8),
  alpha = (1 - sigma_z^2) u with u ~ Beta(2, 2)), so 0 < alpha and alpha + sigma_z^2 < 1 always.
  sigma_z lies in (0, 1) because alpha > 0 and alpha + sigma_z^2 < 1 force sigma_z^2 < 1.

The observations are x_t ~ N(sqrt(1 - sigma_x^2) f(z_{t-1}), sigma_x^2 I), t = 1..T. x must be
**fully observed** (no NaN, no mask): the FTN reads the data x_t, so z given the innovations is
a deterministic function of x and no missing-x sites are needed. With ``learn_globals=False``
the hyperparameters (and any alpha schedule) of ``jax_model`` are used.

The non-centred form mixes well for short, weakly informative sequences (the usual case for
one Alternator sequence); with much data, sigma_z and eps become correlated and mix slower (e.g.
R-hat 1.025 for sigma_z with 8 x 60 steps, 2 chains of 300): run longer chains there.

Shapes are batch-first: x (B, T, Dx), z and eps (B, T+1, Dz). :func:`run_nuts` returns the
``numpyro.infer.MCMC`` object; :func:`nuts_inference_data` turns it into ArviZ
``InferenceData`` with named dims (chain, draw, sequence, time_z, latent).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.infer import MCMC, NUTS

from alternators_ppl.models.alternator_jax import JaxAlternator, linear_recurrence

__all__ = [
    "CHAIN_METHODS",
    "GLOBAL_SITES",
    "PRIOR_SITES",
    "alternator_posterior_model",
    "default_priors",
    "nuts_inference_data",
    "run_nuts",
]

CHAIN_METHODS = ("sequential", "vectorized", "parallel")
#: prior keys: u is alpha / (1 - sigma_z^2)
PRIOR_SITES = ("sigma_x", "sigma_z", "alpha_u")
#: the global sites of the posterior (``alpha`` is deterministic, built from ``alpha_u``)
GLOBAL_SITES = ("sigma_x", "sigma_z", "alpha")


def default_priors() -> dict[str, dist.Distribution]:
    """Default priors: sigma_x ~ Beta(2, 5), sigma_z ~ Beta(2, 8), alpha_u ~ Beta(2, 2)."""
    return {
        "sigma_x": dist.Beta(2.0, 5.0),
        "sigma_z": dist.Beta(2.0, 8.0),
        "alpha_u": dist.Beta(2.0, 2.0),
    }


# ---------------------------------------------------------------------- input checks
def _check_priors(priors) -> dict[str, dist.Distribution]:
    merged = default_priors()
    if priors is None:
        return merged
    if not isinstance(priors, Mapping):
        raise TypeError(f"priors must be a mapping of site name to distribution, got {priors!r}")
    unknown = sorted(set(priors) - set(PRIOR_SITES))
    if unknown:
        raise ValueError(f"priors has unknown keys {unknown}; expected a subset of {PRIOR_SITES}")
    for name, prior in priors.items():
        if not isinstance(prior, dist.Distribution):
            raise TypeError(
                f"priors[{name!r}] must be a numpyro Distribution, got {type(prior).__name__}"
            )
        if prior.batch_shape != () or prior.event_shape != ():
            raise ValueError(
                f"priors[{name!r}] must be scalar, got batch_shape {prior.batch_shape} and "
                f"event_shape {prior.event_shape}"
            )
        support = prior.support
        inside = support is constraints.unit_interval or (
            isinstance(support, constraints.interval)
            and float(support.lower_bound) >= 0.0
            and float(support.upper_bound) <= 1.0
        )
        if not inside:
            raise ValueError(
                f"priors[{name!r}] must have support inside (0, 1) (e.g. a Beta), got "
                f"{type(prior).__name__} with support {support}"
            )
        merged[name] = prior
    return merged


def _check_params(jax_model: JaxAlternator, params) -> None:
    if not isinstance(jax_model, JaxAlternator):
        raise TypeError(f"jax_model must be a JaxAlternator, got {type(jax_model).__name__}")
    if not isinstance(params, Mapping) or not {"otn", "ftn"} <= set(params):
        raise TypeError(
            "params must be a mapping with 'otn' and 'ftn' layer lists "
            "(JaxAlternator.from_torch returns it)"
        )
    dims = {"otn": (jax_model.latent_dim, jax_model.obs_dim)}
    dims["ftn"] = (jax_model.obs_dim, jax_model.latent_dim)
    for name, (d_in, d_out) in dims.items():
        layers = params[name]
        try:
            shape = (int(layers[0]["w"].shape[0]), int(layers[-1]["w"].shape[1]))
        except (TypeError, KeyError, IndexError, AttributeError) as error:
            raise TypeError(
                f"params[{name!r}] must be a non-empty list of {{'w', 'b'}} layers"
            ) from error
        if shape != (d_in, d_out):
            raise ValueError(
                f"params[{name!r}] maps {shape[0]} -> {shape[1]} dims, expected {d_in} -> {d_out}"
            )


def _check_data(jax_model: JaxAlternator, x) -> jax.Array:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray | jax.Array):
        raise TypeError(f"x must be a numpy or JAX array, got {type(x).__name__}")
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x must have a floating-point dtype, got {x.dtype}")
    if x.ndim != 3 or x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] != jax_model.obs_dim:
        raise ValueError(
            f"x has shape {tuple(x.shape)}, expected (B, T, Dx) with B, T >= 1 and "
            f"Dx = {jax_model.obs_dim}"
        )
    if not isinstance(x, jax.core.Tracer) and not np.isfinite(np.asarray(x)).all():
        raise ValueError(
            f"x (shape {tuple(x.shape)}) has NaN or inf entries; NUTS here needs fully observed x"
        )
    return x


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------- the model
def alternator_posterior_model(
    jax_model: JaxAlternator,
    params,
    x,
    learn_globals: bool = True,
    priors: Mapping[str, dist.Distribution] | None = None,
) -> jax.Array:
    """NumPyro model of p(z_{0:T}, globals | x) with the networks fixed; returns z (B, T+1, Dz).

    Sites: ``sigma_x``, ``sigma_z``, ``alpha_u`` (scalars, only when ``learn_globals``) and the
    deterministic ``alpha``; ``eps`` (B, T+1, Dz) ~ N(0, I) in plates ``sequence`` x ``time_z``;
    deterministic ``z`` (B, T+1, Dz) built from ``eps`` by ``lax.scan``; observed ``x``
    (B, T, Dx) in plates ``sequence`` x ``time`` (so its log-likelihood is per time step).
    ``priors`` overrides entries of :func:`default_priors` (keys ``sigma_x``, ``sigma_z``,
    ``alpha_u``; supports inside (0, 1)). A learned alpha is constant over time; with
    ``learn_globals=False`` the sigma_x, sigma_z and alpha (schedule) of ``jax_model`` are used.
    x (B, T, Dx) must be finite (fully observed).
    """
    _check_params(jax_model, params)
    x = _check_data(jax_model, x)
    if not isinstance(learn_globals, bool):
        raise TypeError(f"learn_globals must be a bool, got {type(learn_globals).__name__}")
    priors = _check_priors(priors)
    batch, steps, _ = x.shape
    dtype = x.dtype

    if learn_globals:
        sigma_x = numpyro.sample("sigma_x", priors["sigma_x"])
        sigma_z = numpyro.sample("sigma_z", priors["sigma_z"])
        alpha_u = numpyro.sample("alpha_u", priors["alpha_u"])
        alpha = numpyro.deterministic("alpha", (1.0 - sigma_z**2) * alpha_u)
        alpha = jnp.broadcast_to(alpha, (steps,)).astype(dtype)
    else:
        sigma_x, sigma_z = jax_model.sigma_x, jax_model.sigma_z
        alpha = jax_model.alpha_schedule(steps).astype(dtype)

    with (
        numpyro.plate("sequence", batch, dim=-2),
        numpyro.plate("time_z", steps + 1, dim=-1),
    ):
        zeros = jnp.zeros((batch, steps + 1, jax_model.latent_dim), dtype)
        eps = numpyro.sample("eps", dist.Normal(zeros, 1.0).to_event(1))

    # z_t = decay_t z_{t-1} + drive_t, with the FTN read at the data x_t (one batched call)
    drive = jnp.sqrt(alpha)[:, None] * jax_model.ftn(params, x) + sigma_z * eps[:, 1:]
    decay = jnp.sqrt(1.0 - alpha - sigma_z**2)
    z = numpyro.deterministic("z", linear_recurrence(eps[:, 0], decay, drive))

    x_loc = jnp.sqrt(1.0 - sigma_x**2) * jax_model.otn(params, z[:, :-1])
    with numpyro.plate("sequence", batch, dim=-2), numpyro.plate("time", steps, dim=-1):
        numpyro.sample("x", dist.Normal(x_loc, sigma_x).to_event(1), obs=x)
    return z


def run_nuts(
    jax_model: JaxAlternator,
    params,
    x,
    num_chains: int = 4,
    num_warmup: int = 500,
    num_samples: int = 500,
    seed: int = 0,
    learn_globals: bool = True,
    priors: Mapping[str, dist.Distribution] | None = None,
    chain_method: str = "vectorized",
    target_accept_prob: float = 0.8,
    dense_mass: bool = False,
) -> MCMC:
    """Run NUTS on :func:`alternator_posterior_model` and return the ``numpyro`` ``MCMC``.

    x (B, T, Dx) fully observed. ``chain_method`` is ``"vectorized"`` (default: all chains in
    one program, no extra devices needed), ``"sequential"``, or ``"parallel"`` (needs
    ``jax.local_device_count() >= num_chains``, e.g. via ``numpyro.set_host_device_count``
    before JAX starts). ``mcmc.get_samples(group_by_chain=True)["z"]`` has shape
    (chains, draws, B, T+1, Dz); ``extra_fields`` ``diverging``, ``energy`` and ``num_steps``
    are collected. Each call builds and compiles a fresh sampler (seconds; numpyro re-traces
    per run, and re-running a vectorized ``MCMC`` fails in numpyro 0.22), so batch independent
    sequences into one x where the model allows (fixed globals: the path posterior factorises
    over sequences). Computes in x's dtype (float32 unless ``jax_enable_x64``). Prints nothing.
    """
    _check_params(jax_model, params)
    x = _check_data(jax_model, x)
    num_chains = _positive_int(num_chains, "num_chains")
    num_warmup = _positive_int(num_warmup, "num_warmup")
    num_samples = _positive_int(num_samples, "num_samples")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if chain_method not in CHAIN_METHODS:
        raise ValueError(f"chain_method must be one of {CHAIN_METHODS}, got {chain_method!r}")
    if chain_method == "parallel" and jax.local_device_count() < num_chains:
        raise ValueError(
            f"chain_method='parallel' needs {num_chains} devices, JAX has "
            f"{jax.local_device_count()}; use 'vectorized' or numpyro.set_host_device_count"
        )
    if not 0.0 < float(target_accept_prob) < 1.0:
        raise ValueError(f"target_accept_prob must lie in (0, 1), got {target_accept_prob}")
    if not isinstance(learn_globals, bool):
        raise TypeError(f"learn_globals must be a bool, got {type(learn_globals).__name__}")
    priors = _check_priors(priors)
    if not learn_globals:
        jax_model.alpha_schedule(x.shape[1])  # a schedule shorter than T raises

    model = partial(
        _posterior_model_x, jax_model, params, learn_globals=learn_globals, priors=priors
    )
    kernel = NUTS(model, target_accept_prob=float(target_accept_prob), dense_mass=dense_mass)
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=False,
        jit_model_args=True,
    )
    mcmc.run(jax.random.PRNGKey(int(seed)), x=x, extra_fields=("diverging", "energy", "num_steps"))
    return mcmc


def _posterior_model_x(jax_model, params, x, learn_globals=True, priors=None):
    # the data-only signature that run_nuts jits over (params and settings are closed over)
    return alternator_posterior_model(jax_model, params, x, learn_globals, priors)


def nuts_inference_data(mcmc: MCMC) -> az.InferenceData:
    """ArviZ ``InferenceData`` of a :func:`run_nuts` result, with named dims.

    posterior: ``z`` and ``eps`` (chain, draw, sequence, time_z, latent) and, when learned,
    ``sigma_x``, ``sigma_z``, ``alpha``, ``alpha_u`` (chain, draw); observed_data and
    log_likelihood: ``x`` (sequence, time[, obs]), log-likelihood per time step; sample_stats
    with ``diverging`` and ``energy`` (so ``az.bfmi`` works). ``time_z`` runs 0..T and ``time``
    1..T.
    """
    if not isinstance(mcmc, MCMC):
        raise TypeError(f"mcmc must be a numpyro.infer.MCMC, got {type(mcmc).__name__}")
    if mcmc._states is None:  # numpyro keeps no public "has run" flag
        raise ValueError("mcmc has no samples yet: call mcmc.run (or use run_nuts) first")
    samples = mcmc.get_samples()
    if "z" not in samples or "eps" not in samples:
        raise ValueError(
            "mcmc did not sample alternator_posterior_model (no 'z'/'eps' sites); "
            f"got sites {sorted(samples)}"
        )
    _, batch, steps_z, latent = samples["z"].shape
    obs_dim = mcmc._kwargs["x"].shape[-1] if "x" in mcmc._kwargs else None
    coords = {
        "sequence": np.arange(batch),
        "time_z": np.arange(steps_z),
        "time": np.arange(1, steps_z),
        "latent": np.arange(latent),
    }
    path_dims = ["sequence", "time_z", "latent"]
    dims = {"z": path_dims, "eps": path_dims, "x": ["sequence", "time", "obs"]}
    if obs_dim is not None:
        coords["obs"] = np.arange(obs_dim)
    return az.from_numpyro(mcmc, coords=coords, dims=dims, log_likelihood=True)
