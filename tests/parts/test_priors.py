"""Priors against their definitions: the VampPrior's components, the fast diagonal mixtures."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI

from pyro_vae import config as cfg
from pyro_vae.errors import ConfigError
from pyro_vae.estimate.marginal import log_marginal_likelihood
from pyro_vae.models.vae import build
from pyro_vae.parts import priors
from pyro_vae.parts.distributions import DiagonalNormalMixture
from pyro_vae.registry import OBJECTIVES
from pyro_vae.run.svi import ModuleOptimizer

X = (torch.rand(12, 10, generator=torch.Generator().manual_seed(0)) > 0.5).float()
K = 5


def vamp_vae(guide: str, **options):
    overrides = {
        "model.latent_dim": 3,
        "model.hidden": [16],
        "prior.name": "vamp",
        "prior.num_pseudo": K,
        "guide.name": guide,
        **{f"prior.{k}": v for k, v in options.items()},
    }
    vae = build(cfg.load(None, overrides), 10)
    with torch.no_grad():  # away from the identity flows and the initial weights
        for p in vae.encoder.parameters():
            p.add_(0.1 * torch.randn_like(p))
        vae.prior.raw_pseudo.add_(torch.randn_like(vae.prior.raw_pseudo))
    return vae


def definition_gap(vae, z: torch.Tensor) -> float:
    """max |log p(z) - [logsumexp_k log q(z | u_k) - log K]| relative to the right side,
    which a Python loop over the pseudo-inputs u_k computes, each q(z | u_k) the guide's full
    posterior (flows included)."""
    u = vae.prior.pseudo_inputs.detach()
    per_component = torch.stack(
        [vae.encoder(u[k : k + 1]).log_prob(z.clone()) for k in range(K)], -1
    )
    expected = torch.logsumexp(per_component, -1) - math.log(K)
    gap = (vae.prior().log_prob(z.clone()) - expected).abs() / expected.abs()
    return gap.max().item()


@pytest.mark.parametrize("guide", ["diagonal", "full_rank", "iaf"])
def test_vamp_prior_is_the_mean_of_the_guides_posteriors(guide):
    """Tomczak & Welling's p(z) = (1/K) sum_k q(z | u_k), flows included (``"posterior"``)."""
    vae = vamp_vae(guide, components="posterior")
    z = 1.5 * torch.randn(7, 3)
    assert definition_gap(vae, z) < 1e-5
    zz = torch.randn(2, 4, 3)  # particles x data points
    assert vae.prior().log_prob(zz).shape == (2, 4)


def test_the_definition_check_catches_gaussian_components_with_flows():
    """The bug this fixes: with components = "gaussian" an IAF guide's prior differs from the
    definition once the flows are away from the identity."""
    vae = vamp_vae("iaf", components="gaussian")
    assert definition_gap(vae, 1.5 * torch.randn(7, 3)) > 1e-2


def test_gaussian_components_are_the_guides_gaussian_before_its_flows():
    vae = vamp_vae("iaf", components="gaussian")
    z = torch.randn(6, 3)
    base = vae.encoder.gaussian(vae.prior.pseudo_inputs)
    per_component = torch.stack([base.log_prob(zi) for zi in z])  # (6, K)
    expected = torch.logsumexp(per_component, -1) - math.log(K)
    torch.testing.assert_close(vae.prior().log_prob(z), expected)


@pytest.mark.parametrize("guide", ["diagonal", "full_rank"])
def test_both_component_options_agree_for_guides_without_flows(guide):
    torch.manual_seed(3)
    a = vamp_vae(guide, components="posterior")
    torch.manual_seed(3)
    b = vamp_vae(guide, components="gaussian")
    z = torch.randn(6, 3)
    torch.testing.assert_close(a.prior().log_prob(z), b.prior().log_prob(z))


def test_gaussian_components_are_the_default_and_posterior_is_one_option_away():
    """Issue #25: the exact prior with an IAF guide costs ~100x per step, so the default
    mixes the guide's Gaussians; ``prior.components = "posterior"`` gives the definition.
    """
    default = vamp_vae("iaf")
    assert default.prior.components == "gaussian"
    assert isinstance(default.prior(), DiagonalNormalMixture)
    assert definition_gap(default, 1.5 * torch.randn(7, 3)) > 1e-2  # not the definition
    exact = vamp_vae("iaf", components="posterior")
    assert definition_gap(exact, 1.5 * torch.randn(7, 3)) < 1e-5


def test_vamp_with_a_diagonal_guide_uses_the_matrix_product_mixture():
    assert isinstance(vamp_vae("diagonal").prior(), DiagonalNormalMixture)
    assert isinstance(
        vamp_vae("iaf", components="gaussian").prior(), DiagonalNormalMixture
    )


def test_vamp_with_planar_flows_and_posterior_components_is_refused():
    with pytest.raises(
        ConfigError,
        match=r"components = \"posterior\".*ConditionedPlanar.*no inverse: set "
        r"prior.components = \"gaussian\"",
    ):
        vamp_vae("planar", components="posterior")
    vae = vamp_vae("planar")  # the default, "gaussian", needs no inverse
    assert torch.isfinite(vae.prior().log_prob(torch.randn(4, 3))).all()
    with pytest.raises(ConfigError, match='components must be "posterior" or'):
        vamp_vae("diagonal", components="flows")


@pytest.mark.parametrize("objective", ["trace", "iwae"])
def test_the_pseudo_inputs_are_encoded_once_per_model_call(objective):
    """One SVI step with 3 particles runs the encoder twice: on the batch (guide) and on the
    pseudo-inputs (model, shared by the particles)."""
    vae = vamp_vae("diagonal")
    options = {"num_particles": 3}
    if objective == "trace":
        options["jit"] = False
    elbo = OBJECTIVES.build(objective, None, options)
    svi = SVI(vae.model, vae.guide, ModuleOptimizer(vae, 1e-3), loss=elbo)
    calls = []
    handle = vae.encoder.trunk.register_forward_hook(
        lambda module, inputs, output: calls.append(inputs[0].shape[0])
    )
    svi.step(X)
    handle.remove()
    assert sorted(calls) == sorted([X.shape[0], K])
    calls.clear()
    handle = vae.encoder.trunk.register_forward_hook(
        lambda module, inputs, output: calls.append(inputs[0].shape[0])
    )
    with pyro.validation_enabled(False):
        log_marginal_likelihood(vae.model, vae.guide, X[:2], num_samples=40)
    handle.remove()
    assert calls == [2, K]  # one chunk: the batch once, the pseudo-inputs once


def test_mixture_prior_equals_mixture_same_family():
    vae = build(
        cfg.load(
            None,
            {"model.latent_dim": 3, "model.hidden": [8], "prior.name": "mixture"},
        ),
        10,
    )
    prior = vae.prior()
    assert isinstance(prior, DiagonalNormalMixture)
    reference = dist.MixtureSameFamily(
        dist.Categorical(logits=vae.prior.logits),
        dist.Normal(
            vae.prior.locs, torch.nn.functional.softplus(vae.prior.raw_scales)
        ).to_event(1),
    )
    z = 2 * torch.randn(9, 3)
    torch.testing.assert_close(prior.log_prob(z), reference.log_prob(z))


def test_mixture_of_falls_back_for_other_components():
    mvn = dist.MultivariateNormal(torch.zeros(4, 2), torch.eye(2).expand(4, 2, 2))
    mixture = priors.mixture_of(torch.zeros(4), mvn)
    assert not isinstance(mixture, DiagonalNormalMixture)
    z = torch.randn(5, 2)
    one = dist.MultivariateNormal(torch.zeros(2), torch.eye(2))
    torch.testing.assert_close(mixture.log_prob(z), one.log_prob(z))


def test_a_prior_registered_from_user_code_trains_and_is_the_model_s_prior(tmp_path):
    """A user's prior is one registered factory (the decorator the library uses): it is named by
    the config like a built-in one, the model samples z from it, and fit trains with it.
    """
    from torch import nn

    from pyro_vae.data import Dataset
    from pyro_vae.registry import PRIORS
    from pyro_vae.run.train import fit

    class Laplace(nn.Module):
        def __init__(self, latent_dim: int, scale: float):
            super().__init__()
            self.register_buffer("loc", torch.zeros(latent_dim))
            self.scale = scale

        def forward(self) -> dist.Distribution:
            return dist.Laplace(self.loc, self.scale).to_event(1)

    @PRIORS.register("user_laplace")
    def user_laplace(context, scale: float = 0.5) -> nn.Module:
        """A factorized Laplace prior (a user's part)."""
        return Laplace(context.arch.latent_dim, scale)

    try:
        config = cfg.load(
            None,
            {
                "prior.name": "user_laplace",
                "prior.scale": 0.7,
                "model.hidden": [16],
                "model.latent_dim": 3,
                "train.epochs": 2,
                "train.batch_size": 6,
            },
        )
        vae = build(config, 10)
        z = torch.randn(4, 3)
        expected = torch.distributions.Laplace(0.0, 0.7).log_prob(z).sum(-1)
        assert torch.allclose(vae.prior().log_prob(z), expected)
        trace = pyro.poutine.trace(vae.model).get_trace(X)
        assert isinstance(trace.nodes["z"]["fn"].base_dist, dist.Laplace)
        metrics = fit(vae, Dataset("mine", X, X[:6], (1, 10)), config, tmp_path / "r")
        assert len(metrics) == 2 and all(math.isfinite(m["test_elbo"]) for m in metrics)
        with pytest.raises(ConfigError, match="unknown option 'width'"):
            cfg.load(None, {"prior.name": "user_laplace", "prior.width": 1.0})
    finally:
        del PRIORS._factories["user_laplace"]


def _fresh_mixture(vae, z: torch.Tensor) -> torch.Tensor:
    """log p(z) computed from scratch (with gradients on: never the kept mixture)."""
    with torch.enable_grad():
        return vae.prior().log_prob(z).detach()


def test_the_vamp_mixture_is_kept_without_gradients_until_an_input_changes():
    """Issue #25: evaluation reuses the encoded pseudo-inputs across chunks, and recomputes
    them after anything they depend on changes."""
    vae = vamp_vae("diagonal")
    z = torch.randn(6, 3)
    with torch.no_grad():
        first = vae.prior()
        assert vae.prior() is first  # kept
        torch.testing.assert_close(first.log_prob(z), _fresh_mixture(vae, z))
        vae.prior.raw_pseudo.add_(0.5)  # the pseudo-inputs move
        assert vae.prior() is not first
        torch.testing.assert_close(vae.prior().log_prob(z), _fresh_mixture(vae, z))
    optimizer = torch.optim.Adam(vae.parameters(), lr=0.1)  # an optimizer's step
    loss = -vae.prior().log_prob(z).sum()
    assert loss.requires_grad  # with gradients: computed, never kept
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        torch.testing.assert_close(vae.prior().log_prob(z), _fresh_mixture(vae, z))
    state = {k: v + 0.1 for k, v in vae.state_dict().items()}
    vae.load_state_dict(state)  # a checkpoint loaded into the same modules
    with torch.no_grad():
        torch.testing.assert_close(vae.prior().log_prob(z), _fresh_mixture(vae, z))
        vae.encoder = type(vae.encoder)(vae.arch)  # a swapped encoder
        torch.testing.assert_close(vae.prior().log_prob(z), _fresh_mixture(vae, z))


def test_the_kept_mixture_check_catches_a_key_that_misses_changes(monkeypatch):
    monkeypatch.setattr(priors.VampPrior, "_inputs_key", lambda self: ())
    vae = vamp_vae("diagonal")
    z = torch.randn(6, 3)
    with torch.no_grad():
        vae.prior()
        vae.prior.raw_pseudo.add_(0.5)
        stale = vae.prior().log_prob(z)
    assert (stale - _fresh_mixture(vae, z)).abs().max() > 1e-3


def test_the_kept_mixture_sees_a_step_of_fits_optimizer(monkeypatch):
    """fit's ModuleOptimizer steps with torch's fused Adam, which writes the parameters without
    bumping their version counters on the CPU: it bumps them, so the kept mixture is dropped
    (before, fit's per-epoch ELBOs of VampPrior runs read the prior of an earlier epoch).
    """
    from pyro_vae.run.svi import ModuleOptimizer

    def step_and_compare(vae) -> float:
        z = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
        optimizer = ModuleOptimizer(vae, lr=0.1)
        with torch.no_grad():
            vae.prior()  # kept
        (-vae.prior().log_prob(z).sum()).backward()
        optimizer(optimizer.params)
        with torch.no_grad():
            kept = vae.prior().log_prob(z)
        return (kept - _fresh_mixture(vae, z)).abs().max().item()

    assert step_and_compare(vamp_vae("diagonal")) < 1e-6
    # the net, shown to catch the bug: without the bump the mixture is stale after the step
    monkeypatch.setattr(torch.autograd.graph, "increment_version", lambda tensors: None)
    assert step_and_compare(vamp_vae("diagonal")) > 1e-3
