"""Per-dimension validation shrinkage (inference/shrinkage.py) and its use by the default
supervised fit and the GRU decoder: an undecodable behaviour dimension falls back to its mean."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alternators_ppl.inference import fit
from alternators_ppl.inference.decoders import GRUDecoder
from alternators_ppl.inference.shrinkage import shrink_alternator, shrink_linear, shrinkage_factors
from alternators_ppl.models import Alternator


def test_shrinkage_factors_are_the_clipped_least_squares_slope():
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(2, 50, 3))
    centre = np.array([0.5, -1.0, 2.0])
    slopes_true = np.array([0.4, -1.0, 3.0])
    target = centre + slopes_true * (pred - centre) + 0.1 * rng.normal(size=pred.shape)
    target[0, 3, 0] = np.nan  # ignored
    gains = shrinkage_factors(torch.tensor(pred), torch.tensor(target), torch.tensor(centre))
    slopes = []
    for d in range(3):
        p, t = pred[..., d].ravel() - centre[d], target[..., d].ravel() - centre[d]
        ok = np.isfinite(t)
        slopes.append(np.linalg.lstsq(p[ok, None], t[ok], rcond=None)[0][0])
    np.testing.assert_allclose(gains.numpy(), np.clip(slopes, 0, 1), rtol=1e-10)
    assert 0.3 < slopes[0] < 0.5 and slopes[1] < 0 and slopes[2] > 1  # all three cases hit
    with pytest.raises(ValueError, match="target"):
        shrinkage_factors(torch.zeros(4, 2), torch.zeros(4, 3), torch.zeros(2))


def test_shrink_linear_mixes_outputs_with_the_target():
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(10, 4)
    before = layer(x).detach()
    gains, target = torch.tensor([1.0, 0.25, 0.0]), torch.tensor([0.0, 2.0, -3.0])
    shrink_linear(layer, gains, target)
    torch.testing.assert_close(layer(x).detach(), gains * before + (1 - gains) * target)
    with pytest.raises(TypeError, match="layer"):
        shrink_linear(torch.nn.Tanh(), gains, target)


def test_shrink_alternator_moves_the_decoded_path_to_c_z_plus_one_minus_c_m():
    torch.manual_seed(0)
    model = Alternator(3, 2, sigma_z=1e-6, alpha=0.6, hidden=(8,)).double()
    x = torch.randn(1, 120, 3, dtype=torch.float64)

    def decoded():  # the mean of the draws shrink_alternator scores (seed 0, 8 draws)
        torch.manual_seed(0)
        return model.infer_latents(x, num_samples=8)[:, 0, 1:].mean(0, keepdim=True)

    before = decoded()
    centre = torch.tensor([0.3, -0.2], dtype=torch.float64)
    # dimension 0: the truth is the decoded path (gain 1); dimension 1: unrelated noise
    z_val = torch.stack([before[..., 0], centre[1] + 0.01 * torch.randn(1, 120)], -1)
    gains = shrink_alternator(model, x, z_val, centre)
    after = decoded()
    expected = gains * before + (1 - gains) * centre
    assert gains[0] == pytest.approx(1.0, abs=1e-6) and gains[1] < 0.1
    # after the start (decay 0.63 per step) has faded, the shrunk path is exactly that mix
    torch.testing.assert_close(after[:, 60:], expected[:, 60:], atol=1e-5, rtol=0)


def _noise_dimension_data(seed=0, steps=600, features=30):
    """x (1, T, features); z[..., 0] a linear read-out of x_t, z[..., 1] independent noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(1, steps, features))
    signal = x[..., :3].sum(-1) / np.sqrt(3)
    z = np.stack([signal, rng.normal(size=(1, steps))], -1)
    return x.astype(np.float32), z.astype(np.float32)


def test_default_supervised_fit_shrinks_an_undecodable_dimension():
    x, z = _noise_dimension_data()
    torch.manual_seed(0)
    model = Alternator(30, 2, hidden=(32,))
    # calibrate=False isolates the shrinkage (the noise calibration widens the draws, and 8 of
    # them then scatter around the shrunk mean)
    hist = fit(model, x[:, :450], z_train=z[:, :450], epochs=15, progress=False, seed=0,
               calibrate=False)  # fmt: skip
    assert hist.shrinkage is not None and len(hist.shrinkage) == 2
    assert hist.shrinkage[0] > 0.8 and hist.shrinkage[1] < 0.5
    draws = model.infer_latents(torch.as_tensor(x[:, 450:]), num_samples=8)[:, :, 1:]
    pred, truth = draws.mean(0)[0].numpy(), z[0, 450:]
    r2 = 1 - ((pred - truth) ** 2).sum(0) / ((truth - truth.mean(0)) ** 2).sum(0)
    assert r2[0] > 0.7 and r2[1] > -0.05  # held out: the noise dimension is near its mean


def test_gru_decoder_is_not_stopped_by_an_undecodable_dimension():
    x, z = _noise_dimension_data(seed=1, features=12)
    gru = GRUDecoder(hidden=16, epochs=40, patience=10, lr=1e-2, seed=0)
    gru.fit(x[:, :450], z[:, :450])
    assert gru.shrinkage.shape == (2,) and gru.shrinkage[1] < 0.5
    pred, truth = gru.predict(x[:, 450:])[0], z[0, 450:]
    r2 = 1 - ((pred - truth) ** 2).sum(0) / ((truth - truth.mean(0)) ** 2).sum(0)
    assert r2[0] > 0.7 and r2[1] > -0.05


def test_gru_decoder_on_place_cells_keeps_position_and_drops_velocity():
    from alternators_ppl.data.ratinabox_cells import ratinabox_task

    try:
        task = ratinabox_task(seed=0, max_bins=1200)
    except ImportError as err:  # the data extra is not installed
        pytest.skip(f"ratinabox data not available: {err}")
    gru = GRUDecoder(hidden=32, epochs=40, patience=10, seed=0).fit(
        task.x_train, task.z_train, task.x_val, task.z_val
    )
    pred, truth = gru.predict(task.x_test)[0], task.z_test[0]
    r2 = 1 - ((pred - truth) ** 2).sum(0) / ((truth - truth.mean(0)) ** 2).sum(0)
    assert np.all(r2[:2] > 0.3) and np.all(r2[2:] > -0.05)  # position decoded, velocity ~ mean
