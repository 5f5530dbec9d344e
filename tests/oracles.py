"""Shared test oracles: quantities computed the slow, obvious way (through the Pyro program, or
by a Kalman filter for a linear Alternator)."""

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


def kalman_log_likelihood(model: Alternator, x: torch.Tensor) -> torch.Tensor:
    """Exact log p(x_{1:T}) (B,) of a linear Alternator; the state is w_t = z_{t-1}.

    Differentiable in the model's hyperparameters (tensors inside ``model.hyperparameters``).

    x_t = c (F w_t + b_f) + sigma_x e_t with c = sqrt(1 - sigma_x^2), and
    w_{t+1} = d_t w_t + a_t (G x_t + b_g) + sigma_z e'_t with a_t = sqrt(alpha_t),
    d_t = sqrt(1 - alpha_t - sigma_z^2): x_t enters the next state as a known input.
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
        a, d = alpha[t].sqrt(), (1 - alpha[t] - model.sigma_z**2).sqrt()
        mean = d * mean + a * (x[:, t] @ G.T + b_g)
        cov = d**2 * cov + model.sigma_z**2 * eye_z
    return log_lik
