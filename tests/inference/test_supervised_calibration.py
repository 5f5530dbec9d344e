"""calibrate_supervised: noise of a supervised fit chosen with z observed (issues 13, 15).

Oracles: data simulated from a linear Alternator with known noise (the MLE recovers it within
sampling error; the model's own ``log_joint`` is maximal there), and the 90% coverage of the
true latent path by the calibrated SMC smoothing posterior.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from alternators_ppl.inference import fit
from alternators_ppl.inference.supervised_calibration import (
    _Noise,
    calibrate_supervised,
    supervised_noise_mle,
)
from alternators_ppl.models import Alternator
from alternators_ppl.models.smc import smoothing_paths
from tests.oracles import linear_alternator

SIGMA_X, SIGMA_Z, ALPHA = (0.15, 0.4, 0.7), 0.25, 0.5


def _truth(obs_dim=3, latent_dim=2, sigma_x=SIGMA_X, seed=0) -> Alternator:
    torch.manual_seed(seed)
    model = linear_alternator(obs_dim, latent_dim)
    model.set_noise(sigma_x=list(sigma_x), sigma_z=SIGMA_Z, alpha=ALPHA)
    return model


def _simulate(model, batch, steps, seed):
    torch.manual_seed(seed)
    draw = model.sample(batch, steps)
    return draw["x"], draw["z"]  # (B, T, Dx), (B, T+1, Dz)


def _with_noise(truth, sigma_x: float, sigma_z: float) -> Alternator:
    """The truth's means with other noise, rescaled by hand (not through the code tested)."""
    start = copy.deepcopy(truth)
    otn, ftn = start.otn.layers[-1], start.ftn.layers[-1]
    true_x = torch.tensor(truth.sigma_x_values(), dtype=torch.float64)
    alpha = ALPHA + SIGMA_Z**2 - sigma_z**2
    gain_x = torch.sqrt(1 - true_x**2) / math.sqrt(1 - sigma_x**2)
    with torch.no_grad():
        otn.weight.mul_(gain_x.unsqueeze(-1))
        otn.bias.mul_(gain_x)
        ftn.weight.mul_(math.sqrt(ALPHA / alpha))
        ftn.bias.mul_(math.sqrt(ALPHA / alpha))
    start.set_noise(sigma_x=sigma_x, sigma_z=sigma_z, alpha=alpha)
    return start


def _pair_log_lik(model, x, z) -> float:
    """log p(x_2..T, z_2..T | z_1) by the model's own log_joint (z_1 of the span as z_0)."""
    with torch.no_grad():
        return float(model.log_joint(x[:, 1:], z).sum())


def test_mle_recovers_known_noise_and_keeps_means():
    truth = _truth()
    x, z = _simulate(truth, 40, 60, seed=1)
    z_obs = z[:, 1:]
    start = _with_noise(truth, 0.3, 0.1)
    x_loc = start.x_loc(z_obs[:, :-1])
    z_loc = start.z_loc(x[:, 1:], z_obs[:, :-1], start.alpha_schedule(1)[0])
    report = calibrate_supervised(start, x, z_obs, criterion="joint_mle")
    n = 40 * 59
    for est, true in zip(report["sigma_x"] + report["sigma_z"], SIGMA_X + (SIGMA_Z,) * 2,
                         strict=True):  # fmt: skip
        assert abs(est - true) < 4 * true / math.sqrt(2 * n), (est, true)
    sz2 = torch.tensor(report["sigma_z"], dtype=torch.float64) ** 2
    assert abs(report["alpha"] - (ALPHA + SIGMA_Z**2 - float(sz2.mean()))) < 1e-12
    assert report["alpha"] + float(sz2.max()) < 1
    # x's mean as trained, to rounding; z's drive sqrt(alpha) g(x) too, and each decay
    # moves only by the spread of sigma_z,d^2 about its mean (module docstring)
    torch.testing.assert_close(start.x_loc(z_obs[:, :-1]), x_loc)
    alpha = start.alpha_schedule(1)[0]
    decay = torch.sqrt(1 - alpha - sz2)
    torch.testing.assert_close(decay**2, 1 - ALPHA - SIGMA_Z**2 + sz2.mean() - sz2)
    old_decay = math.sqrt(1 - ALPHA - SIGMA_Z**2)
    drive = start.z_loc(x[:, 1:], torch.zeros_like(z_obs[:, :-1]), alpha)
    torch.testing.assert_close(drive, z_loc - old_decay * z_obs[:, :-1])
    # the weights return to the truth's (the noise and the scale of f, g are identified)
    for a, b in ((start.otn, truth.otn), (start.ftn, truth.ftn)):
        torch.testing.assert_close(a.layers[-1].weight, b.layers[-1].weight, atol=0.02, rtol=0)


def test_mle_is_the_maximum_of_the_models_own_log_joint():
    truth = _truth()
    x, z = _simulate(truth, 20, 40, seed=2)
    model = _with_noise(truth, 0.5, 0.05)
    calibrate_supervised(model, x, z[:, 1:], criterion="joint_mle")
    best = _pair_log_lik(model, x, z[:, 1:])
    noise = _Noise(model)
    sx, sz = noise.sigma_x.tolist(), noise.sigma_z
    # each sigma_x,d and each sigma_z,d moved by 3% either way lowers the log-likelihood
    for which, values in ((0, sx), (1, sz)):
        for d in range(len(values)):
            for factor in (0.97, 1.03):
                moved = [list(sx), list(sz)]
                moved[which][d] *= factor
                noise.apply(*moved)
                assert _pair_log_lik(model, x, z[:, 1:]) < best, (which, d, factor)
    noise.restore()
    assert abs(_pair_log_lik(model, x, z[:, 1:]) - best) < 1e-8
    mle = supervised_noise_mle(model, x, z[:, 1:])
    torch.testing.assert_close(torch.tensor(mle["sigma_x"]), torch.tensor(sx), rtol=1e-9, atol=0)


def _coverage(model, x, z, seed=5, per_coordinate=False):
    draws = smoothing_paths(model, x, None, 200, 300, seed=seed).z[:, :, 1:]
    lo, hi = draws.quantile(0.05, dim=0), draws.quantile(0.95, dim=0)
    inside = ((z >= lo) & (z <= hi)).double()
    return inside.mean((0, 1)).tolist() if per_coordinate else float(inside.mean())


def test_per_coordinate_latent_noise_covers_every_coordinate():
    """Latent coordinates with noise 0.3 and 0.08: one sigma_z for both covers neither (the
    first too narrow, the second too wide); the per-coordinate calibration covers each."""
    sigma_z = torch.tensor([0.3, 0.08], dtype=torch.float64)
    torch.manual_seed(0)
    truth = linear_alternator(2, 2)
    truth.set_noise(sigma_x=[0.3, 0.3], sigma_z=sigma_z, alpha=ALPHA)
    x, z = _simulate(truth, 30, 40, seed=3)
    x_val, z_val, x_test, z_test = x[:15], z[:15, 1:], x[15:], z[15:, 1:]
    one = copy.deepcopy(truth)
    one.set_noise(sigma_z=float(sigma_z.square().mean().sqrt()))
    low, high = _coverage(one, x_test, z_test, per_coordinate=True)
    assert low < 0.85 and high > 0.95, (low, high)
    shift = 0.006  # the truth's decays, the noise too small: sigma_z^2 - shift, alpha + shift
    model = copy.deepcopy(truth)
    model.set_noise(sigma_z=(sigma_z.square() - shift).sqrt(), alpha=ALPHA + shift)
    report = calibrate_supervised(model, x_val, z_val, num_particles=64, num_samples=32)
    assert report["sigma_z"][0] > 2 * report["sigma_z"][1], report["sigma_z"]
    for cover in _coverage(model, x_test, z_test, per_coordinate=True):
        assert 0.85 <= cover <= 0.95, (cover, report)


def test_calibrated_smc_posterior_covers_the_true_path():
    truth = _truth(2, 2, sigma_x=(0.3, 0.3))
    x, z = _simulate(truth, 30, 40, seed=3)
    x_val, z_val, x_test, z_test = x[:15], z[:15, 1:], x[15:], z[15:, 1:]
    model = _with_noise(truth, 0.05, 0.05)  # the means right, the noise overconfident
    before = _coverage(model, x_test, z_test)
    report = calibrate_supervised(model, x_val, z_val, num_particles=64, num_samples=32)
    after = _coverage(model, x_test, z_test)
    assert before < 0.7, before
    assert 0.85 <= after <= 0.95, (after, report)
    assert report["score_after"] <= report["score_before"]


@pytest.mark.parametrize("criterion", ["latent_dss", "latent_crps"])
def test_latent_score_tempers_correlated_features(criterion):
    """x holds each coordinate 4 times (perfectly correlated noise): the per-dimension MLE is
    right per dimension, but the diagonal likelihood counts each value 4 times and its
    posterior is too narrow; the latent score picks c_x near sqrt(4) = 2 and covers."""
    truth = _truth(2, 2, sigma_x=(0.5, 0.5))
    x, z = _simulate(truth, 30, 40, seed=4)
    copies = 4
    x4 = x.repeat_interleave(copies, dim=-1)
    model = Alternator(2 * copies, 2, sigma_x=0.5, sigma_z=SIGMA_Z, alpha=ALPHA,
                       otn=nn.Sequential(nn.Linear(2, 2 * copies)),
                       ftn=nn.Sequential(nn.Linear(2 * copies, 2))).double()  # fmt: skip
    with torch.no_grad():
        model.otn[0].weight.copy_(truth.otn.layers[0].weight.repeat_interleave(copies, 0))
        model.otn[0].bias.copy_(truth.otn.layers[0].bias.repeat_interleave(copies))
        model.ftn[0].weight.copy_(truth.ftn.layers[0].weight.repeat_interleave(copies, 1) / copies)
        model.ftn[0].bias.copy_(truth.ftn.layers[0].bias)
    x_val, z_val, x_test, z_test = x4[:15], z[:15, 1:], x4[15:], z[15:, 1:]
    mle_model = copy.deepcopy(model)
    calibrate_supervised(mle_model, x_val, z_val, criterion="joint_mle")
    report = calibrate_supervised(model, x_val, z_val, criterion=criterion, num_particles=64,
                                  num_samples=32)  # fmt: skip
    assert _coverage(mle_model, x_test, z_test) < 0.8
    assert 1.5 <= report["c_x"] <= 3.0, report["c_x"]
    assert 0.85 <= _coverage(model, x_test, z_test) <= 0.95


def test_fit_records_the_calibration_and_can_skip_it(tmp_path):
    truth = _truth()
    x, z = _simulate(truth, 1, 160, seed=6)
    z = z[:, 1:]
    settings = dict(epochs=2, batch_size=8, seed=0, progress=False, warmup_epochs=1)
    torch.manual_seed(0)
    model = Alternator(3, 2, hidden=(8,)).double()
    history = fit(model, x, z_train=z, checkpoint_dir=tmp_path, **settings)
    cal = history.calibration
    assert cal["criterion"] == "latent_dss"
    # infer_latents draws whichever of the calibrated posterior and the recursion decoded the
    # validation span better
    errors = cal["latent_errors"]
    assert model.latent_method == cal["latent_method"] == min(errors, key=errors.get)
    assert model.sigma_x_values() == pytest.approx(cal["sigma_x"])
    assert model.sigma_z_values() == pytest.approx(cal["sigma_z"])
    assert model.alpha_values[0] + max(model.sigma_z_values()) ** 2 < 1
    assert (tmp_path / "selection.json").read_text().count("latent_dss") == 1
    torch.manual_seed(0)
    plain = Alternator(3, 2, hidden=(8,)).double()
    history = fit(plain, x, z_train=z, calibrate=False, **settings)
    assert history.calibration is None and plain.sigma_x == 0.3
    assert plain.latent_method == "ancestral"


def test_bad_input():
    model = _truth()
    x, z = _simulate(model, 2, 10, seed=7)
    with pytest.raises(ValueError, match="criterion"):
        calibrate_supervised(model, x, z[:, 1:], criterion="nope")
    with pytest.raises(ValueError, match="z_val"):
        calibrate_supervised(model, x, z)
    with pytest.raises(ValueError, match="c_x"):
        calibrate_supervised(model, x, z[:, 1:], grids={"c_x": (0.0,)})
    odd = Alternator(3, 2, otn=nn.Sequential(nn.Linear(2, 3), nn.Tanh())).double()
    with pytest.raises(ValueError, match="linear output layer"):
        calibrate_supervised(odd, x, z[:, 1:])
    with pytest.raises(ValueError, match="calibrate=True"):
        fit(model, x, z_train=z[:, 1:], supervised="teacher-forcing", calibrate=True, epochs=1)


@pytest.mark.gpu
def test_calibrate_supervised_on_cuda():
    truth = _truth().to("cuda")
    x, z = _simulate(truth, 8, 30, seed=8)
    model = _with_noise(truth.cpu(), 0.3, 0.1).to("cuda")
    report = calibrate_supervised(model, x, z[:, 1:], num_particles=32, num_samples=16)
    assert model.sigma_x.device.type == "cuda" and model.sigma_z.device.type == "cuda"
    assert report["alpha"] + max(report["sigma_z"]) ** 2 < 1
    assert model.infer_latents(x, num_samples=4, method="smc").device.type == "cuda"


def test_latent_search_picks_a_multiplier_per_coordinate(monkeypatch):
    """With a stand-in posterior whose coordinate d has error sd e_d around z_val and spread
    sigma_z,d (so its Dawid-Sebastiani score is least at sigma_z,d = e_d), the search returns
    c_z,d = e_d / MLE_d for each coordinate: here 0.5 and 2, which no single c_z can give."""
    from alternators_ppl.inference import supervised_calibration as module
    from alternators_ppl.models.smc import SmoothingPaths

    truth = _truth()
    x, z = _simulate(truth, 12, 30, seed=9)
    z_val = z[:, 1:]
    model = _with_noise(truth, 0.3, 0.1)
    mle = torch.tensor(supervised_noise_mle(model, x, z_val)["sigma_z"], dtype=torch.float64)
    target = mle * torch.tensor([0.5, 2.0], dtype=torch.float64)
    sign = torch.where(torch.arange(30) % 2 == 0, 1.0, -1.0).double()  # error of rms 1 per step

    def stand_in(m, x, mask, num_samples, num_particles, seed):
        spread = torch.tensor(m.sigma_z_values(), dtype=torch.float64)
        noise = torch.randn(num_samples, *z_val.shape, generator=torch.Generator().manual_seed(0),
                            dtype=torch.float64)  # fmt: skip
        noise = (noise - noise.mean(0)) / noise.std(0)  # exactly mean 0, sd 1 per entry
        mean = z_val + sign[:, None] * target
        draws = mean + spread * noise
        z_full = torch.cat([draws[:, :, :1], draws], dim=2)
        return SmoothingPaths(z=z_full, x=None)

    monkeypatch.setattr(module, "smoothing_paths", stand_in)
    report = calibrate_supervised(model, x, z_val, grids={"c_x": (1.0,)}, max_sequences=None)
    assert report["c_z"] == [0.5, 2.0], report["c_z"]
    assert report["evaluations"] == 1 + 9 + 1  # c_x, every c_z, the per-coordinate choice
