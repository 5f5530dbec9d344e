"""Convolutional OTN/FTN for gridded fields (e.g. sea-surface temperature maps).

A field on an ``H x W`` grid is a flat vector of ``D = H * W`` values (C order), so the
networks plug into :class:`~alternators_ppl.models.alternator.Alternator` as ``otn=``/``ftn=``
like any other module: ``GridEncoder`` (FTN) maps ``(..., D) -> (..., Dz)`` and
``GridDecoder`` (OTN) maps ``(..., Dz) -> (..., D)``. Land or other missing cells are handled by
the mask: they are left out of the likelihood (NaN in x), and the encoder reads them as
``fill`` where ``land`` is given.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from alternators_ppl.validation import check_positive_int

__all__ = ["GridEncoder", "GridDecoder"]


def _shape(shape) -> tuple[int, int]:
    if len(shape) != 2:
        raise ValueError(f"shape must be (H, W), got {shape!r}")
    return check_positive_int(shape[0], "shape[0]"), check_positive_int(shape[1], "shape[1]")


def _down(size: int, layers: int) -> int:
    for _ in range(layers):
        size = (size + 1) // 2  # conv 3x3, stride 2, padding 1
    return size


class GridEncoder(nn.Module):
    """FTN over a grid: stride-2 3x3 convolutions, then a linear map to the latent.

    Args:
        shape: grid ``(H, W)``; inputs are ``(..., H * W)``.
        latent_dim: ``Dz``.
        channels: channels of each conv layer (each halves H and W, rounding up).
        land: optional ``(H * W,)`` bool, True where the input is never observed; those
            entries are replaced by 0 before the convolutions.
    """

    def __init__(self, shape, latent_dim: int, channels: Sequence[int] = (16, 32), land=None):
        super().__init__()
        self.shape = _shape(shape)
        latent_dim = check_positive_int(latent_dim, "latent_dim")
        layers, c_in = [], 1
        for c in channels:
            layers += [nn.Conv2d(c_in, check_positive_int(c, "channels"), 3, 2, 1), nn.Tanh()]
            c_in = c
        self.conv = nn.Sequential(*layers)
        h, w = _down(self.shape[0], len(channels)), _down(self.shape[1], len(channels))
        self.head = nn.Linear(c_in * h * w, latent_dim)
        land = (
            torch.zeros(self.shape[0] * self.shape[1], dtype=torch.bool)
            if land is None
            else torch.as_tensor(land, dtype=torch.bool).reshape(-1)
        )
        if land.numel() != self.shape[0] * self.shape[1]:
            raise ValueError(
                f"land must have {self.shape[0] * self.shape[1]} entries, got {land.numel()}"
            )
        self.register_buffer("land", land, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., H * W) -> (..., Dz)."""
        lead = x.shape[:-1]
        if x.shape[-1] != self.shape[0] * self.shape[1]:
            raise ValueError(
                f"x must have shape (..., {self.shape[0] * self.shape[1]}), got {tuple(x.shape)}"
            )
        x = x.masked_fill(self.land, 0.0).reshape(-1, 1, *self.shape)
        return self.head(self.conv(x).flatten(1)).reshape(*lead, -1)


class GridDecoder(nn.Module):
    """OTN over a grid: a linear map from the latent to a coarse grid, then 2x upsampling
    3x3 convolutions, cropped to ``(H, W)``; mirrors :class:`GridEncoder`.

    Args:
        latent_dim: ``Dz``.
        shape: grid ``(H, W)``; outputs are ``(..., H * W)``.
        channels: channels of each layer from fine to coarse (as in the encoder).
    """

    def __init__(self, latent_dim: int, shape, channels: Sequence[int] = (16, 32)):
        super().__init__()
        self.shape = _shape(shape)
        latent_dim = check_positive_int(latent_dim, "latent_dim")
        channels = [check_positive_int(c, "channels") for c in channels]
        self.coarse = (_down(self.shape[0], len(channels)), _down(self.shape[1], len(channels)))
        self.head = nn.Linear(latent_dim, channels[-1] * self.coarse[0] * self.coarse[1])
        layers = []
        ups = list(reversed(channels))
        for c_in, c_out in zip(ups, ups[1:] + [ups[-1]], strict=True):
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(c_in, c_out, 3, 1, 1),
                nn.Tanh(),
            ]
        self.up = nn.Sequential(*layers)
        self.out = nn.Conv2d(ups[-1], 1, 3, 1, 1)
        self.channels = channels

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z (..., Dz) -> (..., H * W)."""
        lead = z.shape[:-1]
        h = torch.tanh(self.head(z.reshape(-1, z.shape[-1])))
        h = h.reshape(-1, self.channels[-1], *self.coarse)
        y = self.out(self.up(h))[:, 0, : self.shape[0], : self.shape[1]]
        return y.reshape(*lead, self.shape[0] * self.shape[1])
