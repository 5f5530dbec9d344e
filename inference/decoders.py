"""Decoders that train by gradient, behind the :class:`~alternators_ppl.models.decoders.Decoder`
interface: the GRU decoder (Glaser et al. 2020), a Mamba decoder (selective SSM with a
Gaussian head) and the Alternator in supervised mode.

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
from alternators_ppl.models.decoders import (
    GRUNetwork,
    MambaDecoderNetwork,
    _tail_split,
    as_sequences,
)
from alternators_ppl.validation import check_positive_int

__all__ = ["GRUDecoder", "MambaDecoder", "AlternatorDecoder", "early_stopping"]


def early_stopping(patience: int):
    """A ``fit`` callback that stops after ``patience`` epochs without a better best loss."""
    patience = check_positive_int(patience, "patience")

    def callback(epoch: int, history: History) -> bool:
        return epoch - (history.best_epoch or epoch) >= patience

    return callback


def _tensor(a: np.ndarray, like: torch.nn.Module) -> torch.Tensor:
    return torch.as_tensor(a, dtype=like.dtype, device=like.device)


class _WindowTrainedDecoder:
    """Trains ``self._network(Dx, Dz)`` by its ``loss`` on windows of the training span.

    Training windows of ``window`` steps (stride ``window // 4``) come from the training
    sequences minus their last ``val_fraction`` (or ``x_val``/``z_val`` when given), which
    picks the best epoch and stops early after ``patience`` epochs without improvement.
    """

    def _network(self, obs_dim: int, latent_dim: int) -> torch.nn.Module:
        raise NotImplementedError

    def _setup(self, epochs, lr, batch_size, window, patience, val_fraction, seed, device):
        self.epochs = check_positive_int(epochs, "epochs")
        self.lr, self.batch_size = lr, check_positive_int(batch_size, "batch_size")
        self.window = check_positive_int(window, "window")
        self.patience, self.val_fraction = patience, val_fraction
        self.seed, self.device = seed, device
        self.network = None
        self.history: History | None = None

    def _prepare(self, x_train, z_train, x_val, z_val):
        """Checked data, the fresh network and its windows: (net, (xw, zw), (xv, zv), z)."""
        x, z = as_sequences(x_train, "x_train"), as_sequences(z_train, "z_train")
        if x.shape[:2] != z.shape[:2]:
            raise ValueError(f"x_train {x.shape} and z_train {z.shape} must share (B, T)")
        if x_val is None:
            x, z, x_val, z_val = _tail_split(x, z, self.val_fraction)
        else:
            x_val, z_val = as_sequences(x_val, "x_val"), as_sequences(z_val, "z_val")
        if self.seed is not None:
            torch.manual_seed(self.seed)
        net = self._network(x.shape[-1], z.shape[-1])
        if self.device is not None:
            net.to(self.device)
        self.network = net
        stride = max(1, self.window // 4)
        windows = tuple(window_sequences(_tensor(a, net), self.window, stride) for a in (x, z))
        return net, windows, (_tensor(x_val, net), _tensor(z_val, net)), z

    def _train(self, net, windows, callback, **extra):
        self.history = fit(
            net, *windows, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
            seed=self.seed, progress=False, warmup_epochs=5,
            loss_fn=lambda m, x, mask, z: m.loss(x, mask, z), callback=callback, **extra,
        )  # fmt: skip

    def fit(self, x_train, z_train, x_val=None, z_val=None):
        """Train with early stopping on validation; returns self."""
        net, windows, (xv, zv), _ = self._prepare(x_train, z_train, x_val, z_val)
        self._train(net, windows, early_stopping(self.patience), x_val=xv, z_val=zv)
        return self

    def _input(self, x) -> torch.Tensor:
        if self.network is None:
            raise ValueError(f"{type(self).__name__} is not fitted; call fit() first")
        x = as_sequences(x, "x", self.network.obs_dim)
        self.network.eval()
        return _tensor(x, self.network)


class GRUDecoder(_WindowTrainedDecoder):
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
        self._setup(epochs, lr, batch_size, window, patience, val_fraction, seed, device)
        self.shrinkage: np.ndarray | None = None

    def _network(self, obs_dim: int, latent_dim: int) -> GRUNetwork:
        return GRUNetwork(obs_dim, latent_dim, **self.net_args)

    def fit(self, x_train, z_train, x_val=None, z_val=None) -> GRUDecoder:
        """Train with the floored early stopping, then shrink the read-out; returns self."""
        net, windows, (xv, zv), z = self._prepare(x_train, z_train, x_val, z_val)
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

        self._train(net, windows, callback)
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
        return self.network(self._input(x)).double().cpu().numpy()

    def sample(self, x, num_samples: int | None = None) -> None:
        """A point decoder has no draws: returns None."""
        return None


class MambaDecoder(_WindowTrainedDecoder):
    """Mamba decoder: :class:`MambaDecoderNetwork` (selective SSM blocks, Gaussian head)
    trained by the Gaussian negative log-likelihood of z on windows of the training span
    (as :class:`GRUDecoder`: ``window``-step windows, validation tail, early stopping).

    ``predict`` -> the Gaussian mean (B, T, Dz) over each whole sequence (causal);
    ``sample`` -> ``num_samples`` draws (S, B, T, Dz) from the per-bin Gaussians.
    """

    has_uncertainty = True

    def __init__(self, d_model: int = 32, d_state: int = 8, num_layers: int = 2,
                 num_samples: int = 200, epochs: int = 200, lr: float = 3e-3,
                 batch_size: int = 32, window: int = 64, patience: int = 20,
                 val_fraction: float = 0.15, seed: int | None = 0, device=None):  # fmt: skip
        self.net_args = dict(d_model=d_model, d_state=d_state, num_layers=num_layers)
        self.num_samples = check_positive_int(num_samples, "num_samples")
        self._setup(epochs, lr, batch_size, window, patience, val_fraction, seed, device)

    def _network(self, obs_dim: int, latent_dim: int) -> MambaDecoderNetwork:
        return MambaDecoderNetwork(obs_dim, latent_dim, **self.net_args)

    @torch.no_grad()
    def predict(self, x) -> np.ndarray:
        """Decoded behaviour: the Gaussian mean (B, T, Dz)."""
        loc, _ = self.network(self._input(x))
        return loc.double().cpu().numpy()

    @torch.no_grad()
    def sample(self, x, num_samples: int | None = None) -> np.ndarray:
        """Draws (S, B, T, Dz) from the decoded Gaussians (S = ``num_samples``)."""
        num = self.num_samples if num_samples is None else check_positive_int(
            num_samples, "num_samples"
        )
        loc, scale = self.network(self._input(x))
        draws = torch.distributions.Normal(loc, scale).sample((num,))
        return draws.double().cpu().numpy()


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
