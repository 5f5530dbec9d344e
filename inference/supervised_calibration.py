"""Noise scales of a supervised (sequence-to-sequence) fit, chosen on validation data where
both x and z are observed.

Eq. 12 fixes sigma_x and sigma_z, and a supervised fit never ran the unsupervised
:func:`~alternators_ppl.inference.calibrate_noise` (its criterion ignores the observed z). With
z observed the joint likelihood p(x_val, z_val) needs no Monte Carlo, and the posterior of z
given x can be scored against the z_val it should cover. :func:`calibrate_supervised` keeps the
means the networks learned and moves only the noise:

- observation step: sigma_x,d per observed dimension; the OTN's output layer is rescaled by
  sqrt(1 - sigma_x,old^2) / sqrt(1 - sigma_x,new^2), so x_loc = sqrt(1 - sigma_x^2) f(z) is
  unchanged (as ``calibrate_noise(preserve_mean=True)``);
- latent step: sigma_z,d per latent coordinate, with sqrt(alpha) g(x) unchanged and the
  decays sqrt(1 - alpha - sigma_z,d^2) kept on average: alpha moves to the mean over d of
  alpha + sigma_z,old,d^2 - sigma_z,new,d^2 (so a common change of sigma_z keeps every decay
  exactly; coordinates whose sigma_z moves apart change their decay by
  (sigma_z,new,d^2 - mean) / (2 decay), a few thousandths for the main job) and the FTN's
  output layer is rescaled by sqrt(alpha_old / alpha_new). Each sigma_z,d^2 is capped at 95%
  of alpha + sigma_z,old,d^2 and alpha below 1 - max_d sigma_z,d^2, so the constraints
  0 < alpha and alpha + sigma_z,d^2 < 1 hold.

Criteria (``criterion=``):

- ``"joint_mle"``: the exact maximiser of log p(x_val, z_val) over (sigma_x,1..Dx,
  sigma_z,1..Dz) with the means fixed: sigma_x,d^2 = the mean squared residual of x_t,d about
  x_loc(z_{t-1}) and sigma_z,d^2 = that of z_t,d about z_loc(x_t, z_{t-1}) (closed form,
  :func:`supervised_noise_mle`; clipped to the valid ranges).
- ``"latent_dss"`` (default): starting from the joint MLE, the multipliers c_x (one, on
  every sigma_x,d) and c_z,d (one per latent coordinate, on sigma_z,d) that minimise the
  Dawid-Sebastiani score (the log score of a Gaussian with the draws' mean and variance, per
  entry) of the SMC smoothing posterior p(z | x_val) (``smoothing_paths``, fixed seed)
  against z_val, by coordinate search over grids: c_x on its grid, then every c_z value for
  all coordinates at once, each coordinate taking its own best value (its score depends
  mostly on its own sigma_z; the combination is kept only if it scores best overall).
  ``"latent_crps"``: the same search minimising the CRPS. Needed because
  the joint likelihood treats the Dx residuals as independent: with correlated features
  (lagged and smoothed spike counts) it counts the same information several times and the
  posterior of z is too narrow; c_x > 1 tempers it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from alternators_ppl.metrics import crps_empirical
from alternators_ppl.models.alternator import Alternator
from alternators_ppl.models.smc import smoothing_paths
from alternators_ppl.networks import output_linear
from alternators_ppl.validation import as_float_tensor, check_positive_int

__all__ = [
    "SUPERVISED_CRITERIA",
    "DEFAULT_SCALE_GRIDS",
    "calibrate_supervised",
    "can_calibrate_supervised",
    "supervised_noise_mle",
]

SUPERVISED_CRITERIA = ("latent_crps", "latent_dss", "joint_mle")
#: multipliers of the joint-MLE sigma_x (c_x) and sigma_z (c_z) tried by "latent_crps"
DEFAULT_SCALE_GRIDS = {
    "c_x": (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0),
    "c_z": (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0),
}
_MAX_SIGMA_Z_SHARE = 0.95  # sigma_z^2 at most this share of alpha + sigma_z^2 (alpha > 0)


def can_calibrate_supervised(model) -> bool:
    """Whether :func:`calibrate_supervised` applies: an Alternator with its own Gaussian
    factors (x_loc, z_loc), one constant alpha, and linear output layers on both networks."""
    return (
        isinstance(model, Alternator)
        and type(model).x_loc is Alternator.x_loc
        and type(model).z_loc is Alternator.z_loc
        and type(model).x_dist is Alternator.x_dist
        and type(model).z_dist is Alternator.z_dist
        and not model._own_alpha()
        and model.alpha_is_constant
        and output_linear(model.otn) is not None
        and output_linear(model.ftn) is not None
    )


def _check(model, x, z, mask):
    if not isinstance(model, Alternator):
        raise TypeError(f"model must be an Alternator, got {type(model).__name__}")
    if not can_calibrate_supervised(model):
        raise ValueError(
            "calibrate_supervised needs the Alternator's own Gaussian factors, one constant "
            "alpha and OTN/FTN with a linear output layer (an MLP)"
        )
    x, mask = model._prepare(x, mask)
    z = as_float_tensor(z, "z_val", device=model.device, dtype=model.dtype)
    if tuple(z.shape) != (x.shape[0], x.shape[1], model.latent_dim):
        raise ValueError(
            f"z_val has shape {tuple(z.shape)}, expected (B, T, Dz) = "
            f"{(x.shape[0], x.shape[1], model.latent_dim)}"
        )
    if x.shape[1] < 2:
        raise ValueError(f"x_val needs at least 2 steps (pairs z_(t-1), x_t), got {x.shape[1]}")
    if not torch.isfinite(z).all():
        raise ValueError("z_val contains NaN or inf values")
    return x, z, mask


@torch.no_grad()
def supervised_noise_mle(model, x_val, z_val, mask_val=None) -> dict:
    """Closed-form maximiser of log p(x_val, z_val) over sigma_x (per dimension) and sigma_z
    (per latent coordinate) with the model's means fixed; the model is not changed.

    x_val (B, T, Dx) (NaN or ``mask_val`` = missing), z_val (B, T, Dz) observed. The pairs
    (z_{t-1}, x_t, z_t), t = 2..T, of each sequence enter (z_0 of the span is unknown):
    sigma_x,d^2 = mean over observed (b, t) of (x_t,d - x_loc(z_{t-1})_d)^2 and sigma_z,d^2 =
    mean over steps with x_t fully observed of (z_t,d - z_loc(x_t, z_{t-1})_d)^2. Returns
    ``sigma_x`` (Dx floats), ``sigma_z`` (Dz floats) and the raw residual variances ``var_x``,
    ``var_z``; the values are not yet clipped to the valid ranges (see
    :func:`calibrate_supervised`).
    """
    x, z, mask = _check(model, x_val, z_val, mask_val)
    z_prev, x_now, z_now, m = z[:, :-1], x[:, 1:], z[:, 1:], mask[:, 1:]
    res_x = (x_now - model.x_loc(z_prev)).square() * m
    count_x = m.sum((0, 1)).to(x.dtype)
    if (count_x == 0).any():
        raise ValueError("every observed dimension needs an observed entry after the first step")
    var_x = res_x.sum((0, 1)) / count_x
    alpha = model.alpha_schedule(1)[0]
    full = m.all(-1)  # the FTN reads every entry: score the z-step where x_t is complete
    if not full.any():
        raise ValueError("x_val has no fully observed step after the first one")
    res_z = (z_now - model.z_loc(x_now, z_prev, alpha)).square()[full]
    var_z = res_z.mean(0)  # (Dz,)
    return {
        "sigma_x": var_x.sqrt().tolist(),
        "sigma_z": var_z.sqrt().tolist(),
        "var_x": var_x.tolist(),
        "var_z": var_z.tolist(),
    }


class _Noise:
    """Set noise on a model while keeping both means as trained (see the module docstring)."""

    def __init__(self, model: Alternator):
        self.model = model
        self.otn, self.ftn = output_linear(model.otn), output_linear(model.ftn)
        self.weights = [
            [p.detach().clone() for p in layer.parameters()] for layer in (self.otn, self.ftn)
        ]
        self.sigma_x = torch.tensor(model.sigma_x_values(), dtype=model.dtype, device=model.device)
        self.sigma_z, self.alpha = model.sigma_z_values(), model.alpha_values[0]
        self.stored_sigma_z = model.stored_sigma_z()  # a float stays a float on restore
        # alpha + sigma_z,d^2 per coordinate: the decays are sqrt(1 - total_d)
        self.total = torch.tensor([self.alpha + s**2 for s in self.sigma_z], dtype=torch.float64)

    def clip(self, sigma_x, sigma_z) -> tuple[list[float], list[float]]:
        sx = torch.as_tensor(sigma_x, dtype=torch.float64)
        sx = sx.clamp(*self.model.calibration_sigma_x_range)
        sz = torch.as_tensor(sigma_z, dtype=torch.float64).expand_as(self.total)
        sz = torch.minimum(sz.clamp_min(1e-4), (_MAX_SIGMA_Z_SHARE * self.total).sqrt())
        return sx.tolist(), sz.tolist()

    def apply(self, sigma_x, sigma_z) -> None:
        model = self.model
        new_x = torch.as_tensor(sigma_x, dtype=model.dtype, device=model.device)
        gain_x = model.observation_mean_scale(self.sigma_x) / model.observation_mean_scale(new_x)
        sz2 = torch.as_tensor(sigma_z, dtype=torch.float64).square()
        alpha = min(float((self.total - sz2).mean()), 1 - float(sz2.max()) - 1e-4)
        gain_z = math.sqrt(self.alpha / alpha)
        with torch.no_grad():
            for layer, base, gain in (
                (self.otn, self.weights[0], gain_x),
                (self.ftn, self.weights[1], torch.full_like(self.weights[1][0][:, 0], gain_z)),
            ):
                layer.weight.copy_(base[0] * gain.unsqueeze(-1))
                if layer.bias is not None:
                    layer.bias.copy_(base[1] * gain)
        model.set_noise(sigma_x=list(sigma_x), sigma_z=sigma_z, alpha=alpha)

    def restore(self) -> None:
        self.apply(self.sigma_x.tolist(), self.sigma_z)
        self.model.set_noise(sigma_z=self.stored_sigma_z)


def _check_grids(grids) -> dict[str, list[float]]:
    grids = {**DEFAULT_SCALE_GRIDS, **(grids or {})}
    unknown = set(grids) - set(DEFAULT_SCALE_GRIDS)
    if unknown:
        raise ValueError(f"grids has unknown keys {sorted(unknown)}; use 'c_x' and 'c_z'")
    for key in DEFAULT_SCALE_GRIDS:
        values = [float(v) for v in grids[key]]
        if not values or not all(0 < v < math.inf for v in values):
            raise ValueError(f"grids[{key!r}] must be non-empty positive values, got {values}")
        grids[key] = values
    return grids


def calibrate_supervised(
    model: Alternator,
    x_val,
    z_val,
    mask_val=None,
    *,
    criterion: str = "latent_dss",
    num_particles: int = 128,
    num_samples: int = 64,
    seed: int = 0,
    sweeps: int = 1,
    grids: dict[str, Sequence[float]] | None = None,
    max_sequences: int | None = 16,
) -> dict:
    """Select sigma_x (per dimension) and sigma_z (per coordinate) of a supervised ``model`` on
    validation data x_val (B, T, Dx), z_val (B, T, Dz) and set them in place, the means kept
    as trained (module docstring: alpha moves so that the decays stay on average;
    alpha + sigma_z,d^2 < 1 holds).

    ``criterion``: ``"joint_mle"`` (closed form, :func:`supervised_noise_mle`) or
    ``"latent_dss"`` (default: multipliers c_x and c_z,d (per coordinate) of that MLE from
    ``grids``, keys ``c_x`` and ``c_z``, defaults :data:`DEFAULT_SCALE_GRIDS`, chosen by
    ``sweeps`` rounds of the search of the module docstring minimising the mean
    Dawid-Sebastiani score (``"latent_crps"``: the CRPS) of ``num_samples`` SMC smoothing
    draws (``num_particles``, fixed ``seed``) of z given x_val against z_val). ``max_sequences``
    (default 16, None = all) scores that many evenly spaced validation sequences in the
    search. Returns a JSON-ready report: ``criterion``, the chosen ``sigma_x`` and ``sigma_z``
    (lists), ``alpha``, the ``mle`` values, ``c_x``, ``c_z`` (a list), the previous ``before``
    scales and, for the latent criteria, the score ``score_before`` / ``score_after`` and
    ``evaluations``.
    """
    if criterion not in SUPERVISED_CRITERIA:
        raise ValueError(f"criterion must be one of {SUPERVISED_CRITERIA}, got {criterion!r}")
    num_particles = check_positive_int(num_particles, "num_particles")
    num_samples = check_positive_int(num_samples, "num_samples")
    sweeps = check_positive_int(sweeps, "sweeps")
    grids = _check_grids(grids)
    x, z, mask = _check(model, x_val, z_val, mask_val)
    noise = _Noise(model)
    before = {
        "sigma_x": noise.sigma_x.tolist(),
        "sigma_z": noise.sigma_z,
        "alpha": noise.alpha,
    }
    mle = supervised_noise_mle(model, x, z, mask)
    report = {"criterion": criterion, "before": before, "mle": mle, "c_x": 1.0,
              "c_z": [1.0] * model.latent_dim}  # fmt: skip
    base_x = torch.tensor(mle["sigma_x"], dtype=torch.float64)
    base_z = torch.tensor(mle["sigma_z"], dtype=torch.float64)
    if criterion == "joint_mle":
        sx, sz = noise.clip(base_x, base_z)
        noise.apply(sx, sz)
        return {**report, **_chosen(model)}
    if max_sequences is not None:
        max_sequences = check_positive_int(max_sequences, "max_sequences")
        if x.shape[0] > max_sequences:
            keep = torch.linspace(0, x.shape[0] - 1, max_sequences, device=x.device).round().long()
            x, z, mask = x[keep], z[keep], mask[keep]

    def scores(c_x: float, c_z: torch.Tensor) -> torch.Tensor:
        """The criterion per latent coordinate (Dz,) with these multipliers (inf: not finite)."""
        noise.apply(*noise.clip(base_x * c_x, base_z * c_z))
        draws = smoothing_paths(model, x, mask, num_samples, num_particles, seed).z[:, :, 1:]
        if criterion == "latent_crps":
            value = crps_empirical(draws, z, over=(0, 1))
        else:  # Dawid-Sebastiani: the log score of the draws' Gaussian moments
            var = draws.var(0).clamp_min(1e-12)
            value = (var.log() + (z - draws.mean(0)).square() / var).mean((0, 1)) / 2
        value = value.double().cpu()
        return torch.where(torch.isfinite(value), value, math.inf)

    dims = model.latent_dim
    ones = torch.ones(dims, dtype=torch.float64)
    score_before = float(scores(1.0, ones).mean())
    best = (math.inf, 1.0, ones)  # (mean score, c_x, c_z (Dz,))
    evaluations = 0
    try:
        for _ in range(sweeps):
            for value in grids["c_x"]:
                total = float(scores(value, best[2]).mean())
                evaluations += 1
                if total < best[0]:
                    best = (total, value, best[2])
            # c_z per coordinate from one pass: every grid value for all coordinates at once,
            # then each coordinate's best (a coordinate's score depends mostly on its own
            # sigma_z), kept if the combination scores best overall
            per_value = []
            for value in grids["c_z"]:
                per_value.append(scores(best[1], ones * value))
                evaluations += 1
                total = float(per_value[-1].mean())
                if total < best[0]:
                    best = (total, best[1], ones * value)
            table = torch.stack(per_value)  # (values, Dz)
            picked = torch.tensor(grids["c_z"], dtype=torch.float64)[table.argmin(0)]
            if not torch.equal(picked, best[2]):
                total = float(scores(best[1], picked).mean())
                evaluations += 1
                if total < best[0]:
                    best = (total, best[1], picked)
    except BaseException:
        noise.restore()
        raise
    if not math.isfinite(best[0]):
        noise.restore()
        raise ValueError("every candidate gave a non-finite score on the validation data")
    noise.apply(*noise.clip(base_x * best[1], base_z * best[2]))
    return {
        **report,
        **_chosen(model),
        "c_x": best[1],
        "c_z": best[2].tolist(),
        "score_before": score_before,
        "score_after": best[0],
        "num_particles": num_particles,
        "num_samples": num_samples,
        "evaluations": evaluations,
        "sequences": int(x.shape[0]),
    }


def _chosen(model) -> dict:
    return {
        "sigma_x": model.sigma_x_values(),
        "sigma_z": model.sigma_z_values(),
        "alpha": float(model.alpha_values[0]),
    }
