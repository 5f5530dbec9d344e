"""Every model of the comparison behind :class:`SequenceModel`: Alternator, Kalman, DMM, naive.

``build_model(name, obs_dim, device=..., **options)`` makes one by name (see ``MODEL_NAMES``).
"""

from __future__ import annotations

import math
from functools import partial

import torch

from alternators_ppl.evaluation.masked_scoring import holdout_forecast_crps
from alternators_ppl.evaluation.spread_recalibration import SpreadRecalibrated
from alternators_ppl.inference.calibration import calibrate_noise
from alternators_ppl.inference.dmm import fit_dmm
from alternators_ppl.inference.training import fit
from alternators_ppl.models.alpha_alternator import AlphaAlternator
from alternators_ppl.models.alternator import Alternator
from alternators_ppl.models.alternator_pp import AlternatorPlusPlus
from alternators_ppl.models.diffusion import DiffusionImputer
from alternators_ppl.models.dmm import DeepMarkovModel
from alternators_ppl.models.ensemble import Ensemble
from alternators_ppl.models.interface import SequenceModel
from alternators_ppl.models.kalman import LinearGaussianSSM
from alternators_ppl.models.learned_alpha import LearnedAlphaAlternator
from alternators_ppl.models.mamba import MambaForecaster
from alternators_ppl.models.naive import Climatology, Persistence
from alternators_ppl.models.neural_ode import LatentODEModel
from alternators_ppl.validation import as_float_tensor, check_positive_int

__all__ = [
    "ALTERNATOR_MEMBERS",
    "ALTERNATOR_VARIANTS",
    "LATENT_TIMESCALES",
    "SPREAD_SIGMA_Z",
    "AlternatorModel",
    "KalmanModel",
    "DMMModel",
    "MODEL_NAMES",
    "DEFAULT_MODELS",
    "VARIANTS",
    "add_alternator_arguments",
    "build_model",
    "check_alternator_options",
    "check_latent_timescales",
    "training_options",
    "adaptive_sizes",
    "keep_better_timescales",
    "spread_sigma_z",
    "distinct_observed_entries",
]

#: the choices of AlternatorModel's ``latent_timescales``
LATENT_TIMESCALES = ("auto", "given", "spread")
#: sigma_z of the first and the last latent coordinate under ``latent_timescales="spread"``
#: (evenly spaced between; at alpha = 0.3 latent decays 0.83 down to 0.24 per step)
SPREAD_SIGMA_Z = (0.05, 0.8)

#: model variants the job can train, by CLI name
VARIANTS = {
    "alternator": Alternator,
    "alternator++": AlternatorPlusPlus,
    "alpha-alternator": AlphaAlternator,
    "learned-alpha": LearnedAlphaAlternator,
}


class _Wrapped(SequenceModel):
    """Delegates sampling to ``self.model`` (forecast, impute, sample()["x"])."""

    model = None

    def forecast(self, x_context, horizon: int, num_samples: int) -> torch.Tensor:
        return self.model.forecast(x_context, horizon, num_samples)

    def impute(self, x, mask, num_samples: int) -> torch.Tensor:
        return self.model.impute(x, mask, num_samples)

    def sample(self, num_samples: int, num_steps: int) -> torch.Tensor:
        return self.model.sample(num_samples, num_steps)["x"]


class AlternatorModel(_Wrapped):
    """The Alternator trained by Eq. 12 (:func:`alternators_ppl.inference.fit`), then
    calibrated: sigma_x per dimension, sigma_z and alpha selected on the validation data
    (:func:`alternators_ppl.inference.calibrate_noise`; ``calibrate=False`` keeps the fixed
    scales of the paper).

    Sizes adapt to the data unless given (:func:`adaptive_sizes`): ``latent_dim`` and
    ``hidden`` from Dx and the number of distinct observed training entries
    (:func:`distinct_observed_entries`: overlapping windows of one series count each step
    once). Training stops early when
    the validation SMC log-likelihood per entry (64 particles, fixed seed) has not improved
    for ``patience`` checks, one every ``check_every`` epochs, and the weights of the best
    check are kept; ``epochs`` is the cap. ``chosen`` records every size and scale in use.

    ``variant``: which Alternator of :data:`VARIANTS` is trained (``name`` is the variant's);
    every variant gets the same sizes, early stopping, calibration and timescales.

    ``latent_timescales``: ``"given"`` trains at ``sigma_z`` (the paper's one sigma_z, so every
    latent coordinate forgets at the same rate sqrt(1 - alpha - sigma_z^2)); ``"spread"`` at a
    sigma_z per coordinate from :data:`SPREAD_SIGMA_Z` (low to high: long to short memories,
    so the OTN can read a trend or a phase from the differences); ``"auto"`` (the default)
    fits both and keeps the one whose forecasts of the last third of the validation sequences
    score the lower CRPS (:func:`holdout_forecast_crps`; ``"given"`` without validation data).

    ``n_targets``: the first n_targets columns are targets and the rest known inputs
    (``--covariates``): the timescales are then chosen on forecasts of the targets given the
    inputs.
    """

    name = "alternator"
    has_likelihood_estimate = True

    def __init__(
        self,
        obs_dim: int,
        latent_dim: int | None = None,
        hidden: int | None = None,
        sigma_x: float = 0.3,
        sigma_z: float = 0.1,
        alpha: float = 0.3,
        epochs: int = 200,
        batch_size: int = 16,
        lr: float = 1e-2,
        device=None,
        calibrate: bool = True,
        patience: int | None = 5,
        check_every: int = 10,
        latent_timescales: str = "auto",
        variant: str = "alternator",
        n_targets: int | None = None,
    ):
        self.obs_dim = check_positive_int(obs_dim, "obs_dim")
        self.n_targets = None if n_targets is None else check_positive_int(n_targets, "n_targets")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
        self.name = self.variant = variant
        check_latent_timescales(latent_timescales)
        self.latent_timescales = latent_timescales
        self.options = dict(
            latent_dim=latent_dim, hidden=hidden, sigma_x=sigma_x, sigma_z=sigma_z, alpha=alpha
        )
        self.device = device or "cpu"
        self.epochs, self.batch_size, self.lr = epochs, batch_size, lr
        self.calibrate, self.patience = bool(calibrate), patience
        self.check_every = check_every
        self.chosen: dict = {}
        provisional = adaptive_sizes(self.obs_dim, 20_000)  # rebuilt by fit if the data differ
        self._build(latent_dim or provisional["latent_dim"], hidden or provisional["hidden"])

    def _build(self, latent_dim: int, hidden: int, timescales: str = "given") -> None:
        o = self.options
        sigma_z = spread_sigma_z(latent_dim, o["alpha"]) if timescales == "spread" else o["sigma_z"]
        self.model = VARIANTS[self.variant](
            self.obs_dim,
            latent_dim,
            sigma_x=o["sigma_x"],
            sigma_z=sigma_z,
            alpha=o["alpha"],
            hidden=(hidden, hidden),
        )
        self.model.to(self.device)

    def fit(self, x_train, x_val=None, *, seed: int = 0, budget_s: float | None = None) -> dict:
        """Train (and calibrate) each candidate of ``latent_timescales`` from ``seed``; keep the
        best on validation. ``budget_s`` holds for each candidate. Returns the kept
        candidate's history with ``chosen``."""
        x_train = torch.as_tensor(x_train)
        sizes = adaptive_sizes(self.obs_dim, distinct_observed_entries(x_train))
        latent_dim = self.options["latent_dim"] or sizes["latent_dim"]
        hidden = self.options["hidden"] or sizes["hidden"]

        def train(timescales: str):  # scored while self.model is this candidate
            torch.manual_seed(seed)
            self._build(latent_dim, hidden, timescales)
            history, chosen = self._fit_one(x_train, x_val, seed, budget_s, sizes["rule"], hidden)
            return self, (self.model, history, chosen)

        kept, record = keep_better_timescales(
            self.latent_timescales, train, x_val, seed, self.n_targets
        )
        self.model, history, self.chosen = kept
        self.chosen["latent_timescales"] = record
        return {**history, "chosen": self.chosen}

    def _fit_one(self, x_train, x_val, seed, budget_s, size_rule: str, hidden: int):
        """Eq. 12 with early stopping, then the calibration, of ``self.model``; returns
        (history, what was chosen)."""
        callback, best = None, {}
        if x_val is not None and self.patience:
            x_check = torch.as_tensor(x_val, device=self.model.device, dtype=self.model.dtype)
            callback, best = _early_stopping(self.model, x_check, self.patience, self.check_every)
        history = fit(
            self.model,
            x_train,
            x_val=x_val,
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            seed=seed,
            progress=False,
            budget_s=budget_s,
            callback=callback,
            calibrate=False,
        )
        if best.get("state") is not None:
            self.model.load_state_dict(best["state"])
        calibration = None
        if self.calibrate and x_val is not None:
            calibration = calibrate_noise(self.model, x_val, seed=seed)
        chosen = {
            "latent_dim": self.model.latent_dim,
            "hidden": hidden,
            "size_rule": size_rule,
            "epochs_cap": self.epochs,
            "epochs_run": history.epochs_run,
            "early_stopping": None
            if not best
            else {
                "criterion": "validation SMC log-likelihood per entry (64 particles)",
                "best_epoch": best.get("epoch"),
                "best_value": best.get("value"),
                "patience": self.patience,
                "check_every": self.check_every,
            },
            "calibration": calibration,
            "sigma_x": self.model.sigma_x_values(),
            "sigma_z": self.model.stored_sigma_z(),
            "alpha": None if self.model._own_alpha() else self.model.alpha_values[0],
            "variant": self.variant,
        }
        return history.to_dict(), chosen

    def log_likelihood(self, x, mask=None) -> torch.Tensor:
        """SMC estimate of log p(x^obs) (B,): :meth:`Alternator.log_likelihood` (1,000 particles;
        exp of it is unbiased, the log is not exact, so ``has_exact_likelihood`` stays False)."""
        return self.model.log_likelihood(x, mask)


class KalmanModel(_Wrapped):
    """Linear-Gaussian state-space model fitted by exact EM; exact likelihood."""

    name = "kalman"
    has_exact_likelihood = True

    def __init__(self, obs_dim: int, latent_dim: int = 6, em_iters: int = 100, device=None):
        self.model = LinearGaussianSSM(obs_dim, latent_dim, device=device or "cpu")
        self.em_iters = check_positive_int(em_iters, "em_iters")

    def fit(self, x_train, x_val=None, *, seed: int = 0, budget_s: float | None = None) -> dict:
        """EM from a seeded start for ``em_iters`` iterations or until the budget is spent;
        the history holds the log-likelihood after each iteration."""
        torch.manual_seed(seed)
        with torch.no_grad():
            self.model.H.copy_(torch.randn_like(self.model.H) / self.model.latent_dim**0.5)
        x = as_float_tensor(x_train, "x_train", self.model.device, self.model.dtype)
        history = self.model.fit_em(x, num_iters=self.em_iters, budget_s=budget_s)
        return {"log_likelihood": history[1:], "epochs_run": len(history) - 1}

    def log_likelihood(self, x, mask=None) -> torch.Tensor:
        with torch.no_grad():
            return self.model.log_likelihood(x, mask)


class DMMModel(_Wrapped):
    """Deep Markov Model trained by SVI (Trace_ELBO) with a backward-RNN combiner guide."""

    name = "dmm"

    def __init__(
        self,
        obs_dim: int,
        latent_dim: int = 8,
        hidden: int = 64,
        epochs: int = 200,
        batch_size: int = 16,
        lr: float = 1e-2,
        device=None,
    ):
        self.model = DeepMarkovModel(obs_dim, latent_dim, hidden, hidden, hidden)
        self.model.to(device or "cpu")
        self.epochs, self.batch_size, self.lr = epochs, batch_size, lr

    def fit(self, x_train, x_val=None, *, seed: int = 0, budget_s: float | None = None) -> dict:
        history = fit_dmm(
            self.model,
            x_train,
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            seed=seed,
            x_val=x_val,
            budget_s=budget_s,
        )
        return history.to_dict()


def spread_sigma_z(latent_dim: int, alpha: float) -> list[float]:
    """The ``"spread"`` latent timescales: a sigma_z per latent coordinate (latent_dim,), evenly
    from ``SPREAD_SIGMA_Z[0]`` to ``SPREAD_SIGMA_Z[1]``, the top lowered to
    sqrt(0.95 (1 - alpha)) when needed so that alpha + sigma_z^2 < 1."""
    low, high = SPREAD_SIGMA_Z
    high = min(high, (0.95 * (1 - alpha)) ** 0.5)
    return torch.linspace(low, high, latent_dim).tolist()


def keep_better_timescales(
    mode: str, train, x_val, seed: int, n_targets: int | None = None
) -> tuple[object, dict]:
    """Train each candidate of ``mode`` by ``train(timescales) -> (forecaster, result)`` and
    keep the better: ``"auto"`` tries ``"given"`` and ``"spread"`` (``"given"`` alone without
    ``x_val``) and keeps the one whose forecasts of the last third of each sequence of x_val
    (B, T, Dx) score the lower CRPS (:func:`holdout_forecast_crps`, ``seed``; with
    ``n_targets``, forecasts of the targets given the known inputs, by the forecaster's
    ``forecast_given``); another mode is trained as it is. Returns (the kept ``result``, a
    record: mode, kept, validation_crps, criterion)."""
    check_latent_timescales(mode)
    candidates = [mode]
    if mode == "auto":
        candidates = ["given", "spread"] if x_val is not None else ["given"]
    kept, scores = None, {}
    for timescales in candidates:
        forecaster, result = train(timescales)
        if len(candidates) > 1:
            scores[timescales] = holdout_forecast_crps(
                forecaster, x_val, seed=seed, n_targets=n_targets
            )
        if kept is None or scores[timescales] < scores[kept[0]]:
            kept = (timescales, result)
    record = {
        "mode": mode,
        "kept": kept[0],
        "validation_crps": scores or None,
        "criterion": "CRPS of forecasts of the last third of each validation sequence"
        + ("" if n_targets is None else " (the targets, given the known inputs)"),
    }
    return kept[1], record


def distinct_observed_entries(x) -> int:
    """Observed (finite) entries of x (B, T, D), the steps that a window shares with the window
    before it (window b equal to window b - 1 moved on by some shift, as windows cut from one
    series are) counted once. Niño's 525 training windows of 36 months hold 75,600 entries
    of 2,240 distinct ones; independent sequences keep all of theirs."""
    x = torch.as_tensor(x)
    observed, steps = torch.isfinite(x), x.shape[1]
    filled = torch.nan_to_num(x, nan=math.inf)  # a missing entry matches a missing entry
    # starts[b - 1, s]: step s of window b - 1 equals the first step of window b
    starts = (filled[:-1] == filled[1:, :1]).all(-1)
    total = int(observed[:1].sum())  # the first window (none in an empty x)
    for b, candidates in enumerate(starts, start=1):
        shift = next(
            (
                s
                for s in candidates.nonzero().flatten().tolist()
                if s >= 1 and torch.equal(filled[b, : steps - s], filled[b - 1, s:])
            ),
            steps,
        )
        total += int(observed[b, steps - shift :].sum())
    return total


def adaptive_sizes(obs_dim: int, num_entries: int) -> dict:
    """Latent size and width from the data (the documented rule of :class:`AlternatorModel`):
    latent_dim = clip(2 Dx + 2, 8, 32); hidden = 32 under 20,000 distinct observed training
    entries, 64 under 200,000, else 128. Returns {"latent_dim", "hidden", "rule"}."""
    latent = min(max(2 * obs_dim + 2, 8), 32)
    hidden = 32 if num_entries < 20_000 else 64 if num_entries < 200_000 else 128
    rule = (
        f"latent_dim = clip(2 Dx + 2, 8, 32) = {latent} (Dx = {obs_dim}); hidden = {hidden} "
        f"for {num_entries} distinct observed training entries (32 < 2e4 <= 64 < 2e5 <= 128)"
    )
    return {"latent_dim": latent, "hidden": hidden, "rule": rule}


def _early_stopping(model, x_val: torch.Tensor, patience: int, every: int):
    """(callback, record): every ``every`` epochs score the validation SMC log-likelihood per
    observed entry; keep the best weights in ``record``; stop after ``patience`` checks
    without improvement."""
    entries = float(torch.isfinite(x_val).sum())
    record: dict = {"value": -math.inf, "state": None, "epoch": None, "bad": 0}

    def callback(epoch: int, history) -> bool:
        if (epoch + 1) % every:
            return False
        model.eval()
        with torch.no_grad():
            value = float(model.log_likelihood(x_val, num_particles=64, seed=0).sum()) / entries
        model.train()
        if math.isfinite(value) and value > record["value"]:
            record.update(value=value, epoch=epoch, bad=0)
            record["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        record["bad"] += 1
        return record["bad"] >= patience

    return callback, record


#: networks in the ``alternator`` of ``compare`` and ``forecast``: an ensemble of this many
#: AlternatorModels from different seeds (Niño, seed 0: CRPS 0.526 and 90% coverage 0.875
#: against 0.576 and 0.80 for one network on average; docs/calibration.md)
ALTERNATOR_MEMBERS = 5


def _alternator(
    obs_dim: int,
    members: int = ALTERNATOR_MEMBERS,
    recalibrate_spread: bool = True,
    n_targets: int | None = None,
    **options,
) -> SequenceModel:
    """``members`` AlternatorModels as one :class:`Ensemble` (members = 1: one network), its
    forecast spread recalibrated per lead on validation data (:class:`SpreadRecalibrated`;
    with ``n_targets``, on forecasts of the first n_targets columns given the known inputs
    after them) unless ``recalibrate_spread`` is False."""
    options = {**options, "n_targets": n_targets}
    if check_positive_int(members, "members") == 1:
        model = AlternatorModel(obs_dim, **options)
    else:
        model = Ensemble(lambda: AlternatorModel(obs_dim, **options), members)
    return SpreadRecalibrated(model, n_targets=n_targets) if recalibrate_spread else model


#: the Alternator variants of the comparison, opt-in with ``--models``
ALTERNATOR_VARIANTS = tuple(v for v in VARIANTS if v != "alternator")

_BUILDERS = {
    "alternator": _alternator,
    "kalman": KalmanModel,
    "dmm": DMMModel,
    "persistence": lambda obs_dim, device=None, **_: Persistence(device),
    "climatology": lambda obs_dim, device=None, **_: Climatology(device),
    # the paper's comparators, trained by the library's fit (handed in: models/ cannot import it)
    "mamba": lambda obs_dim, **kw: MambaForecaster(obs_dim, trainer=fit, **kw),
    "neural-ode": lambda obs_dim, **kw: LatentODEModel(obs_dim, trainer=fit, **kw),
    "diffusion": lambda obs_dim, **kw: DiffusionImputer(obs_dim, trainer=fit, **kw),
    # the variants with the alternator's defaults (sizes, early stopping, calibration, ensemble)
    **{v: partial(_alternator, variant=v) for v in ALTERNATOR_VARIANTS},
}
MODEL_NAMES = tuple(_BUILDERS)
#: what ``compare`` runs unless told otherwise: the comparators (mamba, neural-ode, diffusion)
#: are opt-in with ``--models``, being slow to train and (diffusion) to sample on a CPU
DEFAULT_MODELS = ("alternator", "kalman", "dmm", "persistence", "climatology")


def add_alternator_arguments(parser, positive_int) -> None:
    """``--members`` and ``--latent-timescales`` on a command's argparse ``parser``."""
    parser.add_argument(
        "--members", type=positive_int, help="networks in the alternator's ensemble (default 5)"
    )
    parser.add_argument(
        "--latent-timescales",
        choices=LATENT_TIMESCALES,
        help="the alternator's latent memories (default auto: chosen on validation)",
    )


def check_alternator_options(members: int, latent_timescales: str) -> None:
    """One-line errors naming ``members`` (a positive int) or ``latent_timescales``
    (:func:`check_latent_timescales`), the alternator's options of the commands."""
    check_positive_int(members, "members")
    check_latent_timescales(latent_timescales)


def check_latent_timescales(latent_timescales: str) -> None:
    """A one-line error naming ``latent_timescales`` unless it is one of
    :data:`LATENT_TIMESCALES`."""
    if latent_timescales not in LATENT_TIMESCALES:
        raise ValueError(
            f"latent_timescales must be one of {LATENT_TIMESCALES}, got {latent_timescales!r}"
        )


def training_options(
    name: str,
    epochs: int,
    members: int = ALTERNATOR_MEMBERS,
    latent_timescales: str = "auto",
    n_targets: int | None = None,
) -> dict:
    """The constructor options that the commands set from their ``--epochs`` (and, for the
    ``alternator``, ``--members``, ``--latent-timescales`` and, with ``--covariates``, the
    number of target columns): the epoch cap of trained models, half of it as the Kalman
    filter's EM iterations, nothing for the naive models."""
    if name == "alternator" or name in ALTERNATOR_VARIANTS:
        options = {"epochs": epochs, "members": members, "latent_timescales": latent_timescales}
        return options if n_targets is None else {**options, "n_targets": n_targets}
    if name in ("dmm", "mamba", "neural-ode", "diffusion"):
        return {"epochs": epochs}
    if name == "kalman":
        return {"em_iters": max(epochs // 2, 1)}
    return {}


def build_model(name: str, obs_dim: int, device=None, **options) -> SequenceModel:
    """A fresh model by name (one of ``MODEL_NAMES``) with ``options`` for its constructor."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    return _BUILDERS[name](obs_dim, device=device, **options)
