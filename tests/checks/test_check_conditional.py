"""The conditional VAE's check rows pass, the closed forms they use are right, and each
injected bug fails the rows: a prior p(z | c) that ignores c, a guide q(z | t, c) that
ignores c, a likelihood that drops c's own term."""

import inspect
import textwrap

import pytest
import torch

from pyro_vae.checks import conditional as checks
from pyro_vae.checks.analytic_conditional import random_conditional
from pyro_vae.models import conditional
from pyro_vae.models.conditioned_parts import join


def _gen():
    return torch.Generator().manual_seed(0)


def rows(condition: str):
    return {r.quantity: r for r in checks.condition_rows(condition, _gen())}


def _mutate(monkeypatch, name: str, old: str, new: str) -> None:
    """Replace ``Conditional.name`` by its own source with ``old`` -> ``new``: the bug is
    injected into the real code."""
    source = textwrap.dedent(inspect.getsource(getattr(conditional.Conditional, name)))
    assert old in source, old
    namespace = dict(vars(conditional))
    exec(compile(source.replace(old, new), conditional.__file__, "exec"), namespace)
    monkeypatch.setattr(conditional.Conditional, name, namespace[name])


def _exact_rows_fail(result) -> None:
    exact = [q for q in result if "exact q" in q]
    assert len(exact) == 3
    assert not any(result[q].passed for q in exact), exact


def test_the_closed_forms_agree():
    """With one latent dimension the exact posterior is a diagonal Gaussian: the closed-form
    ELBO at it equals log p(t | c) (posterior map, ELBO and marginal together), and any other
    q gives less."""
    truth = random_conditional(_gen(), 3, 5, latent_dim=1)
    c = torch.randn(40, 3, generator=_gen(), dtype=torch.float64)
    t = truth.sample(c, _gen())
    on_t, on_c, cov = truth.posterior_map()
    loc = t @ on_t.T + c @ on_c.T
    scale = cov.diagonal().sqrt().expand(40, 1)
    exact = truth.log_marginal(t, c)
    assert torch.allclose(truth.elbo(t, c, loc, scale), exact, atol=1e-10)
    assert (truth.elbo(t, c, loc + 0.3, scale) < exact).all()
    assert (truth.elbo(t, c, loc, 1.5 * scale) < exact).all()
    # the marginal against a direct Monte Carlo average of p(t | z, c) over z ~ p(z | c)
    z = c[:3] @ truth.prior_weight.T + torch.randn(
        200_000, 3, 1, generator=_gen(), dtype=torch.float64
    )
    mean = z @ truth.weight.T + c[:3] @ truth.condition_weight.T
    log_lik = (
        torch.distributions.Normal(mean, truth.noise_scale).log_prob(t[:3]).sum(-1)
    )
    mc = log_lik.logsumexp(0) - torch.log(torch.tensor(200_000.0))
    assert torch.allclose(mc, exact[:3], atol=0.02)


@pytest.mark.parametrize("condition", ["label", "quadrants"])
def test_every_row_passes(condition):
    result = rows(condition)
    assert len(result) == 6
    failed = [q for q, r in result.items() if not r.passed]
    assert not failed, failed


@pytest.mark.slow
def test_a_prior_that_ignores_c_fails(monkeypatch):
    _mutate(monkeypatch, "model", "self.prior_net(c)", "self.prior_net(0 * c)")
    _exact_rows_fail(rows("label"))


@pytest.mark.slow
@pytest.mark.parametrize("condition", ["label", "quadrants"])
def test_a_guide_that_ignores_c_fails(monkeypatch, condition):
    def blind(self, x):
        c, t = self.split(x)
        if self.given_mask is None:
            return join(t, 0 * c)
        x = x.clone()
        x[..., self.given_mask] = 0
        return x

    monkeypatch.setattr(conditional.Conditional, "guide_input", blind)
    _exact_rows_fail(rows(condition))


@pytest.mark.slow
def test_a_likelihood_without_cs_own_term_fails(monkeypatch):
    _mutate(
        monkeypatch, "model", "self.decoder(join(z, c))", "self.decoder(join(z, 0 * c))"
    )
    _exact_rows_fail(rows("quadrants"))
