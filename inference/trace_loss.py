"""Eq. 12 computed from a trace of the ``pyro.markov`` program (the readable reference)."""

from __future__ import annotations

import torch
from pyro import poutine

__all__ = ["trace_loss"]


def trace_loss(model, x, mask=None, z_target=None, data: dict | None = None) -> torch.Tensor:
    """Eq. 12 loss of ``model`` (an Alternator) from one trace of ``model.model``; a scalar.

    Tracing the program with x observed draws z_t ~ p(z_t | z_{t-1}, x_t) step by step (the
    conditioned reading; missing x entries come from the ``x_missing_t`` sites). For a Gaussian
    site, log p(v) - log p(mean) = -||v - mean||^2 / (2 scale^2) over its unmasked entries, so

        loss = -2 sigma_x^2 sigma_z^2 * sum over x_t, z_t sites of [log p(v) - log p(mean)] / (B T)

    is the same scalar as ``model.loss`` for the same path. ``data`` conditions sites by name
    (e.g. a given latent path ``{"z_0": ..., "z_1": ...}``). Costs 2T network calls.
    """
    program = model.model if data is None else poutine.condition(model.model, data=data)
    trace = poutine.trace(program).get_trace(x, mask, z_target)
    trace.compute_log_prob()
    total, steps = 0.0, 0
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or not name.startswith(("x_", "z_")):
            continue  # plates
        if name == "z_0" or name.startswith("x_missing"):
            continue
        fn = site["fn"]
        total = total + (site["log_prob"] - fn.log_prob(fn.mean)).sum()
        steps += name.startswith("z_")
    batch = trace.nodes["z_0"]["value"].shape[0]
    return -model.eq12_scale() * total / (batch * steps)
