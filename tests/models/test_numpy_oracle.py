"""The Alternator's log_joint and path_loss equal an independent numpy oracle (float64).

The oracle (tests/numpy_oracle.py) evaluates the networks from their weights and the equations
of DESIGN.md section 1 itself, so a wrong coefficient in ``x_loc``/``z_loc`` (e.g. alpha
instead of sqrt(alpha)) fails here even though the program and ``log_joint`` would still agree.
"""

import numpy as np
import pytest
import torch

from alternators_ppl.models import Alternator
from tests.numpy_oracle import log_joint_numpy, mlp_numpy, path_loss_numpy

B, T, DX, DZ = 3, 7, 3, 2
SCHEDULE = [0.15, 0.3, 0.45, 0.6, 0.2, 0.5, 0.35, 0.4, 0.25]  # longer than T


def _model(alpha, activation="tanh"):
    model = Alternator(
        DX, DZ, sigma_x=0.35, sigma_z=0.2, alpha=alpha, hidden=(6, 5), activation=activation
    ).double()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # weights away from the default init, biases non-zero
        for p in model.parameters():
            p.copy_(0.7 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


def _data(mask_kind):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(B, T, DX, generator=gen, dtype=torch.float64)
    z = torch.randn(B, T + 1, DZ, generator=gen, dtype=torch.float64)
    mask = {
        "none": None,
        "bt": torch.rand(B, T, generator=gen) > 0.4,
        "btd": torch.rand(B, T, DX, generator=gen) > 0.4,
    }[mask_kind]
    return x, z, mask


def _oracle_args(model):
    return model.otn, model.ftn, model.sigma_x, model.sigma_z, model.alpha_values


@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu", "silu", "elu"])
def test_numpy_mlp_equals_torch(activation):
    model = _model(0.3, activation)
    x = torch.randn(4, 5, DX, dtype=torch.float64)
    np.testing.assert_allclose(
        mlp_numpy(model.ftn, x.numpy()), model.ftn(x).detach().numpy(), rtol=1e-12, atol=1e-14
    )


@pytest.mark.parametrize("alpha", [0.3, SCHEDULE], ids=["constant", "schedule"])
@pytest.mark.parametrize("mask_kind", ["none", "bt", "btd"])
def test_log_joint_equals_numpy_oracle(alpha, mask_kind):
    model = _model(alpha)
    x, z, mask = _data(mask_kind)
    expected = log_joint_numpy(
        *_oracle_args(model), x.numpy(), z.numpy(), None if mask is None else mask.numpy()
    )
    got = model.log_joint(x, z, mask).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("alpha", [0.3, SCHEDULE], ids=["constant", "schedule"])
@pytest.mark.parametrize("mask_kind", ["none", "bt", "btd"])
def test_path_loss_equals_numpy_oracle(alpha, mask_kind):
    model = _model(alpha)
    x, z, mask = _data(mask_kind)
    expected = path_loss_numpy(
        *_oracle_args(model), x.numpy(), z.numpy(), None if mask is None else mask.numpy()
    )
    got = model.path_loss(x, z, mask).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_oracle_sees_the_schedule_order():
    """A schedule applied in the wrong order (or a constant in its place) would differ."""
    model = _model(SCHEDULE)
    x, z, _ = _data("none")
    args = list(_oracle_args(model))
    right = log_joint_numpy(*args, x.numpy(), z.numpy())
    args[-1] = tuple(reversed(SCHEDULE[:T]))
    wrong = log_joint_numpy(*args, x.numpy(), z.numpy())
    assert np.abs(right - wrong).max() > 1e-3
