"""Model programs: the Alternator, baselines and the shared interface (``alternators_ppl.models``).

The NumPyro/JAX interpretation lives in ``alternators_ppl.models.alternator_jax`` (imported on
demand, so that importing this package does not load JAX).
"""

from alternators_ppl.models.alternator import FTN_INPUTS, Alternator
from alternators_ppl.models.differenced import Differenced
from alternators_ppl.models.dmm import DeepMarkovModel
from alternators_ppl.models.ensemble import Ensemble
from alternators_ppl.models.hyperprior import HyperpriorAlternator
from alternators_ppl.models.interface import SequenceModel
from alternators_ppl.models.kalman import LinearGaussianSSM
from alternators_ppl.models.naive import Climatology, Persistence
from alternators_ppl.models.recurrence import linear_recurrence

__all__ = [
    "Alternator",
    "FTN_INPUTS",
    "HyperpriorAlternator",
    "linear_recurrence",
    "SequenceModel",
    "LinearGaussianSSM",
    "DeepMarkovModel",
    "Persistence",
    "Climatology",
    "Differenced",
    "Ensemble",
]
