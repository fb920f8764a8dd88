"""The semi-supervised VAE's check rows pass, and each injected bug fails its rows: sampling y
while the enumerated estimator is claimed, and dropping the auxiliary term's scale."""

import torch

from pyro_vae.checks import semi_supervised as checks
from pyro_vae.checks.analytic_mixture import random_mixture
from pyro_vae.models import semi_supervised


def rows():
    return {r.quantity: r for r in checks.semi_supervised_checks(None, None, _gen())}


def _gen():
    return torch.Generator().manual_seed(0)


def test_every_row_passes():
    result = rows()
    assert len(result) == 6
    failed = [q for q, r in result.items() if not r.passed]
    assert not failed, failed


def test_sampling_y_instead_of_enumerating_fails(monkeypatch):
    """The guide no longer marks y for enumeration: TraceEnum_ELBO and the importance sampler
    then sample it, and the exact rows see the Monte Carlo error."""
    monkeypatch.setattr(semi_supervised, "config_enumerate", lambda fn, default: fn)
    result = rows()
    assert not result["M2 enumerated ELBO / N, exact q(z|x,y), perturbed q(y|x)"].passed
    assert not result["M2 IS log p(x), y summed out, exact q(z|x,y), K = 10"].passed


def test_dropping_the_auxiliary_scale_fails(monkeypatch):
    monkeypatch.setattr(
        semi_supervised.SemiSupervised, "auxiliary_scale", lambda self, n, m: 1.0
    )
    failed = [q for q, r in rows().items() if not r.passed]
    assert failed == ["M2 labelled loss / N = -(log p(x,y) + 0.1 N/N_l log q(y|x))"]


def test_the_closed_forms_agree_with_brute_force():
    """The mixture's log p(x) and p(y | x) against a sum over y of the per-class Gaussians, and
    its classifier map against the posterior it claims."""
    truth = random_mixture(_gen())
    x, _ = truth.sample(50, _gen())
    post = truth.class_posterior(x)
    gain, offset = truth.classifier_map()
    assert torch.allclose((x @ gain.T + offset).softmax(-1), post, atol=1e-10)
    assert torch.allclose(post.sum(-1), torch.ones(50, dtype=x.dtype))
    cov = truth.weight @ truth.weight.T + 0.49 * torch.eye(6, dtype=x.dtype)
    brute = torch.stack(
        [
            lp + torch.distributions.MultivariateNormal(b, cov).log_prob(x)
            for lp, b in zip(truth.log_pi, truth.biases)
        ]
    ).logsumexp(0)
    assert torch.allclose(truth.log_marginal(x), brute, atol=1e-10)
