"""The latent path's linear recurrence, solved by a parallel (associative) scan or a loop."""

from __future__ import annotations

import torch

__all__ = ["linear_recurrence"]


def linear_recurrence(
    z0: torch.Tensor, decay: torch.Tensor, drive: torch.Tensor, parallel: bool = True
) -> torch.Tensor:
    """Solve z_t = decay_t * z_{t-1} + drive_t for t = 1..T.

    z0 (B, D), decay (T,), drive (B, T, D) -> z (B, T+1, D) including z0.

    ``parallel=True`` composes the affine maps z -> a z + b with a Hillis-Steele scan:
    ceil(log2 T) whole-tensor steps instead of T small ones (O(T log T) work, the same
    gradients); ``parallel=False`` is the plain loop, kept as the reference.
    """
    steps = drive.shape[1]
    if not parallel:
        z_prev, zs = z0, [z0]
        for t in range(steps):
            z_prev = decay[t] * z_prev + drive[:, t]
            zs.append(z_prev)
        return torch.stack(zs, dim=1)
    a = decay.unsqueeze(-1)  # (T, 1): multiplier of the map ending at t
    b = torch.cat([drive[:, :1] + decay[0] * z0.unsqueeze(1), drive[:, 1:]], dim=1)
    shift = 1
    while shift < steps:  # after this pass, maps cover the last 2 * shift steps
        b = torch.cat([b[:, :shift], a[shift:] * b[:, :-shift] + b[:, shift:]], dim=1)
        a = torch.cat([a[:shift], a[shift:] * a[:-shift]], dim=0)
        shift *= 2
    return torch.cat([z0.unsqueeze(1), b], dim=1)
