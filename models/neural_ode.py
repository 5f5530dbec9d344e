"""A latent ODE with an ODE-RNN encoder (Rubanova, Chen & Duvenaud 2019), solved by torchdiffeq.

Generative model over a window of time stamps t_1 < ... < t_L (irregular allowed):

    z(t_1) ~ N(0, I),   dz/dt = f_theta(z),   x(t_i) ~ N(W z(t_i) + b, diag sigma^2)

Inference: an ODE-RNN reads the window backwards in time (GRU updates at observed steps, the
hidden state evolved by its own ODE between time stamps) and outputs q(z(t_1) | x) Gaussian.
The loss is the negative ELBO per observed entry (one reparameterised draw). As in the paper's
extrapolation setting, half of the training windows show the encoder only a prefix (a random
25-75% of the window) while the whole window is reconstructed: q may read any subset of x,
so the loss is an ELBO either way, and forecasting (encode the context, decode past it) is a
posterior predictive.

Plain functions first (:func:`latent_path`), then the modules (:class:`ODERNNEncoder`,
:class:`LatentODE`) and the SequenceModel :class:`LatentODEModel`. Every time-taking method
accepts ``times`` (L,), strictly increasing; the default is a regular grid of step ``dt``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.functional import softplus
from torchdiffeq import odeint

from alternators_ppl.models.comparator_base import TrainedComparator
from alternators_ppl.networks import ParameterPlacement
from alternators_ppl.validation import as_float_tensor, check_positive_int

__all__ = ["latent_path", "check_times", "ODEFunc", "ODERNNEncoder", "LatentODE", "LatentODEModel"]


def latent_path(
    dynamics: Callable,
    z0: torch.Tensor,
    times: torch.Tensor,
    method: str = "rk4",
    step_size: float | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> torch.Tensor:
    """Solve dz/dt = dynamics(t, z) from z(times[0]) = z0 with torchdiffeq's ``odeint``.

    z0 (B, Dz), times (L,) increasing (or decreasing, to run backwards) -> z (B, L, Dz), whose
    first step is z0. Fixed-step methods ("rk4", "euler", ...) step between the given times,
    or on a grid of ``step_size``; adaptive ones ("dopri5") use ``rtol``/``atol``.
    """
    options = None if step_size is None else {"step_size": step_size}
    path = odeint(dynamics, z0, times, method=method, options=options, rtol=rtol, atol=atol)
    return path.transpose(0, 1)


def check_times(times, steps: int, device, dtype) -> torch.Tensor:
    """Validate time stamps: a 1-D, finite, strictly increasing tensor of length ``steps``."""
    times = as_float_tensor(times, "times", device=device, dtype=dtype)
    if times.dim() != 1 or times.shape[0] != steps:
        raise ValueError(f"times must have shape ({steps},), got {tuple(times.shape)}")
    if not torch.isfinite(times).all() or (steps > 1 and (times.diff() <= 0).any()):
        raise ValueError("times must be finite and strictly increasing")
    return times


class ODEFunc(nn.Module):
    """Autonomous dynamics f(z) = MLP(z) (tanh hidden layer); ``forward(t, z)`` for odeint."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, dim))

    def forward(self, t, z):
        return self.net(z)


class ODERNNEncoder(nn.Module):
    """ODE-RNN read backwards in time: x (B, L, D) filled, mask (B, L, D), times (L,) ->
    (mean, scale) of q(z(t_1) | x), each (B, Dz)."""

    def __init__(self, obs_dim: int, latent_dim: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.gru = nn.GRUCell(2 * obs_dim, hidden)
        self.dynamics = ODEFunc(hidden, hidden)
        self.out = nn.Linear(hidden, 2 * latent_dim)

    def forward(self, x, mask, times):
        h = x.new_zeros(x.shape[0], self.hidden)
        for i in reversed(range(x.shape[1])):
            if i + 1 < x.shape[1]:  # evolve the hidden state from t_{i+1} back to t_i
                h = latent_path(self.dynamics, h, times[i : i + 2].flip(0))[:, -1]
            updated = self.gru(torch.cat([x[:, i], mask[:, i].to(x.dtype)], -1), h)
            h = torch.where(mask[:, i].any(-1, keepdim=True), updated, h)
        mean, raw = self.out(h).chunk(2, dim=-1)
        return mean, softplus(raw) + 1e-4


class LatentODE(ParameterPlacement, nn.Module):
    """The latent ODE: encoder, dynamics, linear Gaussian decoder with learned sigma per dim.

    ``loss(x, mask)`` draws a random window of ``window`` steps from each batch, and returns the
    negative ELBO per observed entry.
    """

    def __init__(
        self,
        obs_dim: int,
        latent_dim: int = 8,
        hidden: int = 32,
        window: int = 80,
        dt: float = 0.1,
        method: str = "rk4",
    ):
        super().__init__()
        self.obs_dim = check_positive_int(obs_dim, "obs_dim")
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        self.window = check_positive_int(window, "window")
        self.dt, self.method = float(dt), method
        self.encoder = ODERNNEncoder(obs_dim, latent_dim, check_positive_int(hidden, "hidden"))
        self.dynamics = ODEFunc(latent_dim, hidden)
        self.decoder = nn.Linear(latent_dim, obs_dim)
        self.log_sigma = nn.Parameter(torch.full((obs_dim,), -1.0))
        self.times = None  # training time stamps (T,), set by LatentODEModel.fit(times=...)

    def grid(self, steps: int) -> torch.Tensor:
        """The regular time grid 0, dt, ..., (steps - 1) dt."""
        return torch.arange(steps, dtype=self.dtype, device=self.device) * self.dt

    def decode(self, z0, times):
        """z0 (B, Dz) at times[0] -> observation mean (B, L, D) and sigma (D,)."""
        z = latent_path(self.dynamics, z0, times - times[0], self.method)
        return self.decoder(z), self.log_sigma.exp()

    def elbo(self, x, mask, times, encoder_mask=None) -> torch.Tensor:
        """ELBO per sequence (B,) of x (B, L, D) filled, mask (B, L, D), times (L,);
        the encoder reads ``encoder_mask`` (default ``mask``)."""
        mean, scale = self.encoder(x, mask if encoder_mask is None else encoder_mask, times)
        z0 = mean + scale * torch.randn_like(mean)
        loc, sigma = self.decode(z0, times)
        log_lik = torch.distributions.Normal(loc, sigma).log_prob(x) * mask
        q = torch.distributions.Normal(mean, scale)
        prior = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(scale))
        kl = torch.distributions.kl_divergence(q, prior).sum(-1)
        return log_lik.sum((1, 2)) - kl

    def loss(self, x, mask=None):
        """Negative ELBO per observed entry of a random window of x (B, T, D) (NaN = missing)."""
        mask = ~torch.isnan(x) if mask is None else mask.expand(x.shape)
        x = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))
        steps = x.shape[1]
        times = self.grid(steps) if self.times is None else self.times.to(x)
        if steps > self.window:
            start = int(torch.randint(steps - self.window + 1, ()))
            x, mask = x[:, start : start + self.window], mask[:, start : start + self.window]
            times = times[start : start + self.window]
        length = x.shape[1]
        cut = torch.randint(max(length // 4, 1), max(3 * length // 4, 1) + 1, (x.shape[0], 1))
        prefix = torch.arange(length).unsqueeze(0) < cut  # (B, L)
        prefix |= torch.rand(x.shape[0], 1) < 0.5  # half the windows: the encoder reads all
        encoder_mask = mask & prefix.to(mask.device).unsqueeze(-1)
        return -self.elbo(x, mask, times, encoder_mask).sum() / mask.sum().clamp_min(1)


class LatentODEModel(TrainedComparator):
    """The latent ODE behind :class:`SequenceModel` (name ``"neural-ode"``), trained by its
    ELBO through ``trainer``. Draws carry the posterior uncertainty of z(t_1) and the
    observation noise. ``fit``, ``forecast`` and ``impute`` accept irregular ``times``."""

    name = "neural-ode"

    def __init__(
        self,
        obs_dim: int,
        latent_dim: int = 8,
        hidden: int = 32,
        window: int = 80,
        dt: float = 0.1,
        epochs: int = 200,
        batch_size: int = 16,
        lr: float = 1e-2,
        trainer: Callable | None = None,
        device=None,
    ):
        super().__init__(
            lambda: LatentODE(obs_dim, latent_dim, hidden, window, dt),
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            trainer=trainer,
            device=device,
        )

    def fit(self, x_train, x_val=None, *, seed=0, budget_s=None, times=None) -> dict:
        """Train by the ELBO; ``times`` (T,) are the training (and validation) time stamps."""
        x = self._input(x_train, "x_train")
        if times is not None:
            times = check_times(times, x.shape[1], self.module.device, x.dtype)
        self._train_times = times
        return super().fit(x_train, x_val, seed=seed, budget_s=budget_s)

    def _prepare_module(self) -> None:
        self.module.times = getattr(self, "_train_times", None)

    def _times(self, times, steps):
        if times is None:
            return self.module.grid(steps)
        return check_times(times, steps, self.module.device, self.module.dtype)

    def _posterior_draws(self, x, mask, times, num_samples, encoder_mask=None):
        """(S, B, L, D) draws of x at ``times`` given the encoder's view of x."""
        mean, scale = self.module.encoder(x, mask if encoder_mask is None else encoder_mask, times)
        batch = mean.shape[0]
        z0 = mean + scale * torch.randn(num_samples, *mean.shape, dtype=x.dtype, device=x.device)
        loc, sigma = self.module.decode(z0.reshape(num_samples * batch, -1), times)
        draws = loc + sigma * torch.randn_like(loc)
        return draws.reshape(num_samples, batch, *draws.shape[1:])

    @torch.no_grad()
    def forecast(self, x_context, horizon: int, num_samples: int, times=None) -> torch.Tensor:
        """Encode the last ``window - horizon`` context steps (at least one), solve past them:
        (S, B, horizon, D). ``times`` (Tc + horizon,) stamps context and horizon."""
        horizon = check_positive_int(horizon, "horizon")
        num_samples = check_positive_int(num_samples, "num_samples")
        x, mask = self._input_with_mask(x_context, None, "x_context")
        steps = x.shape[1]
        times = self._times(times, steps + horizon)
        keep = min(steps, max(self.module.window - horizon, 1))
        x, mask = x[:, steps - keep :], mask[:, steps - keep :]
        times = times[steps - keep :]
        pad = x.new_zeros(x.shape[0], horizon, x.shape[2])
        self.module.eval()
        draws = self._posterior_draws(
            torch.cat([x, pad], 1), torch.cat([mask, pad.bool()], 1), times, num_samples
        )
        return draws[:, :, keep:]

    @torch.no_grad()
    def impute(self, x, mask, num_samples: int, times=None) -> torch.Tensor:
        """Posterior draws window by window (``window`` steps each), observed entries kept:
        (S, B, T, D)."""
        num_samples = check_positive_int(num_samples, "num_samples")
        x, mask = self._input_with_mask(x, mask)
        times = self._times(times, x.shape[1])
        self.module.eval()
        parts = []
        for begin in range(0, x.shape[1], self.module.window):
            span = slice(begin, begin + self.module.window)
            parts.append(self._posterior_draws(x[:, span], mask[:, span], times[span], num_samples))
        return torch.where(mask, x, torch.cat(parts, dim=2))

    @torch.no_grad()
    def sample(self, num_samples: int, num_steps: int) -> torch.Tensor:
        """Prior draws z(t_1) ~ N(0, I), solved over ``num_steps`` grid steps: (S, T, D)."""
        num_samples = check_positive_int(num_samples, "num_samples")
        num_steps = check_positive_int(num_steps, "num_steps")
        self.module.eval()
        z0 = torch.randn(
            num_samples, self.module.latent_dim, dtype=self.module.dtype, device=self.module.device
        )
        loc, sigma = self.module.decode(z0, self.module.grid(num_steps))
        return loc + sigma * torch.randn_like(loc)
