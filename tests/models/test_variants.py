"""The worked variant in docs/variants.md runs, and its three views agree."""

import math
import re
from pathlib import Path

import pytest
import torch

from tests.oracles import program_log_density

DOC = Path(__file__).resolve().parents[2] / "docs" / "variants.md"


@pytest.fixture(scope="module")
def example():
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    assert len(code.strip().splitlines()) <= 40
    namespace = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    return namespace


def test_example_trains_and_forecasts(example):
    history, draws = example["history"], example["draws"]
    assert len(history.train_loss) == 30 and history.train_loss[-1] < history.train_loss[0]
    assert draws.shape == (100, 4, 10, 2) and torch.isfinite(draws).all()


def test_student_t_variant_log_joint_equals_its_program(example):
    model = example["StudentTAlternator"](2, 3, df=3.0, hidden=(8,)).double()
    x = torch.randn(3, 7, 2, dtype=torch.float64)
    z = torch.randn(3, 8, 3, dtype=torch.float64)
    mask = torch.rand(3, 7, 2) > 0.3
    expected = program_log_density(model, x, z, mask)
    assert torch.allclose(model.log_joint(x, z, mask), expected, rtol=1e-12)
    # its observation factor really is Student-t (closed form, one entry)
    loc = model.x_loc(z[:1, :1])[0, 0, 0]
    scale, df, value = 0.3, 3.0, x[0, 0, 0]
    y = (value - loc) / scale
    closed = (
        math.lgamma(2.0)
        - math.lgamma(1.5)
        - 0.5 * math.log(df * math.pi)
        - math.log(scale)
        - 2.0 * torch.log1p(y**2 / df)
    )
    assert model.x_dist(z[:1, :1]).log_prob(x[:1, :1])[0, 0, 0].item() == pytest.approx(
        closed.item(), rel=1e-12
    )


def test_student_t_path_loss_is_scaled_negative_log_likelihood(example):
    model = example["StudentTAlternator"](2, 3, df=3.0, hidden=(8,)).double()
    x = torch.randn(2, 5, 2, dtype=torch.float64)
    z = torch.randn(2, 6, 3, dtype=torch.float64)
    x_dist = model.x_dist(z[:, :-1])
    z_dist = model.z_dist(x, z[:, :-1], torch.full((5, 1), 0.3, dtype=torch.float64))
    at_means = x_dist.log_prob(x_dist.mean).sum((1, 2)) + z_dist.log_prob(z_dist.mean).sum((1, 2))
    log_z0 = -0.5 * (z[:, 0] ** 2).sum(-1) - 1.5 * math.log(2 * math.pi)
    expected = -2 * 0.09 * 0.01 * (model.log_joint(x, z) - log_z0 - at_means)
    assert torch.allclose(model.path_loss(x, z), expected, rtol=1e-12)
