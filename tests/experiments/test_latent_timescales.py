"""AlternatorModel's latent timescales: "spread" gives every latent coordinate its own memory,
"auto" keeps the candidate whose held-out multi-step forecasts score better."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alternators_ppl.evaluation.masked_scoring import holdout_forecast_crps
from alternators_ppl.experiments import registry
from alternators_ppl.experiments.registry import SPREAD_SIGMA_Z, AlternatorModel
from alternators_ppl.models import Persistence


def test_holdout_forecast_crps_of_persistence_is_its_absolute_error():
    x = torch.randn(3, 12, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x[1, 10, 0] = float("nan")  # a missing target: never scored
    state = torch.get_rng_state()
    got = holdout_forecast_crps(Persistence(), x, num_samples=4)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random numbers are kept
    a = x.numpy()
    per_lead = []  # numpy: the last 4 steps from the 8 before; mean |error| per lead
    for h in range(4):
        errors = np.abs(a[:, 8 + h] - a[:, 7])
        per_lead.append(np.nanmean(errors))
    assert got == pytest.approx(np.mean(per_lead), rel=1e-6)  # Persistence works in float32


def test_spread_timescales_give_each_coordinate_its_own_decay():
    model = AlternatorModel(2, latent_dim=6, hidden=8)
    model._build(6, 8, "spread")
    sigma_z = model.model.sigma_z_values()
    assert sigma_z == pytest.approx(np.linspace(*SPREAD_SIGMA_Z, 6).tolist(), rel=1e-6)
    decay = model.model.latent_decay(torch.tensor(model.model.alpha_values))  # (1, Dz)
    assert decay.shape[-1] == 6 and bool((decay[..., :-1] > decay[..., 1:]).all())
    tight = AlternatorModel(2, latent_dim=4, hidden=8, alpha=0.5)
    tight._build(4, 8, "spread")  # alpha + sigma_z^2 < 1: the top is lowered
    assert max(tight.model.sigma_z_values()) == pytest.approx((0.95 * 0.5) ** 0.5, rel=1e-6)
    with pytest.raises(ValueError, match="latent_timescales"):
        AlternatorModel(2, latent_timescales="many")


@pytest.mark.parametrize("better", ["given", "spread"])
def test_auto_keeps_the_candidate_with_the_lower_validation_crps(monkeypatch, better):
    scores = {"given": 0.5, "spread": 0.7} if better == "given" else {"given": 0.7, "spread": 0.5}

    asked = []

    def fake_crps(model, x_val, seed=0, n_targets=None):
        asked.append(n_targets)
        return scores["spread" if model.model.sigma_z_per_dim else "given"]

    monkeypatch.setattr(registry, "holdout_forecast_crps", fake_crps)
    x = torch.randn(8, 12, 2, generator=torch.Generator().manual_seed(1))
    model = AlternatorModel(2, latent_dim=3, hidden=8, epochs=1, calibrate=False, patience=None)
    history = model.fit(x[:6], x[6:], seed=0)
    record = history["chosen"]["latent_timescales"]
    assert record["kept"] == better and record["validation_crps"] == scores
    assert model.model.sigma_z_per_dim == (better == "spread")
    alone = AlternatorModel(2, latent_dim=3, hidden=8, epochs=1, calibrate=False, patience=None)
    record = alone.fit(x[:6], seed=0)["chosen"]["latent_timescales"]
    assert record["kept"] == "given" and record["validation_crps"] is None  # nothing to judge by
    assert asked == [None, None]
    known = AlternatorModel(2, latent_dim=3, hidden=8, epochs=1, calibrate=False, patience=None,
                            n_targets=1)  # fmt: skip
    record = known.fit(x[:6], x[6:], seed=0)["chosen"]["latent_timescales"]
    assert asked[2:] == [1, 1] and "given the known inputs" in record["criterion"]


def test_holdout_forecast_crps_uses_its_own_seed():
    from alternators_ppl.models import Climatology

    x = torch.randn(4, 9, 1, generator=torch.Generator().manual_seed(2))
    model = Climatology()
    model.fit(x)
    values = []
    for outer in (0, 1):  # the caller's random state differs; the score does not
        torch.manual_seed(outer)
        values.append(holdout_forecast_crps(model, x, num_samples=8, seed=3))
    assert values[0] == values[1]
    assert holdout_forecast_crps(model, x, num_samples=8, seed=4) != values[0]


def test_build_model_hands_n_targets_to_the_alternator_and_its_spread():
    built = registry.build_model("alternator", 3, members=1, n_targets=2, latent_dim=3, hidden=4)
    assert built.n_targets == 2 and built.model.n_targets == 2
    assert registry.build_model("alternator", 3, members=1).model.n_targets is None
