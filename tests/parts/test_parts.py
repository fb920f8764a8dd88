"""Every registered prior x guide x objective x network works, with no code beyond its
registration."""

import itertools
import math

import pyro
import pytest
import torch
from pyro.infer import SVI

from pyro_vae import config as cfg
from pyro_vae.estimate.marginal import log_marginal_likelihood
from pyro_vae.models.vae import LATENT, build
from pyro_vae.registry import GUIDES, NETWORKS, OBJECTIVES, PRIORS
from pyro_vae.run.svi import ModuleOptimizer

X = (torch.rand(12, 10) > 0.5).float()
IMAGES = (torch.rand(12, 64) > 0.5).float()  # 1 x 8 x 8, the digits' shape
IMAGE_SHAPE = (1, 8, 8)
SMALL_NETWORKS = {"conv": {"network.channels": [4, 8], "network.features": 16}}
SMALL = {
    "model.latent_dim": 3,
    "model.hidden": [16],
    "prior.name": "vamp",
    "prior.num_pseudo": 4,
}


def part_overrides(prior, guide, objective, network="mlp"):
    overrides = {
        "network.name": network,
        **SMALL_NETWORKS.get(network, {}),
        "model.latent_dim": 3,
        "model.hidden": [16],
        "prior.name": prior,
        "guide.name": guide,
        "objective.name": objective,
        "objective.num_particles": 2,
    }
    if prior == "vamp":
        overrides["prior.num_pseudo"] = 4
        if guide == "planar":  # no inverse: q(z | u_k) at any z is not computable
            overrides["prior.components"] = "gaussian"
    return overrides


@pytest.mark.parametrize(
    "prior,guide,objective,network",
    list(
        itertools.product(
            PRIORS.names(), GUIDES.names(), OBJECTIVES.names(), NETWORKS.names()
        )
    ),
)
def test_every_prior_guide_objective_network_combination(
    prior, guide, objective, network
):
    config = cfg.load(None, part_overrides(prior, guide, objective, network))
    vae = build(config, IMAGE_SHAPE)
    X = IMAGES
    q = vae.encoder(X)
    z = q.rsample()
    assert z.shape == (12, 3) and q.log_prob(z).shape == (12,)
    assert vae.prior().log_prob(z).shape == (12,) and vae.prior().event_shape == (3,)
    elbo = OBJECTIVES.build(objective, None, config.objective.options)
    svi = SVI(vae.model, vae.guide, ModuleOptimizer(vae, 1e-2), loss=elbo)
    before = [p.detach().clone() for p in vae.parameters()]
    # two steps: zero-initialized flow output layers pass no gradient to their hidden layers at first
    losses = [svi.step(X) for _ in range(2)]
    assert all(math.isfinite(loss) for loss in losses)
    changed = [not torch.equal(a, b) for a, b in zip(before, vae.parameters())]
    assert all(changed), f"{sum(not c for c in changed)} parameters did not move"
    estimate = log_marginal_likelihood(vae.model, vae.guide, X, num_samples=20)
    assert (
        estimate.log_marginal.shape == (12,)
        and torch.isfinite(estimate.log_marginal).all()
    )
    assert torch.isfinite(estimate.stderr).all() and (estimate.ess <= 20 + 1e-6).all()


def test_new_registrations_are_picked_up():
    """The combination test reads the registries, so a new part is tested automatically."""
    assert {"standard_normal", "learned_normal", "mixture", "vamp", "flow"} <= set(
        PRIORS.names()
    )
    assert {"diagonal", "full_rank", "iaf", "planar"} <= set(GUIDES.names())
    assert {"trace", "meanfield", "iwae"} <= set(OBJECTIVES.names())
    assert {"mlp", "conv"} <= set(NETWORKS.names())


def test_one_component_mixture_equals_its_gaussian():
    vae = build(
        cfg.load(
            None,
            {
                "model.latent_dim": 3,
                "model.hidden": [8],
                "prior.name": "mixture",
                "prior.num_components": 1,
            },
        ),
        10,
    )
    prior = vae.prior()
    gaussian = torch.distributions.Normal(
        vae.prior.locs[0], torch.nn.functional.softplus(vae.prior.raw_scales[0])
    )
    z = torch.randn(7, 3)
    torch.testing.assert_close(prior.log_prob(z), gaussian.log_prob(z).sum(-1))


def test_identity_initialized_flow_prior_keeps_the_base_density():
    vae = build(
        cfg.load(
            None, {"model.latent_dim": 4, "model.hidden": [8], "prior.name": "flow"}
        ),
        10,
    )
    z = 2 * torch.randn(9, 4)
    base = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(vae.prior().log_prob(z), base)
    with torch.no_grad():  # once trained (here: perturbed) it differs
        for p in vae.prior.parameters():
            p.add_(0.1 * torch.randn_like(p))
    assert not torch.allclose(
        vae.prior().log_prob(z.clone()), base
    )  # a new tensor: no transform cache


def test_flow_prior_density_is_normalized_change_of_variables():
    """log p(f(u)) = log N(u) - log|det df/du| checked on samples drawn through the flow."""
    torch.manual_seed(1)
    vae = build(
        cfg.load(
            None, {"model.latent_dim": 2, "model.hidden": [8], "prior.name": "flow"}
        ),
        10,
    )
    with torch.no_grad():
        for p in vae.prior.parameters():
            p.add_(0.3 * torch.randn_like(p))
    prior = vae.prior()
    u = torch.randn(5, 2)
    z, ladj = u, torch.zeros(5)
    for t in prior.transforms:
        y = t(z)
        ladj = ladj + t.log_abs_det_jacobian(z, y)
        z = y
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(u).sum(-1) - ladj
    torch.testing.assert_close(
        prior.log_prob(z.detach().clone()), expected, rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("guide", ["diagonal", "full_rank", "iaf"])
def test_vamp_prior_is_the_mean_of_guide_densities_at_pseudo_inputs(guide):
    vae = build(cfg.load(None, {**SMALL, "guide.name": guide}), 10)
    z = torch.randn(6, 3)
    components = vae.encoder.gaussian(vae.prior.pseudo_inputs)
    per_component = torch.stack([components.log_prob(zi) for zi in z])  # (6, K)
    expected = torch.logsumexp(per_component, -1) - math.log(4)
    torch.testing.assert_close(vae.prior().log_prob(z), expected)
    assert components.batch_shape == (4,)


def test_identity_initialized_iaf_guide_equals_its_gaussian():
    vae = build(
        cfg.load(
            None, {"model.latent_dim": 3, "model.hidden": [8], "guide.name": "iaf"}
        ),
        10,
    )
    q, base = vae.encoder(X), vae.encoder.gaussian(X)
    z = q.rsample()
    torch.testing.assert_close(q.log_prob(z), base.log_prob(z))


def test_full_rank_guide_has_a_valid_cholesky_factor():
    vae = build(
        cfg.load(
            None,
            {"model.latent_dim": 4, "model.hidden": [8], "guide.name": "full_rank"},
        ),
        10,
    )
    L = vae.encoder(X).scale_tril
    assert L.shape == (12, 4, 4)
    assert torch.equal(L, L.tril()) and (L.diagonal(dim1=-2, dim2=-1) > 0).all()
    assert (L.tril(-1) != 0).any()


def test_meanfield_uses_analytic_kl_only_where_it_exists():
    from pyro_vae.data import Dataset
    from pyro_vae.run.train import fit

    ds = Dataset("toy", X, X[:4], (2, 5))
    for prior, analytic in (("standard_normal", True), ("mixture", False)):
        config = cfg.load(
            None,
            {
                "model.latent_dim": 2,
                "model.hidden": [8],
                "prior.name": prior,
                "objective.name": "meanfield",
                "train.epochs": 1,
                "train.batch_size": 6,
            },
        )
        metrics = fit(build(config, 10), ds, config)
        assert metrics[0]["analytic_kl"] is analytic


def test_latent_site_is_named_z():
    vae = build(cfg.load(None, {"model.latent_dim": 2, "model.hidden": [8]}), 10)
    assert LATENT in pyro.poutine.trace(vae.guide).get_trace(X).nodes
