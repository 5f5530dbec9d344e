"""The JAX twin's associative scan solves the latent recurrence like the sequential lax.scan."""

import numpy as np
import pytest


@pytest.mark.parametrize("steps", [1, 2, 7, 1000])
def test_associative_scan_equals_lax_scan_with_gradients(steps, jax_x64):
    import jax
    import jax.numpy as jnp

    from alternators_ppl.models.alternator_jax import linear_recurrence

    keys = jax.random.split(jax.random.PRNGKey(steps), 3)
    z0 = jax.random.normal(keys[0], (4, 3), jnp.float64)
    decay = 0.99 * jax.random.uniform(keys[1], (steps,), jnp.float64)
    drive = jax.random.normal(keys[2], (4, steps, 3), jnp.float64)
    weights = jnp.cos(jnp.arange(4 * (steps + 1) * 3, dtype=jnp.float64)).reshape(4, steps + 1, 3)
    outputs, grads = [], []
    for parallel in (True, False):

        def score(z0, decay, drive, parallel=parallel):
            return (linear_recurrence(z0, decay, drive, parallel) * weights).sum()

        outputs.append(linear_recurrence(z0, decay, drive, parallel))
        grads.append(jax.grad(score, argnums=(0, 1, 2))(z0, decay, drive))
    assert outputs[0].shape == (4, steps + 1, 3)
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-11, atol=1e-12)
    for got, want in zip(*grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)
