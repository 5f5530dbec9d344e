"""The Alternator (Rezaei & Dieng, TMLR 2025) as a Pyro program.

Generative process (Algorithm 1), x_t in R^Dx, z_t in R^Dz, t = 1..T::

    z_0 ~ N(0, I)
    x_t ~ N(sqrt(1 - sigma_x^2) f(z_{t-1}), sigma_x^2 I)                                (OTN f)
    z_t ~ N(sqrt(alpha_t) g(x_t) + sqrt(1 - alpha_t - sigma_z^2) z_{t-1}, sigma_z^2 I)  (FTN g)

Three views of one model live here: the ``pyro.markov`` program :meth:`Alternator.model`, the
vectorised log-density :meth:`Alternator.log_joint` (one batched network call per factor) and
the batched samplers (``sample``, ``forecast``, ``impute``, ``infer_latents``), which run the
recursion for all samples and sequences at once.

Shapes are batch-first: x (B, T, Dx), z (B, T+1, Dz) including z_0; samplers add a leading
sample axis S. A mask is bool, True = observed, of shape (B, T) or (B, T, Dx); NaN entries of x
are missing too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from alternators_ppl.models import noise_scales as scales
from alternators_ppl.models import smc as _smc
from alternators_ppl.models.noise_scales import NoiseScales
from alternators_ppl.models.recurrence import linear_recurrence
from alternators_ppl.networks import MLP
from alternators_ppl.validation import (
    as_float_tensor,
    check_mask,
    check_positive_int,
    check_sequences,
)

__all__ = ["Alternator", "FTN_INPUTS", "LATENT_METHODS"]

FTN_INPUTS = ("conditioned", "generative")
#: how impute / forecast / infer_latents draw latents: SMC posterior or the FTN recursion
LATENT_METHODS = ("smc", "ancestral")
#: particles of the SMC methods when num_particles is not given
DEFAULT_PARTICLES = 256


class Alternator(NoiseScales, PyroModule):
    """Alternator sequence model: an OTN ``f`` and an FTN ``g`` alternating over time.

    Args:
        obs_dim: Dx, size of each observation x_t.
        latent_dim: Dz, size of each latent z_t.
        sigma_x: observation noise, in (0, 1): a float, or one value per observed dimension
            (a length-Dx sequence or tensor, stored as the buffer ``sigma_x_vector``).
        sigma_z: latent noise, > 0: a float, or one value per latent coordinate (a length-Dz
            sequence or tensor, stored as the buffer ``sigma_z_vector``; the decay
            sqrt(1 - alpha_t - sigma_z,d^2) is then per coordinate too).
        alpha: FTN weight, a float or a length-L schedule (alpha_1..alpha_L) with
            0 < alpha_t and alpha_t + sigma_z,d^2 < 1 (strict, so the latent keeps memory).
        otn: network z (..., Dz) -> (..., Dx); default ``MLP(latent_dim, obs_dim, hidden)``.
        ftn: network x (..., Dx) -> (..., Dz); default ``MLP(obs_dim, latent_dim, hidden)``.
        hidden, activation: widths and activation of the default MLPs.
        ftn_input: what the FTN reads while the loss samples z: ``"conditioned"`` (default: the
            data x_t where observed, the model's own draw where missing) or ``"generative"``
            (the model's draw everywhere: the literal Algorithm 1).
    """

    def __init__(
        self,
        obs_dim: int,
        latent_dim: int,
        sigma_x: float | Sequence[float] | torch.Tensor = 0.3,
        sigma_z: float | Sequence[float] | torch.Tensor = 0.1,
        alpha: float | Sequence[float] | torch.Tensor = 0.3,
        otn: nn.Module | None = None,
        ftn: nn.Module | None = None,
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        ftn_input: Literal["conditioned", "generative"] = "conditioned",
    ):
        super().__init__()
        self.obs_dim = check_positive_int(obs_dim, "obs_dim")
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        sigma_x_values = scales.check_sigma_x(sigma_x, self.obs_dim)
        sigma_z_values = scales.check_sigma_z(sigma_z, self.latent_dim)
        alpha_values = scales.check_alpha(alpha, sigma_z_values)
        if ftn_input not in FTN_INPUTS:
            raise ValueError(f"ftn_input must be one of {FTN_INPUTS}, got {ftn_input!r}")
        # Hyperparameters stay Python floats so that ``.double()`` computes with them exactly;
        # the buffer only tells the model's device and dtype.
        self.alpha_values = alpha_values
        self.alpha_is_constant = len(self.alpha_values) == 1
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)
        self._set_sigma_x(sigma_x_values)
        self._set_sigma_z(sigma_z_values)
        self.ftn_input = ftn_input
        self.otn = otn if otn is not None else MLP(latent_dim, obs_dim, hidden, activation)
        self.ftn = ftn if ftn is not None else MLP(obs_dim, latent_dim, hidden, activation)

    # ------------------------------------------------------------------ building blocks
    @property
    def device(self) -> torch.device:
        """Device of the model's buffers (inputs are moved here)."""
        return self._anchor.device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the model's buffers (inputs are cast to it)."""
        return self._anchor.dtype

    def _own_alpha(self) -> bool:
        return self.data_dependent_alpha or type(self).alpha_schedule is not (
            Alternator.alpha_schedule
        )

    def alpha_schedule(self, num_steps: int) -> torch.Tensor:
        """alpha_1..alpha_T as a (T,) tensor; a schedule shorter than T is an error.

        (T, N, 1, 1) inside :meth:`hyperparameters` with an alpha batched as (N, 1)."""
        if self._alpha_override is not None:
            return self._alpha_override.expand(num_steps, *self._alpha_override.shape)
        values = self.alpha_values
        if self.alpha_is_constant:
            values = values * num_steps
        elif num_steps > len(values):
            raise ValueError(
                f"sequence has {num_steps} steps but the alpha schedule has {len(values)}"
            )
        return torch.tensor(values[:num_steps], dtype=self.dtype, device=self.device)

    def x_loc(self, z_prev: torch.Tensor) -> torch.Tensor:
        """Mean of x_t given z_{t-1}: (..., Dz) -> (..., Dx)."""
        return (1 - self.sigma_x**2) ** 0.5 * self.otn(z_prev)

    def z_loc(self, x: torch.Tensor, z_prev: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """Mean of z_t given x_t (..., Dx), z_{t-1} (..., Dz); alpha broadcasts to (..., 1)."""
        return torch.sqrt(alpha) * self.ftn(x) + self.latent_decay(alpha) * z_prev

    # Variant hooks: a subclass that changes a factor overrides these; the program, the
    # log-density and the samplers all go through them. (The parallel scan assumes the default
    # z_loc, affine in z_{t-1}; a variant changing z_loc sets ``affine_latent = False``.)
    affine_latent = True

    def x_dist(self, z_prev: torch.Tensor) -> dist.Distribution:
        """p(x_t | z_{t-1}) with batch shape (..., Dx) (one factor per entry).

        Built without argument validation (inputs are checked on entry; a NaN from diverged
        weights must surface as a non-finite loss, not as a validation error).
        """
        return dist.Normal(self.x_loc(z_prev), self.sigma_x, validate_args=False)

    def z_dist(self, x: torch.Tensor, z_prev: torch.Tensor, alpha) -> dist.Distribution:
        """p(z_t | z_{t-1}, x_t) with batch shape (..., Dz) (no argument validation)."""
        return dist.Normal(self.z_loc(x, z_prev, alpha), self.sigma_z, validate_args=False)

    # A variant whose alpha_t depends on the recent inputs of the FTN sets
    # ``data_dependent_alpha = True`` and implements ``alpha_from_inputs``.
    data_dependent_alpha = False
    alpha_window = 1

    def alpha_from_inputs(self, x_window: torch.Tensor) -> torch.Tensor:
        """alpha_t (...,) from the last ``alpha_window`` inputs the FTN read, x_window
        (..., k, Dx) ending at x_t (edge-padded at the start of a sequence)."""
        raise NotImplementedError("only variants with data_dependent_alpha implement this")

    def _alpha_for(self, x_read: torch.Tensor) -> torch.Tensor:
        """alpha for every step, (T, 1) from the schedule or (B, T, 1) from the inputs."""
        steps = x_read.shape[1]
        if not self.data_dependent_alpha:
            return self.alpha_schedule(steps).unsqueeze(-1)
        k = self.alpha_window
        padded = torch.cat([x_read[:, :1].expand(-1, k - 1, -1), x_read], dim=1)
        windows = padded.unfold(1, k, 1).transpose(-1, -2)  # (B, T, k, Dx)
        return self.alpha_from_inputs(windows).unsqueeze(-1)

    def _step_alpha(self, t: int, schedule: torch.Tensor, read: list) -> torch.Tensor:
        """alpha_t (0-based t) inside a step loop; ``read`` holds x_1..x_t read so far, each
        (..., B, Dx) (leading sample axes broadcast)."""
        if not self.data_dependent_alpha:
            return schedule[t]
        recent = read[-self.alpha_window :]
        recent = [recent[0]] * (self.alpha_window - len(recent)) + recent
        recent = torch.broadcast_tensors(*recent)
        return self.alpha_from_inputs(torch.stack(recent, dim=-2)).unsqueeze(-1)

    def draw_x(self, z_prev: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Reparameterised draw of x_t given z_{t-1} (..., Dz) and standard normal eps (..., Dx)."""
        return self.x_loc(z_prev) + self.sigma_x * eps

    # ------------------------------------------------------------------ input checks
    def _as_input(self, x, name: str = "x") -> torch.Tensor:
        x = as_float_tensor(x, name, device=self.device, dtype=self.dtype)
        check_sequences(x, name, self.obs_dim)
        return x

    def _prepare(self, x, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """Checked x (B, T, Dx) with missing entries zeroed, and the observed mask (B, T, Dx)."""
        x = self._as_input(x)
        mask = check_mask(mask, x)
        return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device)), mask

    def _prepare_complete(self, x, z, mask) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Checks for scoring a given path: x finite (B, T, Dx), z (B, T+1, Dz), mask (B, T, Dx)."""
        x = self._as_input(x)
        if torch.isnan(x).any():
            raise ValueError(
                "x has NaN entries: scoring a path needs the values the FTN read at missing "
                "entries (e.g. from impute); hide them from the x-term with mask"
            )
        z = as_float_tensor(z, "z", device=self.device, dtype=self.dtype)
        expected = (x.shape[0], x.shape[1] + 1, self.latent_dim)
        if tuple(z.shape) != expected:
            raise ValueError(f"z has shape {tuple(z.shape)}, expected (B, T+1, Dz) = {expected}")
        if not torch.isfinite(z).all():
            raise ValueError("z contains NaN or inf values")
        return x, z, check_mask(mask, x)

    def _check_z_target(self, z_target, x: torch.Tensor) -> torch.Tensor:
        z_target = as_float_tensor(z_target, "z_target", device=self.device, dtype=self.dtype)
        expected = (x.shape[0], x.shape[1], self.latent_dim)
        if tuple(z_target.shape) != expected:
            raise ValueError(
                f"z_target has shape {tuple(z_target.shape)}, expected (B, T, Dz) = {expected}"
            )
        if not torch.isfinite(z_target).all():
            raise ValueError("z_target contains NaN or inf values")
        return z_target

    # ------------------------------------------------------------------ interpretation 1
    def model(self, x, mask=None, z_target=None) -> torch.Tensor:
        """The generative process as a Pyro program; returns z_T (B, Dz).

        Sites: ``z_0``, then for t = 1..T ``x_t`` (observed entries; missing ones are masked out
        of its log-density), ``x_missing_t`` (a latent site, present only at steps with a
        missing entry, scoring just the missing entries; the FTN reads the observed entries
        of x_t and the draws of ``x_missing_t`` elsewhere) and ``z_t`` (observed when
        ``z_target`` (B, T, Dz) is given). Pass an all-False mask to sample from the prior.
        """
        x, mask = self._prepare(x, mask)
        if z_target is not None:
            z_target = self._check_z_target(z_target, x)
        batch, steps, _ = x.shape
        alpha = self.alpha_schedule(steps)
        zeros = x.new_zeros(batch, self.latent_dim)
        read = []
        with pyro.plate("sequences", batch, dim=-1):
            z_prev = pyro.sample("z_0", dist.Normal(zeros, 1.0).to_event(1))
            for t in pyro.markov(range(1, steps + 1)):
                x_dist = self.x_dist(z_prev)
                observed = mask[:, t - 1]
                x_t = pyro.sample(f"x_{t}", x_dist.mask(observed).to_event(1), obs=x[:, t - 1])
                if not observed.all():
                    x_missing = pyro.sample(f"x_missing_{t}", x_dist.mask(~observed).to_event(1))
                    x_t = torch.where(observed, x_t, x_missing)
                read.append(x_t)
                z_prev = pyro.sample(
                    f"z_{t}",
                    self.z_dist(x_t, z_prev, self._step_alpha(t - 1, alpha, read)).to_event(1),
                    obs=None if z_target is None else z_target[:, t - 1],
                )
        return z_prev

    # ------------------------------------------------------------------ interpretation 2
    def log_joint(self, x, z, mask=None) -> torch.Tensor:
        """log p(z_0) + sum_t [log p(x_t^obs | z_{t-1}) + log p(z_t | z_{t-1}, x_t)], shape (B,).

        x (B, T, Dx) must be finite everywhere: the FTN reads every entry of x_t. ``mask``
        (True = observed) only removes the hidden entries from the x-term, so this is the
        log-density of :meth:`model`'s trace conditioned on z and on the ``x_missing_t`` draws
        (held in x), summed over all sites but the ``x_missing_t`` ones.
        """
        x, z, mask = self._prepare_complete(x, z, mask)
        alpha = self._alpha_for(x)
        log_x = self.x_dist(z[:, :-1]).log_prob(x)
        log_z = self.z_dist(x, z[:, :-1], alpha).log_prob(z[:, 1:])
        log_z0 = dist.Normal(torch.zeros_like(z[:, 0]), 1.0).log_prob(z[:, 0])
        return (log_x * mask).sum((1, 2)) + log_z.sum((1, 2)) + log_z0.sum(-1)

    def path_loss(self, x, z, mask=None, x_ftn=None) -> torch.Tensor:
        """Eq. 12 integrand for one given path, per sequence (B,).

        sum_t sigma_z^2 ||x_t - sqrt(1-sigma_x^2) f(z_{t-1})||^2 over observed entries
            + sigma_x^2 ||z_t - sqrt(alpha_t) g(x_ftn_t) - sqrt(1-alpha_t-sigma_z^2) z_{t-1}||^2,

        which is 2 sigma_x^2 sigma_z^2 (-log p(x^obs, z_{1:T} | z_0)) up to a constant when
        ``x_ftn`` (B, T, Dx), the input the FTN read, is x itself (the default). It is computed
        as -2 sigma_x^2 sigma_z^2 sum [log p(v) - log p(mean)] over the factors of
        :meth:`x_dist` and :meth:`z_dist` (for Gaussians exactly the squared errors above), so a
        variant that changes a factor gets the matching scaled negative log-likelihood.
        """
        x, z, mask = self._prepare_complete(x, z, mask)
        x_ftn = x if x_ftn is None else self._prepare_complete(x_ftn, z, None)[0]
        return self._path_loss(x, z, mask, x_ftn)

    def _path_loss(self, x, z, mask, x_ftn) -> torch.Tensor:
        """:meth:`path_loss` on checked tensors (the training hot path skips the checks)."""
        alpha = self._alpha_for(x_ftn)
        x_dist = self.x_dist(z[:, :-1])
        z_dist = self.z_dist(x_ftn, z[:, :-1], alpha)
        x_fit = ((x_dist.log_prob(x) - x_dist.log_prob(x_dist.mean)) * mask).sum((1, 2))
        z_fit = (z_dist.log_prob(z[:, 1:]) - z_dist.log_prob(z_dist.mean)).sum((1, 2))
        return -self.eq12_scale() * (x_fit + z_fit)

    def loss(self, x, mask=None, z_target=None, parallel: bool = True) -> torch.Tensor:
        """Eq. 12 (scaled by 2 sigma_x^2 sigma_z^2), averaged over sequences and time steps.

        z_{0:T} is drawn by alternating (reparameterised, so gradients flow through the path);
        the FTN reads what ``ftn_input`` says while drawing, and the z-term scores g on the data
        (the draws where x is missing), so in the generative reading it carries a gradient.
        With ``z_target`` (B, T, Dz) the latent path is the observed one (sequence-to-sequence
        use) and z_0 is drawn from the prior.
        ``parallel=False`` draws the path step by step (the reference; same value and gradients).
        """
        x, mask = self._prepare(x, mask)
        if z_target is not None:
            z_target = self._check_z_target(z_target, x)
        z, x_ftn, z_noise = self._rollout_parts(x, mask, self.ftn_input, z_target, parallel)
        # The z-term scores g on the data (the model's draws only where x is missing): in the
        # conditioned reading that is what the FTN read; in the generative reading it matches
        # g on the model's draws (which made z) against g on the data (DESIGN.md section 1).
        gaussian = self._gaussian_factors()
        x_filled = x if z_noise is not None else torch.where(mask, x, x_ftn)
        if z_noise is not None and gaussian:  # the scan solved every step: x fully observed
            eq12 = self._squared_errors_observed(x, z, z_noise)
        else:
            if gaussian:
                eq12 = self._squared_errors(x_filled, z, mask, x_filled)
            else:
                eq12 = self._path_loss(x_filled, z, mask, x_filled).sum()
        eq12 = eq12 / x.shape[0] / x.shape[1]
        aux = self.auxiliary_loss(x_filled, z, mask, x_ftn, z_observed=z_target is not None)
        return eq12 + aux

    def _gaussian_factors(self) -> bool:
        """True when both factors are the default Gaussians with float scales, so Eq. 12 is
        the plain sum of squared errors (:meth:`_squared_errors`)."""
        default = type(self).x_dist is Alternator.x_dist and type(self).z_dist is Alternator.z_dist
        return default and isinstance(self.sigma_x, float) and isinstance(self.sigma_z, float)

    def _squared_errors(self, x, z, mask, x_ftn) -> torch.Tensor:
        """Summed Eq. 12 integrand of a batch, as squared errors: the value of
        ``_path_loss(...).sum()`` for Gaussian factors without forming log-densities."""
        x_err = (x - self.x_loc(z[:, :-1])).square()
        alpha = self._alpha_for(x_ftn)
        z_err = (z[:, 1:] - self.z_loc(x_ftn, z[:, :-1], alpha)).square().sum()
        return self.sigma_z**2 * (x_err * mask).sum() + self.sigma_x**2 * z_err

    def _squared_errors_observed(self, x, z, z_noise) -> torch.Tensor:
        """:meth:`_squared_errors` for a fully observed batch whose path the scan drew in the
        conditioned reading, z_t = mean_t + z_noise_t: the z-term's error IS the drawn noise
        (B, T, Dz), a constant (its gradient through g cancels exactly), so only the x-term
        runs the OTN (on a contiguous copy of z_{0:T-1}, one fused squared-error kernel)."""
        x_mean = self.x_loc(z[:, :-1].contiguous())
        x_err = torch.nn.functional.mse_loss(x_mean, x, reduction="sum")
        return self.sigma_z**2 * x_err + self.sigma_x**2 * z_noise.square().sum()

    def auxiliary_loss(self, x, z, mask, x_ftn, z_observed: bool = False) -> torch.Tensor | float:
        """Extra training term a variant adds to Eq. 12 (0 here), given the data x (B, T, Dx),
        the path z (B, T+1, Dz) (drawn, or observed when ``z_observed``: z_1..z_T are data),
        the mask and what the FTN read, x_ftn (B, T, Dx)."""
        return 0.0

    # ------------------------------------------------------------------ the recursion
    def rollout(
        self, x, mask=None, ftn_input: str | None = None, z_target=None, parallel: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw a latent path by alternating, with gradients: (z (B, T+1, Dz), x_read (B, T, Dx)).

        ``x_read`` is what the FTN read (observed data, or the model's draws where missing, or
        draws everywhere for ``ftn_input="generative"``; default: the model's ``ftn_input``).
        With ``z_target`` (B, T, Dz) the path is (z_0, z_target). ``parallel=False`` runs the
        plain step-by-step recursion (the reference); both give the same path for one seed.
        """
        ftn_input = self.ftn_input if ftn_input is None else ftn_input
        if ftn_input not in FTN_INPUTS:
            raise ValueError(f"ftn_input must be one of {FTN_INPUTS}, got {ftn_input!r}")
        x, mask = self._prepare(x, mask)
        if z_target is not None:
            z_target = self._check_z_target(z_target, x)
        return self._rollout(x, mask, ftn_input, z_target, parallel)

    def _rollout(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        ftn_input: str,
        z_target=None,
        parallel: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`rollout` on checked inputs."""
        return self._rollout_parts(x, mask, ftn_input, z_target, parallel)[:2]

    def _rollout_parts(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        ftn_input: str,
        z_target=None,
        parallel: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """:meth:`rollout` on checked inputs, plus the drawn z-noise sigma_z eps (B, T, Dz) when
        the scan solved every step in the conditioned reading (else None): then
        z_t - E[z_t | z_{t-1}, x_t] is exactly that noise, which the loss reuses.

        The random numbers are drawn up front in a fixed order (z_0, x noise, z noise). In the
        parallel path the FTN reads all observed x_t in one batched call and runs of fully
        observed steps are solved by :func:`linear_recurrence`'s scan; only steps with a
        missing entry (in any sequence) need the OTN's draw and step one at a time.
        """
        batch, steps, _ = x.shape
        alpha = self.alpha_schedule(steps)
        z0 = torch.randn(batch, self.latent_dim, dtype=x.dtype, device=x.device)
        eps_x = torch.randn_like(x)
        eps_z = self.sigma_z * torch.randn(
            batch, steps, self.latent_dim, dtype=x.dtype, device=x.device
        )
        conditioned = ftn_input == "conditioned"
        if z_target is not None:
            z = torch.cat([z0.unsqueeze(1), z_target], dim=1)
            x_draw = self.draw_x(z[:, :-1], eps_x)
            return z, torch.where(mask, x, x_draw) if conditioned else x_draw, None
        decay = self.latent_decay(alpha)
        if parallel and conditioned and self.affine_latent and not self.data_dependent_alpha:
            stepwise = (~mask).any(dim=2).any(dim=0).tolist()  # one host sync per rollout
            constant = self.alpha_is_constant and self._alpha_override is None
            constant = constant and not self._own_alpha()  # a variant's schedule may learn
            root = self.alpha_values[0] ** 0.5 if constant else torch.sqrt(alpha).unsqueeze(-1)
            drive = root * self.ftn(x) + eps_z
            if not any(stepwise):  # fully observed: one solve, x is what the FTN read
                return linear_recurrence(z0, decay, drive), x, eps_z
        else:
            stepwise = [True] * steps
        z_prev, zs, xs, read, t = z0, [z0.unsqueeze(1)], [], [], 0
        while t < steps:
            if stepwise[t]:
                x_draw = self.draw_x(z_prev, eps_x[:, t])
                x_t = torch.where(mask[:, t], x[:, t], x_draw) if conditioned else x_draw
                read.append(x_t)
                z_prev = self.z_loc(x_t, z_prev, self._step_alpha(t, alpha, read)) + eps_z[:, t]
                zs.append(z_prev.unsqueeze(1))
                xs.append(x_t.unsqueeze(1))
                t += 1
                continue
            end = t + 1
            while end < steps and not stepwise[end]:
                end += 1
            segment = linear_recurrence(z_prev, decay[t:end], drive[:, t:end])[:, 1:]
            z_prev = segment[:, -1]
            zs.append(segment)
            xs.append(x[:, t:end])
            t = end
        return torch.cat(zs, dim=1), torch.cat(xs, dim=1), None

    def _posterior_rollout(self, x, mask, num_samples) -> tuple[torch.Tensor, torch.Tensor]:
        """Conditioned rollout of S samples per sequence: z (S, B, T+1, Dz), x (S, B, T, Dx)."""
        num_samples = check_positive_int(num_samples, "num_samples")
        x, mask = self._prepare(x, mask)
        batch, steps, dim = x.shape
        x_rep = x.expand(num_samples, batch, steps, dim).reshape(-1, steps, dim)
        mask_rep = mask.expand(num_samples, batch, steps, dim).reshape(-1, steps, dim)
        z, x_read = self._rollout(x_rep, mask_rep, "conditioned")
        return (
            z.reshape(num_samples, batch, steps + 1, self.latent_dim),
            x_read.reshape(num_samples, batch, steps, dim),
        )

    # ------------------------------------------------------------------ samplers
    @torch.no_grad()
    def sample(self, num_samples: int, num_steps: int) -> dict[str, torch.Tensor]:
        """Free-running draws from the prior: {"x": (S, T, Dx), "z": (S, T+1, Dz)}."""
        num_samples = check_positive_int(num_samples, "num_samples")
        num_steps = check_positive_int(num_steps, "num_steps")
        x = torch.zeros(num_samples, num_steps, self.obs_dim, dtype=self.dtype, device=self.device)
        z, x_draw = self._rollout(x, torch.zeros_like(x, dtype=torch.bool), "generative")
        return {"x": x_draw, "z": z}

    def _latent_method(self, method: str, num_particles) -> int | None:
        """Check ``method``; the particle count of the SMC methods (None for ancestral)."""
        if method not in LATENT_METHODS:
            raise ValueError(f"method must be one of {LATENT_METHODS}, got {method!r}")
        if method == "ancestral":
            return None
        if num_particles is None:
            return DEFAULT_PARTICLES
        return check_positive_int(num_particles, "num_particles")

    @torch.no_grad()
    def impute(
        self,
        x,
        mask=None,
        num_samples: int = 100,
        method: str = "smc",
        num_particles: int | None = None,
    ) -> torch.Tensor:
        """Fill missing entries of x (B, T, Dx): draws (S, B, T, Dx).

        Observed entries are returned unchanged; the values x holds at missing entries never
        affect the output. ``method="smc"`` (default): joint draws from the smoothing posterior
        p(x^mis | x^obs), which uses both sides of a gap (a particle filter with
        ``num_particles``, default 256, then backward simulation; see
        :mod:`alternators_ppl.models.smc`). ``method="ancestral"``: the FTN recursion with the
        data plugged in, each missing entry drawn given the past only.
        """
        particles = self._latent_method(method, num_particles)
        if particles is None:
            return self._posterior_rollout(x, mask, num_samples)[1]
        return _smc.smoothing_paths(self, x, mask, num_samples, particles).x

    @torch.no_grad()
    def forecast(
        self,
        x_context,
        horizon: int,
        num_samples: int = 100,
        method: str = "smc",
        num_particles: int | None = None,
    ) -> torch.Tensor:
        """Draws of the next ``horizon`` steps after x_context (B, Tc, Dx): (S, B, horizon, Dx).

        ``method="smc"`` (default) starts each draw from the filtering posterior
        p(z_Tc | x_context) (``num_particles``, default 256); ``method="ancestral"`` from the
        FTN recursion on the context (identical to :meth:`impute` with that method on
        x_context followed by ``horizon`` missing steps).
        """
        horizon = check_positive_int(horizon, "horizon")
        particles = self._latent_method(method, num_particles)
        x_context = self._as_input(x_context, "x_context")
        if particles is not None:
            return _smc.smc_forecast(self, x_context, horizon, num_samples, particles).x
        tail = torch.full(
            (x_context.shape[0], horizon, self.obs_dim),
            float("nan"),
            dtype=self.dtype,
            device=self.device,
        )
        x_full = torch.cat([x_context, tail], dim=1)
        return self._posterior_rollout(x_full, None, num_samples)[1][:, :, -horizon:]

    #: ``infer_latents``'s method when none is given; ``fit(..., z_train=...)`` sets "smc" on a
    #: model whose noise it calibrated (inference/supervised_calibration.py)
    latent_method = "ancestral"

    @torch.no_grad()
    def infer_latents(
        self,
        x,
        mask=None,
        num_samples: int = 1,
        method: str | None = None,
        num_particles: int | None = None,
    ) -> torch.Tensor:
        """Latent paths given x (B, T, Dx): (S, B, T+1, Dz).

        ``method="smc"``: draws from the smoothing posterior p(z_{0:T} | x^obs) (particle
        filter with ``num_particles``, default 256, and backward simulation; the S draws share
        one particle system, so for R-hat / ESS use
        :func:`~alternators_ppl.models.smc.smc_chains`). ``method="ancestral"``: the
        conditioned FTN recursion, which never weighs a draw by p(x_t | z_{t-1}). ``None``
        (default): the model's ``latent_method``, "ancestral" unless a supervised fit
        calibrated the noise (then "smc", whose intervals that calibration targets).
        """
        method = self.latent_method if method is None else method
        particles = self._latent_method(method, num_particles)
        if particles is None:
            return self._posterior_rollout(x, mask, num_samples)[0]
        return _smc.smoothing_paths(self, x, mask, num_samples, particles).z

    @torch.no_grad()
    def log_likelihood(
        self, x, mask=None, num_particles: int = 1000, seed: int | None = None
    ) -> torch.Tensor:
        """SMC estimate of log p(x^obs) per sequence (B,) for x (B, T, Dx).

        The particle filter's ``log_marginal``: its exponential is unbiased for p(x^obs); the
        log is biased low by about half its variance, which shrinks as 1 / ``num_particles``.
        """
        return _smc.particle_filter(self, x, mask, num_particles, seed, history=False).log_marginal

    def extra_repr(self) -> str:
        alpha = f"{self.alpha_values[0]:.3g}" if self.alpha_is_constant else "schedule"
        return (
            f"obs_dim={self.obs_dim}, latent_dim={self.latent_dim}, {self.scales_repr()}, "
            f"alpha={alpha}, ftn_input={self.ftn_input!r}"
        )
