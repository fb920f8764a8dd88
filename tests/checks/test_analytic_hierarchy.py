"""The two-layer linear-Gaussian closed forms, against a second derivation: the joint Gaussian
of (z_2, z_1, x) built by conditioning on a stacked vector (Schur complements), not by the
formulas of ``analytic_hierarchy``."""

import pytest
import torch
from torch.distributions import MultivariateNormal

from pyro_vae.checks.analytic_hierarchy import chain, random_hierarchy


def _joint(truth):
    """Mean and covariance of (z_1, z_2, x) as x = W z_1 + b + eps on the prior's (z_1, z_2)."""
    d1, d2 = truth.sizes
    m, s = truth.prior_joint()
    h = torch.cat([truth.weight, torch.zeros(truth.data_dim, d2, dtype=m.dtype)], -1)
    noise = truth.noise_scale.pow(2) * torch.eye(truth.data_dim, dtype=m.dtype)
    mean = torch.cat([m, h @ m + truth.bias])
    cov = torch.cat(
        [torch.cat([s, s @ h.T], -1), torch.cat([h @ s, h @ s @ h.T + noise], -1)]
    )
    return mean, cov


@pytest.mark.parametrize("ladder", [False, True])
def test_marginal_and_posterior_match_the_conditioned_joint(ladder):
    g = torch.Generator().manual_seed(3)
    truth = random_hierarchy(g, sizes=(2, 2) if ladder else (3, 2), ladder=ladder)
    x = truth.sample(7, g)
    mean, cov = _joint(truth)
    d = sum(truth.sizes)
    px = MultivariateNormal(mean[d:], cov[d:, d:])
    assert torch.allclose(truth.log_marginal(x), px.log_prob(x), atol=1e-9)
    gain = cov[:d, d:] @ torch.linalg.inv(cov[d:, d:])
    mu, sigma = truth.posterior(x)
    assert torch.allclose(mu, mean[:d] + (x - mean[d:]) @ gain.T, atol=1e-9)
    assert torch.allclose(sigma, cov[:d, :d] - gain @ cov[d:, :d], atol=1e-9)


def test_the_exact_bottom_up_factors_chain_to_the_posterior():
    g = torch.Generator().manual_seed(4)
    truth = random_hierarchy(g)
    x = truth.sample(5, g)
    (g1, c1, v1), (g2, c2, v2) = truth.exact_bottom_up()
    mean, cov = chain(x @ g1.T + c1, v1, g2, c2, v2)
    mu, sigma = truth.posterior(x)
    assert torch.allclose(mean, mu, atol=1e-9)
    assert torch.allclose(cov, sigma.expand_as(cov), atol=1e-9)
    assert torch.allclose(truth.elbo(x, mu, sigma), truth.log_marginal(x), atol=1e-9)
    assert torch.all(truth.elbo(x, mu + 0.3, sigma) < truth.log_marginal(x))


def test_the_ladder_model_is_ladder_exact_and_a_general_one_is_not():
    g = torch.Generator().manual_seed(5)
    assert random_hierarchy(g, sizes=(2, 2), ladder=True).ladder_exact()
    assert not random_hierarchy(g, sizes=(2, 2)).ladder_exact()
    with pytest.raises(ValueError, match="D1 = D2"):
        random_hierarchy(g, sizes=(3, 2), ladder=True)
