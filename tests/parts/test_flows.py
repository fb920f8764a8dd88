"""The flows of the parts (the iaf and planar guides, the flow prior): each density is the
change of variables log q(y) = log base(z) - log|det dy/dz| with the Jacobian taken by autograd
through the transforms' forward maps, never through their own log_abs_det_jacobian; halving
that log-determinant (the injected bug) fails here directly."""

import pyro.distributions.transforms as T
import pytest
import torch
from pyro.distributions.transforms.planar import ConditionedPlanar

from pyro_vae import config as cfg
from pyro_vae.models.vae import build

D, DATA = 3, 8
X = (torch.rand(3, DATA, generator=torch.Generator().manual_seed(0)) > 0.5).double()
TOL = 1e-8  # float64


def perturbed(guide: str, prior: str = "standard_normal"):
    torch.manual_seed(1)
    vae = build(
        cfg.load(
            None,
            {
                "model.latent_dim": D,
                "model.hidden": [16],
                "guide.name": guide,
                "prior.name": prior,
            },
        ),
        DATA,
    ).double()
    with torch.no_grad():  # away from the identity flows
        for p in vae.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return vae


def change_of_variables_gap(distribution) -> float:
    """max over rows |log q(y) - (log base(z) - log|det J(z)|)|, y the flows' image of a base
    draw z, J by autograd through each transform's forward map (one row at a time)."""
    z = distribution.base_dist.sample()
    z = z.reshape(-1, D)
    gap = 0.0
    for i in range(z.shape[0]):

        def forward(v, i=i):
            y = v
            for t in distribution.transforms:
                full = z.clone()
                full[i] = y
                y = t(full)[i]
            return y

        jacobian = torch.autograd.functional.jacobian(forward, z[i])
        expected = (
            distribution.base_dist.log_prob(z)[i] - torch.linalg.slogdet(jacobian)[1]
        )
        y = z
        for t in distribution.transforms:  # cached: planar flows have no inverse
            y = t(y)
        gap = max(gap, (distribution.log_prob(y)[i] - expected).abs().item())
    return gap


def halve_log_det(monkeypatch, transform) -> None:
    real = transform.log_abs_det_jacobian
    monkeypatch.setattr(
        transform, "log_abs_det_jacobian", lambda self, x, y: 0.5 * real(self, x, y)
    )


@pytest.mark.parametrize("guide", ["iaf", "planar"])
def test_flow_guides_are_their_change_of_variables(guide):
    assert change_of_variables_gap(perturbed(guide).encoder(X)) < TOL


def test_the_flow_prior_is_its_change_of_variables():
    assert change_of_variables_gap(perturbed("diagonal", "flow").prior()) < TOL


@pytest.mark.parametrize(
    "guide,transform",
    [("iaf", T.AffineAutoregressive), ("planar", ConditionedPlanar)],
)
def test_a_halved_log_determinant_fails_the_guide_test(monkeypatch, guide, transform):
    halve_log_det(monkeypatch, transform)
    assert change_of_variables_gap(perturbed(guide).encoder(X)) > 1e-3


def test_a_halved_log_determinant_fails_the_prior_test(monkeypatch):
    halve_log_det(monkeypatch, T.AffineAutoregressive)
    assert change_of_variables_gap(perturbed("diagonal", "flow").prior()) > 1e-3
