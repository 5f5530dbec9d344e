"""The Alternator program, its vectorised log-density, Eq. 12 and the batched samplers."""

import math

import pyro
import pytest
import torch
from pyro import poutine
from torch import nn

from alternators_ppl.models import Alternator
from tests.oracles import program_log_density


def make_model(obs_dim=3, latent_dim=2, alpha=0.3, **kwargs):
    return Alternator(obs_dim, latent_dim, alpha=alpha, hidden=(16,), **kwargs).double()


def random_mask(batch, steps, dim, per_entry, generator_seed=1):
    gen = torch.Generator().manual_seed(generator_seed)
    shape = (batch, steps, dim) if per_entry else (batch, steps)
    return torch.rand(shape, generator=gen) > 0.3


@pytest.mark.parametrize(
    "batch,steps,obs_dim,latent_dim", [(1, 1, 1, 1), (4, 7, 3, 2), (3, 12, 5, 4)]
)
@pytest.mark.parametrize("mask_kind", [None, "steps", "entries"])
@pytest.mark.parametrize("alpha", [0.3, "schedule"])
def test_log_joint_equals_pyro_trace(batch, steps, obs_dim, latent_dim, mask_kind, alpha):
    if alpha == "schedule":
        alpha = torch.linspace(0.1, 0.9, steps + 3).tolist()
    model = make_model(obs_dim, latent_dim, alpha=alpha)
    x = torch.randn(batch, steps, obs_dim, dtype=torch.float64)
    z = torch.randn(batch, steps + 1, latent_dim, dtype=torch.float64)
    mask = None if mask_kind is None else random_mask(batch, steps, obs_dim, mask_kind == "entries")
    expected = program_log_density(model, x, z, mask)
    assert torch.allclose(model.log_joint(x, z, mask), expected, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("sigma_z", [(0.2, 0.2), (0.2, 0.45)])
def test_log_joint_closed_form_for_linear_networks(sigma_z):
    per_coordinate = sigma_z[0] != sigma_z[1]
    model = Alternator(
        2, 2, sigma_x=0.5, sigma_z=sigma_z if per_coordinate else sigma_z[0], alpha=0.4,
        otn=nn.Identity(), ftn=nn.Identity(),
    )
    model = model.double()
    assert model.sigma_z_per_dim == per_coordinate
    x = torch.tensor([[[1.0, -1.0]]], dtype=torch.float64)
    z = torch.tensor([[[0.5, 0.0], [0.2, 0.3]]], dtype=torch.float64)
    sx2, a = 0.25, 0.4

    def log_normal(value, mean, var):
        return -0.5 * ((value - mean) ** 2 / var + math.log(2 * math.pi * var))

    expected = 0.0
    for d in range(2):
        sz2 = model.sigma_z_values()[d] ** 2  # a stored (Dz,) buffer keeps float32 rounding
        expected += log_normal(z[0, 0, d].item(), 0.0, 1.0)
        expected += log_normal(x[0, 0, d].item(), math.sqrt(1 - sx2) * z[0, 0, d].item(), sx2)
        mean = math.sqrt(a) * x[0, 0, d].item() + math.sqrt(1 - a - sz2) * z[0, 0, d].item()
        expected += log_normal(z[0, 1, d].item(), mean, sz2)
    assert model.log_joint(x, z).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("sigma_z", [0.15, (0.15, 0.3)])
@pytest.mark.parametrize("mask_kind", [None, "entries"])
def test_path_loss_is_scaled_negative_log_joint(mask_kind, sigma_z):
    model = make_model(sigma_x=0.4, sigma_z=sigma_z)
    batch, steps = 3, 9
    x = torch.randn(batch, steps, 3, dtype=torch.float64)
    z = torch.randn(batch, steps + 1, 2, dtype=torch.float64)
    mask = None if mask_kind is None else random_mask(batch, steps, 3, True)
    observed = torch.ones_like(x) if mask is None else mask.double()
    sx2 = 0.4**2
    sz2 = torch.tensor(model.sigma_z_values(), dtype=torch.float64).square()  # as stored
    log_z0 = -0.5 * (z[:, 0] ** 2).sum(-1) - 0.5 * 2 * math.log(2 * math.pi)
    const = 0.5 * observed.sum((1, 2)) * math.log(2 * math.pi * sx2)
    const = const + 0.5 * steps * torch.log(2 * math.pi * sz2).sum()
    neg_log_p = -(model.log_joint(x, z, mask) - log_z0) - const
    scale = 2 * sx2 * sz2.mean()  # the squares averaged over coordinates (eq12_scale)
    assert torch.allclose(model.path_loss(x, z, mask), scale * neg_log_p, rtol=1e-12)


def test_supervised_loss_uses_observed_latents():
    model = make_model()
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    z_target = torch.randn(4, 6, 2, dtype=torch.float64)
    pyro.set_rng_seed(3)
    loss = model.loss(x, z_target=z_target)
    pyro.set_rng_seed(3)
    z0 = torch.randn(4, 2, dtype=torch.float64)
    z = torch.cat([z0.unsqueeze(1), z_target], dim=1)
    assert loss.item() == pytest.approx(model.path_loss(x, z).mean().item() / 6, rel=1e-12)


@pytest.mark.parametrize("ftn_input", ["conditioned", "generative"])
def test_loss_scores_the_path_the_sampler_draws(ftn_input):
    model = make_model(ftn_input=ftn_input)
    x = torch.randn(4, 8, 3, dtype=torch.float64)
    pyro.set_rng_seed(5)
    loss = model.loss(x)
    pyro.set_rng_seed(5)
    mask = torch.ones_like(x, dtype=torch.bool)
    z, x_ftn = model.rollout(x, mask)
    # the z-term scores g on the data (DESIGN.md section 1): what the FTN read in the
    # conditioned reading; in the generative reading the draws made z, the data are scored
    if ftn_input == "conditioned":
        assert torch.equal(x_ftn, x)
    else:
        assert not torch.allclose(x_ftn, x)
    assert loss.item() == pytest.approx(model.path_loss(x, z, x_ftn=x).mean().item() / 8)
    if (
        ftn_input == "conditioned"
    ):  # the z-term is sigma_x^2 ||z_t - mean||^2 = sigma_x^2 sigma_z^2 ||eps||^2
        z_term = model.path_loss(x, z) - model.sigma_z**2 * ((x - model.x_loc(z[:, :-1])) ** 2).sum(
            (1, 2)
        )
        pyro.set_rng_seed(5)
        torch.randn(4, 2, dtype=torch.float64), torch.randn_like(x)
        eps = torch.randn(4, 8, 2, dtype=torch.float64)
        expected = 0.3**2 * 0.1**2 * (eps**2).sum((1, 2))
        assert torch.allclose(z_term, expected, rtol=1e-10)


@pytest.mark.parametrize("sigma_z", [0.1, (0.1, 0.3)])
@pytest.mark.parametrize("mask_kind", [None, "steps", "entries", "tail"])
@pytest.mark.parametrize("ftn_input", ["conditioned", "generative"])
def test_parallel_rollout_equals_step_by_step_reference(mask_kind, ftn_input, sigma_z):
    model = make_model(alpha=[0.2 + 0.01 * t for t in range(40)], sigma_z=sigma_z)
    x = torch.randn(3, 40, 3, dtype=torch.float64, requires_grad=True)
    if mask_kind == "tail":
        mask = torch.ones(3, 40, dtype=torch.bool)
        mask[:, 30:] = False
    else:
        mask = None if mask_kind is None else random_mask(3, 40, 3, mask_kind == "entries")
    paths = []
    for parallel in (True, False):
        pyro.set_rng_seed(7)
        z, x_read = model.rollout(x, mask, ftn_input=ftn_input, parallel=parallel)
        inputs = [x, *model.parameters()]
        grads = torch.autograd.grad(z.square().sum() + x_read.sum(), inputs, allow_unused=True)
        grads = [
            torch.zeros_like(i) if g is None else g for i, g in zip(inputs, grads, strict=True)
        ]
        paths.append((z, x_read, grads))
    (z_par, x_par, g_par), (z_seq, x_seq, g_seq) = paths
    assert torch.allclose(z_par, z_seq, rtol=1e-10, atol=1e-12)
    assert torch.allclose(x_par, x_seq, rtol=1e-10, atol=1e-12)
    for got, want in zip(g_par, g_seq, strict=True):
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-12)


def test_loss_and_gradients_equal_a_plain_step_by_step_reference():
    model = make_model(alpha=[0.2 + 0.08 * t for t in range(6)])
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    pyro.set_rng_seed(11)
    loss = model.loss(x)
    fast = torch.autograd.grad(loss, list(model.parameters()))
    # reference: the recursion written out with the same draws (z_0, x noise, z noise)
    pyro.set_rng_seed(11)
    z_prev = torch.randn(2, 2, dtype=torch.float64)
    torch.randn_like(x)
    eps_z = 0.1 * torch.randn(2, 6, 2, dtype=torch.float64)
    total = 0.0
    for t in range(6):
        alpha = 0.2 + 0.08 * t
        x_mean = math.sqrt(1 - 0.09) * model.otn(z_prev)
        z_mean = math.sqrt(alpha) * model.ftn(x[:, t]) + math.sqrt(1 - alpha - 0.01) * z_prev
        z_t = z_mean + eps_z[:, t]
        total = total + 0.01 * ((x[:, t] - x_mean) ** 2).sum() + 0.09 * ((z_t - z_mean) ** 2).sum()
        z_prev = z_t
    reference = total / 2 / 6
    slow = torch.autograd.grad(reference, list(model.parameters()))
    assert loss.item() == pytest.approx(reference.item(), rel=1e-10)
    pyro.set_rng_seed(11)
    assert model.loss(x, parallel=False).item() == pytest.approx(reference.item(), rel=1e-10)
    for got, want in zip(fast, slow, strict=True):
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-12)


def test_masked_values_never_change_any_output():
    model = make_model()
    x = torch.randn(2, 10, 3, dtype=torch.float64)
    mask = random_mask(2, 10, 3, per_entry=True)
    variants = (x, torch.where(mask, x, 1e3 * torch.randn_like(x)), torch.where(mask, x, torch.nan))
    for fn in (
        lambda v: model.impute(v, mask, 5),
        lambda v: model.infer_latents(v, mask, 5),
        lambda v: model.loss(v, mask).detach(),
    ):
        results = []
        for values in variants:
            pyro.set_rng_seed(2)
            results.append(fn(values))
        assert all(torch.equal(r, results[0]) for r in results[1:])


def test_impute_keeps_observed_entries_and_fills_missing():
    model = make_model()
    x = torch.randn(2, 10, 3, dtype=torch.float64)
    mask = random_mask(2, 10, 3, per_entry=True)
    draws = model.impute(torch.where(mask, x, torch.nan), mask, 6)
    assert draws.shape == (6, 2, 10, 3)
    assert torch.equal(draws[:, mask], x[mask].expand(6, -1))
    assert torch.isfinite(draws).all()
    assert draws[:, ~mask].std(0).min() > 0  # missing entries are draws, not copies


def test_forecast_equals_imputation_with_hidden_tail():
    model = make_model()
    context = torch.randn(3, 8, 3, dtype=torch.float64)
    pyro.set_rng_seed(4)
    forecast = model.forecast(context, 5, 7, method="ancestral")
    full = torch.cat([context, torch.randn(3, 5, 3, dtype=torch.float64)], dim=1)
    mask = torch.ones(3, 13, dtype=torch.bool)
    mask[:, 8:] = False
    pyro.set_rng_seed(4)
    imputed = model.impute(full, mask, 7, method="ancestral")
    assert forecast.shape == (7, 3, 5, 3)
    assert torch.equal(forecast, imputed[:, :, 8:])


def test_latent_draws_match_closed_form_moments():
    model = make_model(sigma_z=0.2, alpha=0.5)
    x = torch.randn(1, 1, 3, dtype=torch.float64)
    # the ancestral recursion: z_1 given x_1 with z_0 ~ N(0, I) (not the posterior of z_0)
    z = model.infer_latents(x, num_samples=20000, method="ancestral")[:, 0, 1]
    mean = math.sqrt(0.5) * model.ftn(x[0, 0])
    var = (1 - 0.5 - 0.04) + 0.04
    assert torch.allclose(z.mean(0), mean.detach(), atol=0.03)
    assert torch.allclose(z.var(0), torch.full_like(mean, var), rtol=0.05)


def test_prior_samples_match_pyro_program_moments():
    model = make_model()
    draws = model.sample(4000, 3)
    assert draws["x"].shape == (4000, 3, 3) and draws["z"].shape == (4000, 4, 2)
    mask = torch.zeros(4000, 3, dtype=torch.bool)
    trace = poutine.trace(model.model).get_trace(torch.zeros(4000, 3, 3, dtype=torch.float64), mask)
    program_x3 = trace.nodes["x_missing_3"]["value"]
    program_z3 = trace.nodes["z_3"]["value"]
    assert torch.allclose(draws["x"][:, 2].mean(0), program_x3.mean(0), atol=0.08)
    assert torch.allclose(draws["x"][:, 2].std(0), program_x3.std(0), rtol=0.08)
    assert torch.allclose(draws["z"][:, 3].std(0), program_z3.std(0), rtol=0.08)


def test_long_rollout_stays_finite_and_bounded():
    model = make_model()
    draws = model.sample(4, 5000)
    assert torch.isfinite(draws["x"]).all() and torch.isfinite(draws["z"]).all()
    assert draws["z"].abs().max() < 100


@pytest.mark.slow
def test_hundred_thousand_step_rollouts_stay_finite():
    model = Alternator(3, 2, hidden=(16,))
    draws = model.sample(2, 100_000)
    assert torch.isfinite(draws["x"]).all() and draws["z"].abs().max() < 100
    z = model.infer_latents(draws["x"], num_samples=2, method="ancestral")
    assert z.shape == (2, 2, 100_001, 2) and torch.isfinite(z).all()


def test_user_modules_are_accepted():
    otn = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3))
    ftn = nn.Linear(3, 2)
    model = Alternator(3, 2, otn=otn, ftn=ftn)
    assert model.otn is otn and model.ftn is ftn
    loss = model.loss(torch.randn(2, 5, 3))
    loss.backward()
    assert ftn.weight.grad is not None and otn[0].weight.grad is not None


def test_training_step_reduces_supervised_loss():
    model = Alternator(3, 2, hidden=(16,))
    x = torch.randn(8, 20, 3)
    z = torch.tanh(x[..., :2])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = model.loss(x, z_target=z).item()
    for _ in range(100):
        opt.zero_grad()
        model.loss(x, z_target=z).backward()
        opt.step()
    assert model.loss(x, z_target=z).item() < 0.5 * first


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"sigma_x": 1.0}, "sigma_x"),
        ({"sigma_x": 0.0}, "sigma_x"),
        ({"sigma_z": -0.1}, "sigma_z"),
        ({"alpha": 0.99, "sigma_z": 0.1}, "alpha"),
        ({"sigma_z": [0.1, -0.1]}, "sigma_z"),
        ({"sigma_z": [0.1, 0.1, 0.1]}, r"sigma_z .*\(Dz,\)"),
        ({"alpha": 0.8, "sigma_z": [0.1, 0.5]}, "alpha"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": [0.3, float("nan")]}, "alpha"),
        ({"ftn_input": "other"}, "ftn_input"),
        ({"hidden": (0,)}, "widths"),
        ({"activation": "sine"}, "activation"),
    ],
)
def test_invalid_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Alternator(3, 2, **kwargs)


def test_per_coordinate_sigma_z_is_stored_moved_and_replaced():
    model = Alternator(3, 2, sigma_z=[0.1, 0.2], alpha=0.5)
    assert model.sigma_z_per_dim and model.sigma_z_values() == pytest.approx([0.1, 0.2])
    model = model.double()
    assert model.sigma_z.dtype == torch.float64 and "sigma_z_vector" in model.state_dict()
    assert "sigma_z=[0.1, 0.2]" in repr(model)
    with pytest.raises(ValueError, match="alpha"):
        model.set_noise(sigma_z=[0.1, 0.8])  # 0.5 + 0.64 >= 1
    assert model.sigma_z_values() == pytest.approx([0.1, 0.2])  # nothing changed
    model.set_noise(sigma_z=0.15)
    assert not model.sigma_z_per_dim and model.sigma_z == 0.15
    with model.hyperparameters(sigma_z=torch.tensor(0.3, dtype=torch.float64)):
        assert float(model.sigma_z) == 0.3
    assert model.sigma_z == 0.15


def test_state_dict_with_per_dimension_scales_loads_into_a_fresh_model():
    torch.manual_seed(0)
    calibrated = make_model(sigma_x=0.3, sigma_z=0.1, alpha=0.5)
    calibrated.set_noise(sigma_x=[0.2, 0.3, 0.4], sigma_z=[0.05, 0.15])
    fresh = make_model(sigma_x=0.3, sigma_z=0.1, alpha=0.5)
    fresh.load_state_dict(calibrated.state_dict())
    assert fresh.sigma_x_values() == pytest.approx([0.2, 0.3, 0.4])
    assert fresh.sigma_z_values() == pytest.approx([0.05, 0.15])
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    z = torch.randn(2, 6, 2, dtype=torch.float64)
    torch.testing.assert_close(fresh.log_joint(x, z), calibrated.log_joint(x, z))


def test_invalid_dims():
    with pytest.raises(ValueError, match="obs_dim"):
        Alternator(0, 2)
    with pytest.raises(ValueError, match="latent_dim"):
        Alternator(3, 2.5)


@pytest.mark.parametrize(
    "x,mask,error,match",
    [
        (torch.full((2, 4, 3), float("inf")), None, ValueError, "inf"),
        (torch.randn(4, 3), None, ValueError, "rank 2"),
        (torch.randn(2, 0, 3), None, ValueError, "no time steps"),
        (torch.randn(0, 4, 3), None, ValueError, "empty batch"),
        (torch.randn(2, 4, 5), None, ValueError, "feature dim 5"),
        (torch.ones(2, 4, 3, dtype=torch.int64), None, TypeError, "floating-point"),
        ([[1.0]], None, TypeError, "torch.Tensor or numpy"),
        (torch.randn(2, 4, 3), torch.ones(2, 5, dtype=torch.bool), ValueError, "mask has shape"),
        (torch.randn(2, 4, 3), torch.ones(2, 4), TypeError, "bool"),
        (
            torch.full((2, 4, 3), float("nan")),
            torch.ones(2, 4, dtype=torch.bool),
            ValueError,
            "NaN",
        ),
    ],
)
def test_bad_input_is_named(x, mask, error, match):
    model = Alternator(3, 2)
    for call in (
        lambda: model.loss(x, mask),
        lambda: model.impute(x, mask, 2),
        lambda: model.infer_latents(x, mask),
    ):
        with pytest.raises(error, match=match):
            call()


def test_bad_arguments_of_samplers_and_scores():
    model = Alternator(3, 2, alpha=[0.3] * 5)
    x = torch.randn(2, 4, 3)
    with pytest.raises(ValueError, match="num_samples"):
        model.impute(x, None, 0)
    with pytest.raises(ValueError, match="horizon"):
        model.forecast(x, -1, 2)
    with pytest.raises(ValueError, match="schedule has 5"):
        model.forecast(x, 3, 2)
    with pytest.raises(ValueError, match="z has shape"):
        model.log_joint(x, torch.randn(2, 4, 2))
    with pytest.raises(ValueError, match="z_target has shape"):
        model.loss(x, z_target=torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match="values the FTN read"):
        model.log_joint(torch.full_like(x, float("nan")), torch.randn(2, 5, 2))


@pytest.mark.gpu
def test_runs_on_cuda():
    model = Alternator(3, 2).to("cuda")
    x = torch.randn(2, 6, 3)  # inputs follow the model's device
    loss = model.loss(x)
    loss.backward()
    assert loss.device.type == "cuda"
    assert model.forecast(x, 4, 3).device.type == "cuda"
    assert model.sample(3, 5)["x"].device.type == "cuda"
    z = model.infer_latents(x)[0]
    assert model.log_joint(x, z).device.type == "cuda"


def test_set_noise_takes_a_schedule_with_the_constructors_checks():
    model = Alternator(2, 3, sigma_z=0.3, hidden=(4,))
    model.set_noise(alpha=[0.2, 0.3, 0.4])
    assert model.alpha_values == pytest.approx((0.2, 0.3, 0.4)) and not model.alpha_is_constant
    for bad in ([0.2, 0.95], [0.0, 0.3], [], float("nan")):  # 0.95 + 0.09 >= 1
        with pytest.raises(ValueError, match="alpha"):
            model.set_noise(alpha=bad)
        with pytest.raises(ValueError, match="alpha"):
            Alternator(2, 3, sigma_z=0.3, alpha=bad, hidden=(4,))
    assert Alternator(2, 3, hidden=(4,)).calibration_sigma_x_range == (1e-3, 0.99)
