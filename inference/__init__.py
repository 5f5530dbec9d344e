"""Inference (``alternators_ppl.inference``): every way to fit or infer, on one epoch loop
(:func:`run_epochs`): Eq. 12 training, SVI, the DMM, checkpoints, the trace-based loss, SVI
guides (paths and Bayesian globals). NUTS lives in
``alternators_ppl.inference.nuts`` (imported on demand: it loads JAX)."""

from alternators_ppl.inference.calibration import apply_noise, calibrate_noise
from alternators_ppl.inference.checkpoint import load_checkpoint, save_checkpoint
from alternators_ppl.inference.dmm import fit_dmm
from alternators_ppl.inference.guides import FilteringGuide, SmoothingGuide
from alternators_ppl.inference.hyperprior_guide import GLOBAL_GUIDES, HyperpriorGuide
from alternators_ppl.inference.loop import Checkpointing, History, run_epochs
from alternators_ppl.inference.supervised_calibration import calibrate_supervised
from alternators_ppl.inference.svi import (
    ELBOS,
    elbo_samples,
    fit_svi,
    make_elbo,
    posterior_forecast,
    posterior_latents,
    run_svi_epochs,
)
from alternators_ppl.inference.trace_loss import trace_loss
from alternators_ppl.inference.training import NonFiniteLossError, fit, warmup_cosine
from alternators_ppl.models.particle_gibbs import particle_gibbs
from alternators_ppl.models.smc import particle_filter, smc_chains, smc_forecast, smoothing_paths

__all__ = [
    "apply_noise",
    "calibrate_noise",
    "calibrate_supervised",
    "fit",
    "fit_dmm",
    "run_epochs",
    "Checkpointing",
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
    "run_svi_epochs",
    "particle_filter",
    "smoothing_paths",
    "particle_gibbs",
    "smc_chains",
    "smc_forecast",
]
