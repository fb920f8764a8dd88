"""Importance-sampled log p(x), per data point, for any Pyro ``model(x)``/``guide(x)`` pair.

With K draws z_k ~ q(z | x) and weights w_k = p(x, z_k) / q(z_k | x)::

    log p(x) ~= log (1/K) sum_k w_k                 (Burda et al. 2016: the IWAE_K bound)
    ESS       = (sum_k w_k)^2 / sum_k w_k^2
    SE        = sqrt(Var(w) / K) / mean(w) = sqrt((K/ESS - 1) / (K - 1))   (delta method)

The estimate is biased low for finite K (it is a lower bound in expectation) and converges to
log p(x) as K grows. The delta-method SE assumes the weights have finite variance; when they do
not (a guide narrower than the posterior) it is too small, with no sign of it. The Pareto
k-hat diagnostic (Vehtari et al. 2015/2024, "Pareto smoothed importance sampling") says which
case holds (``pareto.py``); the top M + 1 log-weights of each data point are kept while the
chunks stream, and fitted at the end.

Every latent and observed site must sit inside the plate ``"data"`` (one weight per data
point); particles are vectorized with an outer plate, and both K and the data are processed in
chunks so that memory stays bounded. Sums run in float64.
"""

import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import pyro
import torch
from pyro.poutine.util import is_validation_enabled

from pyro_vae.estimate.chunks import (  # noqa: F401  (ChunkWeights, worth_compiling: re-exported)
    ChunkWeights,
    shared_chunk_weights,
    worth_compiling,
)
from pyro_vae.estimate.pareto import KHAT_BLOCK, MIN_TAIL, pareto_khat, tail_size
from pyro_vae.infer.traces import log_weights
from pyro_vae.process import forked_rng, prepare_heap

# (particle, data point) pairs per chunk when the caller does not say: on the CPU one MNIST image
# with K = 5000 draws (16 MB per full-size temporary); on a GPU, ten times as many per kernel
DEFAULT_MAX_PAIRS = {"cpu": 5_000, "cuda": 50_000}


def default_max_pairs(device: torch.device) -> int:
    """The chunk budget ``log_marginal_likelihood`` uses for data on ``device``."""
    return DEFAULT_MAX_PAIRS.get(torch.device(device).type, DEFAULT_MAX_PAIRS["cpu"])


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
    jit: Optional[bool] = None,
    chunk_weights: Optional[ChunkWeights] = None,
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

    ``jit`` compiles each chunk's computation (``chunks.ChunkWeights``): True always, False
    never, None (default) a chunk shape once the calls on this model and guide have
    evaluated it often enough to repay compiling (``chunks.worth_compiling``); the compiled
    chunks are kept with the model (``chunks.shared_chunk_weights``), so repeated calls
    reuse them. ``chunk_weights`` (for ``model``, ``guide`` and ``plate``) replaces that
    choice.

    On the CPU the process's heap is prepared first (``process.prepare_heap``, once per
    process), so that each chunk's temporaries are reused rather than faulted in afresh.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    n = x.shape[0]
    max_pairs = max_pairs or default_max_pairs(x.device)
    batch_size = batch_size or max(1, min(n, max_pairs // min(num_samples, max_pairs)))
    chunk = particle_batch_size or max(1, max_pairs // batch_size)
    if is_validation_enabled():  # one particle per row, in chunks of max_pairs rows
        with forked_rng(x):
            for start in range(0, n, max_pairs):
                log_weights(model, guide, 1, x[start : start + max_pairs], plate=plate)
    # Results go into one tensor made up front. Keeping three small tensors per row batch
    # instead left them between the chunks' freed temporaries, and glibc's heap grew by about
    # 4 MB per image (23 GB over the MNIST test set after 500 epochs of training); written in
    # place, 6 epochs of training then 1,000 test images in one process stayed at 1.08 GB.
    out = torch.full((4, n), float("nan"), dtype=torch.float64, device=x.device)
    keep = tail_size(num_samples) + 1 if khat and num_samples >= 5 * MIN_TAIL else 0
    if chunk_weights is not None:
        weights = chunk_weights
    elif jit is None:
        weights = shared_chunk_weights(model, guide, plate)
    else:
        weights = ChunkWeights(model, guide, plate, compile=jit, required=jit)
    if x.device.type == "cpu":
        prepare_heap()
    # each row's M + 1 largest log-weights, fitted KHAT_BLOCK rows at a time (one fit per row
    # batch cost ~10% of a K = 100 evaluation in small fixed costs)
    top = x.new_empty((keep, n), dtype=torch.float64) if keep else None
    fitted = 0
    with pyro.validation_enabled(False):
        for start in range(0, n, batch_size):
            xb = x[start : start + batch_size]
            acc = _Accumulator(keep)
            for k0 in range(0, num_samples, chunk):
                k = min(chunk, num_samples - k0)
                acc.add(weights(k, xb))
            for row, values in zip(out, acc.result(num_samples)):
                row[start : start + batch_size] = values
            if keep:
                end = start + xb.shape[0]
                top[:, start:end] = acc.top
                if end - fitted >= KHAT_BLOCK or end == n:
                    out[3, fitted:end] = pareto_khat(top[:, fitted:end], num_samples)
                    fitted = end
    log_marginal, stderr, ess, khats = out
    return MarginalEstimate(log_marginal, stderr, ess, num_samples, khats)
