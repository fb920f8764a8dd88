"""The Pareto k-hat diagnostic of importance weights (Vehtari et al. 2015/2024, "Pareto smoothed
importance sampling").

A generalized Pareto distribution is fitted to the M = ceil(min(K/5, 3 sqrt(K))) largest weights
above the (M+1)-th largest, per data point. Its shape k-hat estimates the tail index: k-hat <
0.5, finite variance; 0.5 to 0.7, finite mean but slow convergence; k-hat > 0.7, the standard
error (and often the estimate) is unreliable. The fit is Zhang & Stephens's (2009), the same
procedure as Pyro's ``pyro.ops.stats.fit_generalized_pareto`` (used for the rows that need it
one by one) and ``pyro.infer.importance.psis_diagnostic``; ``_fit_pareto_shapes`` runs it on
many rows at once.
"""

import math

import torch
from pyro.ops.stats import fit_generalized_pareto

KHAT_UNRELIABLE = 0.7  # Pareto k-hat above which a standard error is not to be trusted
MIN_TAIL = (
    10  # fewer tail weights than this give no k-hat (NaN), as in Pyro's psis_diagnostic
)
KHAT_BLOCK = (
    256  # rows per batched Pareto fit: (rows, 30 + sqrt(M), M) float64 temporaries
)


def tail_size(k: int) -> int:
    """M = ceil(min(K/5, 3 sqrt(K))), the number of largest weights the Pareto fit uses."""
    return int(math.ceil(min(0.2 * k, 3.0 * math.sqrt(k))))


def khat_noise(k: int) -> float:
    """The standard deviation of k-hat at the threshold (true shape 0.7), K weights per point.

    The maximum-likelihood shape of a generalized Pareto fit to M exceedances has asymptotic
    variance (1 + k)^2 / M (Smith 1987; Zhang & Stephens's estimator attains it); the fit here
    then shrinks k-hat towards 0.5 by 10 pseudo-observations (factor M / (M + 10)), so

        sd(k-hat) ~= (1 + 0.7) / sqrt(M) * M / (M + 10),   M = tail_size(K).

    Against a simulation at a known index (400 points of generalized-Pareto weights with shape
    0.7): sd 0.24 / 0.165 / 0.103 at K = 100 / 1000 / 5000, this formula 0.25 / 0.157 / 0.111
    (tests/estimate/test_pareto.py holds it to 15%). A true shape of 0.75 is thus flagged
    above 0.7 at only about 60% of points: points within this noise of 0.7 are undecided.
    """
    m = tail_size(k)
    return (1.0 + KHAT_UNRELIABLE) / math.sqrt(m) * m / (m + 10.0)


def pareto_khat(top_log_w: torch.Tensor, k: int) -> torch.Tensor:
    """k-hat per column of ``top_log_w``, the M + 1 largest of each data point's K log-weights
    (M = ``tail_size(k)``): weights relative to the largest, tail = those above the (M+1)-th
    largest (and above 1e-15), fit to tail - threshold. NaN where the tail has fewer than 10.
    """
    m = tail_size(k)
    top = top_log_w.detach().double().cpu()
    khat = torch.full((top.shape[-1],), float("nan"), dtype=torch.float64)
    if top.shape[0] < m + 1:
        return khat
    top = torch.sort(top, dim=0, descending=True).values
    top = top - top[0]
    cutoff = top[m].clamp(min=math.log(1e-15))
    above = top[:m] > cutoff
    full = above.all(
        0
    )  # the usual case: all M weights above the threshold, fitted at once
    if m >= MIN_TAIL and full.any():
        khat[full] = _fit_pareto_shapes((top[:m, full].exp() - cutoff[full].exp()).T)
    for i in (~full).nonzero().flatten().tolist():
        tail = top[:m, i][above[:, i]]
        if len(tail) >= MIN_TAIL:
            khat[i] = fit_generalized_pareto(tail.exp() - cutoff[i].exp())[0]
    return khat


def _fit_pareto_shapes(x: torch.Tensor) -> torch.Tensor:
    """The shape k of a generalized Pareto fit to each row of ``x`` (R, N) at once: what
    ``pyro.ops.stats.fit_generalized_pareto`` returns per row, i.e. Zhang & Stephens's (2009)
    posterior-mean estimate of b = k / sigma over M = 30 + floor(sqrt(N)) quantile-based
    candidates b_j, each weighted by its profile likelihood L_j = N (log(-b_j / k_j) - k_j - 1)
    with k_j = mean log(1 - b_j x) (weights under 1e-30 dropped), then k = mean log(1 - b x)
    shrunk towards 0.5 by 10 pseudo-observations (Vehtari et al., PSIS, appendix)."""
    x = torch.sort(x.double(), dim=-1).values
    n = x.shape[-1]
    m = 30 + int(math.sqrt(n))
    j = torch.arange(1, m + 1, dtype=torch.float64)
    b = (1.0 - math.sqrt(m) / (j - 0.5).sqrt()) / (3.0 * x[:, int(n / 4 - 0.5), None])
    b = b + 1 / x[:, -1:]
    k = torch.log1p(-b.unsqueeze(-1) * x.unsqueeze(-2)).mean(-1)  # (R, M)
    log_lik = n * (torch.log(-b / k) - (k + 1.0))
    weights = 1.0 / torch.exp(log_lik.unsqueeze(-2) - log_lik.unsqueeze(-1)).sum(-1)
    weights = torch.where(weights > 1.0e-30, weights, torch.zeros_like(weights))
    weights = weights / weights.sum(-1, keepdim=True)
    b_hat = (b * weights).sum(-1, keepdim=True)
    shape = torch.log1p(-b_hat * x).mean(-1)
    return shape * n / (n + 10.0) + 5.0 / (n + 10.0)
