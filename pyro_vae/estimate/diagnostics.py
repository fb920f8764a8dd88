"""What a trained VAE does with its latent space: the ELBO's two terms per data point, KL per
latent dimension, active units, mutual information, rate and distortion.

* ELBO = reconstruction - KL, with reconstruction = E_q[log p(x | z)] and
  KL = E_q[log q(z | x) - log p(z)] (Monte Carlo over the guide's draws).
* rate = mean KL, distortion = -mean reconstruction (Alemi et al. 2018).
* active units (Burda et al. 2016): dimension d is active when A_d = Var_x(E_q[z_d | x]) > 0.01.
  Where q has no closed-form mean (flow guides), E_q[z | x] is a mean m(x) of S draws, and
  Var_x(m) = A + E_x[Var_q(z | x)] / S: the Monte Carlo noise is estimated from the draws'
  own spread and subtracted, so the estimate of A is unbiased.
* mutual information under q (Hoffman & Johnson 2016, "ELBO surgery"): with the aggregate
  posterior q(z) = (1/N) sum_n q(z | x_n), mean KL = I(x; z) + KL(q(z) || p(z)) and
  I(x; z) = E_n E_{q(z | x_n)}[log q(z | x_n) - log q(z)].
"""

import math
from typing import Dict, Optional, Tuple

import torch
from torch.distributions import (
    Categorical,
    Distribution,
    Independent,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
    kl_divergence,
)

from pyro_vae.infer.traces import latent_log_prob, vectorized_traces
from pyro_vae.models.family import OBSERVED
from pyro_vae.models.vae import VAE
from pyro_vae.parts.distributions import DiagonalNormalMixture

ACTIVE_THRESHOLD = 0.01


@torch.no_grad()
def elbo_terms(
    vae: VAE, x: torch.Tensor, num_samples: int = 1, batch_size: int = 1000
) -> Dict[str, torch.Tensor]:
    """Per-data-point ``reconstruction``, ``kl`` and ``elbo`` (nats), averaged over
    ``num_samples`` guide draws each, from traces of the model and guide (the KL sums over
    every latent site the family declares)."""
    parts = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        model_trace, guide_trace = vectorized_traces(
            vae.model, vae.guide, num_samples, (xb,), {}
        )
        rec = model_trace.nodes[OBSERVED]["log_prob"].mean(0)
        kl = (latent_log_prob(guide_trace) - latent_log_prob(model_trace)).mean(0)
        parts.append((rec, kl))
    rec = torch.cat([p[0] for p in parts])
    kl = torch.cat([p[1] for p in parts])
    return {"reconstruction": rec, "kl": kl, "elbo": rec - kl}


@torch.no_grad()
def posterior_moments(
    vae: VAE, x: torch.Tensor, num_samples: int = 64, batch_size: int = 1000
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per row of ``x``: an unbiased estimate m(x) of E_q[z | x], and the variance of that
    estimate, both shape (N, latent_dim). Where q has a closed-form mean the variance is 0;
    else m is the mean of ``num_samples`` draws and its variance is s^2(x) / S, with s^2 the
    draws' unbiased sample variance (itself unbiased for Var_q(z | x) / S)."""
    if num_samples < 2:
        raise ValueError(f"num_samples must be >= 2, got {num_samples}")
    means, noise = [], []
    for start in range(0, x.shape[0], batch_size):
        q = vae.encoder(x[start : start + batch_size])
        try:
            m = q.mean
            v = torch.zeros_like(m)
        except NotImplementedError:
            z = q.sample((num_samples,))
            m, v = z.mean(0), z.var(0) / num_samples
        means.append(m)
        noise.append(v)
    return torch.cat(means), torch.cat(noise)


@torch.no_grad()
def posterior_means(vae: VAE, x: torch.Tensor, num_samples: int = 64) -> torch.Tensor:
    """E_q[z | x] per row: the guide's mean where it has one, else a Monte Carlo average."""
    return posterior_moments(vae, x, num_samples)[0]


@torch.no_grad()
def active_units(
    vae: VAE,
    x: torch.Tensor,
    threshold: float = ACTIVE_THRESHOLD,
    num_samples: int = 64,
) -> Dict[str, object]:
    """Activity A_d = Var_x(E_q[z_d | x]) per dimension, and how many exceed ``threshold``.

    With m_n the estimated means and v_n their Monte Carlo variances (``posterior_moments``),
    u_nd = (m_nd - mean_n m_nd)^2 N / (N - 1) - v_nd; ``activity`` = mean_n u_nd is the sample
    variance of m minus the mean noise (unbiased for the sample variance of the exact means),
    ``activity_stderr`` = std_n(u_nd) / sqrt(N), and ``noise`` = mean_n v_nd is what was
    subtracted (0 for guides with a closed-form mean)."""
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"active units need at least 2 data points, got {n}")
    m, v = posterior_moments(vae, x, num_samples)
    m, v = m.double(), v.double()
    u = (m - m.mean(0)).pow(2) * (n / (n - 1)) - v
    activity = u.mean(0)
    return {
        "active_units": int((activity > threshold).sum()),
        "activity": activity,
        "activity_stderr": u.std(0) / math.sqrt(n),
        "noise": v.mean(0),
    }


def marginals(d: Distribution) -> Optional[Distribution]:
    """The one-dimensional marginals p(z_d) of every latent dimension, as one distribution with
    batch shape (..., latent_dim) and event shape (), where they have a closed form: diagonal
    and full-rank Gaussians, and mixtures of them (mixture and VampPrior priors with Gaussian
    guides). ``None`` for flows (no closed-form marginal density)."""
    if isinstance(d, Independent) and isinstance(d.base_dist, Normal):
        if d.reinterpreted_batch_ndims == 1:
            return d.base_dist
    elif isinstance(d, MultivariateNormal):
        return Normal(d.loc, d.variance.sqrt())
    elif isinstance(d, DiagonalNormalMixture):  # locs, scales (K, D)
        loc, scale = d.locs.transpose(-1, -2), d.scales.transpose(-1, -2)
        logits = d.logits.unsqueeze(-2).expand(loc.shape)
        return MixtureSameFamily(Categorical(logits=logits), Normal(loc, scale))
    elif isinstance(d, MixtureSameFamily):
        parts = marginals(d.component_distribution)  # batch (..., K, D)
        if isinstance(parts, Normal):
            loc, scale = parts.loc.transpose(-1, -2), parts.scale.transpose(-1, -2)
            logits = d.mixture_distribution.logits.unsqueeze(-2).expand(loc.shape)
            return MixtureSameFamily(Categorical(logits=logits), Normal(loc, scale))
    return None


def _factorizes(d: Distribution) -> bool:
    return isinstance(d, Independent) and isinstance(d.base_dist, Normal)


@torch.no_grad()
def kl_per_dimension_with_method(
    vae: VAE, x: torch.Tensor, num_samples: int = 16, max_elements: int = 4_000_000
) -> Tuple[Optional[torch.Tensor], str]:
    """Mean over the rows of ``x`` of KL(q(z_d | x) || p(z_d)) per latent dimension d, between
    the one-dimensional marginals (see ``marginals``), and a phrase saying what was computed.

    In closed form when both marginals are Gaussian, else by Monte Carlo with ``num_samples``
    draws per row (rows in chunks of at most ``max_elements`` log-density terms). Only when
    guide and prior are both diagonal Gaussians do the values sum to the KL of the ELBO; else
    sum_d KL_d differs from it (by the guide's or the prior's dependence between dimensions).
    ``None`` when a marginal has no closed form (flow guides and flow priors)."""
    q, p = vae.encoder(x[:1]), vae.prior()
    if marginals(q) is None or marginals(p) is None:
        flow = "guide" if marginals(q) is None else "prior"
        return None, (
            f"not defined: the {flow} has no closed-form one-dimensional marginals "
            f"(a flow); only the total KL is reported"
        )
    scope = (
        "sums to the KL"
        if _factorizes(q) and _factorizes(p)
        else "KL between one-dimensional marginals; does not sum to the KL"
    )
    p_d = marginals(p)
    try:
        kl_divergence(marginals(q), p_d)
    except NotImplementedError:
        mixture = isinstance(p_d, MixtureSameFamily)
        components = p_d.mixture_distribution.logits.shape[-1] if mixture else 1
        terms = num_samples * vae.arch.latent_dim * components
        rows = max(1, max_elements // terms)
        total = 0.0
        for start in range(0, x.shape[0], rows):
            q_d = marginals(vae.encoder(x[start : start + rows]))
            z = q_d.sample((num_samples,))
            total = total + (q_d.log_prob(z) - p_d.log_prob(z)).mean(0).sum(0)
        method = f"Monte Carlo, {num_samples} draws per data point; {scope}"
        return total / x.shape[0], method
    return (
        kl_divergence(marginals(vae.encoder(x)), p_d).mean(0),
        f"closed form; {scope}",
    )


def kl_per_dimension(vae: VAE, x: torch.Tensor) -> Optional[torch.Tensor]:
    """The values of ``kl_per_dimension_with_method`` (``None`` where not defined)."""
    return kl_per_dimension_with_method(vae, x)[0]


@torch.no_grad()
def mutual_information(
    vae: VAE,
    x: torch.Tensor,
    num_samples: int = 1,
    max_pairs: int = 100_000,
) -> Optional[Dict[str, float]]:
    """I(x; z) under q for the rows x_1..x_N of ``x`` (Hoffman & Johnson 2016):
    I = (1/N) sum_n E_{z ~ q(z | x_n)}[log q(z | x_n) - log q(z)], q(z) = (1/N) sum_m q(z | x_m),
    with ``num_samples`` draws per row; log q(z) is exact (all N^2 pairs, ``max_pairs`` at a
    time). The data distribution is the empirical one of these N rows, so 0 <= I <= log N: a
    guide whose posteriors barely overlap reports nearly log N (use enough rows). ``stderr``
    is std_n(u_n) / sqrt(N) over the per-row terms u_n (it includes the spread between rows,
    so it also covers drawing the rows from the data distribution). ``None`` when the guide
    cannot evaluate its density at any z (planar flows have no inverse)."""
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"mutual information needs at least 2 data points, got {n}")
    q = vae.encoder(x)
    z = q.sample((num_samples,))  # (S, N, D)
    flat = z.reshape(-1, z.shape[-1])
    aggregate = []
    try:
        own = q.log_prob(z)
        for chunk in flat.split(max(1, max_pairs // n)):
            pairs = chunk.unsqueeze(-2).expand(chunk.shape[0], n, chunk.shape[-1])
            aggregate.append(torch.logsumexp(q.log_prob(pairs), -1) - math.log(n))
    except (NotImplementedError, KeyError):  # planar flows cache their samples only
        return None
    u = (own - torch.cat(aggregate).reshape(own.shape)).double().mean(0)
    return {
        "mutual_information": u.mean().item(),
        "stderr": (u.std() / math.sqrt(n)).item(),
        "points": n,
    }


def rate_distortion(terms: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """rate = mean KL, distortion = -mean reconstruction (Alemi et al. 2018)."""
    return {
        "rate": terms["kl"].mean().item(),
        "distortion": -terms["reconstruction"].mean().item(),
    }
