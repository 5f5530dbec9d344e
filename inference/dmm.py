"""Training the Deep Markov Model baseline by SVI, through the shared epoch loop."""

from __future__ import annotations

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import ClippedAdam

from alternators_ppl.inference.loop import History
from alternators_ppl.inference.svi import run_svi_epochs
from alternators_ppl.models.dmm import DeepMarkovModel
from alternators_ppl.seeding import seed_everything
from alternators_ppl.validation import check_positive_float, check_positive_int

__all__ = ["fit_dmm"]


def fit_dmm(
    dmm: DeepMarkovModel,
    x_train,
    mask=None,
    epochs: int = 100,
    lr: float = 1e-3,
    batch_size: int = 32,
    num_particles: int = 1,
    seed: int | None = None,
    progress: bool = False,
    x_val=None,
    *,
    mask_val=None,
    clip_norm: float = 10.0,
    budget_s: float | None = None,
) -> History:
    """Train ``dmm`` by SVI (Trace_ELBO, ClippedAdam); return the per-epoch :class:`History`.

    x_train (B, T, Dx), NaN or ``mask`` False = missing. Each epoch shuffles the sequences
    into minibatches of ``batch_size``; ``num_particles`` > 1 vectorises the particles. Losses
    are -ELBO per sequence per time step (train: running SVI estimate; val: the
    :meth:`~DeepMarkovModel.elbo` of ``x_val`` (B', T', Dx) with a fixed seed, so epochs are
    comparable). Training stops early once the epochs took ``budget_s`` seconds in total. The
    model keeps its last weights. A non-finite loss raises
    :class:`~alternators_ppl.errors.NonFiniteLossError`.
    """
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    num_particles = check_positive_int(num_particles, "num_particles")
    lr = check_positive_float(lr, "lr")
    clip_norm = check_positive_float(clip_norm, "clip_norm")
    x_train, mask = dmm.prepare(x_train, mask, "x_train")
    if x_val is not None:
        x_val, mask_val = dmm.prepare(x_val, mask_val, "x_val")
    elif mask_val is not None:
        raise ValueError("mask_val was given without x_val")
    if seed is not None:
        seed_everything(seed)
    elbo = Trace_ELBO(
        num_particles=num_particles,
        vectorize_particles=num_particles > 1,
        max_plate_nesting=1,
    )
    val_seed = seed or 0

    def validate() -> float:
        devices = [dmm.device] if dmm.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(val_seed)
            return -dmm.elbo(x_val, mask_val, num_particles).mean().item() / x_val.shape[1]

    dmm.train()
    with pyro.get_param_store().scope():
        svi = SVI(dmm.model, dmm.guide, ClippedAdam({"lr": lr, "clip_norm": clip_norm}), elbo)
        history = run_svi_epochs(
            svi,
            x_train,
            mask,
            epochs=epochs,
            batch_size=batch_size,
            validate=None if x_val is None else validate,
            budget_s=budget_s,
            progress=progress,
            desc="fit dmm",
        )
    dmm.eval()
    return history
