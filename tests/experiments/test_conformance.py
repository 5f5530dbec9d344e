"""Every model behind the SequenceModel interface passes the same conformance checks."""

import pyro
import pytest
import torch

from alternators_ppl.experiments.registry import ALTERNATOR_VARIANTS, MODEL_NAMES, build_model
from alternators_ppl.models import SequenceModel

OPTIONS = {
    "alternator": {"epochs": 2, "members": 2},  # an Ensemble choosing its timescales, smaller
    **{v: {"epochs": 2, "members": 2} for v in ALTERNATOR_VARIANTS},
    "dmm": {"epochs": 2},
    "kalman": {"em_iters": 2},
    "mamba": {"epochs": 2, "d_model": 8, "d_state": 4},
    "neural-ode": {"epochs": 2, "hidden": 8, "latent_dim": 3, "window": 20},
    "diffusion": {"epochs": 2, "num_steps": 8, "channels": 8, "layers": 3},
}


@pytest.fixture(scope="module")
def data():
    gen = torch.Generator().manual_seed(0)
    t = torch.arange(40, dtype=torch.float32)
    base = torch.stack([torch.sin(0.2 * t), torch.cos(0.2 * t)], -1)
    x = base + 0.1 * torch.randn(6, 40, 2, generator=gen)
    mask = torch.rand(6, 40, 2, generator=gen) > 0.3
    return x, mask


@pytest.fixture(scope="module", params=MODEL_NAMES)
def fitted(request, data):
    pyro.set_rng_seed(0)
    model = build_model(request.param, 2, **OPTIONS.get(request.param, {}))
    history = model.fit(data[0][:4], data[0][4:], seed=0, budget_s=5.0)
    return model, history


def test_is_a_sequence_model_with_json_history(fitted):
    import json

    model, history = fitted
    assert isinstance(model, SequenceModel) and model.name in MODEL_NAMES
    json.dumps(history)


def test_forecast_shapes_and_finiteness(fitted, data):
    model, _ = fitted
    draws = model.forecast(data[0][:3, :30], 5, 7)
    assert draws.shape == (7, 3, 5, 2) and torch.isfinite(draws).all()


def test_impute_keeps_observed_entries_and_ignores_masked_values(fitted, data):
    model, _ = fitted
    x, mask = data
    outputs = []
    for filler in (0.0, 1e3):
        pyro.set_rng_seed(1)
        outputs.append(model.impute(torch.where(mask, x, filler), mask, 4))
    draws = outputs[0]
    assert draws.shape == (4, 6, 40, 2) and torch.isfinite(draws).all()
    assert torch.equal(draws[:, mask], x[mask].expand(4, -1))
    assert torch.allclose(outputs[0], outputs[1])


def test_sample_shape(fitted):
    model, _ = fitted
    draws = model.sample(3, 25)
    assert draws.shape == (3, 25, 2) and torch.isfinite(draws).all()


def test_log_likelihood_where_exact(fitted, data):
    model, _ = fitted
    if model.has_exact_likelihood or model.has_likelihood_estimate:  # alternators: SMC
        log_p = model.log_likelihood(data[0])
        assert log_p.shape == (6,) and torch.isfinite(log_p).all()
    else:
        with pytest.raises(NotImplementedError):
            model.log_likelihood(data[0])


def test_bad_arguments_are_named(fitted, data):
    model, _ = fitted
    with pytest.raises(ValueError, match="horizon"):
        model.forecast(data[0], 0, 2)
    with pytest.raises(ValueError, match="num_samples"):
        model.impute(data[0], None, 0)
    with pytest.raises((ValueError, TypeError), match="x"):
        model.impute(data[0][0], None, 2)


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("transformer", 2)
