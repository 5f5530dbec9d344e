"""Deep Markov Model (Krishnan, Shalit & Sontag, AAAI 2017) as a Pyro program: a baseline.

Generative process, x_t in R^Dx, z_t in R^Dz, t = 1..T::

    z_0 ~ N(0, I)
    z_t ~ N(m(z_{t-1}), diag s(z_{t-1})^2)        (gated transition)
    x_t ~ N(mu(z_t), diag sigma(z_t)^2)           (Gaussian emission MLP)

Gated transition (as in the paper and Pyro's DMM example)::

    g = sigmoid(W_g2 relu(W_g1 z + b_g1) + b_g2)           gate
    p = W_p2 relu(W_p1 z + b_p1) + b_p2                    proposed mean
    m(z) = (1 - g) * (W_l z + b_l) + g * p                 linear skip, initialised to identity
    s(z) = softplus(W_s relu(p) + b_s) + min_scale

Variational family (structured inference network): a backward GRU reads x_{t:T} (missing
entries zero-filled, plus the observed mask as extra input channels) into h_t, and a combiner
mixes it with z_{t-1}::

    c = (tanh(W_c z_{t-1} + b_c) + h_t) / 2
    q(z_t | z_{t-1}, x_{t:T}) = N(W_m c + b_m, diag(softplus(W_v c + b_v) + min_scale)^2)

with q(z_0 | x) from the same combiner applied to a learned start vector and h_1.

Shapes are batch-first: x (B, T, Dx), z (B, T+1, Dz) including z_0; samplers add a leading
sample axis S and run all S*B paths through one network call per step. A mask is bool,
True = observed, of shape (B, T) or (B, T, Dx); NaN entries of x are missing too.
"""

from __future__ import annotations

import itertools
import math

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import PyroModule
from torch import nn
from torch.nn.functional import softplus

from alternators_ppl.validation import (
    as_float_tensor,
    check_mask,
    check_positive_float,
    check_positive_int,
    check_sequences,
)

__all__ = ["DeepMarkovModel", "GatedTransition", "GaussianEmitter", "Combiner"]

_INSTANCES = itertools.count()


class GaussianEmitter(nn.Module):
    """p(x_t | z_t): z (..., Dz) -> (loc, scale), each (..., Dx); scale >= min_scale."""

    def __init__(
        self, obs_dim: int, latent_dim: int, hidden: int, min_scale: float, init_scale: float
    ):
        super().__init__()
        self.lin_z_to_hidden = nn.Linear(latent_dim, hidden)
        self.lin_hidden_to_hidden = nn.Linear(hidden, hidden)
        self.lin_hidden_to_loc = nn.Linear(hidden, obs_dim)
        self.lin_hidden_to_scale = nn.Linear(hidden, obs_dim)
        with torch.no_grad():  # start homoscedastic at scale init_scale + min_scale
            self.lin_hidden_to_scale.weight.zero_()
            self.lin_hidden_to_scale.bias.fill_(math.log(math.expm1(init_scale)))
        self.min_scale = min_scale

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.lin_hidden_to_hidden(torch.relu(self.lin_z_to_hidden(z))))
        scale = softplus(self.lin_hidden_to_scale(h)) + self.min_scale
        return self.lin_hidden_to_loc(h), scale


class GatedTransition(nn.Module):
    """p(z_t | z_{t-1}): z (..., Dz) -> (loc, scale), each (..., Dz); the DMM's gated form."""

    def __init__(self, latent_dim: int, hidden: int, min_scale: float):
        super().__init__()
        self.lin_gate_z_to_hidden = nn.Linear(latent_dim, hidden)
        self.lin_gate_hidden_to_z = nn.Linear(hidden, latent_dim)
        self.lin_proposed_mean_z_to_hidden = nn.Linear(latent_dim, hidden)
        self.lin_proposed_mean_hidden_to_z = nn.Linear(hidden, latent_dim)
        self.lin_sig = nn.Linear(latent_dim, latent_dim)
        self.lin_z_to_loc = nn.Linear(latent_dim, latent_dim)
        with torch.no_grad():  # start the skip connection at the identity map
            self.lin_z_to_loc.weight.copy_(torch.eye(latent_dim))
            self.lin_z_to_loc.bias.zero_()
        self.min_scale = min_scale

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gate = torch.sigmoid(self.lin_gate_hidden_to_z(torch.relu(self.lin_gate_z_to_hidden(z))))
        proposed = self.lin_proposed_mean_hidden_to_z(
            torch.relu(self.lin_proposed_mean_z_to_hidden(z))
        )
        loc = (1 - gate) * self.lin_z_to_loc(z) + gate * proposed
        scale = softplus(self.lin_sig(torch.relu(proposed))) + self.min_scale
        return loc, scale


class Combiner(nn.Module):
    """q(z_t | z_{t-1}, h_t): z (..., Dz), h (..., H) -> (loc, scale), each (..., Dz)."""

    def __init__(self, latent_dim: int, rnn_hidden: int, min_scale: float):
        super().__init__()
        self.lin_z_to_hidden = nn.Linear(latent_dim, rnn_hidden)
        self.lin_hidden_to_loc = nn.Linear(rnn_hidden, latent_dim)
        self.lin_hidden_to_scale = nn.Linear(rnn_hidden, latent_dim)
        self.min_scale = min_scale

    def forward(self, z_prev: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        combined = 0.5 * (torch.tanh(self.lin_z_to_hidden(z_prev)) + h)
        scale = softplus(self.lin_hidden_to_scale(combined)) + self.min_scale
        return self.lin_hidden_to_loc(combined), scale


class DeepMarkovModel(PyroModule):
    """Deep Markov Model with Gaussian emissions and a structured (backward-GRU) guide.

    Args:
        obs_dim: Dx, size of each observation x_t.
        latent_dim: Dz, size of each latent z_t.
        transition_hidden: hidden width of the gated transition's gate and proposed mean.
        emission_hidden: width of the emission MLP's two hidden layers.
        rnn_hidden: hidden size of the guide's backward GRU (and of the combiner).
        min_scale: floor added to every softplus scale (emission, transition, guide).
        init_emission_scale: emission scale at initialisation (above the floor). A small value
            (data on a unit scale) makes the model use z from the start; a large one lets it
            explain the data as noise first, which often stalls training on a plateau.

    :meth:`model` and :meth:`guide` are Pyro programs over sites ``z_0 .. z_T`` and ``x_1 .. x_T``
    (``pyro.plate("sequences")`` at dim -1), so they work with any SVI loop. Each registers
    only its own weights in Pyro's parameter store, under names prefixed by the instance's
    unique :attr:`param_name` (the model: ``transition``, ``emitter``; the guide: ``rnn``,
    ``combiner``, ``h_0``, ``z_q_0``), so ``poutine.block(dmm.model, hide_types=["param"])``
    trains the guide alone. :meth:`fit` and :meth:`elbo` run in a private parameter-store
    scope and leave the global store untouched.
    """

    def __init__(
        self,
        obs_dim: int,
        latent_dim: int,
        transition_hidden: int = 64,
        emission_hidden: int = 64,
        rnn_hidden: int = 64,
        *,
        min_scale: float = 1e-3,
        init_emission_scale: float = 0.1,
    ):
        super().__init__()
        self.obs_dim = check_positive_int(obs_dim, "obs_dim")
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        transition_hidden = check_positive_int(transition_hidden, "transition_hidden")
        emission_hidden = check_positive_int(emission_hidden, "emission_hidden")
        self.rnn_hidden = check_positive_int(rnn_hidden, "rnn_hidden")
        self.min_scale = check_positive_float(min_scale, "min_scale")
        init_emission_scale = check_positive_float(init_emission_scale, "init_emission_scale")
        self.param_name = f"dmm{next(_INSTANCES)}"  # unique pyro.module prefix
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)
        self.emitter = GaussianEmitter(
            obs_dim, latent_dim, emission_hidden, self.min_scale, init_emission_scale
        )
        self.transition = GatedTransition(latent_dim, transition_hidden, self.min_scale)
        self.combiner = Combiner(latent_dim, rnn_hidden, self.min_scale)
        self.rnn = nn.GRU(2 * obs_dim, rnn_hidden, batch_first=True)
        self.h_0 = nn.Parameter(torch.zeros(rnn_hidden))
        self.z_q_0 = nn.Parameter(torch.zeros(latent_dim))

    # ------------------------------------------------------------------ building blocks
    @property
    def device(self) -> torch.device:
        """Device of the model's buffers (inputs are moved here)."""
        return self._anchor.device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the model's buffers (inputs are cast to it)."""
        return self._anchor.dtype

    def _as_input(self, x, name: str = "x") -> torch.Tensor:
        x = as_float_tensor(x, name, device=self.device, dtype=self.dtype)
        check_sequences(x, name, self.obs_dim)
        return x

    def prepare(self, x, mask, name: str = "x") -> tuple[torch.Tensor, torch.Tensor]:
        """Checked x (B, T, Dx) with missing entries zeroed, and the observed mask (B, T, Dx)."""
        x = self._as_input(x, name)
        mask = check_mask(mask, x, "mask" if name == "x" else f"mask for {name}")
        return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device)), mask

    def encode(self, x_filled: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Backward GRU summaries h (B, T, H): h[:, t] reads x_{t+1..T} (0-based t) and the mask.

        x_filled (B, T, Dx) has its missing entries zeroed; mask (B, T, Dx) is bool.
        """
        inputs = torch.cat([x_filled, mask.to(x_filled.dtype)], dim=-1).flip(1)
        h_0 = self.h_0.expand(1, x_filled.shape[0], self.rnn_hidden).contiguous()
        return self.rnn(inputs, h_0)[0].flip(1)

    def _guide_start(self, h: torch.Tensor) -> torch.Tensor:
        """The combiner's z-input for q(z_0 | x): the learned start vector, (..., Dz)."""
        return self.z_q_0.expand(*h.shape[:-1], self.latent_dim)

    # ------------------------------------------------------------------ Pyro programs
    def model(self, x, mask=None) -> None:
        """Generative program; x (B, T, Dx) observed where ``mask`` is True (and not NaN).

        Sites ``z_0`` ~ N(0, I), ``z_t`` ~ transition(z_{t-1}) and ``x_t`` ~ emission(z_t) for
        t = 1..T; missing entries of x_t are masked out of its log-density (their values,
        zero-filled, never matter).
        """
        x, mask = self.prepare(x, mask)
        pyro.module(f"{self.param_name}_transition", self.transition)
        pyro.module(f"{self.param_name}_emitter", self.emitter)
        batch, steps, _ = x.shape
        with pyro.plate("sequences", batch, dim=-1):
            z_prev = pyro.sample(
                "z_0", dist.Normal(x.new_zeros(batch, self.latent_dim), 1.0).to_event(1)
            )
            for t in pyro.markov(range(1, steps + 1)):
                loc, scale = self.transition(z_prev)
                z_prev = pyro.sample(f"z_{t}", dist.Normal(loc, scale).to_event(1))
                x_loc, x_scale = self.emitter(z_prev)
                pyro.sample(
                    f"x_{t}",
                    dist.Normal(x_loc, x_scale).mask(mask[:, t - 1]).to_event(1),
                    obs=x[:, t - 1],
                )

    def guide(self, x, mask=None) -> None:
        """Structured variational program: q(z_0 | x) prod_t q(z_t | z_{t-1}, x_{t:T}).

        Reads x (B, T, Dx) zero-filled at missing entries plus the mask, so the values held at
        missing entries never matter.
        """
        x, mask = self.prepare(x, mask)
        pyro.module(f"{self.param_name}_rnn", self.rnn)
        pyro.module(f"{self.param_name}_combiner", self.combiner)
        pyro.param(f"{self.param_name}_h_0", self.h_0)
        pyro.param(f"{self.param_name}_z_q_0", self.z_q_0)
        h = self.encode(x, mask)
        with pyro.plate("sequences", x.shape[0], dim=-1):
            loc, scale = self.combiner(self._guide_start(h[:, 0]), h[:, 0])
            z_prev = pyro.sample("z_0", dist.Normal(loc, scale).to_event(1))
            for t in pyro.markov(range(1, x.shape[1] + 1)):
                loc, scale = self.combiner(z_prev, h[:, t - 1])
                z_prev = pyro.sample(f"z_{t}", dist.Normal(loc, scale).to_event(1))

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def elbo(self, x, mask=None, num_particles: int = 10) -> torch.Tensor:
        """Per-sequence ELBO estimate (B,), a lower bound on log p(x^obs) in expectation.

        E_q[log p(x^obs, z_{0:T}) - log q(z_{0:T} | x)] averaged over ``num_particles``
        vectorised draws from the guide; x (B, T, Dx), missing entries drop out.
        """
        num_particles = check_positive_int(num_particles, "num_particles")
        x = self._as_input(x)
        mask = check_mask(mask, x)
        with pyro.get_param_store().scope():
            with pyro.plate("particles", num_particles, dim=-2):
                guide_trace = poutine.trace(self.guide).get_trace(x, mask)
                model_trace = poutine.trace(
                    poutine.replay(self.model, trace=guide_trace)
                ).get_trace(x, mask)
        total = x.new_zeros(num_particles, x.shape[0])
        for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
            for site in trace.nodes.values():
                if site["type"] == "sample":
                    total = total + sign * site["fn"].log_prob(site["value"])
        return total.mean(0)

    # ------------------------------------------------------------------ samplers
    def _guide_paths(self, x: torch.Tensor, mask: torch.Tensor, num_samples: int) -> torch.Tensor:
        """Draws z_{0:T} ~ q(z | x) for checked, zero-filled x (B, T, Dx): (S, B, T+1, Dz).

        Same random numbers as :meth:`guide` traced under a sample plate at dim -2.
        """
        h = self.encode(x, mask)  # one GRU pass, shared by the S samples
        z_prev = self._guide_start(h[:, 0]).expand(num_samples, -1, -1)
        zs = []
        for t in range(x.shape[1] + 1):
            loc, scale = self.combiner(z_prev, h[:, max(t - 1, 0)])
            z_prev = dist.Normal(loc, scale).rsample()
            zs.append(z_prev)
        return torch.stack(zs, dim=2)

    def _emit(self, z: torch.Tensor) -> torch.Tensor:
        loc, scale = self.emitter(z)
        return dist.Normal(loc, scale).sample()

    def _step(self, z_prev: torch.Tensor) -> torch.Tensor:
        loc, scale = self.transition(z_prev)
        return dist.Normal(loc, scale).sample()

    @torch.no_grad()
    def sample(self, num_samples: int, num_steps: int) -> dict[str, torch.Tensor]:
        """Draws from the prior: {"x": (S, T, Dx), "z": (S, T+1, Dz)} with T = ``num_steps``."""
        num_samples = check_positive_int(num_samples, "num_samples")
        num_steps = check_positive_int(num_steps, "num_steps")
        z_prev = torch.randn(num_samples, self.latent_dim, dtype=self.dtype, device=self.device)
        zs = [z_prev]
        for _ in range(num_steps):
            z_prev = self._step(z_prev)
            zs.append(z_prev)
        z = torch.stack(zs, dim=1)
        return {"x": self._emit(z[:, 1:]), "z": z}

    @torch.no_grad()
    def infer_latents(self, x, mask=None, num_samples: int = 1) -> torch.Tensor:
        """Latent paths drawn from the guide given x (B, T, Dx): (S, B, T+1, Dz)."""
        num_samples = check_positive_int(num_samples, "num_samples")
        x, mask = self.prepare(x, mask)
        return self._guide_paths(x, mask, num_samples)

    @torch.no_grad()
    def impute(self, x, mask=None, num_samples: int = 100) -> torch.Tensor:
        """Fill missing entries of x (B, T, Dx): (S, B, T, Dx).

        z_{0:T} is drawn from the guide given the observed entries, then each missing entry
        from the emission p(x_t | z_t); observed entries are returned unchanged and the values
        x holds at missing entries never affect the output.
        """
        num_samples = check_positive_int(num_samples, "num_samples")
        x, mask = self.prepare(x, mask)
        z = self._guide_paths(x, mask, num_samples)
        return torch.where(mask, x, self._emit(z[:, :, 1:]))

    @torch.no_grad()
    def forecast(self, x_context, horizon: int, num_samples: int = 100) -> torch.Tensor:
        """Draws of the ``horizon`` steps after x_context (B, Tc, Dx): (S, B, horizon, Dx).

        z_{Tc} is drawn from the guide on the context, then z and x are rolled forward by the
        generative model. Approximation: the guide is a smoother, q(z_{0:Tc} | x_{1:Tc}); its
        last-step marginal stands in for the filtering distribution p(z_{Tc} | x_{1:Tc})
        (which equals the smoothing marginal at the final step under the exact posterior), so
        the forecast is only as good as the guide's fit at the end of the context.
        NaN entries of the context are missing.
        """
        horizon = check_positive_int(horizon, "horizon")
        num_samples = check_positive_int(num_samples, "num_samples")
        x, mask = self.prepare(x_context, None, "x_context")
        z_prev = self._guide_paths(x, mask, num_samples)[:, :, -1]
        zs = []
        for _ in range(horizon):
            z_prev = self._step(z_prev)
            zs.append(z_prev)
        return self._emit(torch.stack(zs, dim=2))

    def extra_repr(self) -> str:
        return (
            f"obs_dim={self.obs_dim}, latent_dim={self.latent_dim}, "
            f"rnn_hidden={self.rnn_hidden}, min_scale={self.min_scale:.3g}"
        )
