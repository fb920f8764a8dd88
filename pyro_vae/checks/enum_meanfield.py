"""``pyro-vae check`` rows for the ``enum_meanfield`` objective (y enumerated, KL(q(z | x, y)
|| p(z)) in closed form under each y) on the semi-supervised family set to a mixture of
linear-Gaussians (``analytic_mixture.py``; the family as ``semi_supervised.py``'s checks build
it, with a ``diagonal`` q(z | x, y) and a perturbed q(y | x)). Rows:

* W = 0 (x independent of z; the reconstruction term is then exact, so the estimator has no
  Monte Carlo error left) and a q(z | x, y) whose mean and scale differ from class to class:
  the ELBO equals the closed form to float64 precision, at kl_weight 1 and at kl_weight 1/2
  (the family scales its z sites by it: the KL must be scaled too). Plain ``enum`` is off by
  its sampled z-term here;
* the mixture with W != 0: the ELBO within 4 SE of the closed form (50 repeats), and the
  spread of those repeats equal (within 4 SE of a sample SD) to the closed-form SD of the
  reconstruction term's one-draw estimate alone (``LinearGaussianMixture.
  reconstruction_variance``): the KL adds no noise, so a sampled z-term left beside it (the
  KL counted twice) shows. Lower variance than plain ``enum`` is not a law: with q(z | x, y)
  near the posterior, enum's sampled log p(z) - log q(z | x, y) cancels most of the
  reconstruction term's noise, and ``enum`` is the less noisy of the two (see
  benchmarks/README.md).
"""

import math
from typing import List

import torch

from pyro_vae.checks.analytic import LinearGaussian, gaussian_kl_to_standard_normal
from pyro_vae.checks.analytic_mixture import LinearGaussianMixture, random_mixture
from pyro_vae.checks.analytic_models import softplus_inverse
from pyro_vae.checks.semi_supervised import (
    closed_form_elbo,
    guide_moments,
    linear_m2,
    set_classifier,
    set_z_guide,
)
from pyro_vae.checks.stats import CheckRow, repeat, within_se, within_tol
from pyro_vae.parts.guides import MIN_SCALE
from pyro_vae.registry import OBJECTIVES

POINTS = 300
REPEATS = 50
HALF = 0.5  # the kl_weight of the scaled row


def _loss(m2, x: torch.Tensor, name: str = "enum_meanfield", *weights) -> float:
    return OBJECTIVES.build(name, None, {}).loss(m2.model, m2.guide, x, *weights)


def set_random_z_guide(m2, generator: torch.Generator) -> None:
    """q(z | x, y) = N(A x + B onehot(y), diag s_y^2) with random A, B and class-wise scales s_y
    in (0.3, 1.5): every class has its own KL to p(z)."""
    enc = m2.encoder
    with torch.no_grad():
        for layer in (enc.loc, enc.raw_scale):
            layer.weight.copy_(
                0.4 * torch.randn(layer.weight.shape, generator=generator).double()
            )
            layer.bias.zero_()
        n_x = enc.raw_scale.weight.shape[1] - m2.classes
        enc.raw_scale.weight[:, :n_x].zero_()  # scales depend on y alone
        sd = (
            0.3
            + 1.2
            * torch.rand(
                enc.raw_scale.weight.shape[0], m2.classes, generator=generator
            ).double()
        )
        enc.raw_scale.weight[:, n_x:].copy_(softplus_inverse(sd - MIN_SCALE))


def _class_kls(m2, x: torch.Tensor) -> torch.Tensor:
    """KL(q(z | x, y) || N(0, I)) per row and class, (N, K), from the closed form."""
    _, loc, scale = guide_moments(m2, x)
    return gaussian_kl_to_standard_normal(loc, scale).T


def _exact_rows(generator: torch.Generator) -> List[CheckRow]:
    truth = random_mixture(generator)
    flat = LinearGaussianMixture(
        torch.zeros_like(truth.weight), truth.biases, truth.noise_scale, truth.log_pi
    )
    x, _ = flat.sample(POINTS, generator)
    m2 = linear_m2(flat, "diagonal")
    try:
        set_random_z_guide(m2, generator)
        set_classifier(m2, flat, 0.5, generator)
        exact = closed_form_elbo(m2, flat, x)
        with torch.no_grad():
            r = m2.class_posterior(x).probs
        scaled = exact + (1 - HALF) * (r * _class_kls(m2, x)).sum(-1)
        return [
            within_tol(
                "M2 enum_meanfield ELBO / N, W = 0, class-wise q(z|x,y): exact",
                -_loss(m2, x) / POINTS,
                exact.mean().item(),
            ),
            within_tol(
                f"M2 enum_meanfield ELBO / N, W = 0, kl_weight {HALF:g}: exact",
                -_loss(m2, x, "enum_meanfield", HALF) / POINTS,
                scaled.mean().item(),
            ),
        ]
    finally:
        m2.release_params()


def _statistical_rows(generator: torch.Generator) -> List[CheckRow]:
    truth = random_mixture(generator)
    x, _ = truth.sample(POINTS, generator)
    m2 = linear_m2(truth, "diagonal")
    try:
        set_z_guide(m2, truth, 0.2, generator)
        set_classifier(m2, truth, 0.5, generator)
        exact = closed_form_elbo(m2, truth, x).mean().item()
        moments = guide_moments(m2, x)
        mean, se = repeat(lambda: -_loss(m2, x) / POINTS, REPEATS)
    finally:
        m2.release_params()
    sd = truth.reconstruction_variance(x, *moments).sum().sqrt().item() / POINTS
    ratio = se.item() * math.sqrt(REPEATS) / sd
    spread = 1 / math.sqrt(2 * (REPEATS - 1))  # the SE of a sample SD, relative
    return [
        within_se(
            f"M2 enum_meanfield ELBO / N, mean-field q(z|x,y), {REPEATS} repeats",
            mean.item(),
            exact,
            se.item(),
        ),
        within_se(
            "M2 enum_meanfield: SD of repeats / closed-form SD of the reconstruction "
            "term alone",
            ratio,
            1.0,
            spread,
        ),
    ]


def enum_meanfield_checks(
    linear: LinearGaussian, x_linear: torch.Tensor, generator: torch.Generator
) -> List[CheckRow]:
    """The rows of the module's docstring, on random 3-class mixtures (P = 6, D = 2)."""
    return _exact_rows(generator) + _statistical_rows(generator)
