"""The conditional family (CVAE): the quadrant masks, the model scoring the target pixels
alone given the rest, and training and conditional estimates through the seam."""

import pytest
import torch
from pyro import poutine

from pyro_vae import config as cfg
from pyro_vae import data, models
from pyro_vae.errors import ConfigError
from pyro_vae.estimate.diagnostics import elbo_terms
from pyro_vae.estimate.marginal import log_marginal_likelihood
from pyro_vae.models.conditional import quadrant_mask
from pyro_vae.run.train import fit

SMALL = {"model.family": "conditional", "model.latent_dim": 3, "model.hidden": [32]}


def test_quadrant_masks():
    one = quadrant_mask((1, 4, 4), 1).reshape(4, 4)
    assert one[:2, :2].all() and one.sum() == 4
    two = quadrant_mask((1, 4, 4), 2).reshape(4, 4)
    assert two[:2].all() and two.sum() == 8
    three = quadrant_mask((2, 4, 4), 3).reshape(2, 4, 4)
    assert three.sum() == 24 and not three[:, 2:, 2:].any()
    with pytest.raises(ConfigError, match="need images"):
        quadrant_mask((64,), 1)
    with pytest.raises(ConfigError, match="1, 2 or 3 quadrants"):
        quadrant_mask((1, 4, 4), 4)


def test_the_model_scores_the_target_pixels_given_the_rest():
    config = cfg.load(None, {**SMALL, "model.given": 3})
    ds = data.load(config.data)
    cvae = models.build(config, ds.shape)
    x = ds.test[:5]
    guide = poutine.trace(cvae.guide).get_trace(x)
    model = poutine.trace(poutine.replay(cvae.model, trace=guide)).get_trace(x)
    site = model.nodes["x"]
    target = x[:, ~cvae.given_mask]
    assert target.shape[1] == 16 and torch.equal(site["value"], target)
    z, c = guide.nodes["z"]["value"], x[:, cvae.given_mask]
    logits = cvae.decoder(torch.cat([z, c], -1))
    expected = torch.distributions.Bernoulli(logits=logits).log_prob(target).sum(-1)
    assert torch.allclose(site["fn"].log_prob(target), expected, atol=1e-5)
    prior = cvae.prior_net(c)
    assert torch.allclose(model.nodes["z"]["fn"].log_prob(z), prior.log_prob(z))


def test_the_cvae_trains_and_gives_conditional_estimates():
    config = cfg.load(None, {**SMALL, "train.epochs": 3, "train.lr": 0.01})
    ds = data.load(config.data)
    cvae = models.build(config, ds.shape)
    metrics = fit(cvae, ds, config)
    assert metrics[-1]["test_elbo"] > metrics[0]["test_elbo"]
    x = ds.test[:40]
    torch.manual_seed(0)
    terms = elbo_terms(cvae, x, num_samples=100)
    est = log_marginal_likelihood(cvae.model, cvae.guide, x, num_samples=500)
    # log p(t | c) >= the conditional ELBO, up to the estimates' error
    assert (est.log_marginal - terms["elbo"] > -4 * est.stderr - 0.05).all()
    done = cvae.complete(x[:3], num=2)
    assert done.shape == (2, 3, 64)
    assert torch.equal(
        done[..., cvae.given_mask], x[:3, cvae.given_mask].expand(2, 3, -1)
    )
