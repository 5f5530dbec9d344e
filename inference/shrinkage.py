"""Per-dimension shrinkage of a trained decoder's output, fitted on validation.

A decoder trained on several behaviour dimensions at once can fit one of them (say position)
well and another (velocity from place cells) not at all: it then overfits noise there and
decodes that dimension worse than the training mean. The least-squares gain of the decoded
deviation on validation,

    c_d = clip( sum_t (p_td - m_d)(z_td - m_d) / sum_t (p_td - m_d)^2, 0, 1 ),

shrinks each dimension's output towards the training mean m_d: c_d = 1 keeps a dimension
that decodes well, c_d = 0 replaces a hopeless one by its mean (R^2 about 0 instead of
negative). :func:`shrink_alternator` folds the gains into the Alternator's FTN output layer (so
``infer_latents`` draws the shrunk paths), :func:`shrink_linear` into any linear read-out.
"""

from __future__ import annotations

import torch
from torch import nn

from alternators_ppl.networks import output_linear

__all__ = ["shrinkage_factors", "shrink_linear", "shrink_alternator"]


def shrinkage_factors(pred, target, centre) -> torch.Tensor:
    """Gains c (Dz,) in [0, 1] of pred (..., Dz) towards ``centre`` (Dz,) against target.

    NaN entries of ``target`` are ignored; a dimension whose prediction never leaves the
    centre keeps c = 1.
    """
    pred = torch.as_tensor(pred)
    target = torch.as_tensor(target, dtype=pred.dtype, device=pred.device)
    if pred.shape != target.shape:
        raise ValueError(f"target must have pred's shape {tuple(pred.shape)}, got {target.shape}")
    centre = torch.as_tensor(centre, dtype=pred.dtype, device=pred.device)
    dev = (pred - centre).reshape(-1, pred.shape[-1])
    obs = (target - centre).reshape(-1, pred.shape[-1])
    keep = torch.isfinite(obs)
    dev, obs = torch.where(keep, dev, 0.0), torch.where(keep, obs, 0.0)
    power = dev.square().sum(0)
    gain = torch.where(power > 0, (dev * obs).sum(0) / power.clamp_min(1e-30), 1.0)
    return gain.clamp(0.0, 1.0)


@torch.no_grad()
def shrink_linear(layer: nn.Linear, gains, target) -> None:
    """Replace the outputs y of ``layer`` by c y + (1 - c) target, per output (in place)."""
    if not isinstance(layer, nn.Linear):
        raise TypeError(f"layer must be an nn.Linear, got {type(layer).__name__}")
    gains = torch.as_tensor(gains, dtype=layer.weight.dtype, device=layer.weight.device)
    target = torch.as_tensor(target, dtype=layer.weight.dtype, device=layer.weight.device)
    layer.weight.mul_(gains[:, None])
    if layer.bias is None:
        raise ValueError("layer must have a bias to shrink towards a target")
    layer.bias.mul_(gains).add_((1 - gains) * target)


@torch.no_grad()
def shrink_alternator(model, x_val, z_val, z_centre, mask_val=None, num_samples: int = 8,
                      seed: int = 0) -> torch.Tensor | None:  # fmt: skip
    """Fit the gains on validation (x_val (B, T, Dx), z_val (B, T, Dz)) from the mean of
    ``num_samples`` ``infer_latents`` draws and fold them into the FTN's output layer.

    With a constant alpha the mean latent path obeys z_t = sqrt(alpha) g(x_t) + d z_{t-1}
    (d = sqrt(1 - alpha - sigma_z^2)), so the FTN output c g + (1 - c) m (1 - d) / sqrt(alpha)
    moves the stationary path to c z + (1 - c) m: ``z_centre`` (Dz,) is m, the training
    mean. Returns the gains (Dz,), or None (nothing changed) when the FTN does not end in a
    linear layer or alpha is not one constant. The global random state is left untouched.
    """
    layer = output_linear(model.ftn)
    if layer is None or not model.alpha_is_constant or model.data_dependent_alpha:
        return None
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        draws = model.infer_latents(x_val, mask_val, num_samples=num_samples)[:, :, 1:]
    gains = shrinkage_factors(draws.mean(0), z_val, z_centre)
    alpha = float(model.alpha_values[0])
    centre = torch.as_tensor(z_centre, dtype=draws.dtype, device=draws.device)
    decay = model.latent_decay(torch.tensor(alpha, dtype=draws.dtype, device=draws.device))
    shrink_linear(layer, gains, centre * (1 - decay) / alpha**0.5)
    return gains

