"""Differenced: a model of the increments, forecasts and imputations in levels, against closed
forms (linear extrapolation, linear interpolation, the Brownian bridge's variance)."""

import pytest
import torch

from alternators_ppl.models import Persistence
from alternators_ppl.models.differenced import Differenced
from alternators_ppl.models.interface import SequenceModel
from alternators_ppl.models.naive import linear_interpolation


class _Increments(SequenceModel):
    """Stand-in model of the increments: records what fit saw; imputes a missing increment by
    0 (``noise=False``) or by an independent N(0, 1) draw."""

    name = "increments"

    def __init__(self, noise: bool = False):
        self.noise, self.seen = noise, None

    def fit(self, x_train, x_val=None, *, seed=0, budget_s=None):
        self.seen = (x_train, x_val)
        return {}

    def forecast(self, x_context, horizon, num_samples):
        raise NotImplementedError

    def impute(self, x, mask, num_samples):
        x = torch.as_tensor(x, dtype=torch.float64)
        fill = torch.randn(num_samples, *x.shape, dtype=torch.float64) if self.noise else 0.0
        return torch.where(torch.isnan(x), fill, x.expand(num_samples, *x.shape))

    def sample(self, num_samples, num_steps):
        return torch.ones(num_samples, num_steps, 1, dtype=torch.float64)


def test_fit_sees_increments_and_forecasts_sum_them_from_the_last_value():
    x = torch.tensor([[[1.0, 10.0], [3.0, 9.0], [4.0, float("nan")]]], dtype=torch.float64)
    inner = _Increments()
    Differenced(inner).fit(x, x)
    expected = torch.tensor([[[2.0, -1.0], [1.0, float("nan")]]], dtype=torch.float64)
    torch.testing.assert_close(inner.seen[0], expected, equal_nan=True)
    # persistence of the increments = linear extrapolation from the last observed level
    model = Differenced(Persistence())
    train = torch.arange(20, dtype=torch.float64).reshape(1, 20, 1).repeat(1, 1, 2)
    model.fit(train)
    # the last level of dimension 1 is missing: its path starts from the last observed one
    context = torch.tensor([[[0.0, 5.0], [2.0, 4.0], [4.0, float("nan")]]], dtype=torch.float64)
    draws = model.forecast(context, 3, 4)
    assert draws.shape == (4, 1, 3, 2)
    line = torch.tensor([[6.0, 3.0], [8.0, 2.0], [10.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(draws[:, 0].double(), line.expand(4, 3, 2))


def test_zero_increments_bridge_to_linear_interpolation():
    torch.manual_seed(0)
    x = torch.randn(2, 30, 3, dtype=torch.float64).cumsum(1)
    mask = torch.rand(2, 30, 3) > 0.4
    mask[:, 5] = True  # every dimension observed somewhere
    gappy = torch.where(mask, x, torch.nan)
    draws = Differenced(_Increments()).impute(gappy, None, 2)
    assert torch.equal(draws[:, mask], x[mask].expand(2, -1))
    for d in range(3):  # linear interpolation per dimension (its mask is per step)
        want = linear_interpolation(x[..., d : d + 1], mask[..., d])
        torch.testing.assert_close(draws[0, ..., d : d + 1], want)


def test_gap_draws_have_the_brownian_bridge_variance():
    """A random walk with N(0, 1) steps, known at steps 0 and 10: given both ends, step k of
    the gap has variance k (10 - k) / 10 (Brownian bridge), and its mean is on the line."""
    x = torch.full((1, 11, 1), float("nan"), dtype=torch.float64)
    x[0, 0, 0], x[0, 10, 0] = 0.0, 5.0
    torch.manual_seed(1)
    draws = Differenced(_Increments(noise=True)).impute(x, None, 40_000)[:, 0, :, 0]
    k = torch.arange(11, dtype=torch.float64)
    torch.testing.assert_close(draws.var(0), k * (10 - k) / 10, atol=0.05, rtol=0.03)
    torch.testing.assert_close(draws.mean(0), 0.5 * k, atol=0.03, rtol=0)


def test_bad_input():
    with pytest.raises(TypeError, match="SequenceModel"):
        Differenced(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="x_train"):
        Differenced(_Increments()).fit(torch.zeros(1, 1, 2))
    with pytest.raises(ValueError, match="x_context contains inf"):
        Differenced(_Increments()).forecast(torch.full((1, 3, 1), float("inf")), 2, 2)
    with pytest.raises(ValueError, match="observed value"):
        Differenced(_Increments()).impute(torch.full((1, 4, 1), float("nan")), None, 2)
