"""Noise scales of the Alternator: sigma_x (a float or one per observed dimension), sigma_z (a
float or one per latent coordinate), their permanent replacement
(:meth:`NoiseScales.set_noise`) and their temporary replacement by tensors with gradients
(:meth:`NoiseScales.hyperparameters`, for Bayesian globals).

A mixin of :class:`~alternators_ppl.models.Alternator`: it reads the model's ``obs_dim``,
``latent_dim``, ``alpha_values``, ``dtype`` and ``device``, and asks ``_own_alpha()`` whether a
variant computes alpha_t itself.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import nn

from alternators_ppl.networks import output_linear
from alternators_ppl.validation import as_float_tensor

__all__ = ["NoiseScales", "check_alpha", "check_sigma_x", "check_sigma_z", "largest_square"]


def _check_scale(value, dim: int, name: str, symbol: str, unit: str, upper: float):
    """A noise scale as a float, or a tuple of ``dim`` floats, each in (0, ``upper``); the
    errors name the argument and, for a vector, its expected shape (``symbol``,) and ``unit``."""
    values = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
    bound = f"lie in (0, {upper:g})" if upper < math.inf else "be > 0"
    if values.dim() == 0:
        if not 0.0 < float(values) < upper:
            raise ValueError(f"{name} must {bound}, got {value}")
        return float(value)
    if tuple(values.shape) != (dim,):
        raise ValueError(
            f"{name} must be a float or have shape ({symbol},) = ({dim},), got "
            f"{tuple(values.shape)}"
        )
    if not ((values > 0) & (values < upper)).all():
        raise ValueError(f"{name} must {bound} in every {unit}, got {values.tolist()}")
    return tuple(values.tolist())


def check_sigma_x(sigma_x, obs_dim: int) -> float | tuple[float, ...]:
    """sigma_x as a float, or a tuple of ``obs_dim`` floats, each in (0, 1)."""
    return _check_scale(sigma_x, obs_dim, "sigma_x", "Dx", "dimension", 1.0)


def check_sigma_z(sigma_z, latent_dim: int) -> float | tuple[float, ...]:
    """sigma_z as a float, or a tuple of ``latent_dim`` floats, each > 0 and finite."""
    return _check_scale(sigma_z, latent_dim, "sigma_z", "Dz", "coordinate", math.inf)


def largest_square(values: float | tuple[float, ...]) -> float:
    """The largest sigma^2 of a checked scale (a float or a tuple)."""
    return max(values) ** 2 if isinstance(values, tuple) else values**2


def check_alpha(alpha, sigma_z: float | tuple[float, ...]) -> tuple[float, ...]:
    """alpha (a float or a schedule (T,)) as a tuple of floats with 0 < alpha_t and
    alpha_t + sigma_z,d^2 < 1 for every t and coordinate d (``sigma_z`` checked)."""
    alpha_t = torch.as_tensor(alpha, dtype=torch.float64).reshape(-1)
    if alpha_t.numel() == 0 or not torch.isfinite(alpha_t).all():
        raise ValueError(f"alpha must be a finite float or a non-empty schedule, got {alpha}")
    sz2 = largest_square(sigma_z)
    if (alpha_t <= 0).any() or (alpha_t + sz2 >= 1).any():
        raise ValueError(
            "alpha must satisfy 0 < alpha_t and alpha_t + sigma_z^2 < 1; got "
            f"alpha in [{alpha_t.min().item():.4g}, {alpha_t.max().item():.4g}], "
            f"largest sigma_z^2 = {sz2:.4g}"
        )
    return tuple(alpha_t.tolist())


class _StoredScale:
    """A noise scale of the model: a float, or per dimension a (D,) tensor held as the buffer
    ``<name>_vector`` (so it follows ``.to()`` and the state dict); a tensor value inside
    :meth:`NoiseScales.hyperparameters`. Its raw value lives in ``__dict__["_<name>_value"]``
    (None: the buffer)."""

    def __set_name__(self, owner, name: str) -> None:
        self.key, self.buffer = f"_{name}_value", f"{name}_vector"

    def __get__(self, model, owner=None):
        if model is None:
            return self
        value = model.__dict__.get(self.key)
        return model._buffers[self.buffer] if value is None else value

    def __set__(self, model, value) -> None:
        model.__dict__[self.key] = value

    def per_dim(self, model) -> bool:
        return self.buffer in model._buffers

    def from_buffer(self, model) -> bool:
        """Whether the value in use is the stored (D,) buffer (not a scalar, and not a tensor
        that :meth:`NoiseScales.hyperparameters` put in its place)."""
        return model.__dict__.get(self.key) is None and self.per_dim(model)

    def stored(self, model, dim: int) -> float | tuple[float, ...]:
        """The stored value as the checks return it: a float, or a tuple of D floats."""
        return tuple(self.values(model, dim)) if self.per_dim(model) else float(self.__get__(model))

    def store(self, model, values: tuple[float, ...] | float) -> None:
        """Store checked values: a float, or a tuple of D floats (as the buffer)."""
        if isinstance(values, float):
            model._buffers.pop(self.buffer, None)
            model.__dict__[self.key] = values
            return
        vector = torch.tensor(values, dtype=model.dtype, device=model.device)
        model.__dict__[self.key] = None
        if self.per_dim(model):
            model._buffers[self.buffer] = vector
        else:
            model.register_buffer(self.buffer, vector)

    def values(self, model, dim: int) -> list[float]:
        """D floats (a scalar repeated)."""
        if self.per_dim(model):
            return [float(v) for v in model._buffers[self.buffer].tolist()]
        return [float(self.__get__(model))] * dim


class NoiseScales:
    """sigma_x / sigma_z storage and overrides shared by every Alternator."""

    #: observation noise: a float or (Dx,) (buffer ``sigma_x_vector``)
    sigma_x = _StoredScale()
    #: latent noise: a float or (Dz,) (buffer ``sigma_z_vector``)
    sigma_z = _StoredScale()

    @property
    def sigma_x_per_dim(self) -> bool:
        """Whether sigma_x is stored per observed dimension."""
        return NoiseScales.sigma_x.per_dim(self)

    @property
    def sigma_z_per_dim(self) -> bool:
        """Whether sigma_z is stored per latent coordinate."""
        return NoiseScales.sigma_z.per_dim(self)

    def _set_sigma_x(self, values: tuple[float, ...] | float) -> None:
        """Store a checked sigma_x: a float, or a tuple of Dx floats (as a buffer)."""
        NoiseScales.sigma_x.store(self, values)

    def _set_sigma_z(self, values: tuple[float, ...] | float) -> None:
        """Store a checked sigma_z: a float, or a tuple of Dz floats (as a buffer)."""
        NoiseScales.sigma_z.store(self, values)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        """A per-dimension scale in ``state_dict`` (a calibrated model's) becomes this model's
        buffer first, so a freshly built model with scalar scales loads it."""
        for scale in (NoiseScales.sigma_x, NoiseScales.sigma_z):
            key = prefix + scale.buffer
            if key in state_dict and not scale.per_dim(self):
                scale.store(self, tuple(float(v) for v in state_dict[key].reshape(-1).tolist()))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def sigma_x_values(self) -> list[float]:
        """sigma_x as Dx floats (a scalar sigma_x repeated)."""
        return NoiseScales.sigma_x.values(self, self.obs_dim)

    def sigma_z_values(self) -> list[float]:
        """sigma_z as Dz floats (a scalar sigma_z repeated)."""
        return NoiseScales.sigma_z.values(self, self.latent_dim)

    def stored_sigma_x(self) -> float | tuple[float, ...]:
        """The stored sigma_x as :func:`check_sigma_x` returns it (float or tuple)."""
        return NoiseScales.sigma_x.stored(self, self.obs_dim)

    def stored_sigma_z(self) -> float | tuple[float, ...]:
        """The stored sigma_z as :func:`check_sigma_z` returns it (float or tuple)."""
        return NoiseScales.sigma_z.stored(self, self.latent_dim)

    def uses_stored_vector(self, name: str) -> bool:
        """Whether ``name`` (``"sigma_x"`` or ``"sigma_z"``) is in use as its stored
        per-dimension buffer (a (D,) tensor that broadcasts like a scalar)."""
        return getattr(NoiseScales, name).from_buffer(self)

    def set_noise(self, sigma_x=None, sigma_z=None, alpha=None) -> None:
        """Replace the stored sigma_x (float or (Dx,)), sigma_z (float or (Dz,)) and
        alpha (a float or a schedule (T,)) for good.

        The same checks as the constructor (0 < sigma_x < 1, sigma_z > 0, 0 < alpha,
        alpha_t + sigma_z,d^2 < 1 for every alpha_t and coordinate d); ``None`` keeps a value.
        A variant that computes alpha_t itself accepts no alpha, and sigma_z only when it keeps
        alpha_t below :attr:`alpha_cap` (``alpha_below_cap``: its alpha_t then rescale with
        the cap, so the constraint holds by construction).
        """
        own = self._own_alpha()
        if own and (alpha is not None or (sigma_z is not None and not self.alpha_below_cap)):
            accepted = "sigma_x and sigma_z" if self.alpha_below_cap else "only sigma_x"
            raise ValueError(
                f"{type(self).__name__} computes alpha_t itself; set_noise accepts {accepted}"
            )
        sx = self.stored_sigma_x() if sigma_x is None else check_sigma_x(sigma_x, self.obs_dim)
        sz = self.stored_sigma_z() if sigma_z is None else check_sigma_z(sigma_z, self.latent_dim)
        values = () if own else check_alpha(self.alpha_values if alpha is None else alpha, sz)
        self._set_sigma_x(sx)
        self._set_sigma_z(sz)
        if alpha is not None:
            self.alpha_values, self.alpha_is_constant = values, len(values) == 1

    def eq12_scale(self):
        """The factor 2 sigma_x^2 sigma_z^2 of Eq. 12 (each square averaged over dimensions when
        that scale is stored per dimension, so the loss stays a positive multiple of -log p)."""
        sx2, sz2 = self.sigma_x**2, self.sigma_z**2
        if self.uses_stored_vector("sigma_x"):
            sx2 = sx2.mean()
        if self.uses_stored_vector("sigma_z"):
            sz2 = sz2.mean()
        return 2 * sx2 * sz2

    def scales_repr(self) -> str:
        """``sigma_x=..., sigma_z=...`` for ``extra_repr`` (a list where per dimension)."""

        def text(per_dim: bool, values: list[float]) -> str:
            listed = ", ".join(f"{v:.3g}" for v in values)
            return f"[{listed}]" if per_dim else f"{values[0]:.3g}"

        sigma_x = text(self.sigma_x_per_dim, self.sigma_x_values())
        return f"sigma_x={sigma_x}, sigma_z={text(self.sigma_z_per_dim, self.sigma_z_values())}"

    def observation_mean_layer(self) -> nn.Linear | None:
        """The linear layer whose output enters ``x_loc`` times :meth:`observation_mean_scale`
        (the Alternator's: the OTN's output layer; None when it has none). Noise calibration
        rescales it so that a new sigma_x leaves x_loc unchanged."""
        return output_linear(self.otn)

    def observation_mean_scale(self, sigma_x):
        """The factor, sqrt(1 - sigma_x^2) for the Alternator, with which that layer's output
        enters x_loc (a float or tensor sigma_x, e.g. (Dx,))."""
        return (1 - sigma_x**2) ** 0.5

    #: True for a variant whose own alpha_t are alpha_cap * sigmoid(...) (they follow sigma_z)
    alpha_below_cap = False

    @property
    def alpha_cap(self) -> float:
        """1 - max_d sigma_z,d^2 - 1e-4: the bound under which a variant that computes alpha_t
        itself keeps it, so that alpha_t + sigma_z,d^2 < 1."""
        return 1 - max(self.sigma_z_values()) ** 2 - 1e-4

    def latent_decay(self, alpha: torch.Tensor) -> torch.Tensor:
        """sqrt(1 - alpha_t - sigma_z^2), the latent step's memory: (T,) for a schedule alpha
        (T,) and a scalar sigma_z, (T, Dz) when sigma_z is stored per coordinate; an alpha of
        another shape broadcasts against sigma_z as it is."""
        sz2 = self.sigma_z**2
        if isinstance(sz2, torch.Tensor) and sz2.dim() == 1 and alpha.dim() == 1:
            alpha = alpha.unsqueeze(-1)
        return torch.sqrt(1 - alpha - sz2)

    # set by :meth:`hyperparameters` while a tensor alpha replaces the stored one
    _alpha_override: torch.Tensor | None = None

    @property
    def sigma_x_bound(self) -> float:
        """Upper bound on sigma_x (exclusive): 1 here; a variant whose factors need a smaller
        sigma_x (Alternator++: sigma_x^2 < 1 - beta) lowers it, and :meth:`hyperparameters`
        refuses a value at or above it."""
        return 1.0

    @property
    def calibration_sigma_x_range(self) -> tuple[float, float]:
        """The sigma_x a calibration may choose: [1e-3, 0.99 min(1, sigma_x_bound)], inside
        :attr:`sigma_x_bound` with a margin."""
        return (1e-3, 0.99 * min(1.0, self.sigma_x_bound))

    @contextlib.contextmanager
    def hyperparameters(self, sigma_x=None, sigma_z=None, alpha=None) -> Iterator[None]:
        """Use tensor values of sigma_x, sigma_z and a constant alpha inside the block.

        For global parameters drawn as Pyro sites (:class:`HyperpriorAlternator`): gradients
        flow into the values. Each is a scalar tensor, or carries the batch shape of plates left
        of the ``sequences`` plate, e.g. (N, 1) for N vectorised ELBO particles; such a value
        gets a trailing axis so that it broadcasts against (N, B, D). Scalars work in every
        method; batched values in :meth:`model`, the guides and
        :func:`~alternators_ppl.inference.posterior_forecast`. A value outside 0 < sigma_x < 1,
        0 < alpha, alpha + sigma_z^2 < 1 raises ``ValueError``; ``None`` keeps the stored value.
        """
        given = {"sigma_x": sigma_x, "sigma_z": sigma_z, "alpha": alpha}
        given = {k: v for k, v in given.items() if v is not None}
        if self._own_alpha() and {"sigma_z", "alpha"} & set(given):
            raise ValueError(
                f"{type(self).__name__} computes alpha_t itself; only sigma_x can be "
                f"replaced, got {sorted(given)}"
            )
        values = {}
        for name, value in given.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                value = torch.tensor(float(value))
            value = as_float_tensor(value, name, device=self.device, dtype=self.dtype)
            values[name] = value.unsqueeze(-1) if value.dim() > 0 else value
        sx = values.get("sigma_x", self.sigma_x)
        sz = values.get("sigma_z", self.sigma_z)
        a = values.get("alpha")
        alpha_max = max(self.alpha_values) if a is None else a
        checks = [
            torch.as_tensor(sx) > 0,
            torch.as_tensor(sx) < self.sigma_x_bound,
            torch.as_tensor(sz) > 0,
            torch.as_tensor(alpha_max + sz**2) < 1,
        ]
        if a is not None:
            checks.append(a > 0)
        if not all(bool(torch.all(c)) for c in checks):
            raise ValueError(
                f"hyperparameters must satisfy 0 < sigma_x < {self.sigma_x_bound:.4g}, "
                "sigma_z > 0, alpha > 0 and "
                f"alpha + sigma_z^2 < 1; got {sorted(given)} = "
                + ", ".join(f"{v.detach().flatten()[:4].tolist()}" for v in values.values())
            )
        saved = (
            self.__dict__.get("_sigma_x_value"),
            self.__dict__.get("_sigma_z_value"),
            self._alpha_override,
        )
        self.sigma_x, self.sigma_z, self._alpha_override = sx, sz, a
        try:
            yield
        finally:
            self.__dict__["_sigma_x_value"], self.__dict__["_sigma_z_value"] = saved[:2]
            self._alpha_override = saved[2]
