"""Check rows for the diagnostics a user can ask ``evaluate`` for, each against a value
computed independently of the code it checks:

* the Pareto k-hat (``estimate.pareto``) on weights drawn from generalized Pareto
  distributions of known shape k: the mean k-hat over many data points against k shrunk as
  the fit shrinks it, k M / (M + 10) + 5 / (M + 10) (Vehtari et al., PSIS appendix);
* the discretized logistic mixture (``parts.discretized``): its 256 bin probabilities, each
  against sigmoid(a) - sigmoid(b) evaluated in 50-digit arithmetic (mpmath), and their sum
  against 1, at scales from a hundredth of a bin to many bins and locations off the edges;
* the mutual information I(x; z) (``estimate.diagnostics.mutual_information``) of the
  linear-Gaussian model with its exact posterior as guide: z ~ N(0, I) under x ~ p(x), so
  I = H(z) - H(z | x) = -1/2 log det Sigma, Sigma the posterior covariance.
"""

from typing import List

import mpmath
import torch

from pyro_vae.checks.analytic import LinearGaussian
from pyro_vae.checks.analytic_models import linear_vae, set_exact_posterior_guide
from pyro_vae.checks.stats import CheckRow, within_se, within_tol
from pyro_vae.estimate import diagnostics, pareto
from pyro_vae.parts import discretized

KHAT_POINTS = 2000  # data points of simulated weights per shape
KHAT_WEIGHTS = 1000  # K weights per point: M = 95 in the tail fit
KHAT_SHAPES = (0.3, 0.7)
BIN_TOL = 1e-9  # per bin probability (float64 against 50 digits)
# (loc, log scale) of single logistics: a hundredth of a bin wide to ten bins, and off the edges
LOGISTICS = (
    (0.5, -10.0),
    (0.3, -5.5),
    (0.0, -3.0),
    (1.0, -4.0),
    (-0.2, -2.0),
    (0.9, 0.5),
)


def diagnostic_checks(
    truth: LinearGaussian, x: torch.Tensor, generator: torch.Generator
) -> List[CheckRow]:
    """The k-hat rows, the discretized logistic rows, the mutual information row."""
    return [
        *khat_rows(generator),
        *discretized_logistic_rows(),
        mutual_information_row(truth, x),
    ]


def khat_rows(generator: torch.Generator) -> List[CheckRow]:
    """Mean k-hat over KHAT_POINTS points of KHAT_WEIGHTS generalized-Pareto weights (inverse
    CDF: w = ((1 - u)^-k - 1) / k), fitted on the M + 1 largest log-weights as ``marginal``
    does; SE = sd / sqrt(points)."""
    rows = []
    m = pareto.tail_size(KHAT_WEIGHTS)
    for shape in KHAT_SHAPES:
        u = torch.rand(KHAT_WEIGHTS, KHAT_POINTS, generator=generator)
        log_w = torch.log(((1 - u.double()).pow(-shape) - 1) / shape)
        top = torch.topk(log_w, m + 1, dim=0).values
        khat = pareto.pareto_khat(top, KHAT_WEIGHTS)
        expected = shape * m / (m + 10.0) + 5.0 / (m + 10.0)
        rows.append(
            within_se(
                f"Pareto k-hat at tail index {shape} (K={KHAT_WEIGHTS})",
                khat.mean().item(),
                expected,
                (khat.std() / KHAT_POINTS**0.5).item(),
            )
        )
    return rows


def _reference_bins(loc: float, log_scale: float) -> List[float]:
    """P(bin k) of one logistic in 50-digit arithmetic: the tails at 0 and 255, CDF
    differences between (edges (k -+ 1/2) / 255)."""
    with mpmath.workdps(50):
        s = mpmath.exp(mpmath.mpf(log_scale))
        levels = discretized.LEVELS

        def cdf(edge):
            return 1 / (1 + mpmath.exp(-(mpmath.mpf(edge) / levels - loc) / s))

        probs = [cdf(0.5)]
        probs += [cdf(k + 0.5) - cdf(k - 0.5) for k in range(1, levels)]
        probs.append(1 - cdf(levels - 0.5))
        return [float(p) for p in probs]


def discretized_logistic_rows() -> List[CheckRow]:
    """Largest |P(k) - reference| over every bin of every logistic in LOGISTICS, and the
    largest |sum_k P(k) - 1|, both at BIN_TOL."""
    worst_bin, worst_sum = 0.0, 0.0
    values = torch.arange(discretized.LEVELS + 1, dtype=torch.float64)
    values = values / discretized.LEVELS
    for loc, log_scale in LOGISTICS:
        d = discretized.DiscretizedLogisticMixture(
            torch.zeros(1, dtype=torch.float64),
            torch.tensor([loc], dtype=torch.float64),
            torch.tensor([log_scale], dtype=torch.float64),
        )
        probs = d.log_prob(values).exp()
        reference = torch.tensor(_reference_bins(loc, log_scale), dtype=torch.float64)
        worst_bin = max(worst_bin, (probs - reference).abs().max().item())
        worst_sum = max(worst_sum, abs(probs.sum().item() - 1.0))
    return [
        within_tol("discretized logistic: bin probabilities", worst_bin, 0.0, BIN_TOL),
        within_tol(
            "discretized logistic: bins sum to 1", 1.0 + worst_sum, 1.0, BIN_TOL
        ),
    ]


def mutual_information_row(truth: LinearGaussian, x: torch.Tensor) -> CheckRow:
    """The library's I(x; z) on the data points ``x`` with the exact posterior as guide (4
    draws per point) against -1/2 log det Sigma, within 4 of its own SEs."""
    vae = linear_vae(truth)
    set_exact_posterior_guide(vae, truth)
    with torch.no_grad():
        result = diagnostics.mutual_information(vae, x, num_samples=4)
    exact = -0.5 * torch.logdet(truth.posterior_map()[2]).item()
    return within_se(
        "mutual information I(x; z), exact posterior",
        result["mutual_information"],
        exact,
        result["stderr"],
    )
