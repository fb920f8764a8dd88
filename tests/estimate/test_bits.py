"""Bits per dimension (estimate/bits.py) and where reports carry them."""

import math

import numpy as np
import pytest

import pyro_vae
from pyro_vae.estimate.bits import bits_per_dim, counts_bits
from pyro_vae.parts.likelihoods import (
    Bernoulli,
    ContinuousBernoulli,
    DiscretizedLogistic,
    Gaussian,
)


def test_bits_per_dim_is_nats_over_d_ln2():
    assert bits_per_dim(-784 * math.log(2), 784) == pytest.approx(1.0)
    assert bits_per_dim(-100.0, 784) == pytest.approx(100 / (784 * math.log(2)))


def test_only_likelihoods_with_a_mass_per_pixel_value_count_bits():
    assert counts_bits(Bernoulli()) and counts_bits(DiscretizedLogistic(4, 1, -7.0))
    assert not counts_bits(ContinuousBernoulli())
    assert not counts_bits(Gaussian(4, 0.1, False))


@pytest.mark.parametrize(
    "likelihood, has_bits", [("bernoulli", True), ("gaussian", False)]
)
def test_model_evaluate_reports_bits_per_dim_where_they_apply(likelihood, has_bits):
    rng = np.random.default_rng(0)
    x = (rng.random((120, 16)) < 0.3).astype(np.float32)
    model = pyro_vae.Model(latent_dim=2, hidden=[8], epochs=1, likelihood=likelihood)
    model.fit(x)
    report = model.evaluate(x[:20], num_samples=20)
    assert ("bits_per_dim" in report) == has_bits
    if has_bits:
        assert report["bits_per_dim"] == pytest.approx(
            -report["log_marginal"] / (16 * math.log(2))
        )
