"""Training by the Alternator's own objective (Eq. 12): Adam, warm-up + cosine, checkpoints."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from alternators_ppl.errors import NonFiniteLossError
from alternators_ppl.inference.checkpoint import load_checkpoint, save_checkpoint
from alternators_ppl.seeding import seed_everything
from alternators_ppl.validation import (
    as_float_tensor,
    check_mask,
    check_positive_int,
    check_sequences,
)

__all__ = ["fit", "History", "NonFiniteLossError", "warmup_cosine"]


@dataclass
class History:
    """Per-epoch record of a training run (lists of length ``epochs`` run so far)."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    best_loss: float | None = None

    def to_dict(self) -> dict:
        """Plain-data copy (JSON-serialisable)."""
        return asdict(self)


def warmup_cosine(
    epochs: int, warmup_epochs: int, lr: float, lr_min: float
) -> Callable[[int], float]:
    """Multiplier of ``lr`` at epoch e: linear warm-up to 1, then cosine decay to lr_min / lr."""
    floor = lr_min / lr

    def factor(epoch: int) -> float:
        if epoch < warmup_epochs:
            return (epoch + 1) / warmup_epochs
        span = max(epochs - warmup_epochs - 1, 1)
        progress = min((epoch - warmup_epochs) / span, 1.0)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _check_data(model, x, z, mask, x_name: str, z_name: str, device):
    x = as_float_tensor(x, x_name, device=device, dtype=model.dtype)
    check_sequences(x, x_name, model.obs_dim)
    mask = check_mask(mask, x, f"mask for {x_name}")
    if z is not None:
        z = as_float_tensor(z, z_name, device=device, dtype=model.dtype)
        expected = (x.shape[0], x.shape[1], model.latent_dim)
        if tuple(z.shape) != expected:
            raise ValueError(
                f"{z_name} has shape {tuple(z.shape)}, expected (B, T, Dz) = {expected}"
            )
        if not torch.isfinite(z).all():
            raise ValueError(f"{z_name} contains NaN or inf values")
    return x, z, mask


def _default_loss(model, x, mask, z):
    return model.loss(x, mask, z)


def _batch_loss(loss_fn, model, x, z, mask, index):
    return loss_fn(model, x[index], mask[index], None if z is None else z[index])


def fit(
    model,
    x_train,
    z_train=None,
    x_val=None,
    z_val=None,
    epochs: int = 100,
    lr: float = 1e-2,
    batch_size: int = 32,
    device=None,
    seed: int | None = None,
    progress: bool = True,
    checkpoint_dir=None,
    *,
    mask_train=None,
    mask_val=None,
    lr_min: float = 1e-4,
    warmup_epochs: int = 10,
    clip_norm: float = 10.0,
    resume: bool = False,
    callback: Callable[[int, History], bool | None] | None = None,
    loss_fn: Callable | None = None,
    supervised: str = "auto",
) -> History:
    """Train ``model`` by its Eq. 12 loss (``model.loss``) with Adam; return the :class:`History`.

    x_train (B, T, Dx) (NaN = missing, or ``mask_train``); z_train (B, T, Dz) for the
    sequence-to-sequence use. The learning rate warms up linearly for ``warmup_epochs`` and
    then decays by a cosine to ``lr_min`` (the paper's Lorenz setting by default); gradients
    are clipped to norm ``clip_norm``. Each epoch shuffles the sequences into minibatches of
    ``batch_size``. The validation loss (fixed noise, so epochs are comparable) picks the best
    epoch, whose weights the model holds on return; without validation data the training
    loss does. With ``checkpoint_dir``, ``last.pt`` and ``best.pt`` are written atomically
    after every epoch, and ``resume=True`` continues from ``last.pt`` exactly (weights,
    optimiser, schedule, random state). ``callback(epoch, history)`` runs after each epoch;
    returning True stops training. A non-finite loss raises :class:`NonFiniteLossError`.
    ``loss_fn(model, x, mask, z_target) -> scalar`` replaces ``model.loss`` (for example
    :func:`~alternators_ppl.inference.trace_loss` or a variant's objective).
    With ``z_train`` and no ``loss_fn``, ``supervised="auto"`` (the default) windows long
    sequences, holds out the end of the training span when no validation data is given, and
    selects alpha on validation; ``"free-running"`` trains the z-term on the model's own
    recursion; ``"teacher-forcing"`` is Eq. 12 as written on the data as given (see
    :mod:`alternators_ppl.inference.supervised`).
    """
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    warmup_epochs = check_positive_int(warmup_epochs, "warmup_epochs") if warmup_epochs else 0
    for name, value in (("lr", lr), ("lr_min", lr_min), ("clip_norm", clip_norm)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    if lr_min > lr:
        raise ValueError(f"lr_min ({lr_min}) must not exceed lr ({lr})")
    if (x_val is None) != (z_val is None) and z_train is not None:
        raise ValueError("supervised training with validation needs both x_val and z_val")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir")
    if device is not None:
        model.to(device)
    device = model.device
    x_train, z_train, mask_train = _check_data(
        model, x_train, z_train, mask_train, "x_train", "z_train", device
    )
    if x_val is not None:
        x_val, z_val, mask_val = _check_data(
            model, x_val, z_val, mask_val, "x_val", "z_val", device
        )
    from alternators_ppl.inference import supervised as sup  # imports this module

    if supervised not in sup.SUPERVISED_MODES:
        raise ValueError(f"supervised must be one of {sup.SUPERVISED_MODES}, got {supervised!r}")
    if z_train is not None and loss_fn is None and supervised == "auto":
        settings = dict(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                        progress=progress, checkpoint_dir=checkpoint_dir, lr_min=lr_min,
                        warmup_epochs=warmup_epochs, clip_norm=clip_norm, callback=callback,
                        resume=resume)  # fmt: skip
        return sup.fit_auto(fit, model, x_train, z_train, mask_train, x_val, z_val, mask_val,
                            **settings)  # fmt: skip
    if z_train is not None and loss_fn is None and supervised == "free-running":
        (x_train, z_train, mask_train), (x_val, z_val, mask_val) = sup.prepare_supervised(
            x_train, z_train, mask_train, x_val, z_val, mask_val
        )
        loss_fn = sup.free_running_loss
    if loss_fn is None:
        loss_fn = _default_loss
    elif not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    if seed is not None:
        seed_everything(seed)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(epochs, warmup_epochs, lr, lr_min)
    )
    history = History()
    start = 0
    ckpt_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
    if resume and (ckpt_dir / "last.pt").is_file():
        extra = load_checkpoint(ckpt_dir / "last.pt", model, optimizer, scheduler)
        history = History(**extra["history"])
        start = extra["epoch"]
    val_seed = 0 if seed is None else seed
    best_state = None

    num_train = x_train.shape[0]
    bar = tqdm(
        range(start, epochs),
        initial=start,
        total=epochs,
        desc="fit",
        unit="epoch",
        disable=not progress or not sys.stderr.isatty(),
    )
    where = "" if ckpt_dir is None else f"; last good checkpoint: {ckpt_dir / 'last.pt'}"
    for epoch in bar:
        tic = time.perf_counter()
        model.train()
        order = torch.randperm(num_train).to(device)
        total, count = 0.0, 0
        for begin in range(0, num_train, batch_size):
            index = order[begin : begin + batch_size]
            loss = _batch_loss(loss_fn, model, x_train, z_train, mask_train, index)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"loss is {loss.item()} at epoch {epoch + 1}, "
                    f"batch {begin // batch_size + 1}{where}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip_norm)
            if not torch.isfinite(grad_norm):  # a step would write NaN weights (and checkpoints)
                raise NonFiniteLossError(
                    f"gradient norm is {grad_norm.item()} at epoch {epoch + 1}, "
                    f"batch {begin // batch_size + 1}{where}"
                )
            optimizer.step()
            total += loss.item() * len(index)
            count += len(index)
        history.lr.append(optimizer.param_groups[0]["lr"])
        scheduler.step()
        history.train_loss.append(total / count)
        score = history.train_loss[-1]
        if x_val is not None:
            score = validation_loss(model, x_val, z_val, mask_val, batch_size, val_seed, loss_fn)
            if not math.isfinite(score):
                raise NonFiniteLossError(f"validation loss is {score} at epoch {epoch + 1}{where}")
            history.val_loss.append(score)
        history.epoch_seconds.append(time.perf_counter() - tic)
        improved = history.best_loss is None or score < history.best_loss
        if improved:
            history.best_epoch, history.best_loss = epoch + 1, score
        if ckpt_dir is not None:
            if improved:
                save_checkpoint(
                    ckpt_dir / "best.pt", model, epoch=epoch + 1, history=history.to_dict()
                )
            save_checkpoint(
                ckpt_dir / "last.pt",
                model,
                optimizer,
                scheduler,
                epoch=epoch + 1,
                history=history.to_dict(),
            )
        bar.set_postfix(loss=f"{history.train_loss[-1]:.4g}", val=f"{score:.4g}")
        if improved:
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if callback is not None and callback(epoch + 1, history):
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    elif ckpt_dir is not None and (ckpt_dir / "best.pt").is_file():
        load_checkpoint(ckpt_dir / "best.pt", model, restore_rng=False)
    model.eval()
    return history


@torch.no_grad()
def validation_loss(model, x, z, mask, batch_size: int, seed: int, loss_fn=None) -> float:
    """Mean Eq. 12 loss over (B, T, Dx) data with noise drawn from ``seed`` (the global RNG
    stream is left untouched), so values are comparable across epochs."""
    loss_fn = _default_loss if loss_fn is None else loss_fn
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        total = 0.0
        for begin in range(0, x.shape[0], batch_size):
            index = torch.arange(begin, min(begin + batch_size, x.shape[0]), device=x.device)
            total += _batch_loss(loss_fn, model, x, z, mask, index).item() * len(index)
    return total / x.shape[0]
