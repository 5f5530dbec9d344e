"""Supervised (sequence-to-sequence) training of the Alternator: decoding z from x.

What :func:`~alternators_ppl.inference.fit` does with ``z_train`` (``supervised=``):

- ``"auto"`` (the default): the end of the training span is held out for validation (unless
  ``x_val``/``z_val`` are given), the rest is cut into overlapping windows, one model per
  alpha in :data:`ALPHA_GRID` is trained by Eq. 12 (observed z, the best epoch picked on the
  validation windows); each candidate's FTN output is then shrunk per dimension towards the
  training mean by the validation gain (:mod:`~alternators_ppl.inference.shrinkage`: a
  dimension the features cannot decode falls back to its mean), and the alpha whose
  ``infer_latents`` mean decodes the validation span best (squared error) wins: the model
  keeps the winner's alpha and weights. Then (``calibrate``, default on) its noise is
  calibrated on the validation span (:mod:`~alternators_ppl.inference.supervised_calibration`)
  and ``model.latent_method`` becomes whichever of ``"smc"`` (the calibrated posterior, both
  networks) and ``"ancestral"`` (the FTN recursion) decodes the validation span better.
- ``"free-running"``: windows and validation as above, the model's own alpha, and the z-term
  scores the model's own recursion (the path ``infer_latents`` draws) against the observed z.
- ``"teacher-forcing"``: Eq. 12 as written on the sequences as given (the old behaviour).

Measured on the paper's Lorenz-spikes task (docs/decoding.md): the memory of the latent
recursion (alpha) decides the decoding quality; teacher forcing vs free running barely does.
"""

from __future__ import annotations

import copy
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from alternators_ppl.inference.shrinkage import shrink_alternator
from alternators_ppl.inference.supervised_calibration import (
    calibrate_supervised,
    can_calibrate_supervised,
)
from alternators_ppl.inference.training import History
from alternators_ppl.models.alternator import Alternator
from alternators_ppl.runs import atomic_write, write_json

__all__ = [
    "ALPHA_GRID",
    "SUPERVISED_MODES",
    "SupervisedHistory",
    "decoding_error",
    "fit_auto",
    "free_running_loss",
    "prepare_supervised",
    "split_validation",
    "window_sequences",
]

SUPERVISED_MODES = ("auto", "free-running", "teacher-forcing")
ALPHA_GRID = (0.3, 0.6, 0.9)
WINDOW, STRIDE, VAL_FRACTION = 64, 8, 0.15


@dataclass
class SupervisedHistory(History):
    """:class:`History` of the chosen candidate plus the selection: ``alpha`` and, per alpha
    tried, the validation mean squared error of the decoded z (``alpha_scores``)."""

    alpha: float | None = None
    alpha_scores: dict = field(default_factory=dict)
    shrinkage: list | None = None  # per-dimension output gains (inference/shrinkage.py)


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


def split_validation(x, z, mask, val_fraction: float = VAL_FRACTION, min_steps: int = WINDOW + 1):
    """Hold out validation from training data: ((x, z, mask) train, (x, z, mask) val).

    Long sequences (>= 2 ``min_steps``) lose their last ``val_fraction`` of time (at least
    ``min_steps``); otherwise, with >= 2 sequences, the last ``val_fraction`` of the
    sequences is held out; else validation is (None, None, None).
    """
    steps, batch = x.shape[1], x.shape[0]
    if steps >= 2 * min_steps:
        cut = steps - max(min_steps, math.ceil(val_fraction * steps))
        return (x[:, :cut], z[:, :cut], mask[:, :cut]), (x[:, cut:], z[:, cut:], mask[:, cut:])
    if batch >= 2:
        cut = batch - max(1, round(val_fraction * batch))
        return (x[:cut], z[:cut], mask[:cut]), (x[cut:], z[cut:], mask[cut:])
    return (x, z, mask), (None, None, None)


def prepare_supervised(x_train, z_train, mask_train, x_val=None, z_val=None, mask_val=None,
                       *, window: int = WINDOW, stride: int = STRIDE,
                       val_fraction: float = VAL_FRACTION):  # fmt: skip
    """Windows and a validation split for free-running training (checked tensors in and out).

    Validation is ``split_validation``'s unless given. Each window has ``window + 1`` steps
    (the first is context, see :func:`free_running_loss`); training windows overlap
    (``stride``), validation windows do not. Returns (x, z, mask) for train and validation.
    """
    if x_val is None:
        (x_train, z_train, mask_train), (x_val, z_val, mask_val) = split_validation(
            x_train, z_train, mask_train, val_fraction, window + 1
        )
    train = tuple(window_sequences(t, window + 1, stride) for t in (x_train, z_train, mask_train))
    if x_val is None:
        return train, (None, None, None)
    val = tuple(window_sequences(t, window + 1, window) for t in (x_val, z_val, mask_val))
    return train, val


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
    x_fit = (x - model.x_dist(z_prev).mean).square() * mask
    z_fit = (z_target - z_hat[:, 1:]).square()
    total = model.sigma_z**2 * x_fit.sum() + model.sigma_x**2 * z_fit.sum()
    return total / x.shape[0] / x.shape[1]


def _rollout_from(model, x, mask, z0):
    """The model's conditioned recursion started at z0 (B, Dz): z (B, L+1, Dz), reparameterised.

    Runs ``model._rollout`` (which draws its own z_0 from the prior) and shifts the path by
    the decayed difference, z_t = z_t' + prod_{s<=t} decay_s (z0 - z_0'): exact for an affine
    latent recursion (the Alternator's default); variants with a non-affine latent step start
    from the prior draw instead.
    """
    z, _ = model._rollout(x, mask, "conditioned")
    if not getattr(model, "affine_latent", False) or getattr(model, "data_dependent_alpha", False):
        return z
    alpha = model.alpha_schedule(x.shape[1])
    decay = model.latent_decay(alpha)  # (L,) or (L, Dz)
    factors = torch.cat([torch.ones_like(decay[:1]), torch.cumprod(decay, 0)])
    return z + factors.reshape(1, x.shape[1] + 1, -1) * (z0 - z[:, 0]).unsqueeze(1)


def _can_set_alpha(model) -> bool:
    return (
        isinstance(model, Alternator)
        and model.alpha_is_constant
        and not model.data_dependent_alpha
        and type(model).alpha_schedule is Alternator.alpha_schedule
    )


@torch.no_grad()
def decoding_error(
    model, x, z, mask=None, num_samples: int = 8, seed: int = 0, method: str = "ancestral"
) -> float:
    """Mean squared error of the ``infer_latents(method=...)`` mean (``num_samples`` draws)
    against z (B, T, Dz) for x (B, T, Dx); the global random state is left untouched."""
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        draws = model.infer_latents(x, mask, num_samples=num_samples, method=method)
        draws = draws[:, :, 1:]
    return (draws.mean(0) - z).square().mean().item()


def fit_auto(fit, model, x_train, z_train, mask_train, x_val=None, z_val=None, mask_val=None,
             grid=ALPHA_GRID, calibrate=True, **fit_kwargs) -> SupervisedHistory:  # fmt: skip
    """The ``supervised="auto"`` path (module docstring) on checked tensors; ``fit`` is the
    trainer and ``fit_kwargs`` its settings (``checkpoint_dir`` gets one folder per alpha,
    ``alpha-<value>/``; the winner's ``best.pt`` and ``last.pt`` are copied to
    ``checkpoint_dir`` itself, with ``selection.json``: checkpoints hold weights, not alpha).
    Models whose alpha is not one constant keep theirs (the grid is just that value).
    ``calibrate`` (True or "auto"; False skips): the winner's sigma_x (per dimension) and
    sigma_z are then chosen on the unwindowed validation span by
    :func:`~alternators_ppl.inference.supervised_calibration.calibrate_supervised` (means
    kept; alpha moves with sigma_z so the decay stays), recorded in ``history.calibration``
    and ``selection.json``; "auto" skips models it does not apply to, True insists."""
    if x_val is None:
        (x_train, z_train, mask_train), (x_val, z_val, mask_val) = split_validation(
            x_train, z_train, mask_train
        )
        if x_val is None:
            raise ValueError(
                "supervised='auto' needs x_val and z_val, or training sequences of at least "
                f"{2 * (WINDOW + 1)} steps (or two sequences) to hold some out"
            )
    limit = 1 - max(model.sigma_z_values()) ** 2
    grid = tuple(float(a) for a in grid if 0 < a < limit) if _can_set_alpha(model) else ()
    grid = grid or (model.alpha_values[0],)
    # long sequences become windows; sequences already short (<= 2 WINDOW) stay as given
    long = x_train.shape[1] > 2 * WINDOW
    train = [window_sequences(t, WINDOW, STRIDE) if long else t
             for t in (x_train, z_train, mask_train)]  # fmt: skip
    val = [window_sequences(t, WINDOW, WINDOW) if x_val.shape[1] > 2 * WINDOW else t
           for t in (x_val, z_val, mask_val)]  # fmt: skip
    initial = copy.deepcopy(model.state_dict())
    centre = z_train.reshape(-1, z_train.shape[-1]).nanmean(0)  # shrinkage target
    checkpoint_dir = fit_kwargs.pop("checkpoint_dir", None)
    best, scores = None, {}
    for alpha in grid:
        model.load_state_dict(initial)
        if _can_set_alpha(model):
            model.alpha_values = (alpha,)
        folder = None if checkpoint_dir is None else f"{checkpoint_dir}/alpha-{alpha:g}"
        history = fit(model, train[0], z_train=train[1], x_val=val[0], z_val=val[1],
                      mask_train=train[2], mask_val=val[2], supervised="teacher-forcing",
                      checkpoint_dir=folder, **fit_kwargs)  # fmt: skip
        gains = shrink_alternator(model, x_val, z_val, centre, mask_val)  # c_d on validation
        scores[alpha] = decoding_error(model, x_val, z_val, mask_val)
        if best is None or scores[alpha] < best[0]:
            best = (scores[alpha], alpha, copy.deepcopy(model.state_dict()), history, gains)
    _, alpha, state, history, gains = best
    model.load_state_dict(state)
    if _can_set_alpha(model):
        model.alpha_values = (alpha,)
    model.eval()
    calibration = None
    if calibrate is True or (calibrate == "auto" and can_calibrate_supervised(model)):
        calibration = calibrate_supervised(model, x_val, z_val, mask_val,
                                           seed=fit_kwargs.get("seed") or 0)  # fmt: skip
        # the calibrated SMC posterior (both networks) or the FTN recursion: whichever decodes
        # the validation span better becomes what infer_latents draws by default
        errors = {m: decoding_error(model, x_val, z_val, mask_val, method=m)
                  for m in ("smc", "ancestral")}  # fmt: skip
        model.latent_method = calibration["latent_method"] = min(errors, key=errors.get)
        calibration["latent_errors"] = errors
    if checkpoint_dir is not None:  # the winner's checkpoints where a plain fit puts them
        folder = Path(checkpoint_dir)
        for name in ("best.pt", "last.pt"):
            source = folder / f"alpha-{alpha:g}" / name
            atomic_write(folder / name, lambda tmp, src=source: shutil.copyfile(src, tmp))
    shrinkage = None if gains is None else gains.tolist()
    if checkpoint_dir is not None:
        table = {str(k): v for k, v in scores.items()}
        write_json(folder / "selection.json",
                   {"alpha": alpha, "alpha_scores": table, "calibration": calibration,
                    "shrinkage": shrinkage})  # fmt: skip
    record = {k: v for k, v in history.to_dict().items() if k not in ("epochs_run", "calibration")}
    return SupervisedHistory(**record, alpha=alpha, alpha_scores=scores, calibration=calibration,
                             shrinkage=shrinkage)  # fmt: skip
