"""The NumPyro/JAX Alternator: weight converter, oracle against Pyro, Eq. 12 and the train step."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
import torch
from numpyro import handlers
from numpyro.infer.util import log_density
from torch import nn

from alternators_ppl.models import Alternator, linear_recurrence
from alternators_ppl.models.alternator_jax import (
    JaxAlternator,
    adam,
    latent_path,
    log_joint,
    loss,
    make_train_step,
    mlp_apply,
    mlp_params_from_torch,
    numpyro_model,
)
from alternators_ppl.models.alternator_jax import linear_recurrence as jax_linear_recurrence
from alternators_ppl.networks import MLP

pytestmark = pytest.mark.usefixtures("jax_x64")


def randn(gen, *shape):
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def to_jax(tensor):
    return jnp.asarray(tensor.detach().numpy())


def make_pair(obs_dim=3, latent_dim=2, alpha=0.3, **kwargs):
    model = Alternator(obs_dim, latent_dim, alpha=alpha, hidden=(16,), **kwargs).double()
    return (model, *JaxAlternator.from_torch(model))


# ---------------------------------------------------------------------- converter
@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu", "silu", "elu"])
def test_mlp_apply_equals_torch_forward(activation):
    mlp = MLP(4, 3, (8, 5), activation).double()
    inputs = randn(torch.Generator().manual_seed(0), 6, 7, 4)
    params, name = mlp_params_from_torch(mlp)
    assert name == activation
    assert [p["w"].shape for p in params] == [(4, 8), (8, 5), (5, 3)]
    assert params[0]["w"].dtype == jnp.float64
    np.testing.assert_allclose(
        mlp_apply(params, name, to_jax(inputs)),
        mlp(inputs).detach().numpy(),
        rtol=1e-12,
        atol=1e-13,
    )


def test_mlp_converter_linear_and_gelu_tanh():
    gen = torch.Generator().manual_seed(1)
    linear = MLP(3, 2, (), "relu").double()
    inputs = randn(gen, 5, 3)
    params, name = mlp_params_from_torch(linear)
    np.testing.assert_allclose(mlp_apply(params, name, to_jax(inputs)), linear(inputs).detach())
    mlp = MLP(3, 2, (6,), "gelu").double()
    mlp.layers[1] = nn.GELU(approximate="tanh")
    params, name = mlp_params_from_torch(mlp)
    assert name == "gelu_tanh"
    np.testing.assert_allclose(
        mlp_apply(params, name, to_jax(inputs)), mlp(inputs).detach(), rtol=1e-12
    )


def test_converter_rejects_other_networks():
    with pytest.raises(TypeError, match="Identity"):
        mlp_params_from_torch(nn.Identity())
    model = Alternator(2, 2, otn=nn.Identity())
    with pytest.raises(TypeError, match="otn must be .*MLP.*Identity"):
        JaxAlternator.from_torch(model)
    with pytest.raises(TypeError, match="model must be an Alternator, got MLP"):
        JaxAlternator.from_torch(MLP(2, 2))


def test_from_torch_copies_hyperparameters():
    model, jax_model, params = make_pair(alpha=[0.2, 0.3, 0.4], sigma_x=0.4, sigma_z=0.2)
    assert (jax_model.sigma_x, jax_model.sigma_z) == (0.4, 0.2)
    assert jax_model.alpha_values == model.alpha_values
    np.testing.assert_array_equal(jax_model.alpha_schedule(2), model.alpha_schedule(2).numpy())
    with pytest.raises(ValueError, match="4 steps but the alpha schedule has 3"):
        jax_model.alpha_schedule(4)
    assert set(params) == {"otn", "ftn"}
    hash(jax_model)  # usable as a static jit argument


# ---------------------------------------------------------------------- oracle
def numpyro_log_density(jax_model, params, x, z, mask):
    """Per-sequence (B,) and total log-density of numpyro_model given z and x_missing := x."""
    data = {"z_0": z[:, 0], "z": jnp.swapaxes(z[:, 1:], 0, 1), "x_missing": jnp.swapaxes(x, 0, 1)}
    conditioned = handlers.condition(numpyro_model, data)
    trace = handlers.trace(handlers.seed(conditioned, 0)).get_trace(jax_model, params, x, mask)
    per_site = {
        name: site["fn"].log_prob(site["value"])
        for name, site in trace.items()
        if site["type"] == "sample"
    }
    assert all(trace[name]["is_observed"] for name in per_site)
    assert ("x_missing" in per_site) == (mask is not None)
    missing = per_site.pop("x_missing", jnp.zeros(()))
    per_sequence = per_site.pop("z_0") + sum(lp.sum(0) for lp in per_site.values())  # sum time
    total, _ = log_density(conditioned, (jax_model, params, x, mask), {}, {})
    return per_sequence, total - missing.sum()


# one XLA program per shape compiles faster than the op-by-op eager path
numpyro_log_density_jit = jax.jit(numpyro_log_density, static_argnums=0)
log_joint_jit = jax.jit(log_joint, static_argnums=0)


ORACLE_CASES = [  # (B, T, Dx, Dz), mask, alpha: every shape, mask kind and alpha kind covered
    ((1, 1, 1, 1), None, 0.3),
    ((1, 1, 1, 1), "entries", "schedule"),
    ((4, 7, 3, 2), None, "schedule"),
    ((4, 7, 3, 2), "steps", 0.3),
    ((4, 7, 3, 2), "entries", 0.3),
    ((3, 12, 5, 4), None, 0.3),
    ((3, 12, 5, 4), "steps", "schedule"),
    ((3, 12, 5, 4), "entries", "schedule"),
]


@pytest.mark.parametrize("shape,mask_kind,alpha", ORACLE_CASES)
def test_log_joint_oracle_numpyro_pyro_jax(shape, mask_kind, alpha):
    batch, steps, obs_dim, latent_dim = shape
    if alpha == "schedule":
        alpha = torch.linspace(0.1, 0.9, steps + 3).tolist()
    model, jax_model, params = make_pair(obs_dim, latent_dim, alpha=alpha)
    gen = torch.Generator().manual_seed(batch * 100 + steps)
    x, z = randn(gen, batch, steps, obs_dim), randn(gen, batch, steps + 1, latent_dim)
    mask = None
    if mask_kind is not None:
        shape = (batch, steps, obs_dim) if mask_kind == "entries" else (batch, steps)
        mask = torch.rand(shape, generator=gen) > 0.3
    expected = model.log_joint(x, z, mask).detach().numpy()
    mask_j = None if mask is None else jnp.asarray(mask.numpy())
    x_j, z_j = to_jax(x), to_jax(z)
    vectorised = log_joint_jit(jax_model, params, x_j, z_j, mask_j)
    per_sequence, total = numpyro_log_density_jit(jax_model, params, x_j, z_j, mask_j)
    assert vectorised.shape == (batch,)
    np.testing.assert_allclose(vectorised, expected, rtol=1e-10)
    np.testing.assert_allclose(per_sequence, expected, rtol=1e-10)
    np.testing.assert_allclose(total, expected.sum(), rtol=1e-10)


def test_numpyro_model_samples_and_observes():
    _, jax_model, params = make_pair(alpha=[0.2, 0.3, 0.4, 0.5])
    x = jnp.zeros((5, 4, 3))
    hidden = jnp.zeros((5, 4), bool)
    trace = handlers.trace(handlers.seed(numpyro_model, 1)).get_trace(jax_model, params, x, hidden)
    assert trace["z_0"]["value"].shape == (5, 2)
    assert trace["x_missing"]["value"].shape == (4, 5, 3)
    assert trace["z"]["value"].shape == (4, 5, 2) and not trace["z"]["is_observed"]
    assert trace["x"]["fn"].log_prob(trace["x"]["value"]).sum() == 0.0  # all entries hidden
    z_target = jnp.ones((5, 4, 2))
    trace = handlers.trace(handlers.seed(numpyro_model, 1)).get_trace(
        jax_model, params, x, z_target=z_target
    )
    assert trace["z"]["is_observed"] and "x_missing" not in trace
    np.testing.assert_array_equal(trace["z"]["value"], jnp.swapaxes(z_target, 0, 1))


def test_bad_inputs_name_the_argument():
    _, jax_model, params = make_pair()
    x = jnp.zeros((2, 4, 3))
    with pytest.raises(ValueError, match=r"x has shape \(2, 4, 5\)"):
        log_joint(jax_model, params, jnp.zeros((2, 4, 5)), jnp.zeros((2, 5, 2)))
    with pytest.raises(ValueError, match=r"z has shape \(2, 4, 2\), expected \(B, T\+1, Dz\)"):
        log_joint(jax_model, params, x, jnp.zeros((2, 4, 2)))
    with pytest.raises(TypeError, match="mask must be a bool"):
        log_joint(jax_model, params, x, jnp.zeros((2, 5, 2)), mask=jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="mask has shape"):
        log_joint(jax_model, params, x, jnp.zeros((2, 5, 2)), mask=jnp.ones((2, 3), bool))
    with pytest.raises(ValueError, match="NaN entries where mask marks them observed"):
        x_nan = x.at[0, 1, 2].set(jnp.nan)
        numpyro_model(jax_model, params, x_nan, mask=jnp.ones((2, 4), bool))
    with pytest.raises(ValueError, match="z_target has shape"):
        loss(jax_model, params, x, jax.random.PRNGKey(0), z_target=jnp.zeros((2, 5, 2)))
    with pytest.raises(ValueError, match="sigma_x"):
        JaxAlternator(3, 2, sigma_x=1.5, sigma_z=0.1, alpha_values=(0.3,))


# ---------------------------------------------------------------------- Eq. 12
@pytest.mark.parametrize("alpha", [0.3, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]])
def test_supervised_loss_equals_torch_path_loss(alpha):
    model, jax_model, params = make_pair(alpha=alpha)
    gen = torch.Generator().manual_seed(3)
    x, z = randn(gen, 4, 6, 3), randn(gen, 4, 7, 2)
    expected = model.path_loss(x, z).sum().item() / (4 * 6)
    z0, z_target = to_jax(z[:, 0]), to_jax(z[:, 1:])
    value = loss(jax_model, params, to_jax(x), jax.random.PRNGKey(0), z_target, z0=z0)
    np.testing.assert_allclose(value, expected, rtol=1e-12)
    # without z0 the prior draw of z_0 enters; same key, same draw
    key = jax.random.PRNGKey(5)
    a = loss(jax_model, params, to_jax(x), key, z_target)
    b = loss(jax_model, params, to_jax(x), key, z_target)
    assert a == b and a != value


def test_loss_on_drawn_path_and_recurrence():
    model, jax_model, params = make_pair()
    gen = torch.Generator().manual_seed(4)
    z0, drive = randn(gen, 4, 2), randn(gen, 4, 6, 2)
    decay = torch.rand(6, generator=gen, dtype=torch.float64)
    np.testing.assert_allclose(
        jax_linear_recurrence(to_jax(z0), to_jax(decay), to_jax(drive)),
        linear_recurrence(z0, decay, drive).numpy(),
        rtol=1e-12,
    )
    x, key = randn(gen, 4, 6, 3), jax.random.PRNGKey(2)
    path = latent_path(jax_model, params, to_jax(x), key)
    assert path.shape == (4, 7, 2)
    expected = model.path_loss(x, torch.tensor(np.asarray(path))).sum().item() / 24
    np.testing.assert_allclose(loss(jax_model, params, to_jax(x), key), expected, rtol=1e-12)
    # conditioned reading: the z-term is sigma_x^2 sigma_z^2 ||eps||^2, the path's own noise
    with torch.no_grad():
        z_t = torch.tensor(np.asarray(path))
        resid = z_t[:, 1:] - model.z_loc(x, z_t[:, :-1], model.alpha_schedule(6).unsqueeze(-1))
    eps = jax.random.normal(jax.random.split(key, 3)[2], (4, 6, 2))
    np.testing.assert_allclose(resid.numpy(), 0.1 * np.asarray(eps), atol=1e-12)


# ---------------------------------------------------------------------- training
def test_train_step_learns_supervised_toy_and_is_deterministic():
    teacher = Alternator(3, 2, alpha=0.3, hidden=(8,)).double()
    with torch.no_grad():  # a teacher far from the student's initialisation
        teacher.otn.layers[-1].weight.mul_(4)
        teacher.ftn.layers[-1].weight.mul_(4)
        draws = teacher.sample(8, 30)
    x, z_target = to_jax(draws["x"]), to_jax(draws["z"][:, 1:])
    torch.manual_seed(1)
    _, jax_model, params = make_pair()
    step = make_train_step(jax_model, adam(1e-2))
    opt_state, key = adam(1e-2).init(params), jax.random.PRNGKey(0)
    first = step(params, opt_state, x, key, z_target)
    again = step(params, opt_state, x, key, z_target)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(a, b)
    # numpyro.optim.Adam has the same update rule (its state carries the params)
    optim = numpyro.optim.Adam(1e-2)
    other = make_train_step(jax_model, optim)(params, optim.init(params), x, key, z_target)
    assert other[2] == first[2]
    for a, b in zip(jax.tree.leaves(other[0]), jax.tree.leaves(first[0]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)

    def fixed_loss(p):  # the same z_0 before and after training
        return float(loss(jax_model, p, x, jax.random.PRNGKey(99), z_target))

    before, losses = fixed_loss(params), []
    for i in range(50):
        params, opt_state, value = step(params, opt_state, x, jax.random.PRNGKey(i), z_target)
        losses.append(float(value))
    assert np.isfinite(losses).all()
    assert fixed_loss(params) < 0.25 * before


def test_float32_without_x64():
    jax.config.update("jax_enable_x64", False)  # the fixture restores it
    _, jax_model, params = make_pair()
    assert params["otn"][0]["w"].dtype == jnp.float32
    x = jnp.ones((2, 3, 3), jnp.float32)
    step = make_train_step(jax_model)
    _, _, value = step(params, adam().init(params), x, jax.random.PRNGKey(0))
    assert value.dtype == jnp.float32 and np.isfinite(value)
