"""Networks for the OTN f_theta and the FTN g_phi."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pyro.nn import PyroModule
from torch import nn

__all__ = ["MLP", "ACTIVATIONS", "ParameterPlacement", "output_linear"]

ACTIVATIONS = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
}


def output_linear(net: nn.Module) -> nn.Linear | None:
    """The output layer of ``net`` when it is a linear map (an :class:`MLP`, an
    ``nn.Sequential`` ending in ``nn.Linear``, or an ``nn.Linear``); None otherwise."""
    if isinstance(net, nn.Linear):
        return net
    layers = getattr(net, "layers", net)
    if isinstance(layers, nn.Sequential) and isinstance(layers[-1], nn.Linear):
        return layers[-1]
    return None


class ParameterPlacement:
    """Mixin for a torch module: ``device`` and ``dtype`` are those of its first parameter
    (inputs are moved and cast to them)."""

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the parameters."""
        return next(self.parameters()).dtype


class MLP(PyroModule):
    """Multi-layer perceptron (..., in_dim) -> (..., out_dim), applied to the last axis.

    ``hidden`` lists the hidden widths (empty: a linear map); ``activation`` names one of
    ``ACTIVATIONS``. Leading axes are batch axes, so one call scores a whole (B, T, in_dim) path.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        widths = [in_dim, *hidden, out_dim]
        if any(not isinstance(w, int) or w < 1 for w in widths):
            raise ValueError(f"layer widths must be positive integers, got {widths}")
        layers: list[nn.Module] = []
        for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(nn.Linear(w_in, w_out))
            if i < len(widths) - 2:
                layers.append(ACTIVATIONS[activation]())
        self.layers = nn.Sequential(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim
        self.hidden, self.activation = tuple(hidden), activation

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.layers(inputs)
