"""Inference for Alternators: Eq. 12 training and checkpoints (``alternators_ppl.inference``)."""

from alternators_ppl.inference.checkpoint import load_checkpoint, save_checkpoint
from alternators_ppl.inference.trace_loss import trace_loss
from alternators_ppl.inference.training import History, NonFiniteLossError, fit, warmup_cosine

__all__ = [
    "fit",
    "History",
    "NonFiniteLossError",
    "warmup_cosine",
    "save_checkpoint",
    "load_checkpoint",
    "trace_loss",
]
