"""Importance-sampled log p(x), per data point, for any Pyro ``model(x)``/``guide(x)`` pair.

With K draws z_k ~ q(z | x) and weights w_k = p(x, z_k) / q(z_k | x)::

    log p(x) ~= log (1/K) sum_k w_k                 (Burda et al. 2016: the IWAE_K bound)
    ESS       = (sum_k w_k)^2 / sum_k w_k^2
    SE        = sqrt(Var(w) / K) / mean(w) = sqrt((K/ESS - 1) / (K - 1))   (delta method)

The estimate is biased low for finite K (it is a lower bound in expectation) and converges to
log p(x) as K grows. Every latent and observed site must sit inside the plate ``"data"`` (one
weight per data point); particles are vectorized with an outer plate, and both K and the data
are processed in chunks so that memory stays bounded. Sums run in float64.
"""

import ctypes
import ctypes.util
import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import pyro
import torch
from pyro import poutine
from pyro.poutine import Trace
from pyro.poutine.util import is_validation_enabled, site_is_subsample

PARTICLE_PLATE = "particles"
# (particle, data point) pairs per chunk when the caller does not say: on the CPU one MNIST image
# with K = 5000 draws (16 MB per full-size temporary); on a GPU, ten times as many per kernel
DEFAULT_MAX_PAIRS = {"cpu": 5_000, "cuda": 50_000}
# row batches between returns of freed heap memory to the OS (see release_freed_memory)
RELEASE_EVERY = 64


def default_max_pairs(device: torch.device) -> int:
    """The chunk budget ``log_marginal_likelihood`` uses for data on ``device``."""
    return DEFAULT_MAX_PAIRS.get(torch.device(device).type, DEFAULT_MAX_PAIRS["cpu"])


def _find_malloc_trim() -> Optional[Callable[[int], int]]:
    """glibc's ``malloc_trim``, or None where the C library has none."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError):  # the C library cannot be loaded, or is not glibc
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_MALLOC_TRIM = _find_malloc_trim()


def release_freed_memory() -> None:
    """Return freed heap memory to the OS (glibc's ``malloc_trim``; a no-op elsewhere).

    Each chunk allocates and frees tensors of 4 to 16 MB. After a process has freed larger
    blocks (training evaluates the whole validation set each epoch), glibc serves such sizes from
    its heap instead of fresh mappings, and the heap then kept growing: evaluating binarized
    MNIST at K = 5000 after 6 epochs of training in the same process grew by about 4 MB per
    image (23 GB resident after 500 epochs and most of the test set). Trimming every
    ``RELEASE_EVERY`` row batches bounds that growth; trimming after every image did too, but
    doubled the evaluation time (each chunk then faults its memory in afresh)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


@dataclass
class MarginalEstimate:
    """Per-data-point results: ``log_marginal``, its ``stderr``, and ``ess`` (all shape (N,))."""

    log_marginal: torch.Tensor
    stderr: torch.Tensor
    ess: torch.Tensor
    num_samples: int


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
    """Streaming log-sum-exp of the weights and of their squares, in float64."""

    def __init__(self):
        self.log_s1: Optional[torch.Tensor] = None
        self.log_s2: Optional[torch.Tensor] = None

    def add(self, log_w: torch.Tensor) -> None:
        log_w = log_w.double()
        s1, s2 = torch.logsumexp(log_w, 0), torch.logsumexp(2 * log_w, 0)
        if self.log_s1 is None:
            self.log_s1, self.log_s2 = s1, s2
        else:
            self.log_s1 = torch.logaddexp(self.log_s1, s1)
            self.log_s2 = torch.logaddexp(self.log_s2, s2)

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
) -> MarginalEstimate:
    """Importance-sampled log p(x) for each row of ``x`` (see the module docstring).

    ``model`` and ``guide`` are called as ``fn(x_chunk)``. Rows are processed ``batch_size`` at a
    time (default: all, capped by ``max_pairs``) and particles ``particle_batch_size`` at a time
    (default: ``max_pairs // batch_size``), so at most ``max_pairs`` (particle, row) pairs are
    in memory at once (default: ``default_max_pairs(x.device)``).

    With Pyro's validation on, every row is first checked once with one particle (data and
    parameters against their supports, the RNG stream left as it was); the K draws then run
    without validation, which would otherwise re-check every (particle, row) pair.
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
    results = []
    with pyro.validation_enabled(False):
        for row_batch, start in enumerate(range(0, n, batch_size)):
            if row_batch % RELEASE_EVERY == RELEASE_EVERY - 1 and not x.is_cuda:
                release_freed_memory()
            xb = x[start : start + batch_size]
            acc = _Accumulator()
            for k0 in range(0, num_samples, chunk):
                k = min(chunk, num_samples - k0)
                acc.add(log_weights(model, guide, k, xb, plate=plate))
            results.append(acc.result(num_samples))
    log_marginal, stderr, ess = (torch.cat(parts) for parts in zip(*results))
    return MarginalEstimate(log_marginal, stderr, ess, num_samples)
