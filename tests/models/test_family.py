"""The model-family seam: a family registered from outside the library (one file) trains with
``fit`` and is estimated through traces and its declared latent sites, never by the name
``"z"`` the ``vae`` family uses."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro import poutine
from torch import nn

from pyro_vae import config as cfg
from pyro_vae import data, models
from pyro_vae.errors import ConfigError
from pyro_vae.estimate.ais import annealed_importance_sampling
from pyro_vae.estimate.diagnostics import elbo_terms
from pyro_vae.estimate.marginal import log_marginal_likelihood
from pyro_vae.models.family import DATA_PLATE, OBSERVED, Family, LatentSite
from pyro_vae.models.vae import VAE
from pyro_vae.registry import FAMILIES
from pyro_vae.run.train import fit


class LinearBernoulli(Family):
    """p(h) = N(0, I), p(x | h) = Bernoulli(sigmoid(W h + b)), q(h | x) = N(A x + c, diag s^2):
    one latent site, named ``"h"``."""

    def __init__(self, data_dim: int, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.decoder = nn.Linear(latent_dim, data_dim)
        self.encoder = nn.Linear(data_dim, 2 * latent_dim)
        self.latent_sites = (LatentSite("h", latent_dim),)

    def model(self, x, kl_weight=1.0, reconstruction_weight=1.0):
        pyro.module("linear_bernoulli.decoder", self.decoder)
        zeros = x.new_zeros(self.latent_dim)
        with pyro.plate(DATA_PLATE, x.shape[0]):
            with poutine.scale(scale=kl_weight):
                h = pyro.sample("h", dist.Normal(zeros, 1.0 + zeros).to_event(1))
            with poutine.scale(scale=reconstruction_weight):
                logits = self.decoder(h)
                return pyro.sample(
                    OBSERVED, dist.Bernoulli(logits=logits).to_event(1), obs=x
                )

    def guide(self, x, kl_weight=1.0, reconstruction_weight=1.0):
        pyro.module("linear_bernoulli.encoder", self.encoder)
        loc, raw = self.encoder(x).chunk(2, -1)
        with pyro.plate(DATA_PLATE, x.shape[0]):
            with poutine.scale(scale=kl_weight):
                return pyro.sample(
                    "h", dist.Normal(loc, F.softplus(raw) + 1e-3).to_event(1)
                )


@pytest.fixture
def linear_family(monkeypatch):
    """The family registered for this test only (the registry is restored afterwards)."""
    FAMILIES.names()  # load the library's families before taking the copy
    monkeypatch.setattr(FAMILIES, "_factories", dict(FAMILIES._factories))

    @FAMILIES.register("linear_bernoulli")
    def linear_bernoulli(config, data_shape):
        """A linear Gaussian-Bernoulli model (a test's own family)."""
        size = data_shape if isinstance(data_shape, int) else math.prod(data_shape)
        return LinearBernoulli(size, config.model.latent_dim)

    return "linear_bernoulli"


def test_a_family_registered_in_one_file_trains_and_is_estimated(linear_family):
    config = cfg.load(
        None,
        {"model.family": linear_family, "model.latent_dim": 2, "train.epochs": 3},
    )
    ds = data.load(config.data)
    family = models.build(config, ds.shape)
    assert isinstance(family, LinearBernoulli)
    metrics = fit(family, ds, config)
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert metrics[-1]["test_elbo"] > metrics[0]["test_elbo"]  # it learns
    x = ds.test[:20]
    guide_trace = poutine.trace(family.guide).get_trace(x)
    assert "z" not in guide_trace.nodes and "h" in guide_trace.nodes
    terms = elbo_terms(family, x, num_samples=200)
    assert torch.all(terms["kl"] > 0)  # the KL of site "h", found through the traces
    torch.manual_seed(0)
    estimate = log_marginal_likelihood(family.model, family.guide, x, num_samples=500)
    # log p(x) >= ELBO (up to the IS estimate's own error)
    gap = estimate.log_marginal - terms["elbo"]
    assert torch.all(gap > -4 * estimate.stderr - 0.05)
    ais = annealed_importance_sampling(
        family.model, family.guide, x[:4], num_steps=20, num_chains=4
    )
    assert torch.isfinite(ais.log_marginal).all()


def test_the_config_names_a_family_through_the_registry(linear_family):
    assert cfg.load(None, {"model.family": linear_family}).model.family == linear_family
    assert cfg.load(None, {}).model.family == "vae"
    with pytest.raises(
        ConfigError, match="unknown model family 'vea'.*did you mean 'vae'"
    ):
        cfg.load(None, {"model.family": "vea"})


def test_the_vae_family_declares_its_latent_site():
    config = cfg.load(None, {"model.latent_dim": 3, "model.hidden": [8]})
    vae = models.build(config, 64)
    assert isinstance(vae, VAE)
    assert vae.latent_sites == (LatentSite("z", 3),)


def test_ais_refuses_a_guide_whose_latent_sites_are_not_the_models():
    """AIS anneals all of the model's latent sites at once; a guide with a site the model
    lacks is refused with one line naming both."""

    class TwoSites(LinearBernoulli):
        def guide(self, x, kl_weight=1.0, reconstruction_weight=1.0):
            loc, raw = self.encoder(x).chunk(2, -1)
            with pyro.plate(DATA_PLATE, x.shape[0]):
                pyro.sample("h", dist.Normal(loc, F.softplus(raw) + 1e-3).to_event(1))
                pyro.sample("g", dist.Normal(x.new_zeros(1), 1.0).to_event(1))

    family = TwoSites(64, 2)
    x = torch.zeros(3, 64)
    with pytest.raises(ConfigError, match="the proposal has h, g, the model h"):
        annealed_importance_sampling(family.model, family.guide, x, num_steps=2)
