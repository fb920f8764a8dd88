"""The CVAE's deterministic baseline: its Pyro program scores log p(t | c) exactly, SVI fits
it, and it reads the same split of the rows as the CVAE it is compared with."""

import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO

from pyro_vae import config as cfg
from pyro_vae import data, models
from pyro_vae.errors import ConfigError
from pyro_vae.models.baseline import build_baseline, fit_baseline

SMALL = {"model.family": "conditional", "model.latent_dim": 3, "model.hidden": [32]}


def _task(overrides):
    config = cfg.load(None, {**SMALL, **overrides})
    ds = data.load(config.data)
    cvae = models.build(config, ds.shape)
    return config, ds, cvae


def test_the_loss_is_the_exact_conditional_nll():
    """No latent site: Trace_ELBO's loss is -sum log p(t | c), and log p(t | c) is the
    Bernoulli log-likelihood of the target pixels under the net's logits of the given ones.
    """
    config, ds, cvae = _task({"model.given": 2})
    baseline = build_baseline(config, cvae)
    x = ds.test[:20]
    c, t = x[:, cvae.given_mask], x[:, ~cvae.given_mask]
    expected = -F.binary_cross_entropy_with_logits(
        baseline.net(c), t, reduction="none"
    ).sum(-1)
    assert torch.allclose(baseline.log_likelihood(x), expected, atol=1e-4)
    loss = Trace_ELBO().loss(baseline.model, baseline.guide, x)
    assert loss == pytest.approx(-expected.sum().item(), rel=1e-5)
    assert baseline.complete(x).shape == t.shape


def test_svi_fits_it_for_quadrants_and_labels():
    for overrides in ({"model.given": 1}, {"model.condition": "label"}):
        config, ds, cvae = _task(overrides)
        baseline = build_baseline(config, cvae)
        test = cvae.rows(ds, "test")
        before = -baseline.log_likelihood(test).mean().item()
        pyro.set_rng_seed(0)
        seen = []
        last = fit_baseline(
            baseline,
            cvae.training_rows(ds),
            epochs=3,
            lr=0.01,
            on_epoch=lambda epoch, nll: seen.append((epoch, nll)),
        )
        after = -baseline.log_likelihood(test).mean().item()
        assert after < before - 5, (overrides, before, after)
        assert [e for e, _ in seen] == [1, 2, 3] and seen[-1][1] == last
        assert seen[-1][1] < seen[0][1]


def test_bad_settings_are_refused():
    config, ds, cvae = _task({})
    with pytest.raises(ConfigError, match="epochs >= 1"):
        fit_baseline(build_baseline(config, cvae), ds.train, epochs=0)
