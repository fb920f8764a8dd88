"""The amortization gap (Cremer et al. 2018): how much of log p(x) - ELBO the encoder's amortization
costs, against what the guide's family itself costs::

    log p(x) - ELBO = [log p(x) - ELBO_local*]  +  [ELBO_local* - ELBO]
                       approximation gap           amortization gap

ELBO_local* is the best ELBO of a q fitted to each data point separately, in the guide's family
(here: diagonal Gaussians, started at the encoder's output and fitted by SVI); log p(x) comes from
AIS (``ais.py``). Both ELBOs are Monte Carlo estimates with their standard errors.

With several latent sites (the hierarchical family: z_1 .. z_L, drawn bottom-up or by the
ladder) every site must be a diagonal Gaussian in the guide. The guide's structure is kept: each
layer's Gaussian is computed as the guide computes it, from x and the layers drawn before it
(bottom-up: q(z_l | z_{l-1}); ladder: the precision-weighted merge with p(z_l | z_{l+1})), and
each data point i gets its own shift and log-scale per layer and dimension::

    q_i(z_l | parents) = N(mu_l(parents) + delta_il, diag (s_l(parents) exp(rho_il))^2)

started at delta = rho = 0 (the amortized guide itself) and fitted by SVI (Trace_ELBO: the
mean-field form is biased when a guide draws a model parent after its child). What stays
amortized is how a layer's Gaussian follows its parents: the networks of the guide are held fixed,
so ELBO_local* - ELBO is the gap of the per-point parameters of every layer given that structure,
the amortization gap of Cremer et al. when L = 1. A fully non-amortized hierarchy (a free
conditional q_i(z_2 | z_1) per point) is not attempted: it is no finite set of parameters.
"""

import itertools
import math
from typing import Callable, Dict, List, Tuple

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from torch.distributions import constraints

from pyro_vae.errors import ConfigError
from pyro_vae.infer.traces import PARTICLE_PLATE, log_weights
from pyro_vae.models.family import DATA_PLATE, latent_names, latent_site

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


class _PerPointShift(Messenger):
    """Replaces each named diagonal Gaussian site's distribution N(mu, s) by N(mu + delta,
    s exp(rho)), with (delta, rho) given per site (shape (N, size), one row per data point).
    """

    def __init__(self, shifts: Dict[str, Tuple[torch.Tensor, torch.Tensor]]):
        super().__init__()
        self.shifts = shifts

    def _process_message(self, msg) -> None:
        if msg["type"] != "sample" or msg["name"] not in self.shifts:
            return
        delta, rho = self.shifts[msg["name"]]
        base = _diagonal_base(msg["fn"], msg["name"])
        msg["fn"] = dist.Normal(base.loc + delta, base.scale * rho.exp()).to_event(1)


def _diagonal_base(q, name: str) -> dist.Normal:
    """The Normal of a diagonal Gaussian site ``Normal(loc, scale).to_event(1)``, or the error."""
    base = getattr(q, "base_dist", None)
    if not isinstance(base, dist.Normal) or q.reinterpreted_batch_ndims != 1:
        raise ConfigError(
            "the amortization gap needs a diagonal Gaussian guide (guide.name = 'diagonal'); "
            f"this guide gives {type(q).__name__} at site '{name}'"
        )
    return base


def _shifted_guide(guide: Callable, prefix: str, trace) -> Tuple[Callable, List[str]]:
    """The per-point local guide of a multi-site guide (see the module's docstring), its
    networks blocked from the optimizer; returns it and its parameter names."""
    sizes = {}
    for name in latent_names(trace):
        base = _diagonal_base(trace.nodes[name]["fn"], name)
        sizes[name] = base.loc.shape[-2:]
    fixed = poutine.block(guide, hide_types=["param"])
    names = [f"{prefix}.{n}.{k}" for n in sizes for k in ("shift", "log_scale")]

    def local(x: torch.Tensor) -> None:
        shifts = {
            n: tuple(
                pyro.param(f"{prefix}.{n}.{k}", torch.zeros(size, dtype=x.dtype))
                for k in ("shift", "log_scale")
            )
            for n, size in sizes.items()
        }
        with _PerPointShift(shifts):
            fixed(x)

    return local, names


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
    parameters held fixed). With several latent sites, each layer's Gaussian gets a per-point
    shift and scale (the module's docstring), fitted with Trace_ELBO, the guide's networks held
    fixed too. With an AIS estimate of log p(x): approximation gap = log p(x) - ELBO_local*,
    amortization gap = ELBO_local* - ELBO. Returns ``elbo``, ``elbo_stderr``, ``local_elbo``,
    ``local_elbo_stderr``.
    """
    with pyro.plate(PARTICLE_PLATE, 1, dim=-2), torch.no_grad():
        trace = poutine.trace(guide).get_trace(x)
    prefix = f"local_q{next(_local_guides)}"
    if len(latent_names(trace)) > 1:
        local, local_params = _shifted_guide(guide, prefix, trace)
        objective: type = pyro.infer.Trace_ELBO
    else:
        latent = latent_site(trace, "the amortization gap")
        base = _diagonal_base(trace.nodes[latent]["fn"], latent)
        local = _local_guide(
            prefix, latent, base.loc[0].detach(), base.scale[0].detach()
        )
        local_params = [f"{prefix}.loc", f"{prefix}.scale"]
        objective = pyro.infer.TraceMeanField_ELBO
    with torch.no_grad():  # the parameters: SVI's backward passes reach them
        traces = [poutine.trace(f).get_trace(x) for f in (model, guide)]
    fixed_params = [
        s["value"] for t in traces for s in t.nodes.values() if s["type"] == "param"
    ]
    saved_grads = [p.grad for p in fixed_params]
    fixed = poutine.block(model, hide_types=["param"])
    svi = pyro.infer.SVI(
        fixed,
        local,
        pyro.optim.ClippedAdam({"lr": lr, "lrd": 0.01 ** (1 / max(steps, 1))}),
        objective(
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
        for name in local_params:
            if name in store:
                del store[name]
    return {
        "elbo": elbo,
        "elbo_stderr": elbo_se,
        "local_elbo": local_elbo,
        "local_elbo_stderr": local_se,
    }
