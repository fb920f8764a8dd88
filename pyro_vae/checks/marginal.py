"""Check suites for ``marginal.log_marginal_likelihood`` on the linear-Gaussian model: the IWAE
bounds (Burda et al. 2016) and the honesty of the SE and ESS it reports.

The model and guides come from ``analytic_models`` (see ``check_suites.py``); every suite takes
``(truth, x, generator)`` and returns rows (``checks.SUITES``).
"""

import math
from typing import List, Sequence

import torch

from pyro_vae.checks.analytic import LinearGaussian
from pyro_vae.checks.analytic_models import (
    diagonal_guide_params,
    linear_vae,
    set_perturbed_diagonal_guide,
)
from pyro_vae.checks.stats import NUM_SE, CheckRow, within_se
from pyro_vae.estimate.marginal import log_marginal_likelihood

IWAE_KS = (1, 10, 100, 1000)
SE_TOL = 0.15  # |ratio - 1| for the SE and ESS of log_marginal_likelihood (see marginal_checks)


def iwae_checks(
    truth: LinearGaussian,
    x: torch.Tensor,
    generator: torch.Generator,
    ks: Sequence[int] = IWAE_KS,
    spread: float = 0.3,
    widen: float = 2.0,
    budget: int = 2_000_000,
) -> List[CheckRow]:
    """ELBO <= IWAE_K <= log p(x) and IWAE_K rising with K (Burda et al. 2016), in expectation: each
    data point's IWAE_K is the average of ``budget / (N K)`` independent runs of
    ``marginal.log_marginal_likelihood`` with K samples, and the means over the data points are
    compared with the exact per-point values (paired, so the SE is the Monte Carlo error alone).
    """
    vae = linear_vae(truth, "diagonal")
    set_perturbed_diagonal_guide(vae, truth, generator, spread, widen)
    n = x.shape[0]
    try:
        with torch.no_grad():
            elbo = truth.elbo(x, *diagonal_guide_params(vae, x))
        log_p = truth.log_marginal(x)
        bounds = []
        for k in ks:
            runs = max(1, budget // (n * k))
            estimate = log_marginal_likelihood(
                vae.model, vae.guide, x.repeat(runs, 1), num_samples=k
            )
            bounds.append(estimate.log_marginal.reshape(runs, n).mean(0))
    finally:
        vae.release_params()

    def se(d: torch.Tensor) -> float:
        return (d.std() / math.sqrt(n)).item()

    rows = [
        within_se(
            "IWAE_1 / N = ELBO",
            bounds[0].mean().item(),
            elbo.mean().item(),
            se(bounds[0] - elbo),
        )
    ]
    for k, bound in zip(ks[1:], bounds[1:]):
        above, below = bound - elbo, log_p - bound
        passed = above.mean() > NUM_SE * se(above) and below.mean() > -NUM_SE * se(
            below
        )
        rows.append(
            CheckRow(
                f"IWAE_{k} / N in (ELBO, log p(x)]",
                bound.mean().item(),
                log_p.mean().item(),
                se(below),
                bool(passed),
                f"> ELBO + {NUM_SE:g} SE, < log p + {NUM_SE:g} SE",
            )
        )
    for (k0, b0), (k1, b1) in zip(zip(ks, bounds), zip(ks[1:], bounds[1:])):
        rise = b1 - b0
        rows.append(
            CheckRow(
                f"IWAE_{k1} - IWAE_{k0} / N > 0",
                rise.mean().item(),
                0.0,
                se(rise),
                bool(rise.mean() > NUM_SE * se(rise)),
                f"> {NUM_SE:g} SE",
            )
        )
    return rows


def marginal_checks(
    truth: LinearGaussian,
    x: torch.Tensor,
    generator: torch.Generator,
    num_points: int = 50,
    k: int = 200,
    repeats: int = 20,
) -> List[CheckRow]:
    """The SE and ESS that ``log_marginal_likelihood`` reports, for a guide wider than the
    posterior (finite weight variance; E w^2 / p(x)^2 about 1.7 here), from ``repeats``
    independent runs with K = ``k``:

    * the empirical spread of the runs over the mean reported SE (root mean squares over the
      points): an SE neither too small nor too large;
    * the mean reported SE over its large-K closed form sqrt((E w^2 / p(x)^2 - 1) / K);
    * the mean reported ESS / K over its large-K closed form p(x)^2 / E w^2
      (``LinearGaussian.log_weight_second_moment``).

    Each ratio must be within ``SE_TOL`` of 1 (with the check's seed they come out at 1.00,
    1.01 and 1.00; a SE off by a factor 1.2 fails)."""
    vae = linear_vae(truth, "diagonal")
    set_perturbed_diagonal_guide(vae, truth, generator, spread=0.1, widen=1.5)
    xs = x[:num_points]
    try:
        runs = log_marginal_likelihood(
            vae.model, vae.guide, xs.repeat(repeats, 1), num_samples=k
        )
        with torch.no_grad():
            loc, scale = diagonal_guide_params(vae, xs)
    finally:
        vae.release_params()
    moment = truth.log_weight_second_moment(xs, loc, scale)
    estimate = runs.log_marginal.reshape(repeats, -1)
    se = runs.stderr.reshape(repeats, -1)
    ess = runs.ess.reshape(repeats, -1)
    ratios = (
        (
            "SE: empirical sd of repeats / reported SE",
            (estimate.var(0).mean() / se.pow(2).mean()).sqrt().item(),
        ),
        (
            "SE: reported / closed form sqrt((E w^2/p^2 - 1)/K)",
            (se.pow(2).mean() / (moment.exp() - 1).div(k).mean()).sqrt().item(),
        ),
        (
            "ESS / K: reported / closed form p^2 / E w^2",
            (ess.mean() / k / (-moment).exp().mean()).item(),
        ),
    )
    return [
        CheckRow(
            f"{name}, K={k}, {repeats} runs",
            ratio,
            1.0,
            0.0,
            abs(ratio - 1) < SE_TOL,
            f"|ratio - 1| < {SE_TOL:g}",
        )
        for name, ratio in ratios
    ]
