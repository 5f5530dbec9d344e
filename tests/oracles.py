"""Shared test oracles: quantities computed the slow, obvious way through the Pyro program."""

from pyro import poutine


def program_log_density(model, x, z, mask=None):
    """log-density (B,) of ``model.model``'s trace conditioned on the latent path z (B, T+1, Dz)
    and on the ``x_missing_t`` draws (taken from x), summed over every site but the
    ``x_missing_t`` ones: what ``model.log_joint(x, z, mask)`` must equal."""
    data = {f"z_{t}": z[:, t] for t in range(z.shape[1])}
    data.update({f"x_missing_{t}": x[:, t - 1] for t in range(1, x.shape[1] + 1)})
    trace = poutine.trace(poutine.condition(model.model, data=data)).get_trace(x, mask)
    trace.compute_log_prob()
    return sum(
        site["log_prob"]
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and name.startswith(("x_", "z_")) and "missing" not in name
    )
