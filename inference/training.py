"""Training by the Alternator's own objective (Eq. 12): Adam, warm-up + cosine, checkpoints."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch

from alternators_ppl import distributed
from alternators_ppl.errors import NonFiniteLossError
from alternators_ppl.inference.calibration import calibrate_noise, can_calibrate_noise
from alternators_ppl.inference.loop import (
    Checkpointing,
    History,
    backward_in_chunks,
    data_fingerprint,
    fixed_noise_sum,
    gradient_chunk,
    run_epochs,
)
from alternators_ppl.seeding import seed_everything
from alternators_ppl.validation import (
    as_float_tensor,
    check_mask,
    check_positive_int,
    check_sequences,
)

__all__ = ["fit", "History", "NonFiniteLossError", "warmup_cosine"]


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
    if not mask.any():
        raise ValueError(f"{x_name} has no observed entry (all values missing)")
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
    resume: bool | Literal["auto"] = False,
    callback: Callable[[int, History], bool | None] | None = None,
    loss_fn: Callable | None = None,
    budget_s: float | None = None,
    supervised: str = "auto",
    calibrate: bool | Literal["auto"] = "auto",
) -> History:
    """Train ``model`` by its Eq. 12 loss (``model.loss``) with Adam; return the :class:`History`.

    x_train (B, T, Dx) (NaN = missing, or ``mask_train``); z_train (B, T, Dz) for the
    sequence-to-sequence use. The learning rate warms up linearly for ``warmup_epochs`` and
    then decays by a cosine to ``lr_min`` (the paper's Lorenz setting by default); gradients
    are clipped to norm ``clip_norm``. Each epoch shuffles the sequences into minibatches of
    ``batch_size``; on the CPU a minibatch's gradient is accumulated over equal chunks of at
    most ``CPU_CHUNK_STEPS`` sequence-steps (:func:`~alternators_ppl.inference.loop.gradient_chunk`:
    the minibatch mean's gradient, each chunk drawing its own noise, with a working set that
    stays in cache). The validation loss (fixed noise, so epochs are comparable) picks the best
    epoch, whose weights the model holds on return; without validation data the training
    loss does. With ``checkpoint_dir``, ``last.pt`` and ``best.pt`` are written atomically
    after every epoch, and ``resume=True`` continues from ``last.pt`` exactly (weights,
    optimiser, schedule, random state); it is an error if ``last.pt`` is missing (use
    ``resume="auto"`` to start fresh then) or was written with other arguments (epochs, lr,
    schedule, batch size, seed, model, loss or data). ``callback(epoch, history)`` runs after
    each epoch; returning True stops training; so does ``budget_s`` seconds of epochs. Runs
    the shared epoch loop, :func:`~alternators_ppl.inference.loop.run_epochs`. A non-finite
    loss raises :class:`NonFiniteLossError`.
    ``loss_fn(model, x, mask, z_target) -> scalar`` replaces ``model.loss`` (for example
    :func:`~alternators_ppl.inference.trace_loss` or a variant's objective).

    Inside a process group (``torchrun``, :mod:`alternators_ppl.distributed`) training is
    data-parallel: rank 0's weights are broadcast at the start, each rank computes the loss on
    its share of every global minibatch of ``batch_size`` sequences, and the gradients are
    averaged over the global minibatch (the same update as one process with that batch, up to
    the noise each rank draws); validation is sharded and summed; only rank 0 writes.
    With ``z_train`` and no ``loss_fn``, ``supervised="auto"`` (the default) windows long
    sequences, holds out the end of the training span when no validation data is given, and
    selects alpha on validation; ``"free-running"`` trains the z-term on the model's own
    recursion; ``"teacher-forcing"`` is Eq. 12 as written on the data as given (see
    :mod:`alternators_ppl.inference.supervised`).
    ``calibrate`` (default ``"auto"``): after training, select sigma_x (per dimension),
    sigma_z and alpha on the validation data by
    :func:`~alternators_ppl.inference.calibrate_noise` (the networks stay as Eq. 12 trained
    them) and record its report in ``history.calibration``. ``"auto"`` calibrates whenever
    x_val is given, the fit is not sequence-to-sequence (no z_train) and the model supports it
    (:func:`~alternators_ppl.inference.calibration.can_calibrate_noise`: the Alternator's own
    observation mean, or a variant that says how its mean depends on sigma_x, as
    Alternator++; without a linear observation mean layer, e.g. a convolutional decoder, the
    mean moves with sigma_x and the selection accounts for it); ``True`` insists (an error
    when it cannot);
    ``False`` is the paper's plain Eq. 12 with the scales fixed. With ``z_train`` and
    ``supervised="auto"``, ``"auto"`` and ``True`` select sigma_x (per dimension) and sigma_z
    on the validation span with z observed instead
    (:func:`~alternators_ppl.inference.supervised_calibration.calibrate_supervised`).
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
    if calibrate not in (True, False, "auto"):
        raise ValueError(f"calibrate must be True, False or 'auto', got {calibrate!r}")
    if calibrate is True and z_train is None and x_val is None:
        raise ValueError("calibrate=True needs x_val (it selects noise on x_val)")
    if calibrate is True and z_train is not None and (supervised != "auto" or loss_fn):
        raise ValueError("calibrate=True with z_train needs supervised='auto' and no loss_fn")
    if resume and checkpoint_dir is None:
        raise ValueError("resume needs checkpoint_dir")
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
                        resume=resume, budget_s=budget_s, calibrate=calibrate)  # fmt: skip
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

    distributed.broadcast_module(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(epochs, warmup_epochs, lr, lr_min)
    )
    checkpointing = None
    if checkpoint_dir is not None:
        run_args = {
            "trainer": "fit",
            "epochs": epochs,
            "lr": lr,
            "lr_min": lr_min,
            "warmup_epochs": warmup_epochs,
            "batch_size": batch_size,
            "clip_norm": clip_norm,
            "seed": seed,
            "model": f"{type(model).__name__}({model.extra_repr()})",
            "loss_fn": getattr(loss_fn, "__qualname__", type(loss_fn).__name__),
            "data": data_fingerprint(x_train, z_train, mask_train, x_val, z_val, mask_val),
        }
        checkpointing = Checkpointing(Path(checkpoint_dir), model, optimizer, scheduler, run_args)

    def loss_of(part: torch.Tensor) -> torch.Tensor:
        return _batch_loss(loss_fn, model, x_train, z_train, mask_train, part)

    def backward(index: torch.Tensor) -> float:
        """Mean loss of the minibatch ``index`` (0 when empty), its gradient accumulated."""
        optimizer.zero_grad(set_to_none=True)
        if not len(index):
            return 0.0
        chunk = gradient_chunk(len(index), x_train.shape[1], device)
        return backward_in_chunks(loss_of, index, chunk)

    def train_batch(index: torch.Tensor) -> float:
        if distributed.is_distributed():
            return train_shard(index)
        loss = backward(index)
        return step(loss * len(index)) if math.isfinite(loss) else loss

    def train_shard(index: torch.Tensor) -> float:
        """This rank's share of a global batch; gradients averaged over the global batch."""
        local = backward(index)
        total, _ = distributed.average_gradients(params, len(index), local)
        return step(total) if math.isfinite(total) else total

    def step(total: float) -> float:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, clip_norm)
        if not torch.isfinite(grad_norm):  # a step would write NaN weights (and checkpoints)
            raise NonFiniteLossError(f"gradient norm is {grad_norm.item()}")
        optimizer.step()
        return total

    def validate() -> float:
        return validation_loss(model, x_val, z_val, mask_val, batch_size, val_seed, loss_fn)

    val_seed = 0 if seed is None else seed
    model.train()
    history = run_epochs(
        train_batch,
        x_train.shape[0],
        epochs=epochs,
        batch_size=batch_size,
        device=device,
        validate=None if x_val is None else validate,
        current_lr=lambda: optimizer.param_groups[0]["lr"],
        end_epoch=scheduler.step,
        keep_best=model,
        checkpointing=checkpointing,
        resume=resume,
        budget_s=budget_s,
        callback=callback,
        progress=progress,
        desc="fit",
    )
    model.eval()
    if calibrate and x_val is not None and z_train is None:
        if calibrate is True or can_calibrate_noise(model):
            history.calibration = calibrate_noise(
                model,
                x_val,
                mask_val,
                seed=val_seed,
                preserve_mean=model.observation_mean_layer() is not None,
            )
    return history


@torch.no_grad()
def validation_loss(model, x, z, mask, batch_size: int, seed: int, loss_fn=None) -> float:
    """Mean Eq. 12 loss over (B, T, Dx) data with fixed noise (batch c of ``batch_size``
    sequences under seed ``seed + c``; the global RNG stream is left untouched), so values are
    comparable across epochs. Under a process group the batches are shared out over the ranks
    and summed (:func:`~alternators_ppl.inference.loop.fixed_noise_sum`)."""
    loss_fn = _default_loss if loss_fn is None else loss_fn

    def score(index: torch.Tensor) -> float:
        return _batch_loss(loss_fn, model, x, z, mask, index).item() * len(index)

    return fixed_noise_sum(score, x.shape[0], batch_size, seed, x.device) / x.shape[0]
