"""SVI for the Alternator: training a guide (and optionally the networks), posterior sampling.

:func:`fit_svi` runs Pyro's SVI (``Trace_ELBO`` or ``TraceMeanField_ELBO``, vectorised
particles, ``ClippedAdam``) on :meth:`Alternator.model <alternators_ppl.models.Alternator.model>`
and a guide from :mod:`alternators_ppl.inference.guides`. :func:`elbo_samples` gives per-particle
ELBO terms, :func:`posterior_latents` draws latent paths from a guide and
:func:`posterior_forecast` rolls the model forward from the guide's last latent.

Every function here runs in a private Pyro parameter-store scope, so the global store is left
as it was; the guide's and the model's weights are plain module parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from pyro.optim import ClippedAdam

from alternators_ppl import distributed
from alternators_ppl.inference.loop import History, run_epochs
from alternators_ppl.models.hyperprior import HyperpriorAlternator
from alternators_ppl.seeding import seed_everything
from alternators_ppl.validation import check_mask, check_positive_float, check_positive_int

__all__ = [
    "ELBOS",
    "fit_svi",
    "run_svi_epochs",
    "data_parallel_svi_step",
    "make_elbo",
    "elbo_samples",
    "posterior_latents",
    "posterior_forecast",
]

ELBOS = ("trace", "meanfield")


def make_elbo(kind: str = "trace", num_particles: int = 1):
    """A Pyro ELBO for the Alternator program: ``"trace"`` (``Trace_ELBO``) or ``"meanfield"``.

    Particles are vectorised when ``num_particles`` > 1 (an outer plate at dim -2; the model's
    ``sequences`` plate is dim -1, hence ``max_plate_nesting=1``).

    ``"meanfield"`` (``TraceMeanField_ELBO``, analytic KL per site given the sampled parents) is
    exact in expectation when no latent's parents in the model are descendants of it in the
    guide. Both guides here qualify although they are not mean-field across time: they sample
    in the model's order (z_0, x_missing_t, z_t) and each factor reads only data and earlier
    sites. A guide that samples backwards in time (z_T first, then z_{t-1} given z_t) does not:
    use ``"trace"`` for it (Pyro then warns that the site order differs).
    """
    if kind not in ELBOS:
        raise ValueError(f"elbo must be one of {ELBOS}, got {kind!r}")
    num_particles = check_positive_int(num_particles, "num_particles")
    cls = Trace_ELBO if kind == "trace" else TraceMeanField_ELBO
    return cls(
        num_particles=num_particles, vectorize_particles=num_particles > 1, max_plate_nesting=1
    )


def _check_pair(model, guide) -> None:
    if not callable(getattr(model, "model", None)):
        raise TypeError(f"model must be an Alternator (with a .model program), got {type(model)}")
    if not callable(guide):
        raise TypeError(f"guide must be callable, got {type(guide).__name__}")
    owner = getattr(guide, "alternator", model)
    if owner is not model:
        raise ValueError("guide was built for a different model (guide.alternator is not model)")


def _core(model):
    """The Alternator inside a program (itself, or a HyperpriorAlternator's ``alternator``)."""
    return model.alternator if isinstance(model, HyperpriorAlternator) else model


def _check_data(model, x, mask, name: str):
    x = _core(model)._as_input(x, name)
    mask_name = "mask" if name == "x" else f"mask for {name}"
    return x, check_mask(mask, x, mask_name)


def _network_param_names(model, x, mask) -> set[str]:
    """Names of the Pyro param sites that the model program registers (its OTN/FTN weights)."""
    with torch.no_grad():
        trace = poutine.trace(model.model).get_trace(x[:1], mask[:1])
    return {name for name, site in trace.nodes.items() if site["type"] == "param"}


def fit_svi(
    model,
    guide,
    x,
    mask=None,
    epochs: int = 100,
    lr: float = 1e-2,
    batch_size: int = 32,
    num_particles: int = 1,
    elbo: str = "trace",
    seed: int | None = None,
    x_val=None,
    train_networks: bool = True,
    *,
    mask_val=None,
    lr_min: float | None = None,
    clip_norm: float = 10.0,
    progress: bool = False,
    callback: Callable[[int, History], bool | None] | None = None,
    budget_s: float | None = None,
) -> History:
    """Train ``guide`` (and the model's networks unless ``train_networks=False``) by SVI.

    x (B, T, Dx) with NaN or ``mask`` False = missing. Each epoch shuffles the sequences into
    minibatches of ``batch_size``; each minibatch is one ``SVI.step`` with ``ClippedAdam``
    (gradient norm ``clip_norm``; the learning rate decays geometrically from ``lr`` to
    ``lr_min`` over the run when ``lr_min`` is given). ``elbo`` is ``"trace"`` or
    ``"meanfield"`` (see :func:`make_elbo` for where the latter is valid); ``num_particles`` > 1
    vectorises the particles. ``train_networks=False`` hides the model's OTN/FTN param sites
    from SVI (``poutine.block`` on the model and on the guide, which shares the FTN), so only
    the guide learns.

    Returns a :class:`~alternators_ppl.inference.History` with losses as -ELBO per sequence per
    step (train: the running SVI estimate; val: the ELBO of ``x_val`` (B', T', Dx) with noise
    fixed by ``seed``, so epochs are comparable). The model and guide keep their last weights
    (``best_epoch`` only reports the best). ``callback(epoch, history)`` returning True stops.
    Runs in a private parameter-store scope. A non-finite loss raises
    :class:`~alternators_ppl.inference.NonFiniteLossError`.
    """
    _check_pair(model, guide)
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    lr, clip_norm = check_positive_float(lr, "lr"), check_positive_float(clip_norm, "clip_norm")
    lr_min = None if lr_min is None else check_positive_float(lr_min, "lr_min")
    if lr_min is not None and lr_min > lr:
        raise ValueError(f"lr_min ({lr_min}) must not exceed lr ({lr})")
    if not isinstance(train_networks, bool):
        raise TypeError(f"train_networks must be a bool, got {type(train_networks).__name__}")
    loss_fn = make_elbo(elbo, num_particles)
    x, mask = _check_data(model, x, mask, "x")
    if x_val is not None:
        x_val, mask_val = _check_data(model, x_val, mask_val, "x_val")
    elif mask_val is not None:
        raise ValueError("mask_val was given without x_val")
    if seed is not None:
        seed_everything(seed)

    num_train, steps = x.shape[:2]
    num_steps = epochs * math.ceil(num_train / batch_size)
    lrd = 1.0 if lr_min is None else (lr_min / lr) ** (1.0 / max(num_steps, 1))
    frozen: list[torch.nn.Parameter] = []
    was_training = _core(model).training
    with pyro.get_param_store().scope():
        model_fn, guide_fn = model.model, guide
        if not train_networks:
            hidden = _network_param_names(model, x, mask)
            model_fn = poutine.block(model.model, hide_types=["param"])
            guide_fn = poutine.block(guide, hide=list(hidden))
            # No gradients into fixed weights (they are not stepped anyway); eval mode keeps
            # pyro.module from warning about parameters that do not require grad.
            frozen = [p for p in _core(model).parameters() if p.requires_grad]
            for p in frozen:
                p.requires_grad_(False)
            _core(model).train(False)
        try:
            svi = SVI(
                model_fn,
                guide_fn,
                ClippedAdam({"lr": lr, "clip_norm": clip_norm, "lrd": lrd}),
                loss_fn,
            )

            def validate() -> float:
                return _fixed_noise_loss(loss_fn, model_fn, guide_fn, x_val, mask_val, seed)

            history = run_svi_epochs(
                svi,
                x,
                mask,
                epochs=epochs,
                batch_size=batch_size,
                validate=None if x_val is None else validate,
                lr_at_step=lambda step: lr * lrd**step,
                budget_s=budget_s,
                callback=callback,
                progress=progress,
                desc="fit_svi",
            )
        finally:
            for p in frozen:
                p.requires_grad_(True)
            _core(model).train(was_training)
    return history


def run_svi_epochs(
    svi: SVI,
    x: torch.Tensor,
    mask: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    validate: Callable[[], float] | None = None,
    lr_at_step: Callable[[int], float] | None = None,
    budget_s: float | None = None,
    callback: Callable[[int, History], bool | None] | None = None,
    progress: bool = False,
    desc: str = "svi",
) -> History:
    """``svi.step`` over shuffled minibatches of checked x (B, T, Dx) and mask, through the
    shared epoch loop; losses are -ELBO per sequence per step. ``lr_at_step(n)`` gives the
    learning rate after n optimiser steps (recorded per epoch). Inside a process group each
    rank runs the ELBO on its share of the global minibatch and the (summed) gradients are
    all-reduced before the optimiser steps (:func:`data_parallel_svi_step`)."""
    steps_done = 0
    if distributed.is_distributed():
        _broadcast_params(svi, x[:1], mask[:1])

    def train_batch(index: torch.Tensor) -> float:
        nonlocal steps_done
        steps_done += 1
        if distributed.is_distributed():
            return data_parallel_svi_step(svi, x[index], mask[index])
        return svi.step(x[index], mask[index])

    return run_epochs(
        train_batch,
        x.shape[0],
        epochs=epochs,
        batch_size=batch_size,
        device=x.device,
        normaliser=x.shape[0] * x.shape[1],
        validate=validate,
        current_lr=None if lr_at_step is None else (lambda: lr_at_step(steps_done)),
        budget_s=budget_s,
        callback=callback,
        progress=progress,
        desc=desc,
    )


@torch.no_grad()
def _broadcast_params(svi: SVI, x: torch.Tensor, mask: torch.Tensor) -> None:
    """Create every param site of the model and guide (one trace each), then copy rank 0's
    values to every rank, so that all replicas start from the same parameters."""
    poutine.trace(svi.guide).get_trace(x, mask)
    poutine.trace(svi.model).get_trace(x, mask)
    for _, param in sorted(pyro.get_param_store().named_parameters()):
        param.copy_(distributed.broadcast_tensor(param.detach()))


def data_parallel_svi_step(svi: SVI, x: torch.Tensor, mask: torch.Tensor) -> float:
    """``svi.step`` on this rank's share x (b, T, Dx) of a global minibatch: the ELBO's
    gradients (sums over sequences) are summed over ranks, then every rank takes the same
    optimiser step; returns the global minibatch's loss. The parameters are those of the
    parameter store (in name order, the same on every rank); a rank with an empty share
    contributes nothing."""
    store = pyro.get_param_store()
    loss = 0.0
    if len(x):
        loss = svi.loss_and_grads(svi.model, svi.guide, x, mask)
    params = [p for _, p in sorted(store.named_parameters()) if p.requires_grad]
    total, _ = distributed.sum_gradients(params, float(loss), len(x))
    stepped = [p for p in params if p.grad is not None]
    svi.optim(stepped)
    pyro.infer.util.zero_grads(stepped)
    return total


def _fixed_noise_loss(loss_fn, model_fn, guide_fn, x, mask, seed: int | None) -> float:
    """-ELBO per sequence per step with noise from ``seed`` (global RNG left untouched)."""
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(0 if seed is None else seed)
        return loss_fn.loss(model_fn, guide_fn, x, mask) / (x.shape[0] * x.shape[1])


@torch.no_grad()
def elbo_samples(model, guide, x, mask=None, num_particles: int = 100) -> torch.Tensor:
    """Per-particle, per-sequence log p(x^obs, z) - log q(z | x) under the guide: (N, B).

    The mean over particles (dim 0) estimates each sequence's ELBO; its spread gives the
    Monte Carlo error; ``logsumexp(dim=0) - log N`` is the importance-weighted bound.
    Particles are vectorised (one plate at dim -2). Terms of global sites (a
    :class:`~alternators_ppl.models.HyperpriorAlternator`'s sigma_x, sigma_z, alpha_u) are
    spread evenly over the B sequences, so the sum over dim 1 is the batch's ELBO.
    """
    _check_pair(model, guide)
    num_particles = check_positive_int(num_particles, "num_particles")
    x, mask = _check_data(model, x, mask, "x")
    with pyro.get_param_store().scope(), pyro.plate("particles", num_particles, dim=-2):
        guide_trace = poutine.trace(guide).get_trace(x, mask)
        model_trace = poutine.trace(poutine.replay(model.model, trace=guide_trace)).get_trace(
            x, mask
        )
    batch = x.shape[0]
    total = x.new_zeros(num_particles, batch)
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        for site in trace.nodes.values():
            if site["type"] == "sample":
                log_p = site["fn"].log_prob(site["value"])
                if log_p.dim() == 0 or log_p.shape[-1] != batch:  # a global site: shared by B
                    log_p = log_p / batch
                total = total + sign * log_p
    return total


def _guide_trace(guide, x, mask, num_samples: int):
    """The guide's trace for x (B, T, Dx) with S samples in one pass (a plate at dim -2)."""
    with pyro.get_param_store().scope(), pyro.plate("samples", num_samples, dim=-2):
        return poutine.trace(guide).get_trace(x, mask)


def _path(trace, num_samples: int, x: torch.Tensor, latent_dim: int) -> torch.Tensor:
    shape = (num_samples, x.shape[0], latent_dim)
    path = [trace.nodes[f"z_{t}"]["value"].expand(shape) for t in range(x.shape[1] + 1)]
    return torch.stack(path, dim=2)


@torch.no_grad()
def posterior_latents(guide, x, mask=None, num_samples: int = 100) -> torch.Tensor:
    """Latent paths z_{0:T} ~ q(z | x) for x (B, T, Dx): (S, B, T+1, Dz).

    All S samples run through one guide pass (a sample plate at dim -2), one network call per
    step. NaN or ``mask`` False = missing; the values x holds there never matter. With a
    :class:`~alternators_ppl.inference.HyperpriorGuide` each sample has its own globals.
    """
    if not callable(guide) or not hasattr(guide, "alternator"):
        raise TypeError(
            "guide must be a FilteringGuide, SmoothingGuide or HyperpriorGuide, "
            f"got {type(guide).__name__}"
        )
    num_samples = check_positive_int(num_samples, "num_samples")
    x, mask = _check_data(guide.alternator, x, mask, "x")
    trace = _guide_trace(guide, x, mask, num_samples)
    return _path(trace, num_samples, x, _core(guide.alternator).latent_dim)


@torch.no_grad()
def posterior_forecast(
    model, guide, x_context, horizon: int, num_samples: int = 100
) -> torch.Tensor:
    """Draws of the ``horizon`` steps after x_context (B, Tc, Dx): (S, B, horizon, Dx).

    z_{Tc} is drawn from the guide given the context (its last-step marginal: the filtering
    distribution for an exact posterior), then the model's recursion runs forward, batched
    over samples and sequences, through the model's own factors: x_t from ``draw_x``
    (p(x_t | z_{t-1}), so a variant's observation noise counts) and z_t from
    ``z_dist(x_t, z_{t-1}, alpha_t)``, with alpha_{Tc+1..Tc+horizon} from the schedule or, for a
    data-driven alpha (the alpha-Alternator), from the last inputs read (the context, its
    missing entries as the guide filled them, then the forecast draws). For a
    :class:`~alternators_ppl.models.HyperpriorAlternator` each sample uses the globals (sigma_x,
    sigma_z, alpha) the guide drew with its z_{Tc}. NaN entries of the context are missing.
    """
    _check_pair(model, guide)
    horizon = check_positive_int(horizon, "horizon")
    num_samples = check_positive_int(num_samples, "num_samples")
    core = _core(model)
    x_context = core._as_input(x_context, "x_context")
    context = x_context.shape[1]
    trace = _guide_trace(guide, x_context, None, num_samples)
    z_prev = _path(trace, num_samples, x_context, core.latent_dim)[:, :, -1]
    values = {}
    if isinstance(model, HyperpriorAlternator):
        values = model.hyperparameters_from({s: trace.nodes[s]["value"] for s in model.sites})
    read = _context_read(trace, x_context) if core.data_dependent_alpha else []
    draws = []
    with pyro.get_param_store().scope(), core.hyperparameters(**values):
        alpha = core.alpha_schedule(context + horizon)
        for h in range(horizon):
            eps = torch.randn(
                *z_prev.shape[:-1], core.obs_dim, dtype=z_prev.dtype, device=z_prev.device
            )
            x_t = core.draw_x(z_prev, eps)
            read.append(x_t)
            alpha_t = core._step_alpha(context + h, alpha, read)
            z_prev = core.z_dist(x_t, z_prev, alpha_t).sample()
            draws.append(x_t)
    return torch.stack(draws, dim=2)


def _context_read(trace, x_context: torch.Tensor) -> list[torch.Tensor]:
    """What the FTN read in the context, x_1..x_Tc (each (S, B, Dx) or (B, Dx)): the data where
    observed, the guide's ``x_missing_t`` draws elsewhere."""
    observed = ~torch.isnan(x_context)
    read = []
    for t in range(1, x_context.shape[1] + 1):
        x_t = torch.where(observed[:, t - 1], x_context[:, t - 1], 0.0)
        site = trace.nodes.get(f"x_missing_{t}")
        if site is not None:
            x_t = torch.where(observed[:, t - 1], x_t, site["value"])
        read.append(x_t)
    return read
