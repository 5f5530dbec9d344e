"""Alternator++: the program matches its equations; the loss is Eq. 12 plus noise matching."""

import math

import pyro
import pytest
import torch

from alternators_ppl.models.alternator_pp import AlternatorPlusPlus
from tests.oracles import program_log_density


def make_model(**kwargs):
    return AlternatorPlusPlus(3, 2, hidden=(8,), noise_hidden=(8,), beta=0.6, **kwargs).double()


def test_means_follow_the_equations():
    model = make_model(sigma_x=0.3, sigma_z=0.2, alpha=0.4)
    z = torch.randn(5, 2, dtype=torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64)
    x_mean = math.sqrt(0.6) * model.otn(z) + math.sqrt(1 - 0.6 - 0.09) * model.eps_psi(z)
    assert torch.allclose(model.x_loc(z), x_mean, rtol=1e-14)
    alpha = torch.tensor(0.4, dtype=torch.float64)
    noise = model.eps_nu(torch.cat([z, x], -1))
    z_mean = math.sqrt(0.4) * model.ftn(x) + math.sqrt(1 - 0.4 - 0.04) * noise
    assert torch.allclose(model.z_loc(x, z, alpha), z_mean, rtol=1e-14)


@pytest.mark.parametrize("masked", [False, True])
def test_log_joint_equals_the_pyro_program(masked):
    model = make_model()
    x = torch.randn(3, 6, 3, dtype=torch.float64)
    z = torch.randn(3, 7, 2, dtype=torch.float64)
    mask = torch.rand(3, 6, 3) > 0.3 if masked else None
    expected = program_log_density(model, x, z, mask)
    assert torch.allclose(model.log_joint(x, z, mask), expected, rtol=1e-12)


def test_rollout_steps_through_time_and_matches_the_reference():
    model = make_model()
    x = torch.randn(2, 9, 3, dtype=torch.float64)
    paths = []
    for parallel in (True, False):
        pyro.set_rng_seed(3)
        paths.append(model.rollout(x, parallel=parallel)[0])
    assert torch.equal(paths[0], paths[1])
    # the path follows the ++ recursion with the drawn noise
    z = paths[0]
    alpha = torch.tensor(0.3, dtype=torch.float64)
    residual = z[:, 1:] - model.z_loc(x, z[:, :-1], alpha)
    assert residual.std().item() == pytest.approx(0.1, rel=0.3)


def test_loss_is_eq12_plus_noise_matching_on_the_drawn_path():
    model = make_model(noise_weight=0.7)
    x = torch.randn(4, 5, 3, dtype=torch.float64)
    pyro.set_rng_seed(5)
    loss = model.loss(x)
    pyro.set_rng_seed(5)
    z, x_read = model.rollout(x)
    eq12 = model.path_loss(x, z).mean() / 5
    # x-target in eps_psi's own units, 1 / sqrt(1 - beta - sigma_x^2) (Eq. 12's x-term); a
    # drawn latent path gets no z-target (its residual is the model's own noise)
    r_x = (x - math.sqrt(0.6) * model.otn(z[:, :-1])) / math.sqrt(1 - 0.6 - 0.09)
    matching = ((model.eps_psi(z[:, :-1]) - r_x) ** 2).mean()
    assert loss.item() == pytest.approx((eq12 + 0.7 * matching).item(), rel=1e-10)


def test_supervised_loss_adds_the_z_target_in_eps_nus_units():
    model = make_model(noise_weight=0.7)
    x = torch.randn(4, 5, 3, dtype=torch.float64)
    z_target = torch.randn(4, 5, 2, dtype=torch.float64)
    pyro.set_rng_seed(5)
    loss = model.loss(x, z_target=z_target)
    pyro.set_rng_seed(5)
    z = model.rollout(x, z_target=z_target)[0]
    assert torch.equal(z[:, 1:], z_target)
    eq12 = model.path_loss(x, z).mean() / 5
    r_x = (x - math.sqrt(0.6) * model.otn(z[:, :-1])) / math.sqrt(1 - 0.6 - 0.09)
    r_z = (z[:, 1:] - math.sqrt(0.3) * model.ftn(x)) / math.sqrt(1 - 0.3 - 0.01)
    matching = ((model.eps_psi(z[:, :-1]) - r_x) ** 2).mean()
    matching = matching + ((model.eps_nu(torch.cat([z[:, :-1], x], -1)) - r_z) ** 2).mean()
    assert loss.item() == pytest.approx((eq12 + 0.7 * matching).item(), rel=1e-10)


def test_invalid_beta():
    with pytest.raises(ValueError, match="beta"):
        AlternatorPlusPlus(3, 2, beta=0.95, sigma_x=0.3)


def test_lorenz_job_trains_the_variant_from_the_cli(tmp_path, capsys):
    import json

    from alternators_ppl.cli import main

    assert (
        main(
            [
                "lorenz",
                "--quick",
                "--model",
                "alternator++",
                "--runs-dir",
                str(tmp_path),
                "--name",
                "pp",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "pp" / "config.json").read_text())["model"] == "alternator++"
    state = torch.load(
        tmp_path / "pp" / "checkpoints" / "forecaster" / "best.pt", weights_only=True
    )["model"]
    assert any(key.startswith("eps_nu.") for key in state)
    with pytest.raises(SystemExit):
        main(["lorenz", "--quick", "--model", "transformer"])
    assert "invalid choice" in capsys.readouterr().err
