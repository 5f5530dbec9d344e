"""The latent path's linear recurrence, solved by blocked matrix products, a scan or a loop."""

from __future__ import annotations

import torch

__all__ = ["linear_recurrence", "BLOCK"]

#: block length of the blocked solve (``method="blocked"``)
BLOCK = 32


def linear_recurrence(
    z0: torch.Tensor,
    decay: torch.Tensor,
    drive: torch.Tensor,
    parallel: bool = True,
    method: str = "blocked",
) -> torch.Tensor:
    """Solve z_t = decay_t * z_{t-1} + drive_t for t = 1..T.

    z0 (B, D), decay (T,) or per coordinate (T, D), drive (B, T, D) -> z (B, T+1, D)
    including z0.

    ``parallel=True`` with ``method="blocked"`` (default) cuts time into blocks of
    :data:`BLOCK` steps: inside a block the solution is one matrix product with the
    lower-triangular matrix of decay products (built by ``cumprod``, no logs or divisions),
    and the block ends form the same recurrence, T / BLOCK steps long, solved recursively
    (O(T BLOCK) work in a few large operations); a per-coordinate decay gets one such solve
    per coordinate. ``method="scan"`` composes the affine maps z -> a z + b with a
    Hillis-Steele scan (ceil(log2 T) whole-tensor steps, O(T log T) work). ``parallel=False``
    is the plain loop, kept as the reference. All give the same values and gradients up to
    rounding.
    """
    steps = drive.shape[1]
    if not parallel:
        z_prev, zs = z0, [z0]
        for t in range(steps):
            z_prev = decay[t] * z_prev + drive[:, t]
            zs.append(z_prev)
        return torch.stack(zs, dim=1)
    if method not in ("blocked", "scan"):
        raise ValueError(f"method must be 'blocked' or 'scan', got {method!r}")
    if method == "blocked" and decay.dim() == 1 and steps > 1:
        batch, _, dim = drive.shape
        time_major = drive.transpose(0, 1).reshape(steps, batch * dim)
        z = _blocked(z0.reshape(batch * dim), decay, time_major).reshape(steps, batch, dim)
        return torch.cat([z0.unsqueeze(1), z.transpose(0, 1)], dim=1)
    if method == "blocked" and decay.dim() == 2 and steps > 1:  # one solve per coordinate
        columns = [
            _blocked(z0[:, d], decay[:, d], drive[:, :, d].transpose(0, 1))
            for d in range(drive.shape[2])
        ]
        z = torch.stack(columns, dim=-1)  # (T, B, D)
        return torch.cat([z0.unsqueeze(1), z.transpose(0, 1)], dim=1)
    return _scan(z0, decay, drive)


def _blocked(z0: torch.Tensor, decay: torch.Tensor, drive: torch.Tensor) -> torch.Tensor:
    """z_1..z_T, time-major (T, F), for z0 (F,), decay (T,), drive (T, F), by blocks of
    K = :data:`BLOCK` steps: within block k, z = L_k u + P_k h_{k-1}, where
    L_k[j, i] = prod_{i < r <= j} a_r, P_k[j] = prod_{r <= j} a_r and h_{k-1} is the state
    at the end of the previous block (z0 for the first); the block ends solve the same
    recurrence h_k = P_k[-1] h_{k-1} + (L_k u)[-1], T / K steps long (recursively)."""
    steps, features = drive.shape
    size = min(steps, BLOCK)
    blocks = -(-steps // size)
    pad = blocks * size - steps
    if pad:
        decay = torch.cat([decay, decay.new_ones(pad)])
        drive = torch.cat([drive, drive.new_zeros(pad, features)])
    a = decay.reshape(blocks, size)
    below = torch.ones(size, size, dtype=torch.bool, device=a.device).tril(-1)  # j > i
    factors = torch.where(below, a.unsqueeze(-1), a.new_ones(()))  # [k, j, i] = a_j if j > i
    lower = torch.cumprod(factors, dim=1).tril()  # prod_{i < r <= j} a_r, 0 above diagonal
    prefix = torch.cumprod(a, dim=1)  # (n, K): prod_{r <= j} a_r
    local = torch.bmm(lower, drive.reshape(blocks, size, features))  # (n, K, F)
    if blocks == 1:
        starts = z0.unsqueeze(0)
    else:
        ends = _blocked(z0, prefix[:, -1], local[:, -1])  # h_0..h_{n-1}, (n, F)
        starts = torch.cat([z0.unsqueeze(0), ends[:-1]])  # h_{k-1}
    z = local + prefix.unsqueeze(-1) * starts.unsqueeze(1)
    return z.reshape(blocks * size, features)[:steps]


def _scan(z0: torch.Tensor, decay: torch.Tensor, drive: torch.Tensor) -> torch.Tensor:
    """Hillis-Steele scan of the affine maps; z (B, T+1, D) including z0."""
    steps = drive.shape[1]
    a = decay if decay.dim() == 2 else decay.unsqueeze(-1)  # (T, D) or (T, 1): map ending at t
    b = torch.cat([drive[:, :1] + decay[0] * z0.unsqueeze(1), drive[:, 1:]], dim=1)
    shift = 1
    while shift < steps:  # after this pass, maps cover the last 2 * shift steps
        b = torch.cat([b[:, :shift], a[shift:] * b[:, :-shift] + b[:, shift:]], dim=1)
        a = torch.cat([a[:shift], a[shift:] * a[:-shift]], dim=0)
        shift *= 2
    return torch.cat([z0.unsqueeze(1), b], dim=1)
