"""Model programs: the Alternator and its variants (installed as ``alternators_ppl.models``)."""

from alternators_ppl.models.alternator import FTN_INPUTS, Alternator
from alternators_ppl.models.recurrence import linear_recurrence

__all__ = ["Alternator", "FTN_INPUTS", "linear_recurrence"]
