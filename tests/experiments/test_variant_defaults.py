"""The Alternator variants of the comparison get the alternator's defaults: sizes from the
data, early stopping, noise calibration, timescales and the ensemble."""

from __future__ import annotations

import pytest
import torch

from alternators_ppl.experiments.file_task import FILE_MODELS
from alternators_ppl.experiments.registry import (
    ALTERNATOR_VARIANTS,
    VARIANTS,
    AlternatorModel,
    build_model,
    training_options,
)
from alternators_ppl.models import Ensemble


@pytest.fixture(scope="module")
def series():
    g = torch.Generator().manual_seed(0)
    t = torch.arange(24, dtype=torch.float32)
    base = torch.stack([torch.sin(0.3 * t), 0.5 * torch.cos(0.3 * t)], -1)
    return base + 0.2 * torch.randn(10, 24, 2, generator=g)


@pytest.mark.parametrize("variant", ALTERNATOR_VARIANTS)
def test_a_variant_is_trained_sized_stopped_and_calibrated_like_the_alternator(series, variant):
    model = build_model(variant, 2, members=1, epochs=3, check_every=1, patience=1,
                        latent_timescales="given", recalibrate_spread=False)  # fmt: skip
    assert model.name == variant
    chosen = model.fit(series[:7], series[7:], seed=0)["chosen"]
    assert type(model.model) is VARIANTS[variant]
    assert (chosen["latent_dim"], chosen["hidden"], chosen["variant"]) == (8, 32, variant)
    assert model.model.otn.hidden == (32, 32)  # the width of the data-sized rule
    assert chosen["early_stopping"]["best_epoch"] is not None and chosen["epochs_run"] <= 3
    assert chosen["calibration"]["criterion"] == "smc_log_marginal_per_entry"
    assert chosen["sigma_x"] == model.model.sigma_x_values() != [0.3, 0.3]
    own_alpha = variant in ("alpha-alternator", "learned-alpha")  # alpha_t is the variant's
    assert (chosen["alpha"] is None) == own_alpha


def test_the_commands_give_a_variant_the_alternators_options():
    for variant in ALTERNATOR_VARIANTS:
        options = training_options(variant, 40, members=3, latent_timescales="spread")
        assert options == {"epochs": 40, "members": 3, "latent_timescales": "spread"}
        ensemble = build_model(variant, 2, **options).model  # inside the spread recalibration
        assert isinstance(ensemble, Ensemble) and ensemble.name == variant
        assert all(m.variant == variant for m in ensemble.members)
    assert not set(ALTERNATOR_VARIANTS) & set(FILE_MODELS)  # opt-in, as in compare
    with pytest.raises(ValueError, match="variant must be one of"):
        AlternatorModel(2, variant="alternator--")
