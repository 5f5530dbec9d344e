"""A CSDI-style conditional score-based (DDPM) imputer and forecaster (Tashiro et al. 2021).

Plain functions first: the noise schedule (CSDI's quadratic betas), the forward noising
q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) and one ancestral reverse step. Then the
denoiser (:class:`ConvDenoiser`: dilated, gated residual 1-D convolutions over time with the
features as channels, fed the noisy values, the conditioning values and the conditioning mask,
plus a diffusion-step embedding), the network with its loss (:class:`ConditionalDiffusion`)
and the SequenceModel :class:`DiffusionImputer`.

Training follows CSDI's self-supervised recipe: of the observed entries of a random window,
a random subset is the condition and the rest is the target whose noise the denoiser
predicts. The subset is drawn per sequence by one of three strategies: random entries
(CSDI's "random", ratio ~ U(0, 1)), a history prefix (forecasting), or nothing (so that free
sampling has a trained regime). Imputation runs the reverse chain on every entry that is not
observed, conditioned on the observed ones, which come back exactly. Forecasting is
imputation of a missing tail; free sampling conditions on nothing. The chain runs on data
standardised by the training statistics, and each reverse step clamps its denoised estimate
x0 to [-5, 5] standard deviations (``clip``; ``None`` gives the plain epsilon-form step): an
imperfect denoiser otherwise drives the last, large-beta steps of CSDI's schedule far out.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from alternators_ppl.models.comparator_base import TrainedComparator
from alternators_ppl.networks import ParameterPlacement
from alternators_ppl.validation import check_positive_int

__all__ = [
    "quadratic_betas",
    "q_sample",
    "reverse_step",
    "ConvDenoiser",
    "ConditionalDiffusion",
    "DiffusionImputer",
]


def quadratic_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.5):
    """CSDI's schedule: beta_n = (linspace(sqrt(beta_start), sqrt(beta_end), N)_n)^2, (N,)
    float64 (cast where used)."""
    num_steps = check_positive_int(num_steps, "num_steps")
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    root = torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=torch.float64)
    return root**2


def q_sample(x0, t, noise, alpha_bar):
    """Forward noising: x0 (B, ...), t (B,) step indices, noise like x0, alpha_bar (N,)
    -> sqrt(abar_t) x0 + sqrt(1 - abar_t) noise."""
    abar = alpha_bar[t].reshape(-1, *([1] * (x0.dim() - 1)))
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def reverse_step(x_t, eps_hat, t: int, betas, alpha_bar, noise, clip: float | None = None):
    """One DDPM ancestral step from step t to t - 1 (t = N-1 .. 0).

    Without ``clip``: mean (x_t - beta_t / sqrt(1 - abar_t) eps_hat) / sqrt(1 - beta_t). With
    ``clip``: the same mean written through the denoised estimate x0 = (x_t - sqrt(1 - abar_t)
    eps_hat) / sqrt(abar_t), clamped to [-clip, clip] (Ho et al.'s "clip denoised"), as
    sqrt(abar_{t-1}) beta_t / (1 - abar_t) x0 + sqrt(1 - beta_t) (1 - abar_{t-1}) / (1 - abar_t)
    x_t. Plus sqrt(beta_t (1 - abar_{t-1}) / (1 - abar_t)) noise when t > 0.
    """
    beta, abar = betas[t], alpha_bar[t]
    if clip is None:
        mean = (x_t - beta / (1 - abar).sqrt() * eps_hat) / (1 - beta).sqrt()
    else:
        x0 = ((x_t - (1 - abar).sqrt() * eps_hat) / abar.sqrt()).clamp(-clip, clip)
        abar_prev = alpha_bar[t - 1] if t > 0 else torch.ones_like(abar)
        mean = (abar_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - abar_prev) * x_t) / (
            1 - abar
        )
    if t == 0:
        return mean
    var = beta * (1 - alpha_bar[t - 1]) / (1 - abar)
    return mean + var.sqrt() * noise


def _step_embedding(t, dim: int):
    """Sinusoidal embedding of integer steps t (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / max(half - 1, 1))
    angles = t.to(freqs.dtype).unsqueeze(-1) * 10.0 * freqs  # CSDI scales steps by 10
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class ConvDenoiser(nn.Module):
    """eps_theta(noisy, cond_values, cond_mask, t): each (B, L, D) (t: (B,)) -> (B, L, D).

    Dilated gated residual convolutions over time (kernel 3, dilation 1, 2, 4, ...; the
    receptive field spans 1 + 2 (2^layers - 1) steps) with skip connections, as in DiffWave.
    """

    def __init__(self, obs_dim: int, channels: int = 32, layers: int = 6, embed: int = 32):
        super().__init__()
        self.embed_dim = embed
        self.inp = nn.Conv1d(3 * obs_dim, channels, 1)
        self.step_mlp = nn.Sequential(
            nn.Linear(embed, channels), nn.SiLU(), nn.Linear(channels, channels)
        )
        self.dilated = nn.ModuleList(
            nn.Conv1d(channels, 2 * channels, 3, padding=2**i, dilation=2**i) for i in range(layers)
        )
        self.res = nn.ModuleList(nn.Conv1d(channels, 2 * channels, 1) for _ in range(layers))
        self.out = nn.Sequential(nn.Conv1d(channels, channels, 1), nn.SiLU())
        self.final = nn.Conv1d(channels, obs_dim, 1)
        nn.init.zeros_(self.final.weight)

    def forward(self, noisy, cond_values, cond_mask, t):
        h = torch.cat([noisy, cond_values, cond_mask.to(noisy.dtype)], -1).transpose(1, 2)
        h = self.inp(h)
        step = self.step_mlp(_step_embedding(t, self.embed_dim).to(h.dtype)).unsqueeze(-1)
        skip = 0.0
        for conv, res in zip(self.dilated, self.res, strict=True):
            gate, filt = conv(h + step).chunk(2, dim=1)
            y = torch.sigmoid(gate) * torch.tanh(filt)
            residual, skipped = res(y).chunk(2, dim=1)
            h = (h + residual) / math.sqrt(2.0)
            skip = skip + skipped
        out = self.final(self.out(skip / math.sqrt(len(self.dilated))))
        return out.transpose(1, 2)


class ConditionalDiffusion(ParameterPlacement, nn.Module):
    """The conditional DDPM: schedule buffers, the denoiser, CSDI's masked noise loss and the
    conditional reverse chain."""

    def __init__(
        self,
        obs_dim: int,
        num_steps: int = 50,
        channels: int = 32,
        layers: int = 6,
        window: int = 80,
        beta_end: float = 0.5,
        clip: float | None = 5.0,
        copies: int = 8,
    ):
        super().__init__()
        self.obs_dim = check_positive_int(obs_dim, "obs_dim")
        self.latent_dim = obs_dim  # no latent path; the trainer only reads it for supervision
        self.window = check_positive_int(window, "window")
        self.copies = check_positive_int(copies, "copies")
        self.clip = clip
        betas = quadratic_betas(num_steps, beta_end=beta_end)
        self.register_buffer("betas", betas.float())
        self.register_buffer("alpha_bar", torch.cumprod(1 - betas, 0).float())
        # the chain runs on (x - shift) / scale; DiffusionImputer.fit sets them from x_train
        self.register_buffer("shift", torch.zeros(obs_dim))
        self.register_buffer("scale", torch.ones(obs_dim))
        self.denoiser = ConvDenoiser(obs_dim, channels, layers)

    @property
    def num_steps(self) -> int:
        """N, the number of diffusion steps."""
        return self.betas.shape[0]

    def conditioning_mask(self, mask):
        """CSDI's training split of the observed entries (B, L, D) into a condition: per
        sequence, random entries (p 0.45), a history prefix (p 0.45) or nothing (p 0.1)."""
        batch, length, _ = mask.shape
        device = mask.device
        kind = torch.rand(batch, 1, 1, device=device)
        ratio = torch.rand(batch, 1, 1, device=device)
        random_entries = torch.rand(mask.shape, device=device) < ratio
        cut = torch.randint(max(length // 4, 1), length, (batch, 1, 1), device=device)
        history = torch.arange(length, device=device).reshape(1, -1, 1) < cut
        chosen = torch.where(kind < 0.45, random_entries, history) & (kind < 0.9)
        return mask & chosen

    def loss(self, x, mask=None):
        """Mean squared noise error on the target entries of a random window of x (B, T, D),
        over ``copies`` draws of (condition, step, noise) per sequence."""
        mask = ~torch.isnan(x) if mask is None else mask.expand(x.shape)
        x = torch.where(mask, (x - self.shift) / self.scale, 0.0)
        if x.shape[1] > self.window:
            start = int(torch.randint(x.shape[1] - self.window + 1, ()))
            x, mask = x[:, start : start + self.window], mask[:, start : start + self.window]
        x, mask = x.repeat(self.copies, 1, 1), mask.repeat(self.copies, 1, 1)
        cond = self.conditioning_mask(mask)
        target = mask & ~cond
        t = torch.randint(self.num_steps, (x.shape[0],), device=x.device)
        noise = torch.randn_like(x)
        noisy = q_sample(x, t, noise, self.alpha_bar.to(x.dtype))
        eps_hat = self.denoiser(noisy * ~cond, x * cond, cond, t)
        return ((noise - eps_hat) ** 2 * target).sum() / target.sum().clamp_min(1)

    @torch.no_grad()
    def impute(self, x, cond):
        """Reverse chain for every entry not in ``cond``: x (B, L, D) filled, cond bool
        (B, L, D) -> one draw (B, L, D) with the conditioned entries exactly x."""
        betas, alpha_bar = self.betas.to(x.dtype), self.alpha_bar.to(x.dtype)
        cond_values = torch.where(cond, (x - self.shift) / self.scale, 0.0)
        state = torch.randn_like(x)
        for t in reversed(range(self.num_steps)):
            steps = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
            eps_hat = self.denoiser(state * ~cond, cond_values, cond, steps)
            noise = torch.randn_like(x)
            state = reverse_step(state, eps_hat, t, betas, alpha_bar, noise, self.clip)
        return torch.where(cond, x, state * self.scale + self.shift)


class DiffusionImputer(TrainedComparator):
    """The CSDI-style diffusion model behind :class:`SequenceModel` (name ``"diffusion"``),
    trained by the masked noise-prediction loss through ``trainer``; draws are independent
    reverse chains batched over samples and sequences."""

    name = "diffusion"

    def __init__(
        self,
        obs_dim: int,
        num_steps: int = 50,
        channels: int = 32,
        layers: int = 6,
        window: int = 80,
        clip: float | None = 5.0,
        copies: int = 8,
        epochs: int = 200,
        batch_size: int = 16,
        lr: float = 3e-3,
        trainer: Callable | None = None,
        device=None,
    ):
        super().__init__(
            lambda: ConditionalDiffusion(
                obs_dim, num_steps, channels, layers, window, clip=clip, copies=copies
            ),
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            trainer=trainer,
            device=device,
        )

    #: time steps per reverse-chain batch (bounds memory: activations are batch x L x channels)
    chunk_positions = 200_000

    def _draws(self, x, cond, num_samples):
        batch = x.shape[0]
        x, cond = x.repeat_interleave(num_samples, 0), cond.repeat_interleave(num_samples, 0)
        chunk = max(1, self.chunk_positions // x.shape[1])
        draws = torch.cat(
            [
                self.module.impute(x[i : i + chunk], cond[i : i + chunk])
                for i in range(0, x.shape[0], chunk)
            ]
        )
        return draws.reshape(batch, num_samples, *x.shape[1:]).transpose(0, 1)

    def fit(self, x_train, x_val=None, *, seed: int = 0, budget_s: float | None = None) -> dict:
        """Train by the masked noise loss; the chain runs on x standardised by the mean and
        standard deviation of the observed training entries (per dimension)."""
        x = self._input(x_train, "x_train")
        observed = ~torch.isnan(x)
        count = observed.sum((0, 1)).clamp_min(1)
        mean = torch.where(observed, x, 0.0).sum((0, 1)) / count
        var = torch.where(observed, x - mean, 0.0).pow(2).sum((0, 1)) / count
        self._standardise = (mean, var.sqrt().clamp_min(1e-6))
        return super().fit(x_train, x_val, seed=seed, budget_s=budget_s)

    def _prepare_module(self) -> None:
        self.module.shift.copy_(self._standardise[0])
        self.module.scale.copy_(self._standardise[1])

    @torch.no_grad()
    def forecast(self, x_context, horizon: int, num_samples: int) -> torch.Tensor:
        """Imputation of a missing tail of ``horizon`` steps: (S, B, horizon, D)."""
        horizon = check_positive_int(horizon, "horizon")
        num_samples = check_positive_int(num_samples, "num_samples")
        x, mask = self._input_with_mask(x_context, None, "x_context")
        pad = x.new_zeros(x.shape[0], horizon, x.shape[2])
        self.module.eval()
        draws = self._draws(torch.cat([x, pad], 1), torch.cat([mask, pad.bool()], 1), num_samples)
        return draws[:, :, x.shape[1] :]

    @torch.no_grad()
    def impute(self, x, mask, num_samples: int) -> torch.Tensor:
        """Conditional draws of the missing entries; observed entries come back exactly."""
        num_samples = check_positive_int(num_samples, "num_samples")
        x, mask = self._input_with_mask(x, mask)
        self.module.eval()
        return torch.where(mask, x, self._draws(x, mask, num_samples))

    @torch.no_grad()
    def sample(self, num_samples: int, num_steps: int) -> torch.Tensor:
        """Unconditional reverse chains of ``num_steps`` time steps: (S, T, D)."""
        num_samples = check_positive_int(num_samples, "num_samples")
        num_steps = check_positive_int(num_steps, "num_steps")
        self.module.eval()
        shape = (1, num_steps, self.obs_dim)
        x = torch.zeros(shape, dtype=self.module.dtype, device=self.module.device)
        return self._draws(x, torch.zeros_like(x, dtype=torch.bool), num_samples)[:, 0]
