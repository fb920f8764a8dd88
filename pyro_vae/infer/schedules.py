"""How the ELBO's two terms are weighted while training: KL schedules, the reconstruction weight,
free bits. ``fit`` asks this module for each step's weights; nothing here knows the loop.

The training objective, per data point (``vae.py`` scales the sites with ``poutine.scale``)::

    L = lambda_rec * E_q[log p(x | z)] - lambda_KL(t) * KL(q(z | x) || p(z))

* ``lambda_rec``: ``train.reconstruction_weight`` (default 1), scales the ``"x"`` site.
* ``lambda_KL(t)``, ``kl_weight`` below, scales the ``"z"`` site:

  - ``linear`` (default): beta * min(1, (t + 1) / (E * S)) with E = ``kl_warmup_epochs`` and S
    steps per epoch (Bowman et al. 2016; Sonderby et al. 2016); E = 0 gives beta throughout.
  - ``cyclical`` (Fu et al. 2019): the T = epochs * S steps split into M = ``kl_cycles`` cycles of
    L = ceil(T / M) steps; within each cycle the weight rises linearly over the first R * L steps
    (R = ``kl_cycle_ratio``) and then stays at beta: beta * min(1, (u + 1) / (R L)), u = t mod L.

  Both start one step above 0 (Pyro's ``poutine.scale`` refuses a zero scale).
* free bits (Kingma et al. 2016, ``train.free_bits`` = lambda nats per latent dimension): the KL
  term becomes N * sum_d max(lambda, KL_d), KL_d dimension d's KL averaged over the mini-batch of
  N points (``free_bits_kl``). It is defined where the KL splits over dimensions: a diagonal
  Gaussian guide with a diagonal Gaussian prior, and an objective with a separate KL term
  (``config.checks.FREE_BITS_*``; ``config.validate`` refuses the rest). The result is not a bound on
  log p(x): ``fit`` reports the plain ELBO beside it.
"""

import math
from typing import Tuple

import torch

from pyro_vae.config import Config


def linear_warmup(beta: float, step: int, warmup_steps: int) -> float:
    """beta * min(1, (step + 1) / warmup_steps); beta throughout when ``warmup_steps`` is 0."""
    if warmup_steps <= 0:
        return beta
    return beta * min(1.0, (step + 1) / warmup_steps)


def cyclical(
    beta: float, step: int, total_steps: int, cycles: int, ratio: float
) -> float:
    """Cyclical annealing (Fu et al. 2019): ``cycles`` cycles of ceil(total_steps / cycles)
    steps, each rising linearly to beta over the first ``ratio`` of the cycle, then flat.
    """
    length = max(1, math.ceil(total_steps / cycles))
    position = step % length
    return beta * min(1.0, (position + 1) / (ratio * length))


def kl_weight(config: "Config", step: int, steps_per_epoch: int) -> float:
    """lambda_KL of (0-based, global) training ``step`` under ``config.train``'s schedule."""
    t = config.train
    if t.kl_schedule == "cyclical":
        total = t.epochs * steps_per_epoch
        return cyclical(t.beta, step, total, t.kl_cycles, t.kl_cycle_ratio)
    return linear_warmup(t.beta, step, t.kl_warmup_epochs * steps_per_epoch)


def step_args(
    x: torch.Tensor, kl_weight: float, reconstruction_weight: float = 1.0
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The arguments of one SVI step, ``model(x, kl_weight, reconstruction_weight)``: the weights
    as 0-d tensors on ``x``'s device, made by a fill rather than a copy from the host, so that a
    JIT-compiled ELBO sees one argument signature whatever the schedule does."""
    return (
        x,
        torch.full((), float(kl_weight), dtype=x.dtype, device=x.device),
        torch.full((), float(reconstruction_weight), dtype=x.dtype, device=x.device),
    )


def free_bits_kl(kl_per_dimension: torch.Tensor, nats: float) -> torch.Tensor:
    """N * sum_d max(nats, KL_d), with KL_d the mean over every leading (particle, data) index of
    ``kl_per_dimension`` (shape (..., N, D)) and N its data dimension (Kingma et al. 2016).
    """
    n, d = kl_per_dimension.shape[-2:]
    per_dimension = kl_per_dimension.reshape(-1, d).mean(0)
    return n * per_dimension.clamp(min=nats).sum()
