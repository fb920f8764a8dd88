"""Per-layer diagnostics through traces, against the two-layer linear-Gaussian closed form."""

import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

from pyro_vae import config as cfg
from pyro_vae import models
from pyro_vae.checks.analytic_hierarchy import random_hierarchy
from pyro_vae.checks.hierarchy_models import (
    guide_joint,
    linear_hierarchy,
    set_perturbed_guide,
)
from pyro_vae.estimate.layer_diagnostics import encode, joined_layers, layer_diagnostics


@pytest.mark.parametrize("inference", ["bottom_up", "ladder"])
def test_layer_kls_sum_to_the_closed_form_kl_and_activity_matches(inference):
    g = torch.Generator().manual_seed(7)
    ladder = inference == "ladder"
    truth = random_hierarchy(g, sizes=(2, 2) if ladder else (3, 2), ladder=ladder)
    family = linear_hierarchy(truth, inference)
    set_perturbed_guide(family, truth, g)
    x = truth.sample(300, g)
    layers = layer_diagnostics(family, x, num_samples=200)
    assert list(layers) == ["z2", "z1"]  # the model's order
    mean, cov = guide_joint(family, truth, x)
    prior_mean, prior_cov = truth.prior_joint()
    exact = kl_divergence(
        MultivariateNormal(mean, covariance_matrix=cov),
        MultivariateNormal(prior_mean, covariance_matrix=prior_cov),
    ).mean()
    total = sum(v["kl"] for v in layers.values())
    se = sum(v["kl_stderr"] ** 2 for v in layers.values()) ** 0.5
    assert abs(total - exact.item()) < 4 * se
    for name, info in layers.items():
        assert sum(info["kl_per_dim"]) == pytest.approx(info["kl"], abs=1e-9)
    d1 = truth.sizes[0]
    exact_activity = mean[:, :d1].var(0)  # Var_x of E_q[z_1 | x]
    activity = torch.tensor(layers["z1"]["activity"], dtype=torch.float64)
    stderr = torch.tensor(layers["z1"]["activity_stderr"], dtype=torch.float64)
    assert torch.all((activity - exact_activity).abs() < 4 * stderr + 1e-3)
    dims, method, units = joined_layers(layers)
    assert dims.shape == (sum(truth.sizes),) and "z2, z1" in method
    assert units["active_units"] == sum(v["active_units"] for v in layers.values())
    family.release_params()


def test_a_vae_reports_its_one_layer_and_encodes_as_before():
    vae = models.build(cfg.load(None, {"model.latent_dim": 3, "model.hidden": [8]}), 64)
    x = (torch.rand(40, 64) < 0.3).float()
    layers = layer_diagnostics(vae, x)
    assert list(layers) == ["z"] and len(layers["z"]["kl_per_dim"]) == 3
    mean, draws = encode(vae, x[:5], 4, 16)
    assert torch.allclose(mean, vae.encoder(x[:5]).mean)
    assert draws.shape == (4, 5, 3)
