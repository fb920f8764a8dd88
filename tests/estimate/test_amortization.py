"""The amortization gap of a hierarchical guide (``estimate/amortization.py``, several latent
sites) against the two-layer linear-Gaussian model's closed forms.

On a model where W has orthogonal columns and A is diagonal, the exact posterior is a diagonal
bottom-up chain and a diagonal ladder; the guide is set there and then given wrong offsets
(constant in x). The per-point shift and scale of every layer can undo that, so the best local
ELBO is log p(x) exactly, while the amortized ELBO is its closed form, well below. A local fit
that shifts only one layer (the injected bug) cannot reach log p(x), and the test says so.
"""

import pytest
import torch

from pyro_vae.checks.analytic_hierarchy import random_hierarchy
from pyro_vae.checks.hierarchy_models import (
    guide_joint,
    linear_hierarchy,
    set_perturbed_guide,
)
from pyro_vae.errors import ConfigError
from pyro_vae.estimate import amortization

NUM_POINTS = 8


def _setup(inference: str, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    truth = random_hierarchy(generator, data_dim=6, sizes=(3, 3), ladder=True)
    family = linear_hierarchy(truth, inference)
    set_perturbed_guide(family, truth, generator, spread=0.0, widen=1.0)  # exact
    with torch.no_grad():
        for encoder in family.encoders:  # wrong means, right shapes and scales
            bias = encoder.loc.bias
            bias.add_(torch.randn(bias.shape, generator=generator, dtype=bias.dtype))
    x = truth.sample(NUM_POINTS, generator)
    return truth, family, x


def _gap(family, x, steps: int):
    torch.manual_seed(1)
    return amortization.amortization_gap(
        family.model, family.guide, x, steps=steps, num_samples=2000
    )


def _mean_and_se(value: torch.Tensor, stderr: torch.Tensor):
    return value.mean().item(), stderr.pow(2).sum().sqrt().item() / len(value)


@pytest.mark.parametrize("inference", ["bottom_up", "ladder"])
def test_local_fit_of_every_layer_reaches_the_exact_log_marginal(inference):
    truth, family, x = _setup(inference)
    exact = truth.log_marginal(x).mean().item()
    amortized = truth.elbo(x, *guide_joint(family, truth, x)).mean().item()
    out = _gap(family, x, steps=600)
    elbo, elbo_se = _mean_and_se(out["elbo"], out["elbo_stderr"])
    local, local_se = _mean_and_se(out["local_elbo"], out["local_elbo_stderr"])
    assert abs(elbo - amortized) < 4 * elbo_se  # the amortized ELBO is its closed form
    assert exact - amortized > 1.0  # the offsets made the encoder poor
    assert local <= exact + 4 * local_se + 1e-9  # a bound
    assert exact - local < 0.02 * (exact - amortized)  # the gap closes (>= 98%)
    assert all(p.grad is None for p in family.parameters())  # left as they were
    before = truth.elbo(x, *guide_joint(family, truth, x)).mean().item()
    assert before == amortized  # the guide's networks were not trained


@pytest.mark.parametrize("inference", ["bottom_up", "ladder"])
def test_shifting_one_layer_only_is_caught(inference, monkeypatch):
    """The injected bug: the per-point parameters of the top layer are dropped."""
    truth, family, x = _setup(inference)
    exact = truth.log_marginal(x).mean().item()
    amortized = truth.elbo(x, *guide_joint(family, truth, x)).mean().item()
    original = amortization._PerPointShift.__init__

    def first_layer_only(self, shifts):
        original(self, {k: v for k, v in shifts.items() if k == "z1"})

    monkeypatch.setattr(amortization._PerPointShift, "__init__", first_layer_only)
    local = _gap(family, x, steps=600)["local_elbo"].mean().item()
    assert not exact - local < 0.02 * (exact - amortized)


def test_no_steps_leaves_the_local_guide_at_the_amortized_one():
    truth, family, x = _setup("bottom_up")
    out = _gap(family, x, steps=0)
    local, local_se = _mean_and_se(out["local_elbo"], out["local_elbo_stderr"])
    amortized = truth.elbo(x, *guide_joint(family, truth, x)).mean().item()
    assert abs(local - amortized) < 4 * local_se


def test_a_non_diagonal_layer_is_refused_with_its_site():
    generator = torch.Generator().manual_seed(0)
    truth = random_hierarchy(generator, data_dim=6, sizes=(3, 2))
    family = linear_hierarchy(truth, "bottom_up", guide="full_rank")
    x = truth.sample(4, generator)
    with pytest.raises(ConfigError, match="diagonal Gaussian guide.*site 'z1'"):
        amortization.amortization_gap(family.model, family.guide, x, steps=1)
