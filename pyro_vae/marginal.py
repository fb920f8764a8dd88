"""Importance-sampled log p(x), per data point, for any Pyro ``model(x)``/``guide(x)`` pair.

With K draws z_k ~ q(z | x) and weights w_k = p(x, z_k) / q(z_k | x)::

    log p(x) ~= log (1/K) sum_k w_k                 (Burda et al. 2016: the IWAE_K bound)
    ESS       = (sum_k w_k)^2 / sum_k w_k^2
    SE        = sqrt(Var(w) / K) / mean(w) = sqrt((K/ESS - 1) / (K - 1))   (delta method)

The estimate is biased low for finite K (it is a lower bound in expectation) and converges to
log p(x) as K grows. The delta-method SE assumes the weights have finite variance; when they do
not (a guide narrower than the posterior) it is too small, with no sign of it. The Pareto
k-hat diagnostic (Vehtari et al. 2015/2024, "Pareto smoothed importance sampling") says which
case holds: a generalized Pareto distribution is fitted to the M = ceil(min(K/5, 3 sqrt(K)))
largest weights above the (M+1)-th largest, per data point. Its shape k-hat estimates the tail
index: k-hat < 0.5, finite variance; 0.5 to 0.7, finite mean but slow convergence; k-hat > 0.7,
the SE (and often the estimate) is unreliable. The top M + 1 log-weights are kept while the
chunks stream, and the fit is Pyro's ``pyro.ops.stats.fit_generalized_pareto`` (Zhang &
Stephens 2009), the same procedure as ``pyro.infer.importance.psis_diagnostic``.

Every latent and observed site must sit inside the plate ``"data"`` (one weight per data
point); particles are vectorized with an outer plate, and both K and the data are processed in
chunks so that memory stays bounded. Sums run in float64.
"""

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import pyro
import torch
from pyro import poutine
from pyro.ops.stats import fit_generalized_pareto
from pyro.poutine import Trace
from pyro.poutine.util import is_validation_enabled, site_is_subsample

PARTICLE_PLATE = "particles"
# (particle, data point) pairs per chunk when the caller does not say: on the CPU one MNIST image
# with K = 5000 draws (16 MB per full-size temporary); on a GPU, ten times as many per kernel
DEFAULT_MAX_PAIRS = {"cpu": 5_000, "cuda": 50_000}


def default_max_pairs(device: torch.device) -> int:
    """The chunk budget ``log_marginal_likelihood`` uses for data on ``device``."""
    return DEFAULT_MAX_PAIRS.get(torch.device(device).type, DEFAULT_MAX_PAIRS["cpu"])


# glibc's largest adaptive mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX)
ADAPTIVE_THRESHOLD_MAX = 32 * 2**20
_heap_prepared = False


def prepare_heap() -> None:
    """Let glibc's heap keep the chunks' 4 to 16 MB temporaries for reuse (once per process).

    glibc serves blocks above an adaptive threshold (128 KB at first) with fresh mappings, and
    returns the free top of its heap to the OS once it exceeds twice that threshold; freeing a
    mapped block raises the threshold to the block's size, up to 32 MB. Until a process has freed
    a block of about that size, each chunk's temporaries went back to the OS and were faulted in
    again in the next chunk: up to 10,300 page faults per image at K = 5000 in a fresh process,
    a third of the time. Allocating and freeing one block just under 32 MB (never touched, so
    never resident) raises the threshold as freeing any large tensor would; loading a data set
    usually has done so already. glibc stays adaptive; with other allocators this is a harmless
    allocation."""
    global _heap_prepared
    if not _heap_prepared:
        torch.empty(ADAPTIVE_THRESHOLD_MAX - 2**16, dtype=torch.uint8)  # freed at once
        _heap_prepared = True


KHAT_UNRELIABLE = 0.7  # Pareto k-hat above which a standard error is not to be trusted
MIN_TAIL = (
    10  # fewer tail weights than this give no k-hat (NaN), as in Pyro's psis_diagnostic
)


@dataclass
class MarginalEstimate:
    """Per-data-point results: ``log_marginal``, its ``stderr``, ``ess`` and the Pareto ``khat``
    (all shape (N,); ``khat`` is NaN where not computed: K < 50, too few for a tail fit, or
    ``khat=False``)."""

    log_marginal: torch.Tensor
    stderr: torch.Tensor
    ess: torch.Tensor
    num_samples: int
    khat: Optional[torch.Tensor] = None


def tail_size(k: int) -> int:
    """M = ceil(min(K/5, 3 sqrt(K))), the number of largest weights the Pareto fit uses."""
    return int(math.ceil(min(0.2 * k, 3.0 * math.sqrt(k))))


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
    for i in range(top.shape[-1]):
        tail = top[:m, i][top[:m, i] > cutoff[i]]
        if len(tail) >= MIN_TAIL:
            khat[i] = fit_generalized_pareto(tail.exp() - cutoff[i].exp())[0]
    return khat


def vectorized_traces(
    model: Callable,
    guide: Callable,
    num_particles: int,
    args: tuple,
    kwargs: Dict,
    plate_dim: int = -2,
) -> Tuple[Trace, Trace]:
    """Trace the guide and the model replayed against it, ``num_particles`` draws at once in an
    outer plate at ``plate_dim`` (left of the data plate). Site log-densities are computed,
    scaled and masked as the sites say."""
    with pyro.plate(PARTICLE_PLATE, num_particles, dim=plate_dim):
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    return model_trace, guide_trace


def log_prob_per_datapoint(trace: Trace, plate: str = "data") -> torch.Tensor:
    """Sum of every sample site's log-density, one value per (particle, data point)."""
    total = 0.0
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if not any(frame.name == plate for frame in site["cond_indep_stack"]):
            raise ValueError(
                f"sample site '{name}' is outside the plate '{plate}': importance weights per "
                f"data point need every latent and observed site inside that plate (global "
                f"latent variables have no per-data-point weight)"
            )
        total = total + site["log_prob"]
    return total


def log_weights(
    model: Callable,
    guide: Callable,
    num_particles: int,
    *args,
    plate: str = "data",
    **kwargs,
) -> torch.Tensor:
    """log w_k(x_i) = log p(x_i, z_ik) - log q(z_ik | x_i), shape (num_particles, N)."""
    traces = vectorized_traces(model, guide, num_particles, args, kwargs)
    return trace_log_weights(*traces, plate)


def trace_log_weights(
    model_trace: Trace, guide_trace: Trace, plate: str = "data"
) -> torch.Tensor:
    """The log importance weights of traced draws, one per (particle, data point)."""
    return log_prob_per_datapoint(model_trace, plate) - log_prob_per_datapoint(
        guide_trace, plate
    )


class _Accumulator:
    """Streaming log-sum-exp of the weights and of their squares, in float64, and the ``keep``
    largest log-weights per data point (for k-hat)."""

    def __init__(self, keep: int = 0):
        self.log_s1: Optional[torch.Tensor] = None
        self.log_s2: Optional[torch.Tensor] = None
        self.keep = keep
        self.top: Optional[torch.Tensor] = None

    def add(self, log_w: torch.Tensor) -> None:
        log_w = log_w.double()
        s1, s2 = torch.logsumexp(log_w, 0), torch.logsumexp(2 * log_w, 0)
        if self.log_s1 is None:
            self.log_s1, self.log_s2 = s1, s2
        else:
            self.log_s1 = torch.logaddexp(self.log_s1, s1)
            self.log_s2 = torch.logaddexp(self.log_s2, s2)
        if self.keep:
            both = log_w if self.top is None else torch.cat([self.top, log_w])
            self.top = both.topk(min(self.keep, both.shape[0]), dim=0).values

    def result(self, k: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        log_marginal = self.log_s1 - math.log(k)
        ess = torch.exp(2 * self.log_s1 - self.log_s2)
        if k > 1:
            stderr = ((k / ess - 1).clamp(min=0) / (k - 1)).sqrt()
        else:
            stderr = torch.full_like(ess, float("nan"))
        return log_marginal, stderr, ess


@torch.no_grad()
def log_marginal_likelihood(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    num_samples: int = 1000,
    batch_size: Optional[int] = None,
    particle_batch_size: Optional[int] = None,
    max_pairs: Optional[int] = None,
    plate: str = "data",
    khat: bool = True,
) -> MarginalEstimate:
    """Importance-sampled log p(x) for each row of ``x`` (see the module docstring).

    ``model`` and ``guide`` are called as ``fn(x_chunk)``. Rows are processed ``batch_size`` at a
    time (default: all, capped by ``max_pairs``) and particles ``particle_batch_size`` at a time
    (default: ``max_pairs // batch_size``), so at most ``max_pairs`` (particle, row) pairs are
    in memory at once (default: ``default_max_pairs(x.device)``).

    With Pyro's validation on, every row is first checked once with one particle (data and
    parameters against their supports, the RNG stream left as it was); the K draws then run
    without validation, which would otherwise re-check every (particle, row) pair.

    With ``khat`` (and K >= 50), the Pareto k-hat of each row's weights is computed from its
    M + 1 largest log-weights, kept per chunk with ``topk`` (see the module docstring).

    On the CPU, ``prepare_heap`` runs first (once per process).
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    n = x.shape[0]
    max_pairs = max_pairs or default_max_pairs(x.device)
    batch_size = batch_size or max(1, min(n, max_pairs // min(num_samples, max_pairs)))
    chunk = particle_batch_size or max(1, max_pairs // batch_size)
    if is_validation_enabled():  # one particle per row, in chunks of max_pairs rows
        with torch.random.fork_rng(devices=[x.device.index or 0] if x.is_cuda else []):
            for start in range(0, n, max_pairs):
                log_weights(model, guide, 1, x[start : start + max_pairs], plate=plate)
    if x.device.type == "cpu":
        prepare_heap()
    # Results go into one tensor made up front. Keeping three small tensors per row batch
    # instead left them between the chunks' freed temporaries, and glibc's heap grew by about
    # 4 MB per image (23 GB over the MNIST test set after 500 epochs of training); written in
    # place, 6 epochs of training then 1,000 test images in one process stayed at 1.08 GB.
    out = torch.full((4, n), float("nan"), dtype=torch.float64, device=x.device)
    keep = tail_size(num_samples) + 1 if khat and num_samples >= 5 * MIN_TAIL else 0
    with pyro.validation_enabled(False):
        for start in range(0, n, batch_size):
            xb = x[start : start + batch_size]
            acc = _Accumulator(keep)
            for k0 in range(0, num_samples, chunk):
                k = min(chunk, num_samples - k0)
                acc.add(log_weights(model, guide, k, xb, plate=plate))
            for row, values in zip(out, acc.result(num_samples)):
                row[start : start + batch_size] = values
            if keep:
                out[3, start : start + batch_size] = pareto_khat(acc.top, num_samples)
    log_marginal, stderr, ess, khats = out
    return MarginalEstimate(log_marginal, stderr, ess, num_samples, khats)
