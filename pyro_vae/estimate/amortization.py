"""The amortization gap (Cremer et al. 2018): how much of log p(x) - ELBO the encoder's amortization
costs, against what the guide's family itself costs::

    log p(x) - ELBO = [log p(x) - ELBO_local*]  +  [ELBO_local* - ELBO]
                       approximation gap           amortization gap

ELBO_local* is the best ELBO of a q fitted to each data point separately, in the guide's family
(here: diagonal Gaussians, started at the encoder's output and fitted by SVI); log p(x) comes from
AIS (``ais.py``). Both ELBOs are Monte Carlo estimates with their standard errors.
"""

import itertools
import math
from typing import Callable, Dict

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch.distributions import constraints

from pyro_vae.errors import ConfigError
from pyro_vae.infer.traces import PARTICLE_PLATE, log_weights
from pyro_vae.models.family import DATA_PLATE, latent_site

_local_guides = itertools.count()


def _local_guide(
    prefix: str, latent: str, loc: torch.Tensor, scale: torch.Tensor
) -> Callable:
    """A non-amortized diagonal Gaussian q_i(z) = N(loc_i, diag scale_i^2), one per data point."""

    def guide(x: torch.Tensor) -> None:
        m = pyro.param(f"{prefix}.loc", loc)
        s = pyro.param(f"{prefix}.scale", scale, constraint=constraints.positive)
        with pyro.plate(DATA_PLATE, x.shape[0]):
            pyro.sample(latent, dist.Normal(m, s).to_event(1))

    return guide


def _elbo(model: Callable, guide: Callable, x, num_samples: int):
    """Monte Carlo ELBO per point and its standard error, from ``num_samples`` draws."""
    log_w = log_weights(model, guide, num_samples, x).double()
    return log_w.mean(0), log_w.std(0) / math.sqrt(num_samples)


def amortization_gap(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    steps: int = 500,
    lr: float = 0.05,
    particles: int = 8,
    num_samples: int = 1000,
) -> Dict[str, torch.Tensor]:
    """The amortized ELBO and the best local ELBO of its family, per point (Cremer et al. 2018).

    Starting from the encoder's diagonal Gaussian, each point gets its own q_i (same family),
    fitted by SVI (TraceMeanField_ELBO; Adam, its rate decaying 100-fold over ``steps``; the model's
    parameters held fixed). With an AIS
    estimate of log p(x): approximation gap = log p(x) - ELBO_local*, amortization gap =
    ELBO_local* - ELBO. Returns ``elbo``, ``elbo_stderr``, ``local_elbo``, ``local_elbo_stderr``.
    """
    with pyro.plate(PARTICLE_PLATE, 1, dim=-2), torch.no_grad():
        trace = poutine.trace(guide).get_trace(x)
    latent = latent_site(trace, "the amortization gap")
    q = trace.nodes[latent]["fn"]
    base = getattr(q, "base_dist", None)
    if not isinstance(base, dist.Normal) or q.reinterpreted_batch_ndims != 1:
        raise ConfigError(
            "the amortization gap needs a diagonal Gaussian guide (guide.name = 'diagonal'); "
            f"this guide gives {type(q).__name__}"
        )
    with torch.no_grad():  # the model's parameters: SVI's backward passes reach them
        trace = poutine.trace(model).get_trace(x)
    fixed_params = [s["value"] for s in trace.nodes.values() if s["type"] == "param"]
    saved_grads = [p.grad for p in fixed_params]
    prefix = f"local_q{next(_local_guides)}"
    local = _local_guide(prefix, latent, base.loc[0].detach(), base.scale[0].detach())
    fixed = poutine.block(model, hide_types=["param"])
    svi = pyro.infer.SVI(
        fixed,
        local,
        pyro.optim.ClippedAdam({"lr": lr, "lrd": 0.01 ** (1 / max(steps, 1))}),
        pyro.infer.TraceMeanField_ELBO(
            num_particles=particles, vectorize_particles=True, max_plate_nesting=1
        ),
    )
    try:
        with pyro.validation_enabled(False):
            for _ in range(steps):
                svi.step(x)
            with torch.no_grad():
                elbo, elbo_se = _elbo(model, guide, x, num_samples)
                local_elbo, local_se = _elbo(fixed, local, x, num_samples)
    finally:
        for p, grad in zip(fixed_params, saved_grads):
            p.grad = grad  # as they were: a later training step must not see ours
        store = pyro.get_param_store()
        for name in [f"{prefix}.loc", f"{prefix}.scale"]:
            if name in store:
                del store[name]
    return {
        "elbo": elbo,
        "elbo_stderr": elbo_se,
        "local_elbo": local_elbo,
        "local_elbo_stderr": local_se,
    }
