"""Guide for a :class:`~alternators_ppl.models.HyperpriorAlternator`: q(globals) q(path | x,
globals).

The global sites (``sigma_x``, ``sigma_z``, ``alpha_u``: those the program learns) get a Pyro
autoguide, ``AutoNormal`` (a Gaussian in the unconstrained space: posterior uncertainty) or
``AutoDelta`` (a point: MAP / type-II estimates), started at the Alternator's stored values.
The latent path gets a local guide (:class:`~alternators_ppl.inference.SmoothingGuide` or
:class:`~alternators_ppl.inference.FilteringGuide`), run with the drawn globals, so the
guide's own use of the model's means (``z_loc``, ``x_loc``) sees the same sigma_x, sigma_z,
alpha as the model in that particle.
"""

from __future__ import annotations

import itertools

import torch
from pyro.infer.autoguide import AutoDelta, AutoNormal, init_to_value
from pyro.nn import PyroModule

from alternators_ppl.inference.guides import FilteringGuide, SmoothingGuide
from alternators_ppl.models.hyperprior import HyperpriorAlternator
from alternators_ppl.validation import check_positive_float

__all__ = ["HyperpriorGuide", "GLOBAL_GUIDES"]

#: autoguides for the globals
GLOBAL_GUIDES = {"normal": AutoNormal, "delta": AutoDelta}
_INSTANCES = itertools.count()


class HyperpriorGuide(PyroModule):
    """Guide for a :class:`HyperpriorAlternator`: an autoguide on the globals, then a path guide.

    Args:
        program: the :class:`~alternators_ppl.models.HyperpriorAlternator`.
        local: a :class:`SmoothingGuide` or :class:`FilteringGuide` built for
            ``program.alternator``.
        globals_guide: ``"normal"`` (``AutoNormal``) or ``"delta"`` (``AutoDelta``).
        init_scale: initial scale of ``AutoNormal`` in the unconstrained space.
    """

    def __init__(
        self,
        program: HyperpriorAlternator,
        local: SmoothingGuide | FilteringGuide,
        globals_guide: str = "normal",
        init_scale: float = 0.05,
    ):
        if not isinstance(program, HyperpriorAlternator):
            raise TypeError(f"program must be a HyperpriorAlternator, got {type(program).__name__}")
        if not isinstance(local, SmoothingGuide | FilteringGuide):
            raise TypeError(
                f"local must be a SmoothingGuide or FilteringGuide, got {type(local).__name__}"
            )
        if local.alternator is not program.alternator:
            raise ValueError("local was built for a different model (not program.alternator)")
        if globals_guide not in GLOBAL_GUIDES:
            raise ValueError(
                f"globals_guide must be one of {tuple(GLOBAL_GUIDES)}, got {globals_guide!r}"
            )
        init_scale = check_positive_float(init_scale, "init_scale")
        super().__init__(name=f"hyperprior_guide{next(_INSTANCES)}")
        self.__dict__["_program"] = program  # a reference: the program's weights stay its own
        self.globals_guide = globals_guide
        init = init_to_value(values=self._stored_values(program))
        kwargs = {"init_scale": init_scale} if globals_guide == "normal" else {}
        self.globals = GLOBAL_GUIDES[globals_guide](
            program.sample_globals, init_loc_fn=init, **kwargs
        )
        self.local = local

    @staticmethod
    def _stored_values(program: HyperpriorAlternator) -> dict[str, torch.Tensor]:
        """The Alternator's stored hyperparameters as values of the sampled sites."""
        model = program.alternator
        stored = {
            "sigma_x": model.sigma_x,
            "sigma_z": model.sigma_z,
            "alpha_u": model.alpha_values[0] / (1 - model.sigma_z**2),
        }
        return {
            site: torch.tensor(stored[site], dtype=model.dtype, device=model.device)
            for site in program.sites
        }

    @property
    def alternator(self) -> HyperpriorAlternator:
        """The program this guide approximates the posterior of."""
        return self.__dict__["_program"]

    def forward(self, x, mask=None, z_target=None) -> torch.Tensor:
        """Draw the globals, then the path given x (B, T, Dx); returns z_T (B, Dz)."""
        program = self.alternator
        values = program.hyperparameters_from(self.globals())
        with program.alternator.hyperparameters(**values):
            return self.local(x, mask, z_target)

    @torch.no_grad()
    def point_estimates(self) -> dict[str, float]:
        """The globals at the guide's median (AutoNormal) or point (AutoDelta), as floats."""
        median = self.globals.median()
        return {k: float(v) for k, v in self.alternator.hyperparameters_from(median).items()}

    def extra_repr(self) -> str:
        return f"globals_guide={self.globals_guide!r}"
