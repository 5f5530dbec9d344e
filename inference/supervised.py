"""Supervised (sequence-to-sequence) training of the Alternator: decoding z from x.

The default when :func:`~alternators_ppl.inference.fit` gets ``z_train``: the long training
sequences are cut into overlapping windows, the last part of the training span is held out for
validation, and the z-term of Eq. 12 scores the model's own recursion (the path that
``infer_latents`` draws at test time) against the observed z ("free-running" training),
instead of the one-step prediction from the observed z_{t-1} ("teacher-forcing", Eq. 12 as
written, kept one keyword away: ``fit(..., supervised="teacher-forcing")``).

Why: ``infer_latents`` never sees z; a one-step objective trains an FTN whose errors pile up
along the recursion with the decay sqrt(1 - alpha - sigma_z^2). docs/decoding.md has the
ablation.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "SUPERVISED_MODES",
    "free_running_loss",
    "prepare_supervised",
    "window_sequences",
]

SUPERVISED_MODES = ("free-running", "teacher-forcing")


def window_sequences(tensor: torch.Tensor, length: int, stride: int) -> torch.Tensor:
    """Overlapping windows along time: (B, T, ...) -> (B * W, length, ...), W per sequence.

    Windows start at 0, stride, 2 stride, ...; a last window ending at T is added when the
    stride does not reach it, so every step is covered. T <= length returns the input.
    """
    steps = tensor.shape[1]
    if steps <= length:
        return tensor
    starts = list(range(0, steps - length + 1, stride))
    if starts[-1] != steps - length:
        starts.append(steps - length)
    return torch.cat([tensor[:, s : s + length] for s in starts], dim=0)


def free_running_loss(model, x: torch.Tensor, mask: torch.Tensor, z_target: torch.Tensor):
    """Eq. 12 with the z-term on the model's own recursion; a ``loss_fn`` for ``fit``.

    x (B, L+1, Dx), mask, z_target (B, L+1, Dz): the first step of each window is context
    only: its observed z is the recursion's z_0 (the window's start in the long sequence).
    For t = 1..L the latent path z_hat is drawn by alternating from that z_0, the FTN reading
    the data (``rollout``, reparameterised, so gradients flow through every step); the loss is
    the mean over sequences and steps of

        sigma_z^2 ||x_t - sqrt(1 - sigma_x^2) f(z_{t-1})||^2   (observed z: the OTN regresses)
      + sigma_x^2 ||z_t - z_hat_t||^2                           (free recursion vs observed z)

    so its scale matches :meth:`Alternator.loss`. A variant's ``auxiliary_loss`` is not added.
    """
    if z_target is None:
        raise ValueError("z_target is required for free-running supervised training")
    x, mask = model._prepare(x, mask)  # missing entries zeroed (the rollout draws them)
    z0 = z_target[:, 0]
    x, mask, z_target = x[:, 1:], mask[:, 1:], z_target[:, 1:]
    z_hat = _rollout_from(model, x, mask, z0)
    z_prev = torch.cat([z0.unsqueeze(1), z_target[:, :-1]], dim=1)
    x_dist = model.x_dist(z_prev)
    x_fit = (x - x_dist.mean).square() * mask
    z_fit = (z_target - z_hat[:, 1:]).square()
    total = model.sigma_z**2 * x_fit.sum() + model.sigma_x**2 * z_fit.sum()
    return total / x.shape[0] / x.shape[1]


def _rollout_from(model, x, mask, z0):
    """The model's conditioned recursion started at z0 (B, Dz): z (B, L+1, Dz), reparameterised.

    Runs ``model._rollout`` (which draws its own z_0 from the prior) and shifts the path by
    the decayed difference, so z_t = z_t' + prod_{s<=t} decay_s (z0 - z_0'): exact for an
    affine latent recursion (the Alternator's default); variants with a non-affine latent step
    start from the prior draw instead.
    """
    z, _ = model._rollout(x, mask, "conditioned")
    if not getattr(model, "affine_latent", False) or getattr(model, "data_dependent_alpha", False):
        return z
    alpha = model.alpha_schedule(x.shape[1])
    decay = torch.sqrt(1 - alpha - model.sigma_z**2)
    factors = torch.cat([decay.new_ones(1), torch.cumprod(decay, 0)])  # (L+1,)
    return z + factors[None, :, None] * (z0 - z[:, 0]).unsqueeze(1)


def prepare_supervised(
    x_train: torch.Tensor,
    z_train: torch.Tensor,
    mask_train: torch.Tensor,
    x_val=None,
    z_val=None,
    mask_val=None,
    *,
    window: int = 64,
    stride: int = 8,
    val_fraction: float = 0.15,
):
    """Windows and a validation split for free-running training (checked tensors in and out).

    Without validation data the last ``val_fraction`` of each training sequence (in time) is
    held out (sequences of at least 2 ``window`` steps), or, for many short sequences, the last
    ``val_fraction`` of the sequences. Each window has ``window + 1`` steps (the first is
    context, see :func:`free_running_loss`); training windows overlap (``stride``),
    validation windows do not. Returns (x, z, mask) for train and for validation.
    """
    steps = x_train.shape[1]
    if x_val is None:
        if steps >= 2 * window:
            cut = steps - max(window + 1, math.ceil(val_fraction * steps))
            x_val, z_val, mask_val = x_train[:, cut:], z_train[:, cut:], mask_train[:, cut:]
            x_train, z_train, mask_train = x_train[:, :cut], z_train[:, :cut], mask_train[:, :cut]
        elif x_train.shape[0] >= 2:
            num_val = max(1, round(val_fraction * x_train.shape[0]))
            x_val, z_val, mask_val = x_train[-num_val:], z_train[-num_val:], mask_train[-num_val:]
            x_train, z_train, mask_train = (
                x_train[:-num_val], z_train[:-num_val], mask_train[:-num_val]
            )
    train = tuple(window_sequences(t, window + 1, stride) for t in (x_train, z_train, mask_train))
    if x_val is None:
        return train, (None, None, None)
    val = tuple(window_sequences(t, window + 1, window) for t in (x_val, z_val, mask_val))
    return train, val
