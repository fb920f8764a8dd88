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


LABEL = {**SMALL, "model.condition": "label"}


def test_a_label_condition_scores_the_image_given_its_class():
    """c is the one-hot label: p(z | c) reads it, the likelihood scores the whole image, and
    the guide q(z | x, c) reads [image, onehot(c)]."""
    config = cfg.load(None, LABEL)
    ds = data.load(config.data)
    cvae = models.build(config, ds.shape)
    x = cvae.rows(ds, "test")[:6]
    assert x.shape == (6, 65) and torch.equal(x[:, 64], ds.test_labels[:6].to(x))
    onehot = torch.nn.functional.one_hot(ds.test_labels[:6], 10).to(x)
    guide = poutine.trace(cvae.guide).get_trace(x)
    model = poutine.trace(poutine.replay(cvae.model, trace=guide)).get_trace(x)
    assert torch.equal(model.nodes["x"]["value"], ds.test[:6])
    z = guide.nodes["z"]["value"]
    q = cvae.encoder(torch.cat([ds.test[:6], onehot], -1))
    assert torch.allclose(guide.nodes["z"]["fn"].log_prob(z), q.log_prob(z))
    prior = cvae.prior_net(onehot)
    assert torch.allclose(model.nodes["z"]["fn"].log_prob(z), prior.log_prob(z))
    # the guide sees c: another label gives another q(z | x, c)
    other = x.clone()
    other[:, 64] = (other[:, 64] + 1) % 10
    assert not torch.allclose(cvae.encoder(cvae.guide_input(other)).mean, q.mean)


def test_a_label_cvae_trains_and_draws_a_chosen_class(tmp_path):
    config = cfg.load(None, {**LABEL, "train.epochs": 2, "train.lr": 0.01})
    ds = data.load(config.data)
    cvae = models.build(config, ds.shape)
    metrics = fit(cvae, ds, config)
    assert metrics[-1]["test_elbo"] > metrics[0]["test_elbo"]
    seven = cvae.sample(5, label=7)
    assert seven.shape == (5, 64) and ((seven >= 0) & (seven <= 1)).all()
    # the draw of class 7 is decoded from p(z | c = 7) with c = onehot(7)
    torch.manual_seed(3)
    eps = torch.randn(5, 3)
    c = torch.nn.functional.one_hot(torch.full((5,), 7), 10).float()
    prior = cvae.prior_net(c).base_dist
    expected = cvae.likelihood.mean(
        cvae.decoder(torch.cat([prior.loc + prior.scale * eps, c], -1))
    )
    assert torch.allclose(cvae.decode_noise(eps, torch.full((5,), 7)), expected)
    with pytest.raises(ConfigError, match="between 0 and 9"):
        cvae.sample(2, label=10)
    from pyro_vae.viz.figures import write_figures

    written = write_figures(cvae, cvae.rows(ds, "test"), ds.shape, tmp_path)
    assert {p.name for p in written} == {"reconstructions.png", "class_samples.png"}


def test_label_and_condition_errors():
    with pytest.raises(ConfigError, match="condition must be one of"):
        models.build(cfg.load(None, {**SMALL, "model.condition": "pixels"}), (1, 8, 8))
    cvae = models.build(cfg.load(None, LABEL), (1, 8, 8))
    unlabelled = data.from_splits(
        "plain",
        {"train": torch.zeros(4, 64).numpy(), "test": torch.zeros(2, 64).numpy()},
        {},
    )
    with pytest.raises(ConfigError, match="needs labels"):
        cvae.training_rows(unlabelled)
    with pytest.raises(ConfigError, match="rows of 64 pixels and the label"):
        cvae.model(torch.zeros(2, 64))
    with pytest.raises(ConfigError, match="labels must lie in 0..9"):
        cvae.model(torch.cat([torch.zeros(2, 64), torch.full((2, 1), 12.0)], -1))
    quadrants = models.build(cfg.load(None, SMALL), (1, 8, 8))
    with pytest.raises(ConfigError, match="completes given pixels"):
        quadrants.sample(2, label=3)


@pytest.mark.slow
def test_the_cli_trains_evaluates_and_samples_a_label_cvae(tmp_path, capsys):
    from pyro_vae.cli.app import main

    run = tmp_path / "cvae"
    flags = ["--family", "conditional", "--set", "model.condition=label"]
    small = ["--set", "model.latent_dim=3", "--set", "model.hidden=[32]"]
    assert main(["train", *flags, *small, "--epochs", "1", "--out", str(run)]) == 0
    assert (run / "class_samples.png").is_file()
    capsys.readouterr()
    assert main(["evaluate", str(run), "--num-samples", "20", "--limit", "50"]) == 0
    assert "log p(t | c) ~=" in capsys.readouterr().out  # what it estimates, by name
    assert main(["sample", str(run), "--label", "7", "--num", "16"]) == 0
    assert (run / "sample_grid.png").is_file()
    capsys.readouterr()
    assert main(["sample", str(run), "--label", "10"]) == 2
    assert "between 0 and 9" in capsys.readouterr().err
