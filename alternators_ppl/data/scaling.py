"""Per-dimension standardisation fitted on training data only."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Standardizer"]

# A column whose std is below this fraction of max(1, |mean|) is treated as constant.
_CONSTANT_TOL = 1e-12


class Standardizer:
    """Per-dimension ``(x - mean) / scale`` over all axes but the last.

    Attributes:
        mean: ``(D,)`` float64 per-dimension mean, ``None`` before ``fit``.
        scale: ``(D,)`` float64 per-dimension std (constant dimensions get 1),
            ``None`` before ``fit``.
    """

    def __init__(self) -> None:
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None

    @property
    def is_fitted(self) -> bool:
        """Whether ``fit`` (or ``from_dict``) has set ``mean`` and ``scale``."""
        return self.mean is not None and self.scale is not None

    def fit(self, x: np.ndarray) -> Standardizer:
        """Estimate mean and std per dimension, ignoring NaNs.

        Args:
            x: ``(..., D)`` data; NaNs mark missing entries, inf is rejected.

        Returns:
            ``self``.
        """
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim < 1 or arr.shape[-1] < 1:
            raise ValueError(f"x must have shape (..., D) with D >= 1, got {arr.shape}")
        flat = arr.reshape(-1, arr.shape[-1])
        if np.any(np.isinf(flat)):
            raise ValueError("x must not contain inf")
        observed = np.sum(~np.isnan(flat), axis=0)
        if np.any(observed == 0):
            empty = np.flatnonzero(observed == 0).tolist()
            raise ValueError(f"x has no non-NaN values in dimension(s) {empty}")
        mean = np.nanmean(flat, axis=0)
        std = np.nanstd(flat, axis=0)
        constant = std <= _CONSTANT_TOL * np.maximum(1.0, np.abs(mean))
        self.mean = mean
        self.scale = np.where(constant, 1.0, std)
        return self

    def _check(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.is_fitted:
            raise ValueError("Standardizer is not fitted; call fit() first")
        arr = np.asarray(x)
        if arr.ndim < 1 or arr.shape[-1] != self.mean.shape[0]:
            raise ValueError(f"x must have shape (..., {self.mean.shape[0]}), got {arr.shape}")
        return arr, self.mean, self.scale

    @staticmethod
    def _dtype(arr: np.ndarray) -> np.dtype:
        return arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.dtype(np.float64)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Standardise ``x``; NaNs stay NaN.

        Args:
            x: ``(..., D)`` data.

        Returns:
            ``(..., D)`` standardised data (float dtype of ``x``, else float64).
        """
        arr, mean, scale = self._check(x)
        return ((arr - mean) / scale).astype(self._dtype(arr), copy=False)

    def inverse_transform(self, x: np.ndarray) -> np.ndarray:
        """Undo ``transform``.

        Args:
            x: ``(..., D)`` standardised data.

        Returns:
            ``(..., D)`` data in original units (float dtype of ``x``, else float64).
        """
        arr, mean, scale = self._check(x)
        return (arr * scale + mean).astype(self._dtype(arr), copy=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"mean": [D floats], "scale": [D floats]}``."""
        if not self.is_fitted:
            raise ValueError("Standardizer is not fitted; call fit() first")
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Standardizer:
        """Rebuild from ``to_dict`` output (``mean`` and ``scale`` of length ``D``)."""
        try:
            mean = np.asarray(data["mean"], dtype=np.float64)
            scale = np.asarray(data["scale"], dtype=np.float64)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"data must have 'mean' and 'scale' lists, got {data!r}") from exc
        if mean.ndim != 1 or mean.shape != scale.shape or mean.size == 0:
            raise ValueError(
                f"mean and scale must be equal-length 1-D, got {mean.shape} and {scale.shape}"
            )
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
            raise ValueError("mean must be finite and scale finite and positive")
        out = cls()
        out.mean, out.scale = mean, scale
        return out

    def __repr__(self) -> str:
        if not self.is_fitted:
            return "Standardizer(unfitted)"
        return f"Standardizer(mean={self.mean.tolist()}, scale={self.scale.tolist()})"
