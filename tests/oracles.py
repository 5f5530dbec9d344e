"""Shared test oracles: quantities computed the slow, obvious way (through the Pyro program, or
by a Kalman filter for a linear Alternator)."""

import math

import pyro.distributions as dist
import torch
from pyro import poutine

from alternators_ppl.models import Alternator
from alternators_ppl.networks import MLP


def program_log_density(model, x, z, mask=None, extra=None):
    """log-density (B,) of ``model.model``'s trace conditioned on the latent path z (B, T+1, Dz)
    and on the ``x_missing_t`` draws (taken from x), summed over every site but the
    ``x_missing_t`` ones: what ``model.log_joint(x, z, mask)`` must equal. ``extra`` conditions
    further sites (e.g. global parameters), whose terms are not summed."""
    data = {f"z_{t}": z[:, t] for t in range(z.shape[1])}
    data.update({f"x_missing_{t}": x[:, t - 1] for t in range(1, x.shape[1] + 1)})
    data.update(extra or {})
    trace = poutine.trace(poutine.condition(model.model, data=data)).get_trace(x, mask)
    trace.compute_log_prob()
    return sum(
        site["log_prob"]
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and name.startswith(("x_", "z_")) and "missing" not in name
    )


def linear_alternator(obs_dim=2, latent_dim=2) -> Alternator:
    """f(z) = F z + b_f, g(x) = G x + b_g: the likelihood p(x_{1:T}) is a Kalman one."""
    model = Alternator(
        obs_dim,
        latent_dim,
        sigma_x=0.3,
        sigma_z=0.3,
        alpha=0.5,
        otn=MLP(latent_dim, obs_dim, hidden=()),
        ftn=MLP(obs_dim, latent_dim, hidden=()),
    )
    return model.double()


def gappy_linear_problem(steps: int):
    """(model, x (1, T, 2), mask (1, T, 2)): :func:`linear_alternator` (2, 2), one sequence it
    sampled and about 30% of its entries hidden, all from torch seed 0."""
    torch.manual_seed(0)
    model = linear_alternator(2, 2)
    x = model.sample(1, steps)["x"]
    mask = torch.rand(1, steps, 2) > 0.3
    return model, x, mask


def kalman_log_likelihood(model: Alternator, x: torch.Tensor) -> torch.Tensor:
    """Exact log p(x_{1:T}) (B,) of a linear Alternator; the state is w_t = z_{t-1}.

    Differentiable in the model's hyperparameters (tensors inside ``model.hyperparameters``).

    x_t = c (F w_t + b_f) + sigma_x e_t with c = sqrt(1 - sigma_x^2), and
    w_{t+1} = d_t w_t + a_t (G x_t + b_g) + sigma_z e'_t with a_t = sqrt(alpha_t),
    d_t = sqrt(1 - alpha_t - sigma_z^2): x_t enters the next state as a known input. A
    per-coordinate sigma_z (Dz,) makes d_t and the state noise diagonal matrices.
    """
    F, b_f = model.otn.layers[0].weight, model.otn.layers[0].bias
    G, b_g = model.ftn.layers[0].weight, model.ftn.layers[0].bias
    scale_x = (1 - model.sigma_x**2) ** 0.5
    H = scale_x * F
    batch, steps, obs_dim = x.shape
    eye_x = torch.eye(obs_dim, dtype=x.dtype)
    eye_z = torch.eye(model.latent_dim, dtype=x.dtype)
    mean = x.new_zeros(batch, model.latent_dim)  # w_1 = z_0 ~ N(0, I)
    cov = eye_z.expand(batch, -1, -1)
    log_lik = x.new_zeros(batch)
    alpha = model.alpha_schedule(steps)
    for t in range(steps):
        x_mean = mean @ H.T + scale_x * b_f
        x_cov = H @ cov @ H.T + model.sigma_x**2 * eye_x
        log_lik += dist.MultivariateNormal(x_mean, x_cov).log_prob(x[:, t])
        gain = cov @ H.T @ torch.linalg.inv(x_cov)
        mean = mean + (gain @ (x[:, t] - x_mean).unsqueeze(-1)).squeeze(-1)
        cov = cov - gain @ x_cov @ gain.mT
        a, d = alpha[t].sqrt(), (1 - alpha[t] - model.sigma_z**2).sqrt() * eye_z.diagonal()
        mean = d * mean + a * (x[:, t] @ G.T + b_g)
        cov = d.unsqueeze(-1) * cov * d + torch.diag_embed(model.sigma_z**2 * eye_z.diagonal())
    return log_lik


def dense_linear_joint(model, steps):
    """Mean and covariance of v = [z_0, x_1, z_1, ..., x_T, z_T] of a linear Alternator, from
    v = A v + c + L e (e ~ N(0, I)) written out from the model's equations."""
    f64 = torch.float64
    F, b_f = model.otn.layers[0].weight.detach(), model.otn.layers[0].bias.detach()
    G, b_g = model.ftn.layers[0].weight.detach(), model.ftn.layers[0].bias.detach()
    dx, dz = model.obs_dim, model.latent_dim
    sx = float(model.sigma_x)
    sz = torch.tensor(model.sigma_z_values(), dtype=f64)  # (Dz,)
    alpha = [float(a) for a in model.alpha_schedule(steps)]
    n = dz + steps * (dx + dz)
    A, c, L = torch.zeros(n, n, dtype=f64), torch.zeros(n, dtype=f64), torch.zeros(n, n, dtype=f64)
    L[:dz, :dz] = torch.eye(dz, dtype=f64)
    cx = math.sqrt(1 - sx**2)
    for t in range(1, steps + 1):
        zp = z_index(t - 1, dx, dz)[0]
        xi, zi = x_index(t, dx, dz)[0], z_index(t, dx, dz)[0]
        A[xi : xi + dx, zp : zp + dz] = cx * F
        c[xi : xi + dx] = cx * b_f
        L[xi : xi + dx, xi : xi + dx] = sx * torch.eye(dx, dtype=f64)
        a, d = math.sqrt(alpha[t - 1]), torch.sqrt(1 - alpha[t - 1] - sz**2)
        A[zi : zi + dz, xi : xi + dx] = a * G
        A[zi : zi + dz, zp : zp + dz] = torch.diag(d)
        c[zi : zi + dz] = a * b_g
        L[zi : zi + dz, zi : zi + dz] = torch.diag(sz)
    M = torch.linalg.inv(torch.eye(n, dtype=f64) - A)
    return M @ c, M @ L @ L.T @ M.T


def x_index(t, dx=2, dz=2):
    """Positions of x_t (t >= 1) in the dense vector of :func:`dense_linear_joint`."""
    start = dz + (t - 1) * (dx + dz)
    return list(range(start, start + dx))


def z_index(t, dx=2, dz=2):
    """Positions of z_t (t >= 0) in the dense vector of :func:`dense_linear_joint`."""
    start = 0 if t == 0 else dz + (t - 1) * (dx + dz) + dx
    return list(range(start, start + dz))


class DenseLinearAlternator:
    """Exact posterior quantities of a linear Alternator for one sequence x (T, Dx) with
    observed entries mask (T, Dx): Gaussian conditioning of the dense joint on the observed x
    entries (missing ones are integrated out exactly)."""

    def __init__(self, model, x, mask):
        self.steps = x.shape[0]
        self.dx, self.dz = model.obs_dim, model.latent_dim
        self.mean, self.cov = dense_linear_joint(model, self.steps)
        self.x, self.mask = x, mask  # (T, Dx), (T, Dx) bool

    def observed(self, upto):
        """Positions and values of the observed x entries of steps 1..upto."""
        idx = [
            i
            for t in range(1, upto + 1)
            for i, m in zip(x_index(t, self.dx, self.dz), self.mask[t - 1], strict=True)
            if m
        ]
        return idx, self.x[:upto][self.mask[:upto]]

    def condition(self, target, upto=None):
        """Mean and variance of entries ``target`` given the observed x_1..x_upto."""
        obs, vals = self.observed(self.steps if upto is None else upto)
        if not obs:
            return self.mean[target], self.cov[target][:, target].diagonal()
        gain = self.cov[target][:, obs] @ torch.linalg.inv(self.cov[obs][:, obs])
        mean = self.mean[target] + gain @ (vals - self.mean[obs])
        cov = self.cov[target][:, target] - gain @ self.cov[obs][:, target]
        return mean, cov.diagonal()

    def log_marginal(self):
        """Exact log p(x^obs)."""
        obs, vals = self.observed(self.steps)
        mvn = torch.distributions.MultivariateNormal(self.mean[obs], self.cov[obs][:, obs])
        return mvn.log_prob(vals)

    def z_path(self):
        """Positions of z_0..z_T."""
        return [i for t in range(self.steps + 1) for i in z_index(t, self.dx, self.dz)]

    def x_missing(self):
        """Positions of the missing x entries."""
        return [
            i
            for t in range(1, self.steps + 1)
            for i, m in zip(x_index(t, self.dx, self.dz), self.mask[t - 1], strict=True)
            if not m
        ]
