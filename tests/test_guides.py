"""Guides built as their definitions say."""

import torch
import torch.nn.functional as F

from pyro_vae.guides import MIN_SCALE, FullRankGuide
from pyro_vae.networks import Architecture


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
