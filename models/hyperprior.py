"""An Alternator whose sigma_x, sigma_z and constant alpha are global Pyro sites with priors.

The program :meth:`HyperpriorAlternator.model` first draws the learned globals, then runs the
Alternator's own program with them (:meth:`Alternator.hyperparameters`)::

    sigma_x ~ Beta(2, 5)                          (on (0, 1))
    sigma_z ~ Beta(2, 8)                          (on (0, 1))
    alpha_u ~ Beta(2, 2),  alpha = (1 - sigma_z^2) alpha_u   (so 0 < alpha, alpha + sigma_z^2 < 1)
    z_0, x_t, z_t as in Alternator.model

the same parametrisation and default priors as the NumPyro NUTS program
(:mod:`alternators_ppl.inference.nuts`). ``alpha`` is recorded as a deterministic site. Globals
left out of ``learn`` keep the Alternator's stored value. With an SVI guide from
:class:`~alternators_ppl.inference.HyperpriorGuide` (AutoNormal or AutoDelta on the globals, a
smoothing or filtering guide on the path) this learns the noise scales that Eq. 12 cannot: Eq. 12
is scaled by 2 sigma_x^2 sigma_z^2 and drops the normalisers that fit them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

from alternators_ppl.models.alternator import Alternator

__all__ = ["HyperpriorAlternator", "LEARNABLE", "DEFAULT_PRIORS"]

#: the globals that can be learned
LEARNABLE = ("sigma_x", "sigma_z", "alpha")
#: Beta(concentration1, concentration0) priors of the sampled sites (alpha_u = alpha / (1 - sz^2))
DEFAULT_PRIORS = {"sigma_x": (2.0, 5.0), "sigma_z": (2.0, 8.0), "alpha_u": (2.0, 2.0)}


class HyperpriorAlternator(PyroModule):
    """Bayesian globals for an Alternator: sigma_x, sigma_z, alpha as Pyro sites with Beta priors.

    Args:
        alternator: the :class:`~alternators_ppl.models.Alternator` (or a variant) whose
            networks and program are used (held by reference; ``.to()`` both together).
        learn: which of ``("sigma_x", "sigma_z", "alpha")`` are sites; the others stay fixed.
            sigma_z is learned only together with alpha (alpha is drawn as a fraction of
            1 - sigma_z^2, which keeps alpha + sigma_z^2 < 1). sigma_x is refused for a model
            whose ``sigma_x_bound`` is below 1 (Alternator++: sigma_x^2 < 1 - beta), whose
            program a drawn sigma_x beyond the bound would turn into NaN.
        priors: ``{site: (concentration1, concentration0)}`` Beta priors overriding
            :data:`DEFAULT_PRIORS` for sites ``sigma_x``, ``sigma_z``, ``alpha_u``.
    """

    def __init__(
        self,
        alternator: Alternator,
        learn: Sequence[str] = LEARNABLE,
        priors: Mapping[str, tuple[float, float]] | None = None,
    ):
        if not isinstance(alternator, Alternator):
            raise TypeError(f"alternator must be an Alternator, got {type(alternator).__name__}")
        if isinstance(learn, str) or not all(isinstance(n, str) for n in learn):
            raise TypeError(f"learn must be a sequence of names from {LEARNABLE}, got {learn!r}")
        unknown = sorted(set(learn) - set(LEARNABLE))
        learn = tuple(n for n in LEARNABLE if n in set(learn))
        if unknown or not learn:
            raise ValueError(f"learn must be a non-empty subset of {LEARNABLE}, got {learn!r}")
        if "sigma_z" in learn and "alpha" not in learn:
            raise ValueError(
                "learn has sigma_z without alpha: alpha is drawn as alpha_u (1 - sigma_z^2) so "
                "that alpha + sigma_z^2 < 1; learn both"
            )
        if "alpha" in learn and (
            alternator.data_dependent_alpha or not alternator.alpha_is_constant
        ):
            raise ValueError("learning alpha needs an Alternator with a constant alpha")
        if "sigma_x" in learn and alternator.sigma_x_bound < 1.0:
            raise ValueError(
                f"learn has sigma_x, but {type(alternator).__name__} needs sigma_x < "
                f"{alternator.sigma_x_bound:.4g} (sigma_x^2 < 1 - beta) while the sigma_x prior "
                "covers (0, 1); learn ('sigma_z', 'alpha') only, or use the base Alternator"
            )
        super().__init__()
        # a reference, not a submodule: the Alternator may have run on its own before (Pyro
        # forbids adopting such a module), and its weights stay its own
        self.__dict__["_alternator"] = alternator
        self.learn = learn
        self.sites = tuple(
            site for site, name in zip(DEFAULT_PRIORS, LEARNABLE, strict=True) if name in learn
        )
        merged = dict(DEFAULT_PRIORS)
        for site, value in (priors or {}).items():
            if site not in DEFAULT_PRIORS:
                raise ValueError(f"priors has unknown site {site!r}; expected {tuple(merged)}")
            try:
                a, b = (float(v) for v in value)
            except (TypeError, ValueError) as error:
                raise TypeError(
                    f"priors[{site!r}] must be a pair (concentration1, concentration0), "
                    f"got {value!r}"
                ) from error
            if not (a > 0 and b > 0):
                raise ValueError(f"priors[{site!r}] concentrations must be > 0, got {value!r}")
            merged[site] = (a, b)
        for site in self.sites:  # buffers: the priors follow .to(device, dtype)
            self.register_buffer(f"_prior_{site}", torch.tensor(merged[site]), persistent=False)
        self.to(device=alternator.device, dtype=alternator.dtype)

    @property
    def alternator(self) -> Alternator:
        """The Alternator whose program and networks are used."""
        return self.__dict__["_alternator"]

    def prior(self, site: str) -> dist.Beta:
        """The Beta prior of a sampled site (``sigma_x``, ``sigma_z`` or ``alpha_u``)."""
        a, b = getattr(self, f"_prior_{site}")
        return dist.Beta(a, b)

    def sample_globals(self) -> dict[str, torch.Tensor]:
        """Draw the learned globals as Pyro sites; returns them by :data:`LEARNABLE` name.

        Sites ``sigma_x``, ``sigma_z``, ``alpha_u`` (each scalar, or batched by outer plates)
        and the deterministic ``alpha``.
        """
        draws = {site: pyro.sample(site, self.prior(site)) for site in self.sites}
        return self.hyperparameters_from(draws, record=True)

    def hyperparameters_from(
        self, draws: Mapping[str, torch.Tensor], record: bool = False
    ) -> dict[str, torch.Tensor]:
        """Map values of the sampled sites to ``{"sigma_x", "sigma_z", "alpha"}`` (those learned).

        ``record=True`` also records ``alpha`` as a deterministic Pyro site.
        """
        values = {name: draws[name] for name in ("sigma_x", "sigma_z") if name in self.learn}
        if "alpha" in self.learn:
            sigma_z = values.get("sigma_z", self.alternator.sigma_z)
            alpha = (1 - sigma_z**2) * draws["alpha_u"]
            values["alpha"] = pyro.deterministic("alpha", alpha) if record else alpha
        return values

    def model(self, x, mask=None, z_target=None) -> torch.Tensor:
        """The program: the learned globals, then ``Alternator.model(x, mask, z_target)`` with
        them; x (B, T, Dx), returns z_T (B, Dz)."""
        with self.alternator.hyperparameters(**self.sample_globals()):
            return self.alternator.model(x, mask, z_target)

    def extra_repr(self) -> str:
        return f"learn={self.learn}, alternator={type(self.alternator).__name__}"
