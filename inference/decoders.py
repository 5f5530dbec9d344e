"""Decoders that train by gradient, behind the :class:`~alternators_ppl.models.decoders.Decoder`
interface: the GRU decoder (Glaser et al. 2020) and the Alternator in supervised mode.

Both train through :func:`~alternators_ppl.inference.fit` (Adam, warm-up + cosine, best epoch on
validation). Shapes: x (B, T, Dx), z (B, T, Dz); ``predict`` -> (B, T, Dz), ``sample`` ->
(S, B, T, Dz) or None.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from alternators_ppl.inference.shrinkage import shrink_linear, shrinkage_factors
from alternators_ppl.inference.supervised import window_sequences
from alternators_ppl.inference.training import History, fit
from alternators_ppl.models.alternator import Alternator
from alternators_ppl.models.decoders import GRUNetwork, _tail_split, as_sequences
from alternators_ppl.validation import check_positive_int

__all__ = ["GRUDecoder", "AlternatorDecoder", "early_stopping"]


def early_stopping(patience: int):
    """A ``fit`` callback that stops after ``patience`` epochs without a better best loss."""
    patience = check_positive_int(patience, "patience")

    def callback(epoch: int, history: History) -> bool:
        return epoch - (history.best_epoch or epoch) >= patience

    return callback


def _tensor(a: np.ndarray, like: torch.nn.Module) -> torch.Tensor:
    return torch.as_tensor(a, dtype=like.dtype, device=like.device)


class GRUDecoder:
    """GRU decoder: :class:`GRUNetwork` trained by MSE on windows of the training span.

    Training windows of ``window`` steps (stride ``window // 4``) come from the training
    sequences minus their last ``val_fraction`` (or ``x_val``/``z_val`` when given), which
    picks the best epoch and stops early after ``patience`` epochs without improvement. The
    validation score is the sum over dimensions of min(MSE_d, MSE of the training mean_d), so
    a dimension the features cannot decode does not stop training the others; afterwards the
    read-out is shrunk per dimension towards the training mean by the validation gain
    (:mod:`~alternators_ppl.inference.shrinkage`, gains in ``shrinkage``).
    ``predict`` runs the GRU over each whole test sequence (causal).
    """

    has_uncertainty = False

    def __init__(self, hidden: int = 64, num_layers: int = 1, dropout: float = 0.1,
                 epochs: int = 200, lr: float = 5e-3, batch_size: int = 32, window: int = 64,
                 patience: int = 20, val_fraction: float = 0.15, seed: int | None = 0,
                 device=None):  # fmt: skip
        self.net_args = dict(hidden=hidden, num_layers=num_layers, dropout=dropout)
        self.epochs, self.lr, self.batch_size = epochs, lr, batch_size
        self.window, self.patience, self.val_fraction = window, patience, val_fraction
        self.seed, self.device = seed, device
        self.network: GRUNetwork | None = None
        self.history: History | None = None
        self.shrinkage: np.ndarray | None = None

    def fit(self, x_train, z_train, x_val=None, z_val=None) -> GRUDecoder:
        """Train with early stopping on validation; returns self."""
        x, z = as_sequences(x_train, "x_train"), as_sequences(z_train, "z_train")
        if x_val is None:
            x, z, x_val, z_val = _tail_split(x, z, self.val_fraction)
        else:
            x_val, z_val = as_sequences(x_val, "x_val"), as_sequences(z_val, "z_val")
        if self.seed is not None:
            torch.manual_seed(self.seed)
        net = GRUNetwork(x.shape[-1], z.shape[-1], **self.net_args)
        if self.device is not None:
            net.to(self.device)
        self.network = net
        stride = max(1, self.window // 4)
        xw, zw = (window_sequences(_tensor(a, net), self.window, stride) for a in (x, z))
        xv, zv = _tensor(x_val, net), _tensor(z_val, net)
        centre = _tensor(z.reshape(-1, z.shape[-1]).mean(0), net)
        floor = (zv - centre).square().mean((0, 1))  # per-dimension MSE of the mean
        best = {"score": math.inf, "epoch": 0, "state": None}

        def callback(epoch: int, history: History) -> bool:
            with torch.no_grad():
                net.eval()
                mse = (net(xv) - zv).square().mean((0, 1))
                net.train()
            score = torch.minimum(mse, floor).sum().item()
            if score < best["score"]:
                best.update(
                    score=score,
                    epoch=epoch,
                    state={k: v.clone() for k, v in net.state_dict().items()},
                )
            return epoch - best["epoch"] >= self.patience

        self.history = fit(
            net, xw, zw, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
            seed=self.seed, progress=False, warmup_epochs=5,
            loss_fn=lambda m, x, mask, z: m.loss(x, mask, z), callback=callback,
        )  # fmt: skip
        net.load_state_dict(best["state"])
        self.history.best_epoch, self.history.best_loss = best["epoch"], best["score"]
        net.eval()
        with torch.no_grad():
            gains = shrinkage_factors(net(xv), zv, centre)
        shrink_linear(net.readout, gains, centre)
        self.shrinkage = gains.double().cpu().numpy()
        return self

    @torch.no_grad()
    def predict(self, x) -> np.ndarray:
        """Decoded behaviour (B, T, Dz)."""
        if self.network is None:
            raise ValueError("GRUDecoder is not fitted; call fit() first")
        x = as_sequences(x, "x", self.network.obs_dim)
        self.network.eval()
        return self.network(_tensor(x, self.network)).double().cpu().numpy()

    def sample(self, x, num_samples: int | None = None) -> None:
        """A point decoder has no draws: returns None."""
        return None


class AlternatorDecoder:
    """The Alternator as a decoder: ``fit(model, x, z_train=z)`` (the library's default
    supervised path) then the mean of ``num_samples`` ``infer_latents`` draws.

    ``model_args`` go to :class:`Alternator` (default: the library defaults), ``fit_args`` to
    :func:`fit` (e.g. ``supervised="teacher-forcing"`` for Eq. 12 as written).
    """

    has_uncertainty = True

    def __init__(self, num_samples: int = 20, model_args: dict | None = None,
                 fit_args: dict | None = None, seed: int | None = 0, device=None):  # fmt: skip
        self.num_samples = check_positive_int(num_samples, "num_samples")
        self.model_args, self.fit_args = dict(model_args or {}), dict(fit_args or {})
        self.seed, self.device = seed, device
        self.model: Alternator | None = None
        self.history: History | None = None

    def fit(self, x_train, z_train, x_val=None, z_val=None) -> AlternatorDecoder:
        """Build and train the Alternator; returns self."""
        x, z = as_sequences(x_train, "x_train"), as_sequences(z_train, "z_train")
        if self.seed is not None:
            torch.manual_seed(self.seed)
        self.model = Alternator(x.shape[-1], z.shape[-1], **self.model_args)
        if self.device is not None:
            self.model.to(self.device)
        kw = dict(seed=self.seed, progress=False, **self.fit_args)
        if x_val is not None:
            kw.update(x_val=as_sequences(x_val, "x_val"), z_val=as_sequences(z_val, "z_val"))
        self.history = fit(self.model, x, z_train=z, **kw)
        return self

    def sample(self, x, num_samples: int | None = None) -> np.ndarray:
        """``infer_latents`` draws without z_0: (S, B, T, Dz)."""
        if self.model is None:
            raise ValueError("AlternatorDecoder is not fitted; call fit() first")
        num = self.num_samples if num_samples is None else num_samples
        x = as_sequences(x, "x", self.model.obs_dim)
        draws = self.model.infer_latents(_tensor(x, self.model), num_samples=num)
        return draws[:, :, 1:].double().cpu().numpy()

    def predict(self, x) -> np.ndarray:
        """Mean of the draws (B, T, Dz)."""
        return self.sample(x).mean(0)
