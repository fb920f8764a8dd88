"""``pyro-vae check`` rows for the semi-supervised VAE (M2): the library family, set to a
mixture of linear-Gaussians (``analytic_mixture.py``), against its closed forms.

The family is built as ``fit`` builds it (``[model] family = "semi_supervised"``, no hidden
layers, Gaussian likelihood at the model's sigma, float64) and its parameters are set to the
mixture: decoder [W | B^T], class prior log pi, q(z | x, y) the exact posterior (``full_rank``)
or a perturbed mean-field one (``diagonal``), q(y | x) a perturbed or the exact linear
classifier. Rows:

* the enumerated ELBO (objective ``enum``, as ``fit`` builds it) with the exact q(z | x, y): no
  Monte Carlo error is left, so it equals the closed form to float64 precision, whatever q(y | x);
  sampling y instead of enumerating it leaves an error of order 1 and fails;
* the enumerated ELBO with a mean-field q(z | x, y): within 4 SE of the closed form;
* log p(x) by importance sampling with y summed out (``log_marginal_likelihood``): exact with the
  exact q(z | x, y), within 4 SE with the mean-field one;
* the classifier trained alone on the enumerated ELBO converges to p(y | x);
* labelled rows: the loss is -(log p(x, y) + alpha N / N_l log q(y | x)), the auxiliary term
  at its scale.
"""

from typing import List

import torch

from pyro_vae.checks.analytic import LinearGaussian
from pyro_vae.checks.analytic_mixture import LinearGaussianMixture, random_mixture
from pyro_vae.checks.analytic_models import fixed_gaussian, softplus_inverse
from pyro_vae.checks.stats import CheckRow, repeat, within_se, within_tol
from pyro_vae.config import from_dict
from pyro_vae.estimate.ais import mean_stderr
from pyro_vae.estimate.marginal import log_marginal_likelihood
from pyro_vae.models import build
from pyro_vae.parts.guides import MIN_SCALE
from pyro_vae.registry import OBJECTIVES

POINTS = 300


def linear_m2(truth: LinearGaussianMixture, guide: str = "full_rank"):
    """The library's semi-supervised family (float64) whose model is exactly ``truth``; the
    linear guide ``guide`` and the classifier left at their initialization."""
    d = truth.weight.shape[1]
    config = from_dict(
        {
            "model": {
                "family": "semi_supervised",
                "latent_dim": d,
                "hidden": [],
                "classes": truth.classes,
            },
            "prior": {"name": "standard_normal"},
            "guide": {"name": guide},
            "likelihood": fixed_gaussian(truth.noise_scale),
            "objective": {"name": "enum"},
        }
    )
    m2 = build(config, truth.weight.shape[0]).double()
    with torch.no_grad():
        m2.decoder[0].weight.copy_(torch.cat([truth.weight, truth.biases.T], 1))
        m2.decoder[0].bias.zero_()
        m2.likelihood.raw_scale.copy_(
            softplus_inverse(truth.noise_scale.expand(truth.weight.shape[0]))
        )
        m2.class_logits.copy_(truth.log_pi)
    return m2


def set_classifier(m2, truth: LinearGaussianMixture, spread: float, generator) -> None:
    """q(y | x) = softmax(A x + c), the exact posterior's map with relative noise ``spread``."""
    gain, offset = truth.classifier_map()
    noise = torch.randn(gain.shape, generator=generator, dtype=gain.dtype)
    with torch.no_grad():
        m2.classifier.out.weight.copy_(gain * (1 + spread * noise))
        m2.classifier.out.bias.copy_(offset + spread * noise[:, 0])


def set_z_guide(m2, truth: LinearGaussianMixture, spread: float, generator) -> None:
    """q(z | x, y): the exact posterior N(G (x - b_y), Sigma) with a ``full_rank`` guide
    (``spread`` ignored), or with a ``diagonal`` one the posterior mean map and marginal scales
    perturbed by ``spread``."""
    gain, covariance = truth.posterior_map()
    weight = torch.cat([gain, -gain @ truth.biases.T], 1)
    enc = m2.encoder
    with torch.no_grad():
        enc.loc.bias.zero_()
        if hasattr(enc, "off_diag"):
            tril = torch.linalg.cholesky(covariance)
            enc.loc.weight.copy_(weight)
            enc.raw_diag.weight.zero_()
            enc.raw_diag.bias.copy_(softplus_inverse(tril.diagonal() - MIN_SCALE))
            enc.off_diag.weight.zero_()
            enc.off_diag.bias.copy_(tril[enc.rows, enc.cols])
            return
        noise = torch.randn(weight.shape, generator=generator, dtype=weight.dtype)
        enc.loc.weight.copy_(weight * (1 + spread * noise))
        sd = covariance.diagonal().sqrt() * (spread * noise[:, 0]).exp()
        enc.raw_scale.weight.zero_()
        enc.raw_scale.bias.copy_(softplus_inverse(sd - MIN_SCALE))


def guide_moments(m2, x: torch.Tensor):
    """(probs (N, K), loc (K, N, D), scale (K, N, D)): the family's q(y | x) and the mean and
    marginal scales of q(z | x, y) for every class."""
    eye = torch.eye(m2.classes, dtype=x.dtype)
    with torch.no_grad():
        probs = m2.class_posterior(x).probs
        qs = [m2.encoder(torch.cat([x, e.expand(len(x), -1)], -1)) for e in eye]
        loc = torch.stack([q.mean for q in qs])
        scale = torch.stack([q.variance.sqrt() for q in qs])
    return probs, loc, scale


def closed_form_elbo(m2, truth, x: torch.Tensor) -> torch.Tensor:
    """The enumerated ELBO per row at the family's current q(y | x) and diagonal (mean-field)
    q(z | x, y)."""
    return truth.elbo(x, *guide_moments(m2, x))


def _enum_loss(m2, x: torch.Tensor) -> float:
    return OBJECTIVES.build("enum", None, {}).loss(m2.model, m2.guide, x)


def semi_supervised_checks(
    linear: LinearGaussian, x_linear: torch.Tensor, generator: torch.Generator
) -> List[CheckRow]:
    """The rows of the module's docstring, on a random 3-class mixture (P = 6, D = 2)."""
    truth = random_mixture(generator)
    x, y = truth.sample(POINTS, generator)
    exact_px = truth.log_marginal(x)
    rows = []
    m2 = linear_m2(truth, "full_rank")
    try:
        set_z_guide(m2, truth, 0.0, generator)
        set_classifier(m2, truth, 0.5, generator)
        with torch.no_grad():
            r = m2.class_posterior(x).probs
        exact = (r * (truth.log_joint_y(x) - r.log())).sum(-1).mean().item()
        rows.append(
            within_tol(
                "M2 enumerated ELBO / N, exact q(z|x,y), perturbed q(y|x)",
                -_enum_loss(m2, x) / POINTS,
                exact,
            )
        )
        est = log_marginal_likelihood(m2.model, m2.guide, x, num_samples=10)
        rows.append(
            within_tol(
                "M2 IS log p(x), y summed out, exact q(z|x,y), K = 10",
                est.log_marginal.mean().item(),
                exact_px.mean().item(),
            )
        )
        rows.append(_labelled_row(m2, truth, x, y))
        rows.append(_classifier_row(m2, truth, x, generator))
        m2.release_params()
        m2 = linear_m2(truth, "diagonal")
        set_z_guide(m2, truth, 0.2, generator)
        set_classifier(m2, truth, 0.5, generator)
        mean, se = repeat(lambda: -_enum_loss(m2, x) / POINTS, 50)
        exact = closed_form_elbo(m2, truth, x).mean().item()
        rows.append(
            within_se(
                "M2 enumerated ELBO / N, mean-field q(z|x,y), 50 repeats",
                mean.item(),
                exact,
                se.item(),
            )
        )
        est = log_marginal_likelihood(m2.model, m2.guide, x, num_samples=2000)
        rows.append(
            within_se(
                "M2 IS log p(x), y summed out, mean-field q(z|x,y), K = 2000",
                est.log_marginal.mean().item(),
                exact_px.mean().item(),
                mean_stderr(est.stderr),
            )
        )
    finally:
        m2.release_params()
    return rows


def _labelled_row(m2, truth, x: torch.Tensor, y: torch.Tensor) -> CheckRow:
    """Labelled rows with the exact q(z | x, y): loss = -sum(log p(x, y) + s log q(y | x)),
    s = alpha N / N_l (here every row is labelled: s = alpha)."""
    rows = torch.cat([x, y[:, None].to(x)], -1)
    with torch.no_grad():
        log_q = m2.class_posterior(x).log_prob(y)
    log_pxy = truth.log_joint_y(x).gather(-1, y[:, None])[:, 0]
    return within_tol(
        f"M2 labelled loss / N = -(log p(x,y) + {m2.alpha:g} N/N_l log q(y|x))",
        _enum_loss(m2, rows) / len(y),
        -(log_pxy + m2.alpha * len(y) / len(y) * log_q).mean().item(),
    )


def _classifier_row(m2, truth, x: torch.Tensor, generator) -> CheckRow:
    """Train q(y | x) alone (from zero weights) on the enumerated ELBO, the model and q(z | x, y)
    exact: the optimum is q(y | x) = p(y | x); the row is max |q - p| over the points.
    """
    with torch.no_grad():
        m2.classifier.out.weight.zero_()
        m2.classifier.out.bias.zero_()
    params = list(m2.classifier.parameters())
    optimizer = torch.optim.LBFGS(params, max_iter=200, line_search_fn="strong_wolfe")
    elbo = OBJECTIVES.build("enum", None, {})

    def closure():
        optimizer.zero_grad()
        loss = elbo.differentiable_loss(m2.model, m2.guide, x) / len(x)
        for p, g in zip(params, torch.autograd.grad(loss, params)):
            p.grad = g
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        gap = (m2.class_posterior(x).probs - truth.class_posterior(x)).abs().max()
    return within_tol(
        "M2 classifier trained on the enumerated ELBO: max |q(y|x) - p(y|x)|",
        gap.item(),
        0.0,
        1e-3,
    )
