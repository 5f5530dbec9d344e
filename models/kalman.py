"""Linear-Gaussian state-space model (Kalman baseline): exact likelihood, filter, smoother.

Model (the pykalman / textbook convention, column vectors), x_t in R^Dx, z_t in R^Dz, t = 1..T::

    z_1 ~ N(m0, P0)
    z_t = A z_{t-1} + w_t,   w_t ~ N(0, Q)
    x_t = H z_t + v_t,       v_t ~ N(0, R)

A (Dz, Dz), H (Dx, Dz), Q (Dz, Dz), R (Dx, Dx), m0 (Dz,), P0 (Dz, Dz). These are exactly
pykalman's ``transition_matrices``, ``observation_matrices``, ``transition_covariance``,
``observation_covariance``, ``initial_state_mean`` and ``initial_state_covariance`` (offsets 0).
Pyro's ``GaussianHMM`` uses row vectors and an emission-free z_0;
:meth:`LinearGaussianSSM.pyro_model` maps this model onto it exactly (first transition matrix 0
with noise N(m0, P0), then A^T).

Shapes are batch-first: x (B, T, Dx); a mask is bool, True = observed, of shape (B, T) or
(B, T, Dx); NaN entries of x are missing too. Samplers add a leading sample axis S.

Missing entries are handled exactly: at each step the rows of H and the innovation entries of
the missing coordinates are zeroed and their block of the innovation covariance is replaced by
the identity (cross terms 0), so they add nothing to the gain, the update or the likelihood,
which is then the exact marginal likelihood of the observed entries.
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from alternators_ppl.validation import (
    as_float_tensor,
    check_mask,
    check_positive_int,
    check_sequences,
)

__all__ = ["LinearGaussianSSM", "FilterResult", "SmootherResult"]

_LOG_2PI = math.log(2.0 * math.pi)


class FilterResult(NamedTuple):
    """Kalman filter output: means (B, T, Dz), covs (B, T, Dz, Dz), log_likelihood (B,)."""

    means: torch.Tensor
    covs: torch.Tensor
    log_likelihood: torch.Tensor


class SmootherResult(NamedTuple):
    """RTS smoother output: means (B, T, Dz), covs (B, T, Dz, Dz) of p(z_t | x_{1:T})."""

    means: torch.Tensor
    covs: torch.Tensor


# ---------------------------------------------------------------------- pure algorithms
def _sym(m: torch.Tensor) -> torch.Tensor:
    return 0.5 * (m + m.mT)


def _psd_factor(cov: torch.Tensor) -> torch.Tensor:
    """A factor L with L L^T = cov for (..., D, D) PSD cov (Cholesky, eigh if singular)."""
    cov = _sym(cov)
    chol, info = torch.linalg.cholesky_ex(cov)
    if bool((info > 0).any()):
        evals, evecs = torch.linalg.eigh(cov)
        chol = evecs * evals.clamp_min(0.0).sqrt().unsqueeze(-2)
    return chol


def _masked_cov(cov: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
    """cov (D, D) with rows/cols of missing entries of obs (..., D) replaced by identity ones."""
    keep = obs.unsqueeze(-1) * obs.unsqueeze(-2)
    return cov * keep + torch.diag_embed(1.0 - obs)


def _kalman_filter(A, H, Q, R, m0, P0, x0, obs):
    """Batched filter. x0 (B, T, Dx) with missing entries 0, obs (B, T, Dx) float 0/1.

    Returns filtered means/covs, per-sequence log-likelihood (B,), predicted means/covs.
    """
    batch, steps, _ = x0.shape
    dz = A.shape[0]
    m = m0.expand(batch, dz)
    P = P0.expand(batch, dz, dz)
    ll = x0.new_zeros(batch)
    mf, Pf, mp, Pp = [], [], [], []
    for t in range(steps):
        if t > 0:
            m = m @ A.mT
            P = _sym(A @ P @ A.mT + Q)
        mp.append(m)
        Pp.append(P)
        o = obs[:, t]
        Ho = o.unsqueeze(-1) * H  # (B, Dx, Dz): rows of missing entries zeroed
        e = o * (x0[:, t] - m @ H.mT)  # innovation, 0 at missing entries
        HP = Ho @ P
        S = HP @ Ho.mT + _masked_cov(R, o)
        L = torch.linalg.cholesky(S)
        gain_t = torch.cholesky_solve(HP, L)  # S^-1 H P = K^T
        m = m + (e.unsqueeze(-2) @ gain_t).squeeze(-2)
        P = _sym(P - HP.mT @ gain_t)
        mf.append(m)
        Pf.append(P)
        white = torch.linalg.solve_triangular(L, e.unsqueeze(-1), upper=False).squeeze(-1)
        logdet = 2.0 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        ll = ll - 0.5 * (white.pow(2).sum(-1) + logdet + o.sum(-1) * _LOG_2PI)
    stack = torch.stack
    return stack(mf, 1), stack(Pf, 1), ll, stack(mp, 1), stack(Pp, 1)


def _smoothing_gains(A, Pf, Pp):
    """J_t = Pf_t A^T Pp_{t+1}^-1 for t = 1..T-1: (B, T-1, Dz, Dz)."""
    chol = torch.linalg.cholesky(Pp[:, 1:])
    return torch.cholesky_solve(A @ Pf[:, :-1], chol).mT


def _rts_smoother(A, mf, Pf, mp, Pp):
    """RTS smoother: smoothed means (B, T, Dz), covs (B, T, Dz, Dz) and gains (B, T-1, Dz, Dz)."""
    steps = mf.shape[1]
    J = _smoothing_gains(A, Pf, Pp)
    m, P = mf[:, -1], Pf[:, -1]
    ms, Ps = [m], [P]
    for t in range(steps - 2, -1, -1):
        Jt = J[:, t]
        m = mf[:, t] + ((m - mp[:, t + 1]).unsqueeze(-2) @ Jt.mT).squeeze(-2)
        P = _sym(Pf[:, t] + Jt @ (P - Pp[:, t + 1]) @ Jt.mT)
        ms.append(m)
        Ps.append(P)
    return torch.stack(ms[::-1], 1), torch.stack(Ps[::-1], 1), J


def _backward_sample(A, mf, Pf, mp, Pp, num_samples):
    """Forward-filter backward-sample: joint draws z_{1:T} ~ p(z | x), shape (S, B, T, Dz)."""
    batch, steps, dz = mf.shape
    eps = torch.randn(num_samples, batch, steps, dz, dtype=mf.dtype, device=mf.device)
    z = mf[:, -1] + (_psd_factor(Pf[:, -1]) @ eps[:, :, -1].unsqueeze(-1)).squeeze(-1)
    draws = [z]
    if steps > 1:
        J = _smoothing_gains(A, Pf, Pp)
        cond_covs = Pf[:, :-1] - J @ Pp[:, 1:] @ J.mT
        factors = _psd_factor(cond_covs)  # (B, T-1, Dz, Dz)
        for t in range(steps - 2, -1, -1):
            loc = mf[:, t] + ((z - mp[:, t + 1]).unsqueeze(-2) @ J[:, t].mT).squeeze(-2)
            z = loc + (factors[:, t] @ eps[:, :, t].unsqueeze(-1)).squeeze(-1)
            draws.append(z)
    return torch.stack(draws[::-1], 2)


def _lower_factor(raw: torch.Tensor) -> torch.Tensor:
    """Cholesky factor with positive diagonal: strict lower part of raw + diag(exp(diag raw))."""
    return torch.tril(raw, -1) + torch.diag_embed(raw.diagonal().exp())


def _raw_from_cov(cov: torch.Tensor) -> torch.Tensor:
    """Inverse of ``_lower_factor(raw) @ _lower_factor(raw).T``; adds jitter if cov is singular."""
    cov = _sym(cov)
    chol, info = torch.linalg.cholesky_ex(cov)
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    jitter = 1e-10 * float(cov.diagonal().abs().mean().clamp_min(1e-30))
    for _ in range(12):
        if int(info) == 0:
            break
        chol, info = torch.linalg.cholesky_ex(cov + jitter * eye)
        jitter *= 10.0
    if int(info) > 0 or not bool(torch.isfinite(chol).all()):
        raise ValueError(f"covariance {tuple(cov.shape)} is not positive definite or not finite")
    return torch.tril(chol, -1) + torch.diag_embed(chol.diagonal().log())


# ---------------------------------------------------------------------- the model
class LinearGaussianSSM(nn.Module):
    """Linear-Gaussian SSM ``z_1 ~ N(m0, P0), z_t = A z_{t-1} + w, x_t = H z_t + v``.

    Parameters: ``A`` (Dz, Dz), ``H`` (Dx, Dz), ``m0`` (Dz,) unconstrained; Q, R, P0 through
    Cholesky factors with a positive (exp) diagonal, so every value of the raw parameters gives
    a valid model. Read the matrices as the properties ``Q``, ``R``, ``P0``.

    Args:
        obs_dim: Dx.
        latent_dim: Dz.
        device, dtype: where the parameters live (inputs are moved and cast there).

    Defaults: A = 0.9 I, H ~ N(0, 1/Dz) (torch's global RNG), Q = 0.1 I, R = I, m0 = 0, P0 = I.
    """

    def __init__(self, obs_dim: int, latent_dim: int, device=None, dtype=None):
        super().__init__()
        self.obs_dim = check_positive_int(obs_dim, "obs_dim")
        self.latent_dim = check_positive_int(latent_dim, "latent_dim")
        dx, dz = self.obs_dim, self.latent_dim
        kw = {"device": device, "dtype": dtype}
        self.A = nn.Parameter(0.9 * torch.eye(dz, **kw))
        self.H = nn.Parameter(torch.randn(dx, dz, **kw) / math.sqrt(dz))
        self.m0 = nn.Parameter(torch.zeros(dz, **kw))
        self.Q_raw = nn.Parameter(torch.diag_embed(torch.full((dz,), 0.5 * math.log(0.1), **kw)))
        self.R_raw = nn.Parameter(torch.zeros(dx, dx, **kw))
        self.P0_raw = nn.Parameter(torch.zeros(dz, dz, **kw))

    @classmethod
    def from_matrices(cls, A, H, Q, R, m0, P0, device=None, dtype=None) -> LinearGaussianSSM:
        """Model with the given matrices (tensors or arrays; dtype defaults to A's).

        A (Dz, Dz), H (Dx, Dz), Q (Dz, Dz), R (Dx, Dx), m0 (Dz,), P0 (Dz, Dz); Q, R, P0
        symmetric positive definite.
        """
        if dtype is None:
            probe = torch.as_tensor(A) if not isinstance(A, torch.Tensor) else A
            dtype = probe.dtype if torch.is_floating_point(probe) else None
        H_t = as_float_tensor(H, "H", device=device, dtype=dtype)
        if H_t.dim() != 2:
            raise ValueError(f"H must have shape (Dx, Dz), got {tuple(H_t.shape)}")
        model = cls(H_t.shape[0], H_t.shape[1], device=device, dtype=dtype)
        model.set_matrices(A=A, H=H, Q=Q, R=R, m0=m0, P0=P0)
        return model

    # ------------------------------------------------------------------ parameters
    @property
    def device(self) -> torch.device:
        """Device of the parameters (inputs are moved here)."""
        return self.A.device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the parameters (inputs are cast to it)."""
        return self.A.dtype

    @property
    def Q(self) -> torch.Tensor:
        """Transition noise covariance (Dz, Dz)."""
        L = _lower_factor(self.Q_raw)
        return L @ L.mT

    @property
    def R(self) -> torch.Tensor:
        """Observation noise covariance (Dx, Dx)."""
        L = _lower_factor(self.R_raw)
        return L @ L.mT

    @property
    def P0(self) -> torch.Tensor:
        """Covariance of z_1 (Dz, Dz)."""
        L = _lower_factor(self.P0_raw)
        return L @ L.mT

    def matrices(self) -> dict[str, torch.Tensor]:
        """The model as a dict of tensors: A, H, Q, R, m0, P0."""
        return {"A": self.A, "H": self.H, "Q": self.Q, "R": self.R, "m0": self.m0, "P0": self.P0}

    @torch.no_grad()
    def set_matrices(self, **values) -> None:
        """Overwrite any of A, H, Q, R, m0, P0 (checked for shape; covariances for PD)."""
        dx, dz = self.obs_dim, self.latent_dim
        shapes = {
            "A": (dz, dz),
            "H": (dx, dz),
            "Q": (dz, dz),
            "R": (dx, dx),
            "m0": (dz,),
            "P0": (dz, dz),
        }
        for name, value in values.items():
            if name not in shapes:
                raise ValueError(f"unknown matrix {name!r}; expected one of {tuple(shapes)}")
            value = as_float_tensor(value, name, device=self.device, dtype=self.dtype)
            if tuple(value.shape) != shapes[name]:
                raise ValueError(
                    f"{name} has shape {tuple(value.shape)}, expected {shapes[name]} "
                    f"(Dx = {dx}, Dz = {dz})"
                )
            if not torch.isfinite(value).all():
                raise ValueError(f"{name} contains NaN or inf values")
            if name in ("Q", "R", "P0"):
                if not torch.allclose(value, value.mT, rtol=1e-6, atol=1e-10):
                    raise ValueError(f"{name} {tuple(value.shape)} must be symmetric")
                _, info = torch.linalg.cholesky_ex(value)
                if int(info) > 0:
                    raise ValueError(f"{name} {tuple(value.shape)} must be positive definite")
                getattr(self, f"{name}_raw").copy_(_raw_from_cov(value))
            else:
                getattr(self, name).copy_(value)

    # ------------------------------------------------------------------ input checks
    def _prepare(self, x, mask, name: str = "x") -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, Dx) with missing entries zeroed, and the observed mask (B, T, Dx) bool."""
        x = as_float_tensor(x, name, device=self.device, dtype=self.dtype)
        check_sequences(x, name, self.obs_dim)
        mask = check_mask(mask, x)
        return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device)), mask

    def _run_filter(self, x0: torch.Tensor, obs: torch.Tensor):
        A, H, Q, R, m0, P0 = self.matrices().values()
        return _kalman_filter(A, H, Q, R, m0, P0, x0, obs.to(x0.dtype))

    # ------------------------------------------------------------------ inference
    def filter(self, x, mask=None) -> FilterResult:
        """Kalman filter: p(z_t | x_{1:t}) means (B, T, Dz), covs (B, T, Dz, Dz), log p(x) (B,)."""
        x0, obs = self._prepare(x, mask)
        mf, Pf, ll, _, _ = self._run_filter(x0, obs)
        return FilterResult(mf, Pf, ll)

    def smooth(self, x, mask=None) -> SmootherResult:
        """RTS smoother: p(z_t | x_{1:T}) means (B, T, Dz) and covs (B, T, Dz, Dz)."""
        x0, obs = self._prepare(x, mask)
        mf, Pf, _, mp, Pp = self._run_filter(x0, obs)
        ms, Ps, _ = _rts_smoother(self.A, mf, Pf, mp, Pp)
        return SmootherResult(ms, Ps)

    def log_likelihood(self, x, mask=None) -> torch.Tensor:
        """Exact log p(observed entries of x) per sequence, (B,); differentiable."""
        x0, obs = self._prepare(x, mask)
        return self._run_filter(x0, obs)[2]

    # ------------------------------------------------------------------ prediction
    def _predictive_state(self, x_context, mask):
        x0, obs = self._prepare(x_context, mask, "x_context")
        mf, Pf, _, _, _ = self._run_filter(x0, obs)
        return mf[:, -1], Pf[:, -1]

    @torch.no_grad()
    def forecast_moments(
        self, x_context, horizon: int, mask=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Closed-form forecast p(x_{T+h} | x_{1:T}), h = 1..horizon: mean (B, H, Dx), cov
        (B, H, Dx, Dx) (marginal per step)."""
        horizon = check_positive_int(horizon, "horizon")
        m, P = self._predictive_state(x_context, mask)
        A, H, Q, R = self.A, self.H, self.Q, self.R
        means, covs = [], []
        for _ in range(horizon):
            m = m @ A.mT
            P = _sym(A @ P @ A.mT + Q)
            means.append(m @ H.mT)
            covs.append(_sym(H @ P @ H.mT + R))
        return torch.stack(means, 1), torch.stack(covs, 1)

    @torch.no_grad()
    def forecast(self, x_context, horizon: int, num_samples: int = 100, mask=None) -> torch.Tensor:
        """Joint draws of x_{T+1..T+horizon} given x_context (B, T, Dx): (S, B, horizon, Dx)."""
        horizon = check_positive_int(horizon, "horizon")
        num_samples = check_positive_int(num_samples, "num_samples")
        m, P = self._predictive_state(x_context, mask)
        batch = m.shape[0]
        z = m + (_psd_factor(P) @ self._randn(num_samples, batch, self.latent_dim, 1)).squeeze(-1)
        return self._roll(z, horizon)[0]

    @torch.no_grad()
    def impute(self, x, mask=None, num_samples: int = 100) -> torch.Tensor:
        """Joint posterior draws of x given its observed entries: (S, B, T, Dx).

        Latent paths come from forward-filter backward-sample; missing entries of x_t are then
        drawn from p(x_t,miss | z_t, x_t,obs) (exact for a full R), observed entries are kept.
        """
        num_samples = check_positive_int(num_samples, "num_samples")
        x0, obs = self._prepare(x, mask)
        mf, Pf, _, mp, Pp = self._run_filter(x0, obs)
        z = _backward_sample(self.A, mf, Pf, mp, Pp, num_samples)  # (S, B, T, Dz)
        R = self.R
        noise = _lower_factor(self.R_raw) @ self._randn(*z.shape[:-1], self.obs_dim, 1)
        x_free = z @ self.H.mT + noise.squeeze(-1)
        # Matheron's rule: shift the free draw so that its observed entries equal the data.
        o = obs.to(x0.dtype)
        resid = (o * (x0 - x_free)).unsqueeze(-1)
        chol = torch.linalg.cholesky(_masked_cov(R, o))  # (B, T, Dx, Dx)
        shift = (R @ torch.cholesky_solve(resid, chol.expand(resid.shape[:-1] + (-1,)))).squeeze(-1)
        return torch.where(obs, x0.expand_as(x_free), x_free + shift)

    @torch.no_grad()
    def sample(self, num_samples: int, num_steps: int) -> dict[str, torch.Tensor]:
        """Draws from the prior: {"x": (S, T, Dx), "z": (S, T, Dz)}."""
        num_samples = check_positive_int(num_samples, "num_samples")
        num_steps = check_positive_int(num_steps, "num_steps")
        eps = self._randn(num_samples, self.latent_dim, 1)
        z1 = self.m0 + (_lower_factor(self.P0_raw) @ eps).squeeze(-1)
        x1 = z1 @ self.H.mT + (
            _lower_factor(self.R_raw) @ self._randn(num_samples, self.obs_dim, 1)
        ).squeeze(-1)
        if num_steps == 1:
            return {"x": x1.unsqueeze(1), "z": z1.unsqueeze(1)}
        x_rest, z_rest = self._roll(z1, num_steps - 1)
        return {
            "x": torch.cat([x1.unsqueeze(1), x_rest], 1),
            "z": torch.cat([z1.unsqueeze(1), z_rest], 1),
        }

    def _randn(self, *shape) -> torch.Tensor:
        return torch.randn(*shape, dtype=self.dtype, device=self.device)

    def _roll(self, z: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the prior forward from z (..., Dz) for ``steps``: x (..., steps, Dx), z alike."""
        LQ, LR = _lower_factor(self.Q_raw), _lower_factor(self.R_raw)
        xs, zs = [], []
        for _ in range(steps):
            z = z @ self.A.mT + (LQ @ self._randn(*z.shape, 1)).squeeze(-1)
            x = z @ self.H.mT + (LR @ self._randn(*z.shape[:-1], self.obs_dim, 1)).squeeze(-1)
            xs.append(x)
            zs.append(z)
        return torch.stack(xs, -2), torch.stack(zs, -2)

    # ------------------------------------------------------------------ fitting
    @torch.no_grad()
    def fit_em(
        self, x, mask=None, num_iters: int = 50, budget_s: float | None = None
    ) -> list[float]:
        """Fit all of A, H, Q, R, m0, P0 by exact EM; returns total log-likelihoods, length
        num_iters + 1 (before the first and after each iteration); never decreases. With
        ``budget_s``, iterations stop early once they took that many seconds in total.

        Sequences (B, T, Dx) share the parameters. Any mask works: the complete data are z and
        the x_t of steps with at least one observed entry; missing entries of such steps are
        latent (their conditional moments given z_t and x_t,obs enter the statistics), fully
        missing steps drop out of the H and R updates (as in pykalman). A and Q need T >= 2
        and are left unchanged when T = 1.
        """
        num_iters = check_positive_int(num_iters, "num_iters")
        x0, obs = self._prepare(x, mask)
        if not bool(obs.any()):
            raise ValueError(f"x {tuple(x0.shape)} has no observed entries to fit")
        history, tic = [], time.perf_counter()
        for _ in range(num_iters):
            history.append(self._em_step(x0, obs))
            if budget_s is not None and time.perf_counter() - tic >= budget_s:
                break
        history.append(float(self._run_filter(x0, obs)[2].sum()))
        return history

    def _em_step(self, x0: torch.Tensor, obs: torch.Tensor) -> float:
        """One E-step + M-step in place; returns the total log-likelihood before the update."""
        batch, steps, dx = x0.shape
        mf, Pf, ll, mp, Pp = self._run_filter(x0, obs)
        ms, Ps, J = _rts_smoother(self.A, mf, Pf, mp, Pp)
        outer = ms.unsqueeze(-1) * ms.unsqueeze(-2)
        Ezz = Ps + outer  # E[z_t z_t^T]
        updates = {}
        # initial state
        m0 = ms[:, 0].mean(0)
        d0 = ms[:, 0] - m0
        updates["m0"] = m0
        updates["P0"] = _sym((Ps[:, 0] + d0.unsqueeze(-1) * d0.unsqueeze(-2)).mean(0))
        # transition
        if steps > 1:
            cross = Ps[:, 1:] @ J.mT + ms[:, 1:].unsqueeze(-1) * ms[:, :-1].unsqueeze(-2)
            S10 = cross.sum((0, 1))  # sum of E[z_t z_{t-1}^T]
            S00 = Ezz[:, :-1].sum((0, 1))
            S11 = Ezz[:, 1:].sum((0, 1))
            A = torch.linalg.solve(S00, S10.mT).mT
            Q = S11 - A @ S10.mT - S10 @ A.mT + A @ S00 @ A.mT
            updates["A"] = A
            updates["Q"] = _sym(Q / (batch * (steps - 1)))
        # observation: x_t given z_t and its observed entries is x~ = C z_t + d + N(0, Sigma)
        o = obs.to(x0.dtype)
        R, H = self.R, self.H
        eye = torch.eye(dx, dtype=x0.dtype, device=x0.device)
        W = R @ torch.cholesky_solve(torch.diag_embed(o), torch.linalg.cholesky(_masked_cov(R, o)))
        C = (eye - W) @ H  # (B, T, Dx, Dz)
        Sigma = _sym((eye - W) @ R)
        Ex = (C @ ms.unsqueeze(-1)).squeeze(-1) + (W @ x0.unsqueeze(-1)).squeeze(-1)
        Exz = C @ Ps + Ex.unsqueeze(-1) * ms.unsqueeze(-2)
        Exx = C @ Ps @ C.mT + Ex.unsqueeze(-1) * Ex.unsqueeze(-2) + Sigma
        w = obs.any(-1).to(x0.dtype)[..., None, None]  # steps with any observed entry
        SXZ, SZZ, SXX = (w * Exz).sum((0, 1)), (w * Ezz).sum((0, 1)), (w * Exx).sum((0, 1))
        H = torch.linalg.solve(SZZ, SXZ.mT).mT
        R = SXX - H @ SXZ.mT - SXZ @ H.mT + H @ SZZ @ H.mT
        updates["H"] = H
        updates["R"] = _sym(R / w.sum())
        for name in ("Q", "R", "P0"):
            if name in updates:
                getattr(self, f"{name}_raw").copy_(_raw_from_cov(updates.pop(name)))
        for name, value in updates.items():
            getattr(self, name).copy_(value)
        return float(ll.sum())

    def fit(self, x, mask=None, epochs: int = 200, lr: float = 0.01) -> list[float]:
        """Fit by Adam on the exact negative log-likelihood per observed entry; returns the
        total log-likelihood before each epoch (length ``epochs``)."""
        epochs = check_positive_int(epochs, "epochs")
        if not float(lr) > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        x0, obs = self._prepare(x, mask)
        count = int(obs.sum())
        if count == 0:
            raise ValueError(f"x {tuple(x0.shape)} has no observed entries to fit")
        optimizer = torch.optim.Adam(self.parameters(), lr=float(lr))
        history = []
        for _ in range(epochs):
            optimizer.zero_grad()
            ll = self._run_filter(x0, obs)[2].sum()
            (-ll / count).backward()
            optimizer.step()
            history.append(float(ll.detach()))
        return history

    # ------------------------------------------------------------------ Pyro program
    def gaussian_hmm(self, num_steps: int) -> dist.GaussianHMM:
        """This model as a Pyro ``GaussianHMM`` over T = num_steps steps (event (T, Dx)).

        Pyro's z_0 emits nothing and Pyro multiplies row vectors, so the first transition has
        matrix 0 and noise N(m0, P0) (giving z_1), later ones matrix A^T and noise N(0, Q);
        the observation matrix is H^T with noise N(0, R).
        """
        steps = check_positive_int(num_steps, "num_steps")
        dz = self.latent_dim
        kw = {"dtype": self.dtype, "device": self.device}
        trans_matrix = torch.cat(
            [torch.zeros(1, dz, dz, **kw), self.A.mT.expand(steps - 1, dz, dz)], 0
        )
        trans_loc = torch.cat([self.m0.unsqueeze(0), torch.zeros(steps - 1, dz, **kw)], 0)
        trans_tril = torch.cat(
            [
                _lower_factor(self.P0_raw).unsqueeze(0),
                _lower_factor(self.Q_raw).expand(steps - 1, dz, dz),
            ],
            0,
        )
        return dist.GaussianHMM(
            dist.MultivariateNormal(torch.zeros(dz, **kw), scale_tril=torch.eye(dz, **kw)),
            trans_matrix,
            dist.MultivariateNormal(trans_loc, scale_tril=trans_tril),
            self.H.mT,
            dist.MultivariateNormal(
                torch.zeros(self.obs_dim, **kw), scale_tril=_lower_factor(self.R_raw)
            ),
        )

    def pyro_model(self, x=None, num_steps: int | None = None, num_sequences: int = 1):
        """The same model as a Pyro program: one site ``"x"`` (B, T, Dx) in plate ``sequences``.

        ``x`` must be fully observed (no NaN, no mask); with ``x=None`` the site is sampled,
        with shape (num_sequences, num_steps, Dx). Returns the site's value.
        """
        if x is not None:
            x = as_float_tensor(x, "x", device=self.device, dtype=self.dtype)
            check_sequences(x, "x", self.obs_dim)
            if torch.isnan(x).any():
                raise ValueError(
                    f"x {tuple(x.shape)} has NaN entries; pyro_model needs fully observed data "
                    "(use log_likelihood(x, mask) for missing values)"
                )
            num_sequences, num_steps = x.shape[0], x.shape[1]
        elif num_steps is None:
            raise ValueError("num_steps is required when x is None")
        num_sequences = check_positive_int(num_sequences, "num_sequences")
        hmm = self.gaussian_hmm(num_steps)
        with pyro.plate("sequences", num_sequences, dim=-1):
            return pyro.sample("x", hmm, obs=x)
