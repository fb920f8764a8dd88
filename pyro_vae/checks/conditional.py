"""``pyro-vae check`` rows for the conditional VAE: the library family, set to a conditional
linear-Gaussian model (``analytic_conditional.py``), against its closed forms.

For each condition (``label``: a one-hot class, 3 classes, a 6-pixel target; ``quadrants``:
the top-left quadrant of a 1 x 4 x 4 image given, the other 12 pixels the target) the family
is built as ``fit`` builds it (``[model] family = "conditional"``, no hidden layers, Gaussian
likelihood at the model's sigma, float64), and its parameters are set to the model: p(z | c)
with mean A c and unit scale, the decoder [W | B] on [z, c], q(z | t, c) the exact posterior
(``full_rank``) or a perturbed mean-field one (``diagonal``). Rows:

* exact q(z | t, c): the conditional ELBO (objective ``trace``) and the importance-weighted
  bound (``iwae``, K = 5), as ``fit`` builds them, and log p(t | c) by importance sampling
  (K = 10) equal the exact log p(t | c) draw by draw (float64 tolerance);
* perturbed mean-field q(z | t, c): the conditional ELBO with ``trace`` and with
  ``meanfield`` (KL(q || p(z | c)) in closed form), 50 repeats each, within 4 SE of the
  closed-form conditional ELBO; log p(t | c) by importance sampling (K = 2000, the mean-field
  q at the exact posterior's means and marginal scales, so that the weights have light tails
  and the estimator's bias stays below its SE) within 4 SE of the exact value.

A prior that ignores c, a guide that ignores c, or a likelihood that drops c's own term moves
the family off the model, and the exact rows fail (``tests/checks/test_check_conditional.py``).
"""

from typing import List, Tuple

import torch

from pyro_vae.checks.analytic import LinearGaussian
from pyro_vae.checks.analytic_conditional import (
    LinearGaussianConditional,
    random_conditional,
)
from pyro_vae.checks.analytic_models import fixed_gaussian, softplus_inverse
from pyro_vae.checks.stats import CheckRow, repeat, within_se, within_tol
from pyro_vae.config import from_dict
from pyro_vae.estimate.ais import mean_stderr
from pyro_vae.estimate.marginal import log_marginal_likelihood
from pyro_vae.models import build
from pyro_vae.models.conditional import quadrant_mask
from pyro_vae.parts.guides import MIN_SCALE
from pyro_vae.registry import OBJECTIVES

POINTS = 300
CLASSES, LABEL_TARGET = 3, 6
IMAGE = (1, 4, 4)  # quadrants: the top-left 2 x 2 given, 12 target pixels
REPEATS = 50


def linear_cvae(truth: LinearGaussianConditional, condition: str, guide: str, shape):
    """The library's conditional family (float64) whose model is exactly ``truth``; the
    linear ``guide`` left at its initialization."""
    config = from_dict(
        {
            "model": {
                "family": "conditional",
                "condition": condition,
                "given": 1,
                "classes": CLASSES,
                "latent_dim": truth.latent_dim,
                "hidden": [],
            },
            "guide": {"name": guide},
            "likelihood": fixed_gaussian(truth.noise_scale),
        }
    )
    cvae = build(config, shape).double()
    with torch.no_grad():
        cvae.prior_net.loc.weight.copy_(truth.prior_weight)
        cvae.prior_net.loc.bias.zero_()
        cvae.prior_net.raw_scale.weight.zero_()
        cvae.prior_net.raw_scale.bias.fill_(
            softplus_inverse(torch.tensor(1.0 - MIN_SCALE)).item()
        )
        weight = torch.cat([truth.weight, truth.condition_weight], 1)
        cvae.decoder[0].weight.copy_(weight)
        cvae.decoder[0].bias.zero_()
    return cvae


def guide_weight(cvae, on_t: torch.Tensor, on_c: torch.Tensor) -> torch.Tensor:
    """The guide's input weights for weights ``on_t`` on t and ``on_c`` on c: its input is
    [t, onehot(c)] (label) or the image row, c and t at the mask's pixels (quadrants).
    """
    if cvae.given_mask is None:
        return torch.cat([on_t, on_c], 1)
    weight = on_t.new_zeros(on_t.shape[0], cvae.data_dim)
    weight[:, cvae.given_mask], weight[:, ~cvae.given_mask] = on_c, on_t
    return weight


def set_guide(cvae, truth, spread: float, generator) -> None:
    """q(z | t, c): the exact posterior (``full_rank``), or (``diagonal``) its mean map and
    marginal scales perturbed by ``spread``."""
    on_t, on_c, covariance = truth.posterior_map()
    enc = cvae.encoder
    with torch.no_grad():
        enc.loc.bias.zero_()
        if hasattr(enc, "off_diag"):
            tril = torch.linalg.cholesky(covariance)
            enc.loc.weight.copy_(guide_weight(cvae, on_t, on_c))
            enc.raw_diag.weight.zero_()
            enc.raw_diag.bias.copy_(softplus_inverse(tril.diagonal() - MIN_SCALE))
            enc.off_diag.weight.zero_()
            enc.off_diag.bias.copy_(tril[enc.rows, enc.cols])
            return
        weight = guide_weight(cvae, on_t, on_c)
        noise = torch.randn(weight.shape, generator=generator, dtype=weight.dtype)
        enc.loc.weight.copy_(weight * (1 + spread * noise))
        sd = covariance.diagonal().sqrt() * (spread * noise[:, 0]).exp()
        enc.raw_scale.weight.zero_()
        enc.raw_scale.bias.copy_(softplus_inverse(sd - MIN_SCALE))


def task(condition: str, generator) -> Tuple[LinearGaussianConditional, torch.Tensor]:
    """A random model and POINTS rows drawn from it, as the family reads them."""
    if condition == "label":
        truth = random_conditional(generator, CLASSES, LABEL_TARGET)
        label = torch.randint(CLASSES, (POINTS,), generator=generator)
        c = torch.nn.functional.one_hot(label, CLASSES).double()
        return truth, torch.cat(
            [truth.sample(c, generator), label[:, None].double()], 1
        )
    given = IMAGE[1] * IMAGE[2] // 4
    truth = random_conditional(generator, given, 4 * given - given)
    c = torch.randn(POINTS, given, generator=generator, dtype=torch.float64)
    rows = torch.zeros(POINTS, 4 * given, dtype=torch.float64)
    mask = quadrant_mask(IMAGE, 1)
    rows[:, mask], rows[:, ~mask] = c, truth.sample(c, generator)
    return truth, rows


def _loss(name: str, cvae, x: torch.Tensor, **options) -> float:
    return OBJECTIVES.build(name, None, options).loss(cvae.model, cvae.guide, x)


def condition_rows(condition: str, generator) -> List[CheckRow]:
    """The rows of the module's docstring for one condition."""
    truth, x = task(condition, generator)
    shape = (LABEL_TARGET,) if condition == "label" else IMAGE
    rows, tag = [], f"CVAE ({condition})"
    cvae = linear_cvae(truth, condition, "full_rank", shape)
    try:
        c, t = cvae.split(x)
        exact = truth.log_marginal(t, c).mean().item()
        set_guide(cvae, truth, 0.0, generator)
        for name, options in (("trace", {}), ("iwae", {"num_particles": 5})):
            rows.append(
                within_tol(
                    f"{tag} {name} bound / N, exact q(z|t,c) = log p(t|c)",
                    -_loss(name, cvae, x, **options) / POINTS,
                    exact,
                )
            )
        est = log_marginal_likelihood(cvae.model, cvae.guide, x, num_samples=10)
        rows.append(
            within_tol(
                f"{tag} IS log p(t|c), exact q(z|t,c), K = 10",
                est.log_marginal.mean().item(),
                exact,
            )
        )
        cvae.release_params()
        cvae = linear_cvae(truth, condition, "diagonal", shape)
        set_guide(cvae, truth, 0.2, generator)
        with torch.no_grad():
            q = cvae.encoder(cvae.guide_input(x))
            elbo = truth.elbo(t, c, q.mean, q.variance.sqrt()).mean().item()
        for name in ("trace", "meanfield"):
            mean, se = repeat(lambda: -_loss(name, cvae, x) / POINTS, REPEATS)
            rows.append(
                within_se(
                    f"{tag} {name} conditional ELBO / N, mean-field q(z|t,c), "
                    f"{REPEATS} repeats",
                    mean.item(),
                    elbo,
                    se.item(),
                )
            )
        set_guide(cvae, truth, 0.0, generator)  # light tails: the IS bias stays small
        est = log_marginal_likelihood(cvae.model, cvae.guide, x, num_samples=2000)
        rows.append(
            within_se(
                f"{tag} IS log p(t|c), mean-field q(z|t,c) at p's marginals, K = 2000",
                est.log_marginal.mean().item(),
                exact,
                mean_stderr(est.stderr),
            )
        )
    finally:
        cvae.release_params()
    return rows


def conditional_checks(
    linear: LinearGaussian, x_linear: torch.Tensor, generator: torch.Generator
) -> List[CheckRow]:
    """The rows of the module's docstring, for a label and for a given quadrant (a suite of
    ``checks.SUITES``; it draws its own models and data from ``generator``)."""
    return condition_rows("label", generator) + condition_rows("quadrants", generator)
