"""Variational guides for :meth:`Alternator.model <alternators_ppl.models.Alternator.model>`.

Both guides are Pyro programs with the model's signature ``guide(x, mask=None, z_target=None)``
and the model's site names (``z_0``, ``x_missing_t`` at steps with a missing entry, ``z_t``),
inside ``pyro.plate("sequences", B, dim=-1)``. They factorise in the model's order,

    q(z_0 | x) prod_t q(x_t^miss | z_{t-1}) q(z_t | z_{t-1}, x),

each factor depending only on data and on sites drawn before it, so they also work under an
outer particle plate (vectorised ELBOs, :func:`posterior_latents`) and satisfy the condition
under which ``TraceMeanField_ELBO`` is exact (see :func:`~alternators_ppl.inference.fit_svi`).

- :class:`FilteringGuide`: q(z_t | z_{t-1}, x_t) = N(z_loc(x_t, z_{t-1}) + c(x_t, z_{t-1}), s^2)
  with the model's own FTN (shared weights) inside ``z_loc``, a learned correction MLP ``c``
  and a learned per-dimension scale s; q(z_0 | x_1) from an MLP of the first observation.
- :class:`SmoothingGuide`: a backward GRU reads [x_filled, mask] from the end; a DMM-style
  combiner mixes its summary of x_{t+1:T} with z_{t-1} and the model's prior mean.

Missing entries of x_t are proposed from the model's own p(x_t | z_{t-1}) (its ``x_dist``, so
a variant's observation factor counts; the ``x_missing_t`` terms of model and guide then
cancel) and the guide's FTN reads the filled x_t, as the model's does; alpha_t is the model's
own (``Alternator._step_alpha``: the schedule, or the data-driven alpha_t of the
alpha-Alternator from the filled inputs). The values that x holds at missing entries never
reach a guide (they are zero-filled and the mask is an input). The guides hold a reference to
the model (not a submodule: the model's weights stay the model's); ``.to(device)`` them
alongside it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn
from torch.nn.functional import softplus

from alternators_ppl.models.alternator import Alternator
from alternators_ppl.networks import MLP
from alternators_ppl.validation import check_positive_float, check_positive_int

__all__ = ["FilteringGuide", "SmoothingGuide"]

_INSTANCES = itertools.count()


def _softplus_inverse(value: float) -> float:
    return math.log(math.expm1(value))


def _cat(*parts: torch.Tensor) -> torch.Tensor:
    """Concatenate on the last axis after broadcasting the leading (sample, batch) axes."""
    lead = torch.broadcast_shapes(*(p.shape[:-1] for p in parts))
    return torch.cat([p.expand(*lead, p.shape[-1]) for p in parts], dim=-1)


class _AlternatorGuide(PyroModule):
    """Shared plumbing: the model reference, input checks and the ``x_missing_t`` proposal."""

    def __init__(self, model: Alternator, kind: str):
        if not isinstance(model, Alternator):
            raise TypeError(f"model must be an Alternator, got {type(model).__name__}")
        # A unique Pyro name keeps two guides' parameters apart in one parameter store.
        super().__init__(name=f"{kind}{next(_INSTANCES)}")
        self.__dict__["_alternator"] = model  # a reference, not a submodule

    @property
    def alternator(self) -> Alternator:
        """The model this guide approximates the posterior of (its networks are shared)."""
        return self.__dict__["_alternator"]

    def _inputs(self, x, mask, z_target):
        model = self.alternator
        x, mask = model._prepare(x, mask)
        if z_target is not None:
            z_target = model._check_z_target(z_target, x)
        return x, mask, z_target

    def _fill(self, t: int, x_t: torch.Tensor, observed: torch.Tensor, z_prev: torch.Tensor):
        """x_t (B, Dx) with missing entries drawn at site ``x_missing_t`` from p(x_t | z_{t-1}).

        Present exactly when the model has the site (some entry of step t is missing).
        """
        if bool(observed.all()):
            return x_t
        x_dist = self.alternator.x_dist(z_prev)  # the model's own factor (variants count)
        draw = pyro.sample(f"x_missing_{t}", x_dist.mask(~observed).to_event(1))
        return torch.where(observed, x_t, draw)


class FilteringGuide(_AlternatorGuide):
    """Amortised filtering guide on the FTN recursion, q(z_t | z_{t-1}, x_t).

    q(z_0 | x_1) = N(m(x_1, mask_1), diag s_0^2) and, for t = 1..T,

        q(z_t | z_{t-1}, x_t) = N(sqrt(alpha_t) g(x_t) + sqrt(1-alpha_t-sigma_z^2) z_{t-1}
                                  + c(x_t, z_{t-1}), diag s^2),

    with the model's FTN g (shared), a correction MLP c (last layer zero at initialisation, so
    the guide starts on the model's recursion) and learned per-dimension scales s_0, s
    (softplus + ``min_scale``). s starts at ``init_scale`` (default half the smallest
    sigma_z), not at sigma_z: a guide whose scale equals sigma_z cancels the model's z-terms,
    and it must learn its own.

    Args:
        model: the :class:`~alternators_ppl.models.Alternator` whose posterior is approximated.
        hidden, activation: widths and activation of the correction and z_0 MLPs.
        init_scale: initial per-step scale s (default half the smallest sigma_z).
        min_scale: floor added to every scale.
    """

    def __init__(
        self,
        model: Alternator,
        hidden: Sequence[int] = (64,),
        activation: str = "tanh",
        init_scale: float | None = None,
        min_scale: float = 1e-4,
    ):
        super().__init__(model, "filtering_guide")
        obs_dim, latent_dim = model.obs_dim, model.latent_dim
        init_scale = check_positive_float(
            0.5 * min(model.sigma_z_values()) if init_scale is None else init_scale,
            "init_scale",
        )
        self.min_scale = check_positive_float(min_scale, "min_scale")
        self.correction = MLP(obs_dim + latent_dim, latent_dim, hidden, activation)
        self.initial = MLP(2 * obs_dim, latent_dim, hidden, activation)
        with torch.no_grad():
            self.correction.layers[-1].weight.zero_()
            self.correction.layers[-1].bias.zero_()
        self.scale_raw = nn.Parameter(torch.full((latent_dim,), _softplus_inverse(init_scale)))
        self.initial_scale_raw = nn.Parameter(torch.full((latent_dim,), _softplus_inverse(0.5)))
        self.to(device=model.device, dtype=model.dtype)

    def forward(self, x, mask=None, z_target=None) -> torch.Tensor:
        """Guide program over x (B, T, Dx) (NaN or ``mask`` False = missing); returns z_T."""
        x, mask, z_target = self._inputs(x, mask, z_target)
        model = self.alternator
        batch, steps, _ = x.shape
        alpha = model.alpha_schedule(steps)
        first = torch.cat([x[:, 0], mask[:, 0].to(x.dtype)], dim=-1)
        with pyro.plate("sequences", batch, dim=-1):
            scale0 = softplus(self.initial_scale_raw) + self.min_scale
            z_prev = pyro.sample("z_0", dist.Normal(self.initial(first), scale0).to_event(1))
            scale = softplus(self.scale_raw) + self.min_scale
            read = []
            for t in pyro.markov(range(1, steps + 1)):
                x_t = self._fill(t, x[:, t - 1], mask[:, t - 1], z_prev)
                read.append(x_t)
                if z_target is not None:
                    z_prev = z_target[:, t - 1]
                    continue
                alpha_t = model._step_alpha(t - 1, alpha, read)  # data-driven where it is
                loc = model.z_loc(x_t, z_prev, alpha_t) + self.correction(_cat(x_t, z_prev))
                z_prev = pyro.sample(f"z_{t}", dist.Normal(loc, scale).to_event(1))
        return z_prev


class SmoothingGuide(_AlternatorGuide):
    """Structured smoothing guide (as in the deep Markov model), q(z_t | z_{t-1}, x_{t:T}).

    A backward GRU reads [x_filled, mask] (B, T, 2 Dx) from the end; h_t (B, H) summarises
    x_{t+1:T} (a learned vector for t = T, which is also the GRU's initial state). With the
    model's prior mean mu_t = sqrt(alpha_t) g(x_t) + sqrt(1-alpha_t-sigma_z^2) z_{t-1}::

        c_t = (tanh(W_c [z_{t-1}, mu_t] + b_c) + h_t) / 2
        q(z_t | z_{t-1}, x_{t:T}) = N(mu_t + W_m c_t + L [z_{t-1}, mu_t] + b_m,
                                      diag(softplus(W_s c_t + b_s) + min_scale)^2)

    (W_m, L, b_m zero and scale ``init_scale`` at initialisation: the guide starts as the
    model's prior recursion with a narrower scale). q(z_0 | x_{1:T}) is a linear head on the
    GRU's summary of the whole sequence.

    Args:
        model: the :class:`~alternators_ppl.models.Alternator` whose posterior is approximated.
        rnn_hidden: H, hidden size of the GRU and of the combiner.
        init_scale: initial per-step scale (default half the smallest sigma_z).
        min_scale: floor added to every scale.
    """

    def __init__(
        self,
        model: Alternator,
        rnn_hidden: int = 64,
        init_scale: float | None = None,
        min_scale: float = 1e-4,
    ):
        super().__init__(model, "smoothing_guide")
        obs_dim, latent_dim = model.obs_dim, model.latent_dim
        self.rnn_hidden = check_positive_int(rnn_hidden, "rnn_hidden")
        init_scale = check_positive_float(
            0.5 * min(model.sigma_z_values()) if init_scale is None else init_scale,
            "init_scale",
        )
        self.min_scale = check_positive_float(min_scale, "min_scale")
        self.rnn = nn.GRU(2 * obs_dim, rnn_hidden, batch_first=True)
        self.h_last = nn.Parameter(torch.zeros(rnn_hidden))
        self.lin_z_to_hidden = nn.Linear(2 * latent_dim, rnn_hidden)
        self.lin_hidden_to_loc = nn.Linear(rnn_hidden, latent_dim)
        self.lin_skip = nn.Linear(2 * latent_dim, latent_dim, bias=False)
        self.lin_hidden_to_scale = nn.Linear(rnn_hidden, latent_dim)
        self.initial = nn.Linear(rnn_hidden, 2 * latent_dim)
        with torch.no_grad():
            for layer in (self.lin_hidden_to_loc, self.lin_hidden_to_scale, self.initial):
                layer.weight.zero_()
                layer.bias.zero_()
            self.lin_skip.weight.zero_()
            self.lin_hidden_to_scale.bias.fill_(_softplus_inverse(init_scale))
            self.initial.bias[latent_dim:].fill_(_softplus_inverse(0.5))
        self.to(device=model.device, dtype=model.dtype)

    def encode(self, x_filled: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Backward summaries of x_filled (B, T, Dx) (missing entries zeroed) and mask.

        Returns (h_all (B, H): reads x_{1:T}, h (B, T, H): h[:, t-1] reads x_{t+1:T}).
        """
        batch = x_filled.shape[0]
        inputs = torch.cat([x_filled, mask.to(x_filled.dtype)], dim=-1).flip(1)
        h_last = self.h_last.expand(batch, self.rnn_hidden)
        out = self.rnn(inputs, h_last.unsqueeze(0).contiguous())[0].flip(1)
        return out[:, 0], torch.cat([out[:, 1:], h_last.unsqueeze(1)], dim=1)

    def combine(self, z_prev: torch.Tensor, prior_loc: torch.Tensor, h: torch.Tensor):
        """(loc, scale) of q(z_t | z_{t-1}, x_{t:T}); z_prev, prior_loc (..., Dz), h (..., H)."""
        zin = _cat(z_prev, prior_loc)
        c = 0.5 * (torch.tanh(self.lin_z_to_hidden(zin)) + h)
        loc = prior_loc + self.lin_hidden_to_loc(c) + self.lin_skip(zin)
        return loc, softplus(self.lin_hidden_to_scale(c)) + self.min_scale

    def forward(self, x, mask=None, z_target=None) -> torch.Tensor:
        """Guide program over x (B, T, Dx) (NaN or ``mask`` False = missing); returns z_T."""
        x, mask, z_target = self._inputs(x, mask, z_target)
        model = self.alternator
        batch, steps, _ = x.shape
        alpha = model.alpha_schedule(steps)
        h_all, h = self.encode(x, mask)
        loc0, raw0 = self.initial(h_all).chunk(2, dim=-1)
        with pyro.plate("sequences", batch, dim=-1):
            scale0 = softplus(raw0) + self.min_scale
            z_prev = pyro.sample("z_0", dist.Normal(loc0, scale0).to_event(1))
            read = []
            for t in pyro.markov(range(1, steps + 1)):
                x_t = self._fill(t, x[:, t - 1], mask[:, t - 1], z_prev)
                read.append(x_t)
                if z_target is not None:
                    z_prev = z_target[:, t - 1]
                    continue
                prior_loc = model.z_loc(x_t, z_prev, model._step_alpha(t - 1, alpha, read))
                loc, scale = self.combine(z_prev, prior_loc, h[:, t - 1])
                z_prev = pyro.sample(f"z_{t}", dist.Normal(loc, scale).to_event(1))
        return z_prev

    def extra_repr(self) -> str:
        return f"rnn_hidden={self.rnn_hidden}, min_scale={self.min_scale:.3g}"
