"""Input checks shared by models, training and metrics.

Every check raises ``TypeError`` or ``ValueError`` naming the argument, its shape and what was
expected, so that bad input never ends in a deep torch traceback.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "as_float_tensor",
    "check_sequences",
    "check_mask",
    "check_positive_int",
    "check_positive_float",
]


def as_float_tensor(value, name: str, device=None, dtype=None) -> torch.Tensor:
    """Convert ``value`` (tensor or array) to a floating tensor on ``device`` with ``dtype``.

    Raises ``TypeError`` for non-array input and for integer, boolean or complex dtypes.
    Read-only, reversed (negative-stride) and non-native byte-order numpy arrays are copied
    first, as ``torch.from_numpy`` takes none of them.
    """
    if isinstance(value, np.ndarray):
        if value.dtype.kind != "f":
            raise TypeError(f"{name} must have a floating-point dtype, got numpy {value.dtype}")
        native = value.dtype.newbyteorder("=")
        if not value.flags.writeable or value.dtype != native or min(value.strides, default=0) < 0:
            value = np.array(value, dtype=native)
        try:
            value = torch.from_numpy(value)
        except TypeError as err:  # e.g. float128, which torch has no dtype for
            raise TypeError(f"{name} has numpy dtype {value.dtype}, which torch lacks") from err
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}")
    if not torch.is_floating_point(value):
        raise TypeError(f"{name} must have a floating-point dtype, got {value.dtype}")
    return value.to(device=device, dtype=dtype)


def check_sequences(x: torch.Tensor, name: str, feature_dim: int | None = None) -> None:
    """Check that ``x`` is a (B, T, D) batch of sequences, B, T, D >= 1, with no inf entries.

    NaN entries are allowed (they mark missing values); ``feature_dim`` fixes D when given.
    """
    if x.dim() != 3:
        raise ValueError(f"{name} must have shape (B, T, D), got rank {x.dim()} {tuple(x.shape)}")
    batch, steps, dim = x.shape
    if batch == 0:
        raise ValueError(f"{name} is an empty batch: shape {tuple(x.shape)}, expected B >= 1")
    if steps == 0:
        raise ValueError(f"{name} has no time steps: shape {tuple(x.shape)}, expected T >= 1")
    if dim == 0:
        raise ValueError(f"{name} has no features: shape {tuple(x.shape)}, expected D >= 1")
    if feature_dim is not None and dim != feature_dim:
        raise ValueError(
            f"{name} has feature dim {dim} (shape {tuple(x.shape)}), expected {feature_dim}"
        )
    if torch.isinf(x).any():
        raise ValueError(f"{name} contains inf values; use NaN or a mask for missing entries")


def check_mask(mask, x: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """Return the observed-entry mask (B, T, D) of ``x`` combined with its NaN pattern.

    ``mask`` is bool, True = observed, of shape (B, T) or (B, T, D), or None (all observed).
    NaN entries of ``x`` count as missing; a NaN that ``mask`` marks observed is an error.
    """
    finite = ~torch.isnan(x)
    if mask is None:
        return finite
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(mask)
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor | np.ndarray) else type(mask).__name__
        raise TypeError(f"{name} must be a bool tensor (True = observed), got {got}")
    mask = mask.to(x.device)
    if mask.shape == x.shape[:2]:
        mask = mask.unsqueeze(-1).expand(x.shape)
    elif mask.shape != x.shape:
        raise ValueError(
            f"{name} has shape {tuple(mask.shape)}, "
            f"expected {tuple(x.shape[:2])} or {tuple(x.shape)}"
        )
    if (mask & ~finite).any():
        raise ValueError(f"x has NaN entries where {name} marks them observed")
    return mask


def check_positive_int(value, name: str) -> int:
    """Return ``value`` as int, raising ``ValueError`` unless it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_positive_float(value, name: str) -> float:
    """Return ``value`` as float, raising ``ValueError`` unless it is a finite number > 0
    (Python or numpy, as :func:`check_positive_int` takes numpy integers)."""
    real = int | float | np.integer | np.floating
    if isinstance(value, bool) or not isinstance(value, real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)
