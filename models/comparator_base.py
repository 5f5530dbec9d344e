"""Shared plumbing of the paper's comparators (Mamba, latent ODE, diffusion) as SequenceModels.

A comparator wraps a ``torch.nn.Module`` that has ``obs_dim``, ``latent_dim``, ``dtype``,
``device`` and ``loss(x, mask)``, so that the library's one training loop
(:func:`alternators_ppl.inference.fit`) can train it. ``models/`` may not import from
``inference``, so the loop is handed in as ``trainer=`` (the registry,
``alternators_ppl/experiments/registry.py``, passes ``alternators_ppl.inference.fit``);
nothing in this module trains by itself.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from alternators_ppl.models.interface import SequenceModel
from alternators_ppl.seeding import seed_everything
from alternators_ppl.validation import (
    as_float_tensor,
    check_mask,
    check_positive_float,
    check_positive_int,
    check_sequences,
)

__all__ = ["TrainedComparator"]


class TrainedComparator(SequenceModel):
    """A SequenceModel around ``self.module`` (made by ``build()``) trained by an injected loop.

    ``fit(seed=...)`` rebuilds the module from ``seed`` first, so a seed reproduces a run.

    ``trainer(module, x_train, x_val=..., epochs=..., lr=..., batch_size=..., seed=...,
    progress=False, callback=..., loss_fn=..., warmup_epochs=..., lr_min=...)`` returns a history
    with ``to_dict()``: the signature of :func:`alternators_ppl.inference.fit`.
    """

    module: torch.nn.Module

    def __init__(
        self,
        build: Callable[[], torch.nn.Module],
        *,
        epochs: int,
        lr: float,
        batch_size: int,
        trainer: Callable | None,
        device=None,
    ):
        self.build = build
        self.module = build().to(device or "cpu")
        self.epochs = check_positive_int(epochs, "epochs")
        self.lr = check_positive_float(lr, "lr")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        if trainer is not None and not callable(trainer):
            raise TypeError(f"trainer must be callable, got {type(trainer).__name__}")
        self.trainer = trainer

    @property
    def obs_dim(self) -> int:
        """D, the observation dimension."""
        return self.module.obs_dim

    def _loss(self, module, x, mask, z_target):
        return module.loss(x, mask)

    def fit(self, x_train, x_val=None, *, seed: int = 0, budget_s: float | None = None) -> dict:
        """Train by the module's loss through ``trainer`` (epoch cap, wall-clock ``budget_s``
        safety cap, best epoch on x_val); returns the history plus ``epochs_run``."""
        if self.trainer is None:
            raise RuntimeError(
                f"{self.name} has no trainer: pass trainer=alternators_ppl.inference.fit "
                "(build_model does)"
            )
        seed_everything(seed)
        old = next(self.module.parameters())
        self.module = self.build().to(device=old.device, dtype=old.dtype)
        self._prepare_module()
        history = self.trainer(
            self.module,
            x_train,
            x_val=x_val,
            epochs=self.epochs,
            lr=self.lr,
            lr_min=min(1e-4, self.lr),
            warmup_epochs=min(10, self.epochs // 10),
            batch_size=self.batch_size,
            seed=seed,
            progress=False,
            budget_s=budget_s,
            loss_fn=self._loss,
        )
        return history.to_dict()

    def _prepare_module(self) -> None:
        """Hook after ``fit`` rebuilt the module (e.g. to set training time stamps)."""

    # -- input checks, done once at the public methods ------------------------------------
    def _input(self, x, name: str = "x") -> torch.Tensor:
        x = as_float_tensor(x, name, device=self.module.device, dtype=self.module.dtype)
        check_sequences(x, name, self.obs_dim)
        return x

    def _input_with_mask(self, x, mask, name: str = "x") -> tuple[torch.Tensor, torch.Tensor]:
        x = self._input(x, name)
        mask = check_mask(mask, x)
        return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device)), mask
