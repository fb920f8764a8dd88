"""Guides built as their definitions say."""

import torch
import torch.nn.functional as F

from pyro_vae.parts import guides
from pyro_vae.parts.guides import MIN_SCALE, ContextFirstNN, FullRankGuide, condition
from pyro_vae.parts.networks import Architecture
from pyro_vae.registry import GUIDES


def test_full_rank_scale_tril_places_every_output():
    """L(x): softplus(raw_diag) + MIN_SCALE on the diagonal, the off-diagonal outputs in
    ``tril_indices`` order below it, zeros above, written here entry by entry."""
    d = 4
    guide = FullRankGuide(Architecture(data_dim=6, latent_dim=d, hidden=(8,)))
    h = torch.randn(3, guide.loc.in_features)
    diag = F.softplus(guide.raw_diag(h)) + MIN_SCALE
    off = guide.off_diag(h)
    expected = torch.zeros(3, d, d)
    rows, cols = torch.tril_indices(d, d, offset=-1).tolist()
    for b in range(3):
        for i in range(d):
            expected[b, i, i] = diag[b, i]
        for j, (r, c) in enumerate(zip(rows, cols)):
            expected[b, r, c] = off[b, j]
    torch.testing.assert_close(guide.scale_tril(h), expected, rtol=0, atol=0)


def perturbed_iaf_guide(latent: int = 3):
    guide = GUIDES.build(
        "iaf", Architecture(data_dim=6, latent_dim=latent, hidden=(8,)), {}
    )
    with torch.no_grad():
        for p in guide.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return guide


def context_first_gap(guide) -> float:
    """Largest difference between ContextFirstNN and Pyro's own conditional network, for one
    context per pseudo-input (K, F) against inputs (N, K, D), and relative difference between
    the flow densities built on each."""
    h = torch.randn(4, guide.loc.in_features)  # K = 4 contexts
    z = torch.randn(5, 4, guide.loc.out_features)  # N = 5 inputs for each
    gap = 0.0
    for flow in guide.flows:
        ours = ContextFirstNN(flow.nn, h)(z)
        pyros = flow.nn(z, h.expand(5, 4, -1))
        gap = max(gap, max((a - b).abs().max().item() for a, b in zip(ours, pyros)))
    base = guide.gaussian_from_features(h)
    reference = torch.distributions.TransformedDistribution(
        base, [flow.condition(h) for flow in guide.flows]
    )
    x = torch.randn(5, 4, guide.loc.out_features)
    fast = torch.distributions.TransformedDistribution(
        base, [condition(flow, h) for flow in guide.flows]
    )
    a, b = fast.log_prob(x.clone()), reference.log_prob(x.clone())
    return max(gap, ((a - b).abs() / b.abs()).max().item())


def test_context_first_network_equals_pyros_conditional_network():
    assert context_first_gap(perturbed_iaf_guide()) < 1e-5


def test_the_network_check_catches_a_dropped_bias(monkeypatch):
    original = guides.ContextFirstNN.__init__

    def no_bias(self, net, context):
        original(self, net, context)
        self.context_part = self.context_part - net.layers[0].bias

    monkeypatch.setattr(guides.ContextFirstNN, "__init__", no_bias)
    assert context_first_gap(perturbed_iaf_guide()) > 1e-3
