"""The ``enum_meanfield`` check rows pass, each injected bug fails the rows that guard against
it (the KL of the first enumerated class broadcast to all, the KL left unscaled by the site's
scale, the KL counted beside the sampled term, the sampled term kept while the closed form is
claimed), and the closed-form variance they use agrees with brute force."""

import pyro
import torch
from pyro.ops import packed

from pyro_vae.checks import enum_meanfield as checks
from pyro_vae.checks.analytic_mixture import random_mixture
from pyro_vae.infer import trace_enum_meanfield as objective

EXACT = "M2 enum_meanfield ELBO / N, W = 0, class-wise q(z|x,y): exact"
SCALED = "M2 enum_meanfield ELBO / N, W = 0, kl_weight 0.5: exact"
WITHIN_SE = "M2 enum_meanfield ELBO / N, mean-field q(z|x,y), 50 repeats"
SPREAD = (
    "M2 enum_meanfield: SD of repeats / closed-form SD of the reconstruction term alone"
)


def failed():
    """The rows that fail, on one thread (many small tensor operations), seeded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pyro.set_rng_seed(0)
    try:
        rows = checks.enum_meanfield_checks(
            None, None, torch.Generator().manual_seed(0)
        )
    finally:
        torch.set_num_threads(threads)
    assert [r.quantity for r in rows] == [EXACT, SCALED, WITHIN_SE, SPREAD]
    return [r.quantity for r in rows if not r.passed]


def test_every_row_passes():
    assert failed() == []


def test_the_first_class_kl_broadcast_over_y_fails(monkeypatch):
    real = objective.kl_divergence
    monkeypatch.setattr(objective, "kl_divergence", lambda q, p: real(q, p)[:1])
    assert {EXACT, SCALED, WITHIN_SE} <= set(failed())


def test_the_kl_left_unscaled_fails(monkeypatch):
    real = objective.scale_and_mask
    monkeypatch.setattr(
        objective, "scale_and_mask", lambda t, scale, mask: real(t, 1.0, mask)
    )
    assert failed() == [SCALED]


def test_the_kl_counted_beside_the_sampled_term_fails(monkeypatch):
    def both(model_site, guide_site, kl):
        symbols = {
            **guide_site["infer"]["_dim_to_symbol"],
            **model_site["infer"]["_dim_to_symbol"],
        }
        lp, neg_kl = packed.broadcast_all(
            model_site["packed"]["log_prob"], packed.neg(packed.pack(kl, symbols))
        )
        total = lp + neg_kl  # the guide's -log q(z) is kept: the KL beside the sample
        total._pyro_dims = lp._pyro_dims
        model_site["packed"]["log_prob"] = total

    monkeypatch.setattr(objective, "replace_terms", both)
    assert {EXACT, SCALED, WITHIN_SE} <= set(failed())


def test_the_sampled_term_kept_while_claiming_the_closed_form_fails(monkeypatch):
    monkeypatch.setattr(objective, "closed_form_kl", lambda m, g: None)
    assert {EXACT, SCALED, SPREAD} <= set(failed())


def test_the_reconstruction_variance_agrees_with_brute_force():
    g = torch.Generator().manual_seed(3)
    truth = random_mixture(g)
    x, _ = truth.sample(4, g)
    probs = torch.rand(4, 3, generator=g, dtype=x.dtype).softmax(-1)
    loc = torch.randn(3, 4, 2, generator=g, dtype=x.dtype)
    scale = 0.5 + torch.rand(3, 4, 2, generator=g, dtype=x.dtype)
    z = loc + scale * torch.randn(50_000, 3, 4, 2, generator=g, dtype=x.dtype)
    mean = z @ truth.weight.T + truth.biases[:, None, :]
    log_lik = torch.distributions.Normal(mean, truth.noise_scale).log_prob(x).sum(-1)
    draws = (probs.T * log_lik).sum(1)  # (draws, N)
    exact = truth.reconstruction_variance(x, probs, loc, scale)
    assert torch.allclose(draws.var(0), exact, rtol=0.05)
