"""apply_noise re-creates a calibrated model from its training checkpoint and the report."""

import copy

import pytest
import torch

from alternators_ppl.inference import apply_noise, calibrate_noise, fit
from alternators_ppl.models import Alternator


def test_apply_noise_reproduces_the_calibrated_model():
    torch.manual_seed(0)
    x = torch.randn(6, 30, 2).cumsum(1) * 0.1
    model = Alternator(2, 2, hidden=(8,))
    fit(model, x[:4], epochs=3, batch_size=2, progress=False, calibrate=False)
    trained = copy.deepcopy(model)
    report = calibrate_noise(model, x[4:], num_particles=16, sweeps=1)
    assert report["sigma_x"] != [0.3, 0.3]
    apply_noise(trained, report)
    assert trained.sigma_x_values() == pytest.approx(model.sigma_x_values())
    assert trained.sigma_z == pytest.approx(model.sigma_z)
    assert trained.alpha_values == pytest.approx(model.alpha_values)
    for (name, a), b in zip(model.state_dict().items(), trained.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
    with pytest.raises(TypeError, match="Alternator"):
        apply_noise(torch.nn.Linear(2, 2), report)
