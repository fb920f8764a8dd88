"""The iwae objective: per-data-point log-mean-exp under the data plate, and DReG gradients."""

import math
import warnings

import pyro
import pytest
import torch
from pyro import poutine

from pyro_vae import config as cfg
from pyro_vae.data import Dataset
from pyro_vae.infer.objectives import IWAE, TemperedWeightsWarning
from pyro_vae.models.vae import LATENT, OBSERVED, build
from pyro_vae.run.train import fit

X = (torch.rand(6, 10, generator=torch.Generator().manual_seed(0)) > 0.5).float()


def small_vae(**overrides):
    return build(
        cfg.load(None, {"model.latent_dim": 2, "model.hidden": [8], **overrides}), 10
    )


def test_value_is_the_hand_computed_per_datapoint_log_mean_exp():
    vae = small_vae()
    k = 7
    pyro.set_rng_seed(11)
    loss = IWAE(num_particles=k).loss(vae.model, vae.guide, X)
    # by hand: draw the same z's, score them with torch, log-mean-exp per data point, sum
    pyro.set_rng_seed(11)
    with pyro.plate("particles", k, dim=-2):
        z = poutine.trace(vae.guide).get_trace(X).nodes[LATENT]["value"]
    assert z.shape == (k, 6, 2)
    q = vae.encoder(X)
    log_w = (
        torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
        + torch.distributions.Bernoulli(logits=vae.decoder(z)).log_prob(X).sum(-1)
        - q.log_prob(z)
    )
    per_point = torch.logsumexp(log_w, 0) - math.log(k)
    assert loss == pytest.approx(-per_point.sum().item(), rel=1e-5)
    # not the whole-batch log-mean-exp that RenyiELBO(alpha=0) computes
    batch_bound = torch.logsumexp(log_w.sum(-1), 0) - math.log(k)
    assert abs(loss + batch_bound.item()) > 1e-3


def test_iwae_with_one_particle_is_the_elbo():
    vae = small_vae()
    pyro.set_rng_seed(2)
    iwae1 = IWAE(num_particles=1).loss(vae.model, vae.guide, X)
    pyro.set_rng_seed(2)
    elbo = pyro.infer.Trace_ELBO(vectorize_particles=True, max_plate_nesting=1).loss(
        vae.model, vae.guide, X
    )
    assert iwae1 == pytest.approx(elbo, rel=1e-5)


def grads(vae, dreg, seed):
    for p in vae.parameters():
        p.grad = None
    pyro.set_rng_seed(seed)
    IWAE(num_particles=5, dreg=dreg).loss_and_grads(vae.model, vae.guide, X)
    return {n: p.grad.clone() for n, p in vae.named_parameters()}


def test_dreg_keeps_the_model_gradient_and_changes_only_the_guide_gradient():
    vae = small_vae()
    plain, dreg = grads(vae, False, 4), grads(vae, True, 4)
    for name in plain:
        if name.startswith("decoder"):
            torch.testing.assert_close(dreg[name], plain[name])
    assert any(
        not torch.allclose(dreg[n], plain[n]) for n in plain if n.startswith("encoder")
    )


@pytest.mark.slow
def test_dreg_guide_gradient_is_unbiased_for_the_iwae_gradient():
    """E[DReG] = E[IWAE gradient] for the guide: compare means over repeats within 4 SE."""
    vae = small_vae()
    name = "encoder.loc.bias"
    samples = {
        d: torch.stack([grads(vae, d, s)[name] for s in range(300)])
        for d in (False, True)
    }
    (m0, s0), (m1, s1) = (
        (g.mean(0), g.std(0) / len(g) ** 0.5) for g in samples.values()
    )
    assert ((m0 - m1).abs() < 4 * (s0**2 + s1**2).sqrt()).all()
    assert not torch.allclose(samples[True], samples[False])


def test_dreg_refuses_guides_without_an_inverse():
    vae = small_vae(**{"guide.name": "planar"})
    with pytest.raises(
        ValueError, match="DReG estimator needs a guide whose density can be evaluated"
    ):
        IWAE(num_particles=3, dreg=True).loss_and_grads(vae.model, vae.guide, X)


def test_observed_site_name():
    vae = small_vae()
    assert OBSERVED in poutine.trace(vae.model).get_trace(X).nodes


# -- beta and warm-up with the iwae objective: what exactly is scaled ----------------------------


def hand_tempered_loss(vae, k, beta, seed):
    """-sum_i log (1/K) sum_k exp(log p(x|z) + beta (log p(z) - log q(z|x))), z drawn as IWAE
    draws them, every density from torch."""
    pyro.set_rng_seed(seed)
    with pyro.plate("particles", k, dim=-2):
        z = poutine.trace(vae.guide).get_trace(X).nodes[LATENT]["value"]
    log_lik = torch.distributions.Bernoulli(logits=vae.decoder(z)).log_prob(X).sum(-1)
    log_prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_w = log_lik + beta * (log_prior - vae.encoder(X).log_prob(z))
    return -(torch.logsumexp(log_w, 0) - math.log(k)).sum().item()


def tempered_iwae_loss(model, guide, k, beta, seed):
    pyro.set_rng_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TemperedWeightsWarning)
        return IWAE(num_particles=k).loss(model, guide, X, torch.tensor(beta))


def test_beta_tempers_log_prior_over_guide_inside_the_log_mean_exp():
    vae, k, beta = small_vae(), 6, 0.3
    loss = tempered_iwae_loss(vae.model, vae.guide, k, beta, seed=5)
    assert loss == pytest.approx(hand_tempered_loss(vae, k, beta, 5), rel=1e-5)
    # not the untempered bound, and not the bound with beta times a KL outside the log-mean-exp
    assert abs(loss - hand_tempered_loss(vae, k, 1.0, 5)) > 1e-2


def test_the_hand_check_catches_beta_scaling_the_reconstruction_too():
    """Injected bug: the whole model (the "x" site too) scaled by beta."""
    vae, k, beta = small_vae(), 6, 0.3
    model = poutine.scale(vae.model, scale=beta)
    loss = tempered_iwae_loss(model, vae.guide, k, beta, seed=5)
    assert loss != pytest.approx(hand_tempered_loss(vae, k, beta, 5), rel=1e-3)


def test_iwae_warns_once_when_sites_are_scaled_and_not_otherwise():
    vae = small_vae()
    objective = IWAE(num_particles=3)
    with pytest.warns(
        TemperedWeightsWarning, match="'z' by 0.5.*beta-ELBO only for K = 1"
    ):
        objective.loss(vae.model, vae.guide, X, torch.tensor(0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        objective.loss(vae.model, vae.guide, X, torch.tensor(0.5))  # checked once
        IWAE(num_particles=3).loss(vae.model, vae.guide, X, torch.tensor(1.0))


@pytest.mark.parametrize(
    "train",
    [{"train.beta": 2.0}, {"train.kl_warmup_epochs": 1}],
    ids=["beta", "warmup"],
)
def test_training_with_iwae_and_beta_or_warmup_warns(train):
    config = cfg.load(
        None,
        {"model.latent_dim": 2, "model.hidden": [8], "objective.name": "iwae"}
        | {"train.epochs": 1, "train.batch_size": 3, **train},
    )
    with pytest.warns(TemperedWeightsWarning):
        fit(build(config, 10), Dataset("toy", X, X[:3], (2, 5)), config)
