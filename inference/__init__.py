"""Inference for Alternators (``alternators_ppl.inference``): Eq. 12 training, checkpoints, the
trace-based loss, SVI guides (paths and Bayesian globals). NUTS lives in
``alternators_ppl.inference.nuts`` (imported on demand: it loads JAX)."""

from alternators_ppl.inference.checkpoint import load_checkpoint, save_checkpoint
from alternators_ppl.inference.guides import FilteringGuide, SmoothingGuide
from alternators_ppl.inference.hyperprior_guide import GLOBAL_GUIDES, HyperpriorGuide
from alternators_ppl.inference.svi import (
    ELBOS,
    elbo_samples,
    fit_svi,
    make_elbo,
    posterior_forecast,
    posterior_latents,
)
from alternators_ppl.inference.trace_loss import trace_loss
from alternators_ppl.inference.training import History, NonFiniteLossError, fit, warmup_cosine
from alternators_ppl.models.smc import particle_filter, smc_chains, smc_forecast, smoothing_paths

__all__ = [
    "fit",
    "History",
    "NonFiniteLossError",
    "warmup_cosine",
    "save_checkpoint",
    "load_checkpoint",
    "trace_loss",
    "FilteringGuide",
    "SmoothingGuide",
    "HyperpriorGuide",
    "GLOBAL_GUIDES",
    "ELBOS",
    "elbo_samples",
    "fit_svi",
    "make_elbo",
    "posterior_forecast",
    "posterior_latents",
    "particle_filter",
    "smoothing_paths",
    "smc_chains",
    "smc_forecast",
]
