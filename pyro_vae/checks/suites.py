"""Check suites on the linear-Gaussian model of ``analytic.py``: exact identities (every
objective with the exact posterior as guide) and SVI training.

The model p(z) = N(0, I), p(x | z) = N(W z + b, sigma^2 I) is built from the library's own parts
(``analytic_models.linear_vae``: ``vae.build`` with no hidden layers, float64), with its encoder
set either to the exact posterior (``full_rank`` guide) or to an imperfect mean-field guide
(``diagonal``). Every suite takes ``(truth, x, generator)`` and returns rows (``checks.SUITES``).
The bounds and the SE and ESS of ``marginal`` are checked in ``check_marginal.py``, the
objectives as ``fit`` builds them in ``check_objectives.py``, the guides' and priors' densities in
``check_densities.py``.
"""

import math
from typing import List

import torch
from pyro import poutine

from pyro_vae.checks.analytic import (
    LinearGaussian,
    gaussian_kl_to_standard_normal,
    ppca_maximum_likelihood,
)
from pyro_vae.checks.analytic_models import (
    diagonal_guide_params,
    fixed_gaussian,
    linear_vae,
    set_exact_posterior_guide,
    set_perturbed_diagonal_guide,
)
from pyro_vae.checks.stats import EXACT_TOL, CheckRow, within_se, within_tol
from pyro_vae.config import from_dict
from pyro_vae.data import Dataset
from pyro_vae.infer.schedules import step_args
from pyro_vae.infer.traces import log_prob_per_datapoint, vectorized_traces
from pyro_vae.models.vae import LATENT, OBSERVED, build
from pyro_vae.registry import OBJECTIVES
from pyro_vae.run.train import fit

SEED = 0
# every registered objective, as a config names it (JIT on and off; DReG); K = 5 for iwae
EXACT_OBJECTIVES = (
    ("trace", {"jit": True}),
    ("trace", {"jit": False}),
    ("meanfield", {"jit": True}),
    ("meanfield", {"jit": False}),
    ("iwae", {"num_particles": 5}),
    ("iwae", {"num_particles": 5, "dreg": True}),
    ("enum", {}),
    ("enum_meanfield", {}),
)


def _label(name: str, options: dict) -> str:
    return ", ".join([name] + [f"{k}={v}" for k, v in options.items()])


def exact_posterior_checks(
    truth: LinearGaussian, x: torch.Tensor, generator: torch.Generator
) -> List[CheckRow]:
    """With q = p(z | x), log w = log p(x, z) - log q(z | x) = log p(x) for every draw, so every
    objective's loss (one ``loss_and_grads`` call, as ``SVI.step`` makes it) is -sum_i log p(x_i)
    exactly: the ELBO and every IWAE_K alike."""
    vae = linear_vae(truth, "full_rank")
    set_exact_posterior_guide(vae, truth)
    n, exact = x.shape[0], truth.log_marginal(x)
    missing = set(OBJECTIVES.names()) - {name for name, _ in EXACT_OBJECTIVES}
    try:
        model_trace, guide_trace = vectorized_traces(
            vae.model, vae.guide, 100, (x,), {}
        )
        log_w = log_prob_per_datapoint(model_trace) - log_prob_per_datapoint(
            guide_trace
        )
        worst = (log_w - exact).abs().max().item()
        rows = [
            CheckRow(
                "exact guide: max |log w - log p(x)|, 100 draws/point",
                worst,
                0.0,
                0.0,
                worst < EXACT_TOL,
                f"< {EXACT_TOL:g}",
            )
        ]
        for name, options in EXACT_OBJECTIVES:
            elbo = OBJECTIVES.build(name, None, options)
            loss = elbo.loss_and_grads(vae.model, vae.guide, *step_args(x, 1.0))
            rows.append(
                within_tol(
                    f"exact guide: {_label(name, options)}: -loss / N",
                    -loss / n,
                    exact.mean().item(),
                )
            )
    finally:
        vae.release_params()
    return rows + [
        CheckRow(
            f"exact guide: {name}: no case in EXACT_OBJECTIVES",
            math.nan,
            0.0,
            0.0,
            False,
            "every registered objective is checked",
        )
        for name in sorted(missing)
    ]


def estimator_checks(
    truth: LinearGaussian,
    x: torch.Tensor,
    generator: torch.Generator,
    particles: int = 100,
) -> List[CheckRow]:
    """An imperfect diagonal guide: the meanfield objective's closed-form KL, log p(x) = ELBO +
    KL(q || p(z | x)), draw by draw and as a Monte Carlo KL."""
    vae = linear_vae(truth, "diagonal")
    set_perturbed_diagonal_guide(vae, truth, generator)
    n = x.shape[0]
    try:
        with torch.no_grad():
            loc, scale = diagonal_guide_params(vae, x)
        elbo, kl_post = truth.elbo(x, loc, scale), truth.kl_to_posterior(x, loc, scale)
        log_p = truth.log_marginal(x)
        rows = []
        prior_only = poutine.block(vae.model, hide=[OBSERVED])
        meanfield = OBJECTIVES.build("meanfield", None, {"jit": False})
        kl_loss = meanfield.loss(prior_only, vae.guide, x)
        kl_exact = gaussian_kl_to_standard_normal(loc, scale).mean().item()
        rows.append(
            within_tol("TraceMeanField KL(q || p(z)) / N", kl_loss / n, kl_exact, 1e-9)
        )
        rows.append(
            within_tol(
                "max |ELBO + KL(q || p(z|x)) - log p(x)|",
                (elbo + kl_post - log_p).abs().max().item(),
                0.0,
                1e-9,
            )
        )
        # draw by draw, log w + log q(z|x) - log p(z|x) = log p(x), so log p(x) - (MC ELBO) is the MC
        # KL(q || p(z|x)), which must match the closed form
        with torch.no_grad():
            model_trace, guide_trace = vectorized_traces(
                vae.model, vae.guide, particles, (x,), {}
            )
        z, log_q = (
            guide_trace.nodes[LATENT]["value"],
            guide_trace.nodes[LATENT]["log_prob"],
        )
        log_ratio = log_q - truth.posterior_distribution(x).log_prob(z)
        log_w = log_prob_per_datapoint(model_trace) - log_prob_per_datapoint(
            guide_trace
        )
        rows.append(
            within_tol(
                "max |log w + log q/p(z|x) - log p(x)| per draw",
                (log_w + log_ratio - log_p).abs().max().item(),
                0.0,
                EXACT_TOL,
            )
        )
        se = (log_ratio.var(0) / particles).sum().sqrt().item() / n
        rows.append(
            within_se(
                f"MC KL(q || p(z|x)) / N ({particles} draws)",
                log_ratio.mean().item(),
                kl_post.mean().item(),
                se,
            )
        )
    finally:
        vae.release_params()
    return rows


def fit_linear_vae(
    x: torch.Tensor,
    held_out: torch.Tensor,
    latent_dim: int,
    noise_scale: float,
    epochs: int = 40,
) -> LinearGaussian:
    """Train a linear VAE (full-rank guide, sigma fixed at ``noise_scale``, Trace_ELBO, Adam at
    lr 0.05, batches of 100) on ``x`` with ``train.fit``, on ``x``'s device; the learned model.
    """
    config = from_dict(
        {
            "model": {"latent_dim": latent_dim, "hidden": []},
            "guide": {"name": "full_rank"},
            "likelihood": fixed_gaussian(noise_scale),
            "objective": {"name": "trace"},
            "train": {
                "epochs": epochs,
                "batch_size": 100,
                "lr": 0.05,
                "device": str(x.device),
                "seed": SEED,
            },
        }
    )
    vae = build(config, x.shape[1]).double()
    try:
        fit(vae, Dataset("linear-gaussian", x, held_out, (1, x.shape[1])), config)
    finally:
        vae.release_params()
    decoder = vae.decoder[0]
    return LinearGaussian(
        decoder.weight.detach(), decoder.bias.detach(), vae.likelihood.scale[0].detach()
    )


def training_check(
    truth: LinearGaussian,
    generator: torch.Generator,
    num_data: int = 1000,
    epochs: int = 40,
    tolerance: float = 0.05,
) -> CheckRow:
    """``fit_linear_vae`` on ``num_data`` draws from ``truth`` (sigma fixed at the truth's): the trained
    model's exact mean log p(x) must come within ``tolerance`` nats per point of the maximum-likelihood
    pPCA model's with the same sigma (Tipping & Bishop 1999), and not above it."""
    device = truth.weight.device
    x = truth.sample(num_data, generator).to(device)
    held_out = truth.sample(num_data // 5, generator).to(device)
    best = ppca_maximum_likelihood(
        x, truth.latent_dim, truth.noise_scale
    ).mean_log_likelihood
    learned = fit_linear_vae(
        x, held_out, truth.latent_dim, truth.noise_scale.item(), epochs
    )
    estimate = learned.log_marginal(x).mean().item()
    passed = best - tolerance < estimate <= best + 1e-9
    return CheckRow(
        f"SVI-trained linear VAE: mean log p(x), {epochs} epochs",
        estimate,
        best,
        0.0,
        passed,
        f"within {tolerance:g} below pPCA ML",
    )


def training_checks(
    truth: LinearGaussian, x: torch.Tensor, generator: torch.Generator
) -> List[CheckRow]:
    """``training_check`` as one of ``checks.SUITES`` (it draws its own data from ``truth``)."""
    return [training_check(truth, generator)]
