"""The Mamba decoder (selective SSM + Gaussian head) behind the decoder interface."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from alternators_ppl.inference.decoders import MambaDecoder
from alternators_ppl.models.decoders import Decoder, MambaDecoderNetwork

W = np.array([[1.0, -0.5], [0.3, 0.8], [-0.7, 0.2]])  # (Dx=3, Dz=2)


def _linear_data(seed: int, batch: int, steps: int, noise: float = 0.1):
    """x ~ N(0, 1) i.i.d., z_t = x_t W + noise: a map the decoder can learn exactly."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, steps, 3))
    return x, x @ W + noise * rng.normal(size=(batch, steps, 2))


def test_shapes_interface_and_draws():
    x, z = _linear_data(0, 2, 40)
    dec = MambaDecoder(d_model=8, epochs=2, window=16, num_samples=7).fit(x, z)
    assert isinstance(dec, Decoder) and dec.has_uncertainty
    assert dec.predict(x[:1, :25]).shape == (1, 25, 2)
    draws = dec.sample(x, num_samples=5)
    assert draws.shape == (5, 2, 40, 2) and np.isfinite(draws).all()
    assert dec.sample(x).shape[0] == 7
    assert dec.history.epochs_run == 2


def test_network_is_causal_and_loss_is_the_gaussian_nll():
    torch.manual_seed(0)
    net = MambaDecoderNetwork(3, 2, d_model=8).double()
    x = torch.randn(2, 20, 3, dtype=torch.float64)
    changed = x.clone()
    changed[:, 12:] += 5.0
    loc, scale = net(x)
    loc2, _ = net(changed)
    assert torch.allclose(loc[:, :12], loc2[:, :12], atol=1e-12)
    assert not torch.allclose(loc[:, 12:], loc2[:, 12:])
    z = torch.randn(2, 20, 2, dtype=torch.float64)
    by_hand = torch.log(scale) + 0.5 * ((z - loc) / scale) ** 2 + 0.5 * np.log(2 * np.pi)
    assert torch.allclose(net.loss(x, None, z), by_hand.mean(), atol=1e-12)


def test_learns_a_linear_map_on_held_out_data():
    x, z = _linear_data(1, 4, 200)
    x_test, z_test = _linear_data(2, 1, 300)
    dec = MambaDecoder(d_model=16, epochs=40, lr=1e-2, window=32, seed=0).fit(x, z)
    pred = dec.predict(x_test)
    r2 = 1 - ((pred - z_test) ** 2).sum((0, 1)) / ((z_test - z_test.mean((0, 1))) ** 2).sum((0, 1))
    assert np.all(r2 > 0.9), r2
    draws = dec.sample(x_test, num_samples=200)
    lo, hi = np.quantile(draws, [0.05, 0.95], axis=0)
    coverage = ((z_test >= lo) & (z_test <= hi)).mean()
    assert 0.7 < coverage < 0.99, coverage


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda d, x, z: d.predict(x), "not fitted"),
        (lambda d, x, z: d.fit(x[:, :, :2][:, :10], z), "must share"),
        (lambda d, x, z: d.fit(x[0], z), "x_train must have shape"),
        (lambda d, x, z: d.fit(np.where(x > 2, np.nan, x), z), "x_train must be finite"),
        (lambda d, x, z: d.fit(x, z).predict(x[..., :2]), "x must have last dimension 3"),
        (lambda d, x, z: d.fit(x, z).sample(x, num_samples=0), "num_samples"),
    ],
)
def test_bad_input_is_a_one_line_error(call, message):
    x, z = _linear_data(3, 1, 40)
    with pytest.raises(ValueError, match=message):
        call(MambaDecoder(d_model=4, epochs=1, window=16), x, z)
    with pytest.raises(ValueError, match="z_target is required"):
        MambaDecoderNetwork(3, 2).loss(torch.zeros(1, 4, 3))


def test_decode_command_selects_the_mamba_decoder(tmp_path):
    from alternators_ppl.cli import main

    argv = ["decode", "lorenz-paper", "--quick", "--models", "wiener,mamba"]
    argv += ["--runs-dir", str(tmp_path), "--name", "m"]
    assert main(argv) == 0
    out = json.loads((tmp_path / "m" / "decoding.json").read_text())
    row = out["per_seed"]["mamba"][0]
    assert len(row["r2"]) == 3 and len(row["coverage_90"]) == 3 and row["train_s"] > 0
    assert "| mamba |" in (tmp_path / "m" / "decoding.md").read_text()
