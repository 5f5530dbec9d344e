"""The Alternator as a NumPyro/JAX program (the third interpretation, DESIGN.md section 2).

Same model, same letters as :mod:`alternators_ppl.models.alternator`::

    z_0 ~ N(0, I)
    x_t ~ N(sqrt(1 - sigma_x^2) f(z_{t-1}), sigma_x^2 I)                                (OTN f)
    z_t ~ N(sqrt(alpha_t) g(x_t) + sqrt(1 - alpha_t - sigma_z^2) z_{t-1}, sigma_z^2 I)  (FTN g)

Pieces:

- :func:`mlp_params_from_torch` / :func:`mlp_apply`: copy a torch :class:`~alternators_ppl.
  networks.MLP` into a pytree of ``{"w": (in, out), "b": (out,)}`` layers and run it in JAX.
- :class:`JaxAlternator`: the hyperparameters (hashable, so it can be a static ``jit``
  argument); ``JaxAlternator.from_torch(model)`` returns it with ``params = {"otn", "ftn"}``.
- :func:`numpyro_model`: the generative process as a NumPyro program (``scan`` over time).
- :func:`log_joint`, :func:`path_loss`, :func:`loss`: vectorised log-density and Eq. 12.
- :func:`make_train_step`: a jitted Eq. 12 training step (optax-style optimiser; :func:`adam`
  is a small built-in Adam, so optax is not needed).

Parameters are passed explicitly (never ``numpyro.param``), so every function is pure and
jittable. Arrays are batch-first: x (B, T, Dx), z (B, T+1, Dz) including z_0; a mask is bool,
True = observed, of shape (B, T) or (B, T, Dx). Float64 needs ``jax_enable_x64``; without it
everything runs in float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import torch
from numpyro.contrib.control_flow import scan
from torch import nn

from alternators_ppl.models.alternator import Alternator
from alternators_ppl.networks import ACTIVATIONS, MLP

__all__ = [
    "ACTIVATION_FNS",
    "AdamState",
    "JaxAlternator",
    "Optimizer",
    "adam",
    "latent_path",
    "linear_recurrence",
    "log_joint",
    "loss",
    "make_train_step",
    "mlp_apply",
    "mlp_params_from_torch",
    "numpyro_model",
    "path_loss",
]

MLPParams = list[dict[str, jax.Array]]
#: the Alternator hooks that define its factors; a subclass overriding one does not convert
_FACTOR_HOOKS = ("x_loc", "z_loc", "x_dist", "z_dist", "draw_x")

ACTIVATION_FNS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "gelu": partial(jax.nn.gelu, approximate=False),  # torch nn.GELU() default (erf)
    "gelu_tanh": partial(jax.nn.gelu, approximate=True),  # nn.GELU(approximate="tanh")
    "silu": jax.nn.silu,
    "elu": jax.nn.elu,  # alpha = 1, torch nn.ELU() default
}


# ---------------------------------------------------------------------- networks
def _to_jax(tensor: torch.Tensor, dtype=None) -> jax.Array:
    array = tensor.detach().cpu().numpy()
    dtype = jax.dtypes.canonicalize_dtype(array.dtype if dtype is None else dtype)
    return jnp.asarray(array.astype(dtype))


def _activation_name(mlp: MLP, name: str) -> str:
    """The activation of ``mlp`` as a key of ACTIVATION_FNS, checked against its modules."""
    activation = mlp.activation
    modules = [m for m in mlp.layers if not isinstance(m, nn.Linear)]
    for module in modules:
        if not isinstance(module, ACTIVATIONS.get(activation, ())):
            raise TypeError(
                f"{name} has a {type(module).__name__} layer but activation={activation!r}"
            )
        if isinstance(module, nn.GELU) and module.approximate == "tanh":
            activation = "gelu_tanh"
        if isinstance(module, nn.ELU) and module.alpha != 1.0:
            raise ValueError(f"{name} uses nn.ELU(alpha={module.alpha}); only alpha=1 converts")
    return activation


def mlp_params_from_torch(mlp: nn.Module, dtype=None, name: str = "mlp") -> tuple[MLPParams, str]:
    """Copy a torch ``MLP`` into JAX: ``(layers, activation)``.

    ``layers`` is a pytree, a list of ``{"w": (in, out), "b": (out,)}`` (``w`` is the torch
    weight transposed); ``activation`` is a key of :data:`ACTIVATION_FNS`, kept out of the pytree
    so that ``layers`` can be traced. ``dtype`` defaults to the torch dtype (as far as JAX's
    x64 setting allows). Raises ``TypeError`` naming ``name`` for anything but an ``MLP``.
    """
    if not isinstance(mlp, MLP):
        raise TypeError(
            f"{name} must be an alternators_ppl.networks.MLP to convert to JAX, "
            f"got {type(mlp).__name__}"
        )
    activation = _activation_name(mlp, name)
    layers = [
        {"w": _to_jax(m.weight.T, dtype), "b": _to_jax(m.bias, dtype)}
        for m in mlp.layers
        if isinstance(m, nn.Linear)
    ]
    return layers, activation


def mlp_apply(params: MLPParams, activation: str, inputs: jax.Array) -> jax.Array:
    """Run converted MLP layers on the last axis: (..., in_dim) -> (..., out_dim)."""
    act = ACTIVATION_FNS[activation]
    hidden = inputs
    for i, layer in enumerate(params):
        hidden = hidden @ layer["w"] + layer["b"]
        if i < len(params) - 1:
            hidden = act(hidden)
    return hidden


# ---------------------------------------------------------------------- the model
@dataclass(frozen=True)
class JaxAlternator:
    """Hyperparameters of an Alternator in JAX (hashable: usable as a static jit argument).

    ``alpha_values`` is a one-element tuple (constant alpha) or a schedule alpha_1..alpha_L;
    ``otn_activation`` / ``ftn_activation`` name the MLP activations (keys of ACTIVATION_FNS).
    Weights are not held here: they travel as ``params = {"otn": layers, "ftn": layers}``.
    """

    obs_dim: int
    latent_dim: int
    sigma_x: float
    sigma_z: float
    alpha_values: tuple[float, ...]
    otn_activation: str = "tanh"
    ftn_activation: str = "tanh"

    def __post_init__(self):
        for field in ("obs_dim", "latent_dim"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field} must be a positive integer, got {value!r}")
        if not 0.0 < self.sigma_x < 1.0:
            raise ValueError(f"sigma_x must lie in (0, 1), got {self.sigma_x}")
        if not self.sigma_z > 0.0:
            raise ValueError(f"sigma_z must be > 0, got {self.sigma_z}")
        alpha = np.asarray(self.alpha_values, dtype=np.float64).reshape(-1)
        if alpha.size == 0 or not np.isfinite(alpha).all():
            raise ValueError(f"alpha_values must be finite and non-empty, got {self.alpha_values}")
        if (alpha <= 0).any() or (alpha + self.sigma_z**2 >= 1).any():
            raise ValueError("alpha_values must satisfy 0 < alpha_t and alpha_t + sigma_z^2 < 1")
        object.__setattr__(self, "alpha_values", tuple(float(a) for a in alpha))
        for field in ("otn_activation", "ftn_activation"):
            if getattr(self, field) not in ACTIVATION_FNS:
                raise ValueError(
                    f"{field} must be one of {sorted(ACTIVATION_FNS)}, got {getattr(self, field)!r}"
                )

    @classmethod
    def from_torch(cls, model, dtype=None) -> tuple[JaxAlternator, dict[str, MLPParams]]:
        """``(jax_model, params)`` from a torch ``Alternator`` whose OTN and FTN are MLPs.

        Only what JAX represents converts: a subclass that changes a factor (``x_loc``,
        ``z_loc``, ``x_dist``, ``z_dist``, ``draw_x``, e.g. Alternator++'s noise networks or a
        Student-t observation) or computes a data-driven alpha_t (the alpha-Alternator) raises
        ``TypeError`` naming what it changes. A learned schedule (``alpha_schedule`` overridden,
        e.g. ``LearnedAlphaAlternator``) converts with its current values. The JAX loss always
        uses the conditioned reading, whatever ``model.ftn_input`` says.
        """
        if not isinstance(model, Alternator):
            raise TypeError(f"model must be an Alternator, got {type(model).__name__}")
        for name, per_dim in (("sigma_x", model.sigma_x_per_dim),
                              ("sigma_z", model.sigma_z_per_dim)):  # fmt: skip
            if per_dim:
                raise ValueError(
                    f"the JAX Alternator takes a scalar {name}; this model's {name} is per "
                    f"dimension (use the torch model, or set_noise({name}=<float>))"
                )
        changed = [
            hook
            for hook in _FACTOR_HOOKS
            if getattr(type(model), hook) is not getattr(Alternator, hook)
        ]
        if model.data_dependent_alpha:
            changed.append("data-driven alpha_t (alpha_from_inputs)")
        if changed:
            raise TypeError(
                f"JaxAlternator.from_torch cannot represent {type(model).__name__}: it changes "
                f"{', '.join(changed)}; only the base Alternator's factors convert to JAX"
            )
        alpha_values = tuple(model.alpha_values)
        if type(model).alpha_schedule is not Alternator.alpha_schedule:
            with torch.no_grad():
                current = model.alpha_schedule(len(model.alpha_values))
            alpha_values = tuple(current.double().reshape(-1).tolist())
        otn, otn_act = mlp_params_from_torch(model.otn, dtype, name="otn")
        ftn, ftn_act = mlp_params_from_torch(model.ftn, dtype, name="ftn")
        jax_model = cls(
            obs_dim=int(model.obs_dim),
            latent_dim=int(model.latent_dim),
            sigma_x=float(model.sigma_x),
            sigma_z=float(model.sigma_z),
            alpha_values=alpha_values,
            otn_activation=otn_act,
            ftn_activation=ftn_act,
        )
        return jax_model, {"otn": otn, "ftn": ftn}

    @property
    def alpha_is_constant(self) -> bool:
        return len(self.alpha_values) == 1

    @property
    def alpha(self) -> jax.Array:
        """The stored schedule (L,) (L = 1 for a constant alpha)."""
        return jnp.asarray(self.alpha_values)

    def alpha_schedule(self, num_steps: int) -> jax.Array:
        """alpha_1..alpha_T as a (T,) array; a schedule shorter than T is an error."""
        values = self.alpha_values
        if self.alpha_is_constant:
            values = values * num_steps
        elif num_steps > len(values):
            raise ValueError(
                f"sequence has {num_steps} steps but the alpha schedule has {len(values)}"
            )
        return jnp.asarray(values[:num_steps])

    def otn(self, params, z: jax.Array) -> jax.Array:
        """f(z): (..., Dz) -> (..., Dx)."""
        return mlp_apply(params["otn"], self.otn_activation, z)

    def ftn(self, params, x: jax.Array) -> jax.Array:
        """g(x): (..., Dx) -> (..., Dz)."""
        return mlp_apply(params["ftn"], self.ftn_activation, x)

    def x_loc(self, params, z_prev: jax.Array) -> jax.Array:
        """Mean of x_t given z_{t-1}: (..., Dz) -> (..., Dx)."""
        return math.sqrt(1 - self.sigma_x**2) * self.otn(params, z_prev)

    def z_loc(self, params, x: jax.Array, z_prev: jax.Array, alpha) -> jax.Array:
        """Mean of z_t given x_t (..., Dx), z_{t-1} (..., Dz); alpha broadcasts to (..., 1)."""
        return (
            jnp.sqrt(alpha) * self.ftn(params, x) + jnp.sqrt(1 - alpha - self.sigma_z**2) * z_prev
        )


# ---------------------------------------------------------------------- input checks
def _is_concrete(*arrays) -> bool:
    return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def _check_x(jax_model: JaxAlternator, x, name: str = "x") -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must have a floating-point dtype, got {x.dtype}")
    if x.ndim != 3 or x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] != jax_model.obs_dim:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)}, expected (B, T, Dx) with B, T >= 1 and "
            f"Dx = {jax_model.obs_dim}"
        )
    return x


def _check_path(jax_model: JaxAlternator, z, x: jax.Array, name: str, extra: int) -> jax.Array:
    z = jnp.asarray(z)
    expected = (x.shape[0], x.shape[1] + extra, jax_model.latent_dim)
    if tuple(z.shape) != expected:
        what = "(B, T+1, Dz)" if extra else "(B, T, Dz)"
        raise ValueError(f"{name} has shape {tuple(z.shape)}, expected {what} = {expected}")
    return z


def _check_mask(mask, x: jax.Array) -> jax.Array:
    """Observed mask (B, T, Dx) from a bool (B, T) or (B, T, Dx) mask, NaN entries of x removed."""
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise TypeError(f"mask must be a bool array (True = observed), got {mask.dtype}")
    if mask.shape == x.shape[:2]:
        mask = mask[..., None]
    elif mask.shape != x.shape:
        raise ValueError(
            f"mask has shape {tuple(mask.shape)}, expected {tuple(x.shape[:2])} or {tuple(x.shape)}"
        )
    mask = jnp.broadcast_to(mask, x.shape)
    finite = ~jnp.isnan(x)
    if _is_concrete(mask, x) and bool(jnp.any(mask & ~finite)):
        raise ValueError("x has NaN entries where mask marks them observed")
    return mask & finite


def _time_major(a: jax.Array | None) -> jax.Array | None:
    return None if a is None else jnp.swapaxes(a, 0, 1)


# ---------------------------------------------------------------------- interpretation 3
def numpyro_model(jax_model: JaxAlternator, params, x, mask=None, z_target=None) -> jax.Array:
    """The generative process as a NumPyro program; returns z_T (B, Dz).

    x (B, T, Dx) is transposed to time-major and scanned (``numpyro.contrib.control_flow.scan``)
    with a ``numpyro.plate("sequences", B)``. Sites: ``z_0`` (B, Dz), then scanned (leading
    axis T) ``x`` (T, B, Dx; observed, entries with mask False masked out of its density) and
    ``z`` (T, B, Dz; observed when ``z_target`` (B, T, Dz) is given). With a ``mask``, a latent
    site ``x_missing`` (T, B, Dx) ~ N(x_loc, sigma_x^2) supplies what the FTN reads at missing
    entries. Unlike Pyro's ``x_missing_t`` it is not masked to the missing entries: its observed
    entries are unused auxiliaries with a proper density (so NUTS stays well posed); leave it out
    when comparing with Pyro's trace. ``mask=None`` means x is complete (no ``x_missing`` site).
    """
    x = _check_x(jax_model, x)
    batch, steps, _ = x.shape
    observed = None if mask is None else _check_mask(mask, x)
    if observed is not None:
        x = jnp.where(observed, x, jnp.zeros((), x.dtype))
    if z_target is not None:
        z_target = _check_path(jax_model, z_target, x, "z_target", 0)
    inputs = {
        "x": _time_major(x),
        "observed": _time_major(observed),
        "z": _time_major(z_target),
        "alpha": jax_model.alpha_schedule(steps),
    }
    sigma_x, sigma_z = jax_model.sigma_x, jax_model.sigma_z

    def transition(z_prev, step):
        with numpyro.plate("sequences", batch, dim=-1):
            x_dist = dist.Normal(jax_model.x_loc(params, z_prev), sigma_x)
            if step["observed"] is None:
                x_t = numpyro.sample("x", x_dist.to_event(1), obs=step["x"])
            else:
                x_obs = numpyro.sample(
                    "x", x_dist.mask(step["observed"]).to_event(1), obs=step["x"]
                )
                x_missing = numpyro.sample("x_missing", x_dist.to_event(1))
                x_t = jnp.where(step["observed"], x_obs, x_missing)
            z_loc = jax_model.z_loc(params, x_t, z_prev, step["alpha"])
            z_t = numpyro.sample("z", dist.Normal(z_loc, sigma_z).to_event(1), obs=step["z"])
        return z_t, None

    with numpyro.plate("sequences", batch, dim=-1):
        zeros = jnp.zeros((batch, jax_model.latent_dim), x.dtype)
        z0 = numpyro.sample("z_0", dist.Normal(zeros, 1.0).to_event(1))
    z_last, _ = scan(transition, z0, inputs, length=steps)
    return z_last


def log_joint(jax_model: JaxAlternator, params, x, z, mask=None) -> jax.Array:
    """log p(z_0) + sum_t [log p(x_t^obs | z_{t-1}) + log p(z_t | z_{t-1}, x_t)], shape (B,).

    x (B, T, Dx) finite everywhere, z (B, T+1, Dz). ``mask`` (True = observed) only removes
    entries from the x-term; the FTN still reads every entry of x (torch ``log_joint``).
    """
    x = _check_x(jax_model, x)
    z = _check_path(jax_model, z, x, "z", 1)
    mask = None if mask is None else _check_mask(mask, x)
    alpha = jax_model.alpha_schedule(x.shape[1])[:, None]
    log_x = dist.Normal(jax_model.x_loc(params, z[:, :-1]), jax_model.sigma_x).log_prob(x)
    if mask is not None:
        log_x = jnp.where(mask, log_x, 0.0)
    z_loc = jax_model.z_loc(params, x, z[:, :-1], alpha)
    log_z = dist.Normal(z_loc, jax_model.sigma_z).log_prob(z[:, 1:])
    log_z0 = dist.Normal(jnp.zeros_like(z[:, 0]), 1.0).log_prob(z[:, 0])
    return log_x.sum((1, 2)) + log_z.sum((1, 2)) + log_z0.sum(-1)


def path_loss(jax_model: JaxAlternator, params, x, z, mask=None, x_ftn=None) -> jax.Array:
    """Eq. 12 integrand for one given path, per sequence (B,) (torch ``path_loss``).

    sum_t sigma_z^2 ||x_t - sqrt(1-sigma_x^2) f(z_{t-1})||^2 over observed entries
        + sigma_x^2 ||z_t - sqrt(alpha_t) g(x_ftn_t) - sqrt(1-alpha_t-sigma_z^2) z_{t-1}||^2,

    x (B, T, Dx), z (B, T+1, Dz); ``x_ftn`` (B, T, Dx), what the FTN read, defaults to x.
    """
    x = _check_x(jax_model, x)
    z = _check_path(jax_model, z, x, "z", 1)
    x_ftn = x if x_ftn is None else _check_x(jax_model, x_ftn, "x_ftn")
    mask = None if mask is None else _check_mask(mask, x)
    alpha = jax_model.alpha_schedule(x.shape[1])[:, None]
    x_sq = (x - jax_model.x_loc(params, z[:, :-1])) ** 2
    if mask is not None:
        x_sq = jnp.where(mask, x_sq, 0.0)
    z_sq = (z[:, 1:] - jax_model.z_loc(params, x_ftn, z[:, :-1], alpha)) ** 2
    return jax_model.sigma_z**2 * x_sq.sum((1, 2)) + jax_model.sigma_x**2 * z_sq.sum((1, 2))


def linear_recurrence(
    z0: jax.Array, decay: jax.Array, drive: jax.Array, parallel: bool | None = None
) -> jax.Array:
    """Solve z_t = decay_t z_{t-1} + drive_t: z0 (B, D), decay (T,), drive (B, T, D) -> z
    (B, T+1, D) including z0.

    ``parallel=True`` composes the affine maps z -> a z + b with ``jax.lax.associative_scan``
    (log-depth parallel scan); ``parallel=False`` is the sequential ``lax.scan``. ``None`` (the
    default) picks the scan on a CPU backend, where it was 1.6-3x faster and compiled 4-17x
    faster (benchmarks/jax_scan.py, docs/performance.md), and the parallel scan elsewhere.
    """
    if parallel is None:
        parallel = jax.default_backend() != "cpu"
    if parallel:

        def compose(first, second):  # apply ``first``, then ``second``
            (a1, b1), (a2, b2) = first, second
            return a2 * a1, a2 * b1 + b2

        a = decay[:, None, None]
        a_cum, b_cum = jax.lax.associative_scan(compose, (a, jnp.swapaxes(drive, 0, 1)))
        zs = a_cum * z0[None] + b_cum
        return jnp.concatenate([z0[:, None], jnp.swapaxes(zs, 0, 1)], axis=1)

    def step(z_prev, inputs):
        decay_t, drive_t = inputs
        z_t = decay_t * z_prev + drive_t
        return z_t, z_t

    _, zs = jax.lax.scan(step, z0, (decay, jnp.swapaxes(drive, 0, 1)))
    return jnp.concatenate([z0[:, None], jnp.swapaxes(zs, 0, 1)], axis=1)


def latent_path(jax_model: JaxAlternator, params, x, key, z0=None) -> jax.Array:
    """z_{0:T} (B, T+1, Dz) drawn by alternating, conditioned reading, x (B, T, Dx) complete.

    z_t = sqrt(1-alpha_t-sigma_z^2) z_{t-1} + sqrt(alpha_t) g(x_t) + sigma_z eps_t: one batched
    FTN call and a linear recurrence; reparameterised, so gradients flow through the path.
    ``key`` is split into (z_0, x-noise (unused here), z-noise) keys; ``z0`` (B, Dz) overrides
    the z_0 draw.
    """
    x = _check_x(jax_model, x)
    batch, steps, _ = x.shape
    key_z0, _, key_z = jax.random.split(key, 3)
    if z0 is None:
        z0 = jax.random.normal(key_z0, (batch, jax_model.latent_dim), x.dtype)
    alpha = jax_model.alpha_schedule(steps)
    eps = jax.random.normal(key_z, (batch, steps, jax_model.latent_dim), x.dtype)
    drive = jnp.sqrt(alpha)[:, None] * jax_model.ftn(params, x) + jax_model.sigma_z * eps
    decay = jnp.sqrt(1 - alpha - jax_model.sigma_z**2)
    return linear_recurrence(jnp.asarray(z0, x.dtype), decay, drive)


def loss(jax_model: JaxAlternator, params, x, key, z_target=None, z0=None) -> jax.Array:
    """Eq. 12 (scaled by 2 sigma_x^2 sigma_z^2) averaged over sequences and steps: a scalar.

    Conditioned reading with x (B, T, Dx) fully observed (no mask, no NaN: the FTN reads the
    data x_t everywhere). The path is :func:`latent_path`, or with ``z_target`` (B, T, Dz) the
    observed one, z = (z_0, z_target) (sequence-to-sequence use). ``z0`` (B, Dz) overrides the
    z_0 draw. Equals torch ``Alternator.path_loss(x, z).sum() / (B * T)`` on the same path.
    """
    x = _check_x(jax_model, x)
    batch, steps, _ = x.shape
    if z_target is None:
        z = latent_path(jax_model, params, x, key, z0)
    else:
        z_target = _check_path(jax_model, z_target, x, "z_target", 0)
        if z0 is None:
            z0 = jax.random.normal(
                jax.random.split(key, 3)[0], (batch, jax_model.latent_dim), x.dtype
            )
        z = jnp.concatenate([jnp.asarray(z0, x.dtype)[:, None], z_target], axis=1)
    return path_loss(jax_model, params, x, z).sum() / (batch * steps)


# ---------------------------------------------------------------------- training
class Optimizer(NamedTuple):
    """optax-style gradient transformation: ``init(params) -> state``,
    ``update(grads, state, params=None) -> (updates, state)``."""

    init: Callable[[Any], Any]
    update: Callable[..., tuple[Any, Any]]


class AdamState(NamedTuple):
    """Adam state: step count () and first/second moment pytrees shaped like the params."""

    count: jax.Array
    mu: Any
    nu: Any


def adam(
    learning_rate: float = 1e-2, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> Optimizer:
    """Adam with bias correction, the update rule of ``optax.adam`` (no optax needed)."""

    def init(params) -> AdamState:
        zeros = jax.tree.map(jnp.zeros_like, params)
        return AdamState(jnp.zeros((), jnp.int32), zeros, zeros)

    def update(grads, state: AdamState, params=None):
        count = state.count + 1
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, grads)

        def step(m, v):
            m_hat = m / (1 - b1**count).astype(m.dtype)
            v_hat = v / (1 - b2**count).astype(v.dtype)
            return -learning_rate * m_hat / (jnp.sqrt(v_hat) + eps)

        return jax.tree.map(step, mu, nu), AdamState(count, mu, nu)

    return Optimizer(init, update)


def make_train_step(jax_model: JaxAlternator, optimizer=None) -> Callable:
    """A jitted Eq. 12 step ``(params, opt_state, x, key, z_target=None) -> (params, opt_state,
    loss)``, x (B, T, Dx) complete, z_target (B, T, Dz) optional.

    ``optimizer`` is optax-style (``init``/``update`` as :class:`Optimizer`; an
    ``optax.GradientTransformation`` works too; default :func:`adam`) or a ``numpyro.optim``
    optimiser (its state carries the params; the ``params`` passed in are only used for the
    gradient). Start with ``opt_state = optimizer.init(params)``. The loss is at the input params.
    """
    optimizer = adam() if optimizer is None else optimizer
    numpyro_style = hasattr(optimizer, "get_params")

    def step(params, opt_state, x, key, z_target=None):
        value, grads = jax.value_and_grad(lambda p: loss(jax_model, p, x, key, z_target=z_target))(
            params
        )
        if numpyro_style:
            opt_state = optimizer.update(grads, opt_state)
            return optimizer.get_params(opt_state), opt_state, value
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return jax.tree.map(jnp.add, params, updates), opt_state, value

    return jax.jit(step)
