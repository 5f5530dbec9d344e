"""The ensemble is a uniform mixture: draws shared out evenly, the mixture's likelihood, the
members' seeds; checked against stand-in members whose laws are known in closed form."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from alternators_ppl.models import Ensemble, SequenceModel
from alternators_ppl.models.ensemble import share_draws


class Shifted(SequenceModel):
    """x_t,d ~ N(mu, 1) i.i.d., mu = the seed it was fitted with (a stand-in member)."""

    name = "shifted"
    has_exact_likelihood = True

    def __init__(self):
        self.mu = None

    def fit(self, x_train, x_val=None, *, seed=0, budget_s=None):
        self.mu = float(seed)
        return {"epochs_run": 1, "steps": 3, "chosen": {"mu": self.mu}}

    def forecast(self, x_context, horizon, num_samples):
        shape = (num_samples, x_context.shape[0], horizon, x_context.shape[-1])
        return self.mu + torch.randn(shape)

    def impute(self, x, mask, num_samples):
        return torch.where(torch.isnan(x), self.mu, x).expand(num_samples, *x.shape).clone()

    def sample(self, num_samples, num_steps):
        return self.mu + torch.randn(num_samples, num_steps, 1)

    def log_likelihood(self, x, mask=None):
        return torch.distributions.Normal(self.mu, 1.0).log_prob(x).sum((1, 2))


def test_draws_are_shared_out_evenly_in_a_random_order():
    assert share_draws(8, 3) == [3, 3, 2] and share_draws(2, 5) == [1, 1, 0, 0, 0]
    ensemble = Ensemble(Shifted, members=3)
    ensemble.fit(torch.zeros(2, 5, 1), seed=0)  # members' mu = 0, 1, 2
    torch.manual_seed(0)
    draws = ensemble.impute(torch.full((1, 4, 1), math.nan), None, 300)
    values = draws[:, 0, 0, 0]
    assert draws.shape == (300, 1, 4, 1)
    assert [int((values == k).sum()) for k in range(3)] == [100, 100, 100]
    assert not torch.equal(values, values.sort().values)  # not member after member
    forecasts = ensemble.forecast(torch.zeros(2, 5, 1), 3, 3000)
    assert abs(float(forecasts.mean()) - 1.0) < 0.05  # the mixture's mean
    # the mixture's variance: within-member 1 plus between-member 2/3
    assert abs(float(forecasts.var()) - (1 + 2 / 3)) < 0.1


def test_members_are_fitted_from_distinct_seeds_and_recorded():
    ensemble = Ensemble(Shifted, members=4)
    history = ensemble.fit(torch.zeros(2, 5, 1), seed=2)
    assert [m.mu for m in ensemble.members] == [8.0, 9.0, 10.0, 11.0]  # 4 * 2 + k
    assert history["chosen"]["member_seeds"] == [8, 9, 10, 11]
    assert history["chosen"]["per_member"][0] == {"mu": 8.0}
    assert history["epochs_run"] == 4 and history["steps"] == 12


def test_log_likelihood_is_the_mixtures():
    ensemble = Ensemble(Shifted, members=2)
    ensemble.fit(torch.zeros(1, 3, 1), seed=0)  # mu = 0 and 1
    assert ensemble.has_exact_likelihood
    x = torch.tensor([[[0.3], [1.2], [-0.4]], [[2.0], [1.5], [0.9]]], dtype=torch.float64)
    got = ensemble.log_likelihood(x)
    for b in range(2):  # scipy, per sequence: log(0.5 prod N(x; 0, 1) + 0.5 prod N(x; 1, 1))
        dens = [np.prod(stats.norm(mu, 1).pdf(x[b, :, 0].numpy())) for mu in (0.0, 1.0)]
        assert float(got[b]) == pytest.approx(np.log(0.5 * dens[0] + 0.5 * dens[1]), rel=1e-10)


def test_bad_member_count_is_named():
    with pytest.raises(ValueError, match="members"):
        Ensemble(Shifted, members=0)
    with pytest.raises(ValueError, match="num_samples"):
        Ensemble(Shifted, members=2).forecast(torch.zeros(1, 2, 1), 2, 0)
