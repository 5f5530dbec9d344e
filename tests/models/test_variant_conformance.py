"""Variant conformance (GPyTorch pattern): one class of checks, each variant supplies a factory.

Variants: the base Alternator (with an alpha schedule), Alternator++, the alpha-Alternator
(with w != 0, so alpha_t really varies), the learned alpha schedule (moved off its start),
HyperpriorAlternator (globals fixed by conditioning) and the Student-t example of
docs/variants.md. Checks: log_joint equals the program trace (with and without masks); the
parallel and step-by-step rollouts agree; the guides, ``posterior_forecast``, the diagnostics'
log p and the JAX conversion either honour the variant exactly (a value test) or refuse it with
a clear error; the loss is finite with a gradient on every parameter.
"""

import re
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from alternators_ppl.evaluation.inference_data import pointwise_log_likelihood
from alternators_ppl.experiments.diagnose import _draw
from alternators_ppl.inference import FilteringGuide, HyperpriorGuide, SmoothingGuide
from alternators_ppl.inference.svi import posterior_forecast
from alternators_ppl.models import Alternator
from alternators_ppl.models.alpha_alternator import AlphaAlternator
from alternators_ppl.models.alternator_pp import AlternatorPlusPlus
from alternators_ppl.models.hyperprior import HyperpriorAlternator
from alternators_ppl.models.learned_alpha import LearnedAlphaAlternator
from tests.oracles import program_log_density

DX, DZ, B, T = 2, 3, 3, 6
SCHEDULE = [0.2, 0.35, 0.5, 0.25, 0.4, 0.3, 0.45, 0.3, 0.2, 0.4, 0.3, 0.35]
GLOBALS = {"sigma_x": 0.25, "sigma_z": 0.2, "alpha_u": 0.4}  # HyperpriorAlternator's sites
DOC = Path(__file__).resolve().parents[2] / "docs" / "variants.md"


def student_t_class():
    """The StudentTAlternator class of docs/variants.md (the block up to its training run)."""
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    namespace = {}
    exec(compile(code.split("torch.manual_seed(0)")[0], str(DOC), "exec"), namespace)
    return namespace["StudentTAlternator"]


def _data(seed=0, missing=True):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, DX, generator=gen, dtype=torch.float64)
    z = torch.randn(B, T + 1, DZ, generator=gen, dtype=torch.float64)
    mask = torch.rand(B, T, DX, generator=gen) > 0.35 if missing else None
    return x, z, mask


class VariantChecks:
    """The shared checks; a subclass supplies ``make`` (the program) and its expectations."""

    #: does JaxAlternator.from_torch represent it (else it must refuse with TypeError)
    jax_converts = False

    def make(self):
        raise NotImplementedError

    # -- helpers a wrapper (HyperpriorAlternator) overrides
    def core(self, model) -> Alternator:
        return model

    def values(self, model) -> dict:
        """The tensor hyperparameters the core runs with (none for a plain variant)."""
        return {}

    def extra(self) -> dict:
        return {}

    # -- checks
    @pytest.mark.parametrize("mask_kind", ["none", "steps", "entries"])
    def test_log_joint_equals_program_trace(self, mask_kind):
        model = self.make()
        core = self.core(model)
        x, z, mask = _data()
        mask = {"none": None, "steps": mask.all(-1) if mask is not None else None, "entries": mask}[
            mask_kind
        ]
        expected = program_log_density(model, x, z, mask, extra=self.extra())
        with core.hyperparameters(**self.values(model)):
            ours = core.log_joint(x, z, mask)
        assert torch.allclose(ours, expected, rtol=1e-12, atol=1e-12)

    @pytest.mark.parametrize("missing", [False, True])
    def test_parallel_and_stepwise_rollouts_agree(self, missing):
        core = self.core(self.make())
        x, _, mask = _data(1, missing)
        paths = []
        for parallel in (True, False):
            pyro.set_rng_seed(3)
            paths.append(core.rollout(x, mask, parallel=parallel))
        assert torch.allclose(paths[0][0], paths[1][0], rtol=1e-10, atol=1e-12)
        assert torch.equal(paths[0][1], paths[1][1])

    def _guide(self, model, guide_cls):
        guide = guide_cls(self.core(model))
        if isinstance(model, HyperpriorAlternator):
            guide = HyperpriorGuide(model, guide, globals_guide="delta")
        return guide

    def _globals_in(self, model, trace) -> dict:
        if not isinstance(model, HyperpriorAlternator):
            return {}
        return model.hyperparameters_from({s: trace.nodes[s]["value"] for s in model.sites})

    @pytest.mark.parametrize("guide_cls", [FilteringGuide, SmoothingGuide])
    def test_guides_use_the_variants_factors_and_alpha(self, guide_cls):
        """At initialisation both guides' z_t mean is the model's prior mean z_loc with the
        model's alpha_t (vectorised ``_alpha_for`` on the filled inputs), and x_missing_t is
        proposed from the model's own x_dist."""
        model = self.make()
        core = self.core(model)
        x, _, mask = _data(2)
        guide = self._guide(model, guide_cls)
        with pyro.get_param_store().scope():
            trace = poutine.trace(guide).get_trace(x, mask)
        values = self._globals_in(model, trace)
        z = torch.stack([trace.nodes[f"z_{t}"]["value"] for t in range(T + 1)], dim=1)
        filled = x.clone()
        for t in range(1, T + 1):
            if f"x_missing_{t}" in trace.nodes:
                filled[:, t - 1] = torch.where(
                    mask[:, t - 1], x[:, t - 1], trace.nodes[f"x_missing_{t}"]["value"]
                )
        assert torch.equal(filled[mask], x[mask])
        with torch.no_grad(), core.hyperparameters(**values):
            alpha = core._alpha_for(filled)  # (T, 1) or (B, T, 1)
            alpha = (
                alpha.expand(B, T, 1) if alpha.dim() == 3 else alpha.unsqueeze(0).expand(B, T, 1)
            )
            for t in range(1, T + 1):
                site = trace.nodes[f"z_{t}"]
                loc = core.z_loc(filled[:, t - 1], z[:, t - 1], alpha[:, t - 1])
                assert torch.allclose(site["fn"].mean, loc, rtol=1e-12, atol=1e-12)
                name = f"x_missing_{t}"
                if name in trace.nodes:
                    value = trace.nodes[name]["value"]
                    hidden = ~mask[:, t - 1]
                    expected = (core.x_dist(z[:, t - 1]).log_prob(value) * hidden).sum(-1)
                    got = trace.nodes[name]["fn"].log_prob(value)
                    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12)
        assert any(f"x_missing_{t}" in trace.nodes for t in range(1, T + 1))

    def test_posterior_forecast_uses_the_variants_factors_and_alpha(self, monkeypatch):
        """Each forecast step draws x_t with the model's draw_x and z_t from its z_dist, with
        alpha_t from the model (for a data-driven alpha: the last inputs read, context then
        draws); the returned draws are exactly the draw_x outputs."""
        model = self.make()
        core = self.core(model)
        x, _, _ = _data(3, missing=False)
        horizon, samples = 4, 5
        drawn, z_calls = [], []
        draw_x, z_dist = core.draw_x, core.z_dist

        def record_draw(z_prev, eps):
            out = draw_x(z_prev, eps)
            drawn.append(out)
            return out

        def record_z(x_t, z_prev, alpha):
            z_calls.append(alpha)
            return z_dist(x_t, z_prev, alpha)

        monkeypatch.setattr(core, "draw_x", record_draw)
        monkeypatch.setattr(core, "z_dist", record_z)
        guide = self._guide(model, FilteringGuide)
        with pyro.get_param_store().scope():
            guide(x)  # set up an autoguide (HyperpriorGuide) before counting calls
        drawn.clear(), z_calls.clear()
        out = posterior_forecast(model, guide, x, horizon, num_samples=samples)
        assert out.shape == (samples, B, horizon, DX) and torch.isfinite(out).all()
        assert len(drawn) == horizon and len(z_calls) == horizon
        assert torch.equal(out, torch.stack(drawn, dim=2))
        read = torch.cat([x.expand(samples, B, T, DX), out], dim=2).reshape(-1, T + horizon, DX)
        values = {}
        if isinstance(model, HyperpriorAlternator):  # the delta guide's point globals
            values = {
                k: torch.tensor(v, dtype=torch.float64) for k, v in guide.point_estimates().items()
            }
        with torch.no_grad(), core.hyperparameters(**values):
            alpha = core._alpha_for(read)
        for h, used in enumerate(z_calls):
            if core.data_dependent_alpha:
                expected = alpha[:, T + h].reshape(samples, B, 1)
            else:
                expected = alpha[T + h]
            used, expected = torch.broadcast_tensors(torch.as_tensor(used), expected)
            assert torch.allclose(used, expected, rtol=1e-12)

    def test_diagnostics_log_p_honours_the_variant(self):
        model = self.make()
        core = self.core(model)
        x, _, _ = _data(4, missing=False)
        if isinstance(model, HyperpriorAlternator):
            with pytest.raises(TypeError, match="needs an Alternator.*HyperpriorAlternator"):
                _draw(model, x, 2, 2)
            with pytest.raises(TypeError, match="needs an Alternator"):
                pointwise_log_likelihood(model, x, torch.zeros(B, T + 1, DZ))
            return
        z, _, log_lik, lp = _draw(core, x, 2, 2)
        for c in range(2):
            for d in range(2):
                path = z[c, d]
                expected = program_log_density(core, x, path)
                assert torch.allclose(lp[c, d], expected.sum(), rtol=1e-10)
                data = {f"z_{t}": path[:, t] for t in range(T + 1)}
                trace = poutine.trace(poutine.condition(core.model, data=data)).get_trace(x)
                per_step = torch.stack(
                    [trace.nodes[f"x_{t}"]["fn"].log_prob(x[:, t - 1]) for t in range(1, T + 1)],
                    dim=-1,
                )
                assert torch.allclose(log_lik[c, d], per_step, rtol=1e-10)

    def test_jax_conversion_is_exact_or_refused(self, jax_x64):
        import jax.numpy as jnp

        from alternators_ppl.models.alternator_jax import JaxAlternator, log_joint

        model = self.make()
        if not self.jax_converts:
            with pytest.raises(TypeError, match="Alternator|cannot represent"):
                JaxAlternator.from_torch(model)
            return
        jax_model, params = JaxAlternator.from_torch(model)
        x, z, mask = _data(5)
        expected = model.log_joint(x, z, mask).detach().numpy()
        got = log_joint(
            jax_model,
            params,
            jnp.asarray(x.numpy()),
            jnp.asarray(z.numpy()),
            jnp.asarray(mask.numpy()),
        )
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-10)

    def test_loss_is_finite_with_a_gradient_on_every_parameter(self):
        model = self.make()
        core = self.core(model)
        x, _, mask = _data(6)
        if isinstance(model, HyperpriorAlternator):
            guide = self._guide(model, FilteringGuide)
            with pyro.get_param_store().scope():
                guide(x, mask)
                loss = Trace_ELBO().differentiable_loss(model.model, guide, x, mask)
            # the program's parameters: the networks and (through the guide) the globals; the
            # path guide's zero-initialised correction has no gradient yet by design
            params = dict(core.named_parameters())
            params.update({f"globals.{k}": v for k, v in guide.globals.named_parameters()})
            assert len(params) > len(dict(core.named_parameters()))
        else:
            loss = core.loss(x, mask)
            params = dict(core.named_parameters())
        assert torch.isfinite(loss)
        loss.backward()
        for name, p in params.items():
            assert p.grad is not None, f"{name} has no gradient"
            assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
            assert p.grad.abs().sum() > 0, f"{name} has a zero gradient"


class TestBaseAlternator(VariantChecks):
    jax_converts = True

    def make(self):
        return Alternator(DX, DZ, sigma_x=0.3, sigma_z=0.2, alpha=SCHEDULE, hidden=(8,)).double()


class TestAlternatorPlusPlus(VariantChecks):
    def make(self):
        return AlternatorPlusPlus(
            DX, DZ, sigma_x=0.3, sigma_z=0.2, alpha=0.3, beta=0.5, hidden=(8,), noise_hidden=(8,)
        ).double()


class TestAlphaAlternator(VariantChecks):
    def make(self):
        model = AlphaAlternator(
            DX, DZ, sigma_x=0.3, sigma_z=0.2, alpha=0.3, window=3, hidden=(8,), mask_rate=0.2
        ).double()
        with torch.no_grad():
            model.w.fill_(-0.8)  # alpha_t really depends on the inputs
        return model


class TestLearnedAlpha(VariantChecks):
    jax_converts = True

    def make(self):
        model = LearnedAlphaAlternator(
            DX, DZ, sigma_x=0.3, sigma_z=0.2, alpha=SCHEDULE, hidden=(8,)
        ).double()
        with torch.no_grad():  # moved away from the starting schedule
            model.alpha_logits.add_(torch.linspace(-0.5, 0.5, len(SCHEDULE), dtype=torch.float64))
        return model


class TestHyperpriorAlternator(VariantChecks):
    def make(self):
        core = Alternator(DX, DZ, sigma_x=0.3, sigma_z=0.2, alpha=0.3, hidden=(8,)).double()
        return HyperpriorAlternator(core)

    def core(self, model):
        return model.alternator

    def values(self, model):
        draws = {k: torch.tensor(v, dtype=torch.float64) for k, v in GLOBALS.items()}
        return model.hyperparameters_from(draws)

    def extra(self):
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in GLOBALS.items()}


class TestStudentTExample(VariantChecks):
    def make(self):
        return student_t_class()(
            DX, DZ, df=3.0, sigma_x=0.3, sigma_z=0.2, alpha=0.3, hidden=(8,)
        ).double()
