"""Protocol tests: what is scored never reaches the model.

Every input handed to a model (training data, forecast contexts, gappy sequences) is recorded
by a spy and searched for the values the job scores against (the forecast futures, the hidden
imputation steps, the held-out latents). Test data are continuous and noisy, so a shared value
means a leak.
"""

import torch

from alternators_ppl.evaluation import scoring
from alternators_ppl.experiments import compare, lorenz
from alternators_ppl.experiments.compare import CompareConfig, run_comparison
from alternators_ppl.experiments.lorenz import LorenzJobConfig, run_lorenz_job
from alternators_ppl.models import Alternator
from alternators_ppl.models.naive import Persistence


def _finite_values(*tensors) -> torch.Tensor:
    values = torch.cat([torch.as_tensor(t).reshape(-1).double() for t in tensors if t is not None])
    return values[torch.isfinite(values)]


class Spy:
    """Records what the wrapped methods were given, and what the job later scores.

    A forecast context may hold the future of an earlier window (windows overlap), so
    forecasts are checked row by row: problem i's context must not hold problem i's future.
    Imputation inputs must not hold a hidden step; training data must hold no scored value.
    """

    def __init__(self, monkeypatch, owner, methods):
        self.calls: dict[str, list[torch.Tensor]] = {}
        self.futures: list[torch.Tensor] = []
        self.hidden_steps: list[torch.Tensor] = []
        self.other_scored: list[torch.Tensor] = []
        self._depth = 0
        for name in methods:
            monkeypatch.setattr(owner, name, self._wrap(name, getattr(owner, name)))

    def _wrap(self, name, real):
        def spied(obj, x, *args, **kwargs):
            if self._depth == 0:  # the job's own calls, not one method calling another
                self.calls.setdefault(name, []).append(torch.as_tensor(x).detach().clone())
            self._depth += 1
            try:
                return real(obj, x, *args, **kwargs)
            finally:
                self._depth -= 1

        return spied

    def record_scored(self, monkeypatch, module):
        """Capture the truth of every forecast window and hidden imputation step."""
        windows, hide = module.forecast_windows, module.hide_random_steps

        def forecast_windows(x, context, horizon, stride):
            past, future = windows(x, context, horizon, stride)
            self.futures.append(future)
            return past, future

        def hide_random_steps(x, fraction, seed):
            gappy, mask = hide(x, fraction, seed)
            self.hidden_steps.append(x[~mask])
            return gappy, mask

        monkeypatch.setattr(module, "forecast_windows", forecast_windows)
        monkeypatch.setattr(module, "hide_random_steps", hide_random_steps)

    def leaked(self, training=()) -> int:
        """How many scored values reached the model."""
        count = 0
        futures = [f for f in self.futures if f.shape[0]]  # in the order the job cut them
        for context in self.calls.get("forecast", []):
            # the i-th forecast of a window set goes with the i-th window set of that size
            matching = [f for f in futures if f.shape[0] == context.shape[0]]
            assert matching, "a forecast call with no recorded windows"
            future = matching[0]
            futures.remove(future)
            for row in range(context.shape[0]):
                count += int(torch.isin(future[row].cpu(), context[row].cpu()).sum())
        hidden = _finite_values(*self.hidden_steps)
        for x in self.calls.get("impute", []):
            count += int(torch.isin(hidden, _finite_values(x)).sum())
        scored = _finite_values(*self.futures, *self.hidden_steps, *self.other_scored)
        if training:
            count += int(torch.isin(scored, _finite_values(*training)).sum())
        assert self.calls and hidden.numel() > 0
        return count


def test_lorenz_job_scores_values_the_model_never_saw(monkeypatch, tmp_path):
    spy = Spy(monkeypatch, Alternator, ["forecast", "impute", "infer_latents"])
    spy.record_scored(monkeypatch, lorenz)
    fits = []
    real_fit = lorenz.fit
    monkeypatch.setattr(lorenz, "fit", lambda *a, **k: fits.append((a, k)) or real_fit(*a, **k))
    cfg = LorenzJobConfig.quick(epochs=1, decoder_epochs=1)
    run_lorenz_job(cfg, tmp_path, "run")
    training = []
    for args, kwargs in fits:  # training and validation data
        training += [a for a in args[1:] if hasattr(a, "shape")]
        training += [kwargs[k] for k in ("x_val", "z_val") if kwargs.get(k) is not None]
    assert len(fits) == 2 and spy.calls["infer_latents"]
    assert spy.leaked() == 0  # forecasts and imputations (test and validation reports)
    # no test value (forecast test trajectories, decoded latents) is in any training input
    test_values = _finite_values(cfg.forecasting_task().x_test, cfg.spikes_task().z_test)
    assert int(torch.isin(test_values, _finite_values(*training)).sum()) == 0


def test_the_lorenz_leak_check_catches_imputation_reading_hidden_values(monkeypatch, tmp_path):
    """The mutation the suite must catch: imputation handed the full test sequences."""
    spy = Spy(monkeypatch, Alternator, ["forecast", "impute"])
    spy.record_scored(monkeypatch, lorenz)
    real_hide = lorenz.hide_random_steps

    def leaky_hide(x, fraction, seed):
        gappy, mask = real_hide(x, fraction, seed)
        return x.clone(), mask  # the "gappy" input still holds every hidden value

    monkeypatch.setattr(lorenz, "hide_random_steps", leaky_hide)
    run_lorenz_job(LorenzJobConfig.quick(epochs=1, decoder_epochs=1), tmp_path, "run")
    assert spy.leaked() > 0


def test_compare_scores_values_the_models_never_saw(monkeypatch, tmp_path):
    spy = Spy(monkeypatch, Persistence, ["fit", "forecast", "impute"])
    spy.record_scored(monkeypatch, compare)
    run_comparison(CompareConfig.quick(models=("persistence",)), tmp_path, "cmp")
    assert spy.leaked(spy.calls["fit"]) == 0
    assert scoring.forecast_windows is not compare.forecast_windows  # the spy was in place


def test_the_compare_leak_check_catches_a_forecast_that_reads_the_future(monkeypatch, tmp_path):
    spy = Spy(monkeypatch, Persistence, ["forecast"])
    spy.record_scored(monkeypatch, compare)
    real_windows = compare.forecast_windows

    def leaky_windows(x, context, horizon, stride):
        past, future = real_windows(x, context, horizon, stride)
        return torch.cat([past[:, horizon:], future], dim=1), future  # context ends in the future

    monkeypatch.setattr(compare, "forecast_windows", leaky_windows)
    run_comparison(CompareConfig.quick(models=("persistence",)), tmp_path, "cmp")
    assert spy.leaked() > 0
