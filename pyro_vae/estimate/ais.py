"""Annealed importance sampling (AIS) of log p(x) per data point, and its reverse run (BDMC).

AIS (Neal 2001; for decoder-based models Wu et al. 2017) moves M chains per data point along a
geometric path from a normalized proposal r(z) (the guide q(z | x), or the prior p(z)) to the
unnormalized posterior p(x, z), with 0 = beta_0 < beta_1 < ... < beta_T = 1::

    f_t(z) = r(z)^(1 - beta_t) p(x, z)^beta_t
    log w  = sum_{t=1..T} (beta_t - beta_{t-1}) [log p(x, z_{t-1}) - log r(z_{t-1})]

where z_0 ~ r and z_t is drawn by a transition that leaves f_t invariant (here HMC: fresh
momentum, ``leapfrog_steps`` leapfrog steps, a Metropolis test). E[w] = p(x), so the log-mean-exp of
the M chains' weights is a stochastic lower bound on log p(x); its standard error is the delta
method's, as in ``marginal``. Running the same path backwards from an exact posterior draw (on data
simulated from the model, where the z that generated x is one) gives weights with E[w] = 1/p(x),
hence a stochastic upper bound: bidirectional Monte Carlo (Grosse et al. 2015). The gap between the
two bounds bounds the error of either.

Step sizes: each (chain, data point) has its own, starting at half the proposal's mean standard
deviation (or ``step_size``) and adapted after every transition by
eps <- eps * exp(rate * (accepted - target)), so that the acceptance rate settles at ``target``
(0.65, as in Wu et al. 2017). The adaptation uses only the chain's own past, and the accept event
is symmetric under time reversal, so every weight stays unbiased and the chains stay independent.

Pyro's ``infer.mcmc.HMC`` runs one chain over a whole model; AIS needs one tempered target per data
point, vectorized over points and chains, so the potential energy is taken from traces of
``model(x)`` conditioned on z inside a particles plate (``ais_path.Path``; z is every latent
site at once, all layers of a hierarchical family) and differentiated with ``torch.autograd.grad``.
"""

import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import pyro
import torch
from pyro import poutine

from pyro_vae.errors import ConfigError
from pyro_vae.estimate.ais_path import PROPOSALS, Path
from pyro_vae.estimate.marginal import _Accumulator, default_max_pairs
from pyro_vae.models.family import OBSERVED, latent_names

SCHEDULES = ("sigmoid", "linear")
__all__ = ["PROPOSALS", "annealed_importance_sampling", "bdmc", "simulate", "schedule"]
TARGET_ACCEPT = 0.65
ADAPT_RATE = 0.1
STEP_SCALE = 0.5


def schedule(num_steps: int, kind: str = "sigmoid", sharpness: float = 4.0):
    """beta_0 = 0 < ... < beta_T = 1 (T = ``num_steps``). ``linear``: beta_t = t / T. ``sigmoid``
    (Grosse et al. 2015): s(delta (2t/T - 1)) rescaled to [0, 1], delta = ``sharpness``, which
    spends more steps near both ends, where the path changes fastest."""
    if num_steps < 1:
        raise ValueError(f"AIS needs at least 1 annealing step, got {num_steps}")
    if kind not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got '{kind}'")
    t = torch.linspace(0, 1, num_steps + 1, dtype=torch.float64)
    if kind == "linear":
        return t
    s = torch.sigmoid(sharpness * (2 * t - 1))
    return (s - s[0]) / (s[-1] - s[0])


@dataclass
class AISEstimate:
    """Per-data-point results (shape (N,)): ``log_marginal`` (the log-mean-exp of the chains'
    weights: a lower bound for forward AIS, an upper bound for reverse AIS), its ``stderr``, the
    chains' ``ess``, the mean HMC ``acceptance`` and final ``step_size``; ``model_evals`` is the
    number of evaluations of log p(x, z) per chain (those with a gradient included)."""

    log_marginal: torch.Tensor
    stderr: torch.Tensor
    ess: torch.Tensor
    acceptance: torch.Tensor
    step_size: torch.Tensor
    num_steps: int
    num_chains: int
    model_evals: int


def _metropolis(log_ratio: torch.Tensor) -> torch.Tensor:
    """Accept with probability min(1, exp(log_ratio)); NaN (a divergent trajectory) rejects."""
    return torch.rand_like(log_ratio).log() < log_ratio


def _select(accept: torch.Tensor, proposed: torch.Tensor, current: torch.Tensor):
    """The Metropolis choice per (chain, point): ``proposed`` where accepted, else ``current``."""
    keep = accept.reshape(accept.shape + (1,) * (current.dim() - accept.dim()))
    return torch.where(keep, proposed, current)


def _increment(beta_prev: float, beta: float, log_joint, log_proposal) -> torch.Tensor:
    """log f_t(z) - log f_{t-1}(z) = (beta_t - beta_{t-1}) [log p(x, z) - log r(z)]."""
    return (beta - beta_prev) * (log_joint - log_proposal).double()


def _hmc(path: Path, z, state, beta: float, eps, leapfrog_steps: int):
    """One HMC transition leaving f_beta invariant, per (chain, point); returns the new z, its
    terms, and the accept indicators (M, N)."""
    lj, lr, gj, gr = state
    log_f = (1 - beta) * lr + beta * lj
    p0 = torch.randn_like(z)
    p = p0 + 0.5 * eps * ((1 - beta) * gr + beta * gj)
    z_new = z
    for step in range(leapfrog_steps):
        z_new = z_new + eps * p
        new = path.terms(z_new)
        grad = (1 - beta) * new[3] + beta * new[2]
        p = p + (eps if step < leapfrog_steps - 1 else 0.5 * eps) * grad
    new_log_f = (1 - beta) * new[1] + beta * new[0]
    log_ratio = new_log_f - log_f - 0.5 * (p.pow(2).sum(-1) - p0.pow(2).sum(-1))
    accept = _metropolis(log_ratio)
    z = _select(accept, z_new, z)
    return z, tuple(_select(accept, n, s) for n, s in zip(new, state)), accept


def _initial_step_size(path: Path, z: torch.Tensor, step_size: Optional[float]):
    """``step_size`` for every chain, or by default STEP_SCALE times the proposal's mean
    standard deviation over the latent dimensions (per point; 0.1 if it has none)."""
    if step_size is None:
        if path.stddev is not None:
            sd = path.stddev.mean(-1, keepdim=True)
            return (STEP_SCALE * sd).to(z.dtype).expand(*z.shape[:-1], 1).clone()
        step_size = 0.1
    return torch.full((*z.shape[:-1], 1), step_size, dtype=z.dtype, device=z.device)


def _anneal(
    path: Path,
    z,
    betas,
    leapfrog_steps: int,
    step_size: Optional[float],
    target: float,
):
    """Run every chain along ``betas``; returns log w (M, N), acceptance and step sizes (N,)."""
    state = path.terms(z)
    eps = _initial_step_size(path, z, step_size)
    log_w = torch.zeros(z.shape[:-1], dtype=torch.float64, device=z.device)
    accepted = torch.zeros_like(log_w)
    betas = betas.tolist()
    for t in range(1, len(betas)):
        log_w += _increment(betas[t - 1], betas[t], state[0], state[1])
        if t == len(betas) - 1:
            break  # the last transition would not change any weight
        z, state, accept = _hmc(path, z, state, betas[t], eps, leapfrog_steps)
        eps = eps * torch.exp(ADAPT_RATE * (accept.to(eps.dtype) - target)).unsqueeze(
            -1
        )
        accepted += accept
    transitions = max(len(betas) - 2, 1)
    return log_w, (accepted / transitions).mean(0), eps.squeeze(-1).mean(0)


@torch.no_grad()
def annealed_importance_sampling(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    num_steps: int = 500,
    num_chains: int = 16,
    leapfrog_steps: int = 5,
    proposal: str = "guide",
    kind: str = "sigmoid",
    step_size: Optional[float] = None,
    target_accept: float = TARGET_ACCEPT,
    reverse_from: Optional[torch.Tensor] = None,
    max_pairs: Optional[int] = None,
) -> AISEstimate:
    """AIS estimate of log p(x) for each row of ``x`` (see the module docstring).

    With ``reverse_from`` (N, D), exact posterior draws z ~ p(z | x_i) (e.g. the latents that
    generated simulated data), the path runs backwards from them and the result is the reverse
    (upper) bound -log mean w. Rows run in batches of at most ``max_pairs`` (chain, row) pairs.
    """
    if num_chains < 1:
        raise ValueError(f"num_chains must be >= 1, got {num_chains}")
    if leapfrog_steps < 1:
        raise ValueError(f"leapfrog_steps must be >= 1, got {leapfrog_steps}")
    betas = schedule(num_steps, kind)
    if reverse_from is not None:
        betas = betas.flip(0)
    n = x.shape[0]
    batch = max(1, (max_pairs or default_max_pairs(x.device)) // num_chains)
    out = torch.empty(5, n, dtype=torch.float64, device=x.device)
    evals = 0
    with pyro.validation_enabled(False):
        for start in range(0, n, batch):
            xb = x[start : start + batch]
            path = Path(model, guide, xb, num_chains, proposal)
            if reverse_from is None:
                z = path.sample()
            else:
                z = reverse_from[start : start + batch].expand(
                    num_chains, *xb.shape[:1], -1
                )
                z = z.to(xb.dtype).clone()
            log_w, acceptance, eps = _anneal(
                path, z, betas, leapfrog_steps, step_size, target_accept
            )
            acc = _Accumulator()
            acc.add(log_w)
            log_mean, stderr, ess = acc.result(num_chains)
            if reverse_from is not None:
                log_mean = -log_mean
            for row, values in zip(out, (log_mean, stderr, ess, acceptance, eps)):
                row[start : start + batch] = values
            evals = path.evals
    return AISEstimate(*out, num_steps, num_chains, evals)


@torch.no_grad()
def simulate(model: Callable, num: int, data_dim: int, device=None, dtype=None):
    """``num`` draws (x, z) from the model itself (the observed site uncondition-ed): data for
    BDMC, with z an exact draw from p(z | x): every latent site's value in the model's order,
    joined along the last dimension (the AIS path's state)."""
    dummy = torch.zeros(num, data_dim, device=device, dtype=dtype)
    trace = poutine.trace(poutine.uncondition(model)).get_trace(dummy)
    names = latent_names(trace, skip=[OBSERVED])
    if not names:
        raise ConfigError("BDMC needs a model with latent sites; this one has none")
    z = torch.cat([trace.nodes[name]["value"] for name in names], -1)
    return trace.nodes[OBSERVED]["value"], z


def bdmc(
    model: Callable, guide: Callable, x: torch.Tensor, z: torch.Tensor, **kwargs
) -> Tuple[AISEstimate, AISEstimate]:
    """Forward (lower) and reverse (upper) AIS bounds on simulated (x, z) with the same settings."""
    return (
        annealed_importance_sampling(model, guide, x, **kwargs),
        annealed_importance_sampling(model, guide, x, reverse_from=z, **kwargs),
    )


def mean_stderr(stderr: torch.Tensor) -> float:
    """Standard error of a mean over data points of independent per-point estimates."""
    return (
        (stderr.pow(2).sum().sqrt() / stderr.numel()).item()
        if stderr.numel()
        else math.nan
    )
