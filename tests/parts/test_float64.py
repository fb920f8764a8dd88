"""Every registered guide's and prior's log-density in float64 equals its float32 value (to
float32 precision) at points z the guide did not draw; so do the VampPrior over each guide and
the mutual information I(x; z) of an IAF model. (Pyro inverts an IAF starting from float32
zeros whatever the flow's dtype: log q(z | x) at a foreign z once crashed in float64.)
"""

import copy
import itertools

import pytest
import torch

from pyro_vae import config as cfg
from pyro_vae.estimate.diagnostics import mutual_information
from pyro_vae.models.vae import build
from pyro_vae.registry import GUIDES, PRIORS

D, DATA = 3, 10
X = (torch.rand(6, DATA, generator=torch.Generator().manual_seed(1)) > 0.5).float()
Z = 1.3 * torch.randn(6, D, generator=torch.Generator().manual_seed(2))
# float32 carries ~7 digits; the log-densities here are O(1..10) after a few dozen operations
RTOL = ATOL = 2e-5


def pair(prior: str, guide: str):
    """The same perturbed VAE in float32 and in float64 (flows away from the identity)."""
    overrides = {
        "model.latent_dim": D,
        "model.hidden": [16],
        "prior.name": prior,
        "guide.name": guide,
    }
    if prior == "vamp":
        overrides["prior.num_pseudo"] = 4
        if guide == "planar":  # no inverse: q(z | u_k) at any z is not computable
            overrides["prior.components"] = "gaussian"
    torch.manual_seed(0)
    vae = build(cfg.load(None, overrides), DATA)
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return vae, copy.deepcopy(vae).double()


def guide_log_prob(vae, dtype: torch.dtype) -> torch.Tensor:
    """log q(z | x) at Z; a guide without an inverse (planar) at Z pushed through its flows
    (Pyro's flows cache that pair), still a point the guide did not draw."""
    q = vae.encoder(X.to(dtype))
    z = Z.to(dtype)
    try:
        return q.log_prob(z)
    except (NotImplementedError, KeyError):
        for transform in q.transforms:
            z = transform(z)
        return q.log_prob(z)


def close(a32: torch.Tensor, a64: torch.Tensor) -> None:
    assert a32.dtype == torch.float32 and a64.dtype == torch.float64
    assert torch.isfinite(a64).all()
    torch.testing.assert_close(a32.double(), a64, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("guide", GUIDES.names())
def test_every_guide_density_is_the_same_in_float64(guide):
    vae32, vae64 = pair("standard_normal", guide)
    with torch.no_grad():
        close(
            guide_log_prob(vae32, torch.float32), guide_log_prob(vae64, torch.float64)
        )


@pytest.mark.parametrize(
    "prior,guide", list(itertools.product(PRIORS.names(), GUIDES.names()))
)
def test_every_prior_density_over_every_guide_is_the_same_in_float64(prior, guide):
    vae32, vae64 = pair(prior, guide)
    with torch.no_grad():
        close(vae32.prior().log_prob(Z), vae64.prior().log_prob(Z.double()))


def test_mutual_information_of_an_iaf_model_runs_in_float64():
    vae32, vae64 = pair("vamp", "iaf")
    with torch.no_grad():
        torch.manual_seed(3)
        mi32 = mutual_information(vae32, X, num_samples=50)
        mi64 = mutual_information(vae64, X.double(), num_samples=50)
    # float64 draws other numbers than float32: the two estimates agree within their SEs
    gap = abs(mi64["mutual_information"] - mi32["mutual_information"])
    assert gap < 4 * (mi32["stderr"] ** 2 + mi64["stderr"] ** 2) ** 0.5


@pytest.mark.parametrize("prior", PRIORS.names())
def test_every_prior_samples_in_float64(prior):
    """Sampling inverts the flow prior's autoregressive flows, from Pyro's float32 zeros."""
    _, vae64 = pair(prior, "iaf")
    with torch.no_grad():
        z = vae64.prior().sample((4,))
    assert z.dtype == torch.float64 and torch.isfinite(z).all()
