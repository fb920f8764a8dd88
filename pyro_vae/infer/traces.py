"""Traces of a model/guide pair, vectorized over particles, and the log importance weights they
give per data point: log w = log p(x, z) - log q(z | x), with z drawn by the guide.

Every latent and observed site must sit inside the data plate (one weight per data point);
particles are vectorized with an outer plate ``"particles"``. The IWAE objective, the
importance-sampled log p(x), the diagnostics and the amortization gap all read weights from
here.
"""

from typing import Callable, Dict, Sequence, Tuple

import pyro
import torch
from pyro import poutine
from pyro.poutine import Trace
from pyro.poutine.util import site_is_subsample

from pyro_vae.models.family import latent_names

PARTICLE_PLATE = "particles"
ENUM_DIM = -3  # enumerated values go left of the particle (-2) and data (-1) dimensions


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


def log_prob_per_datapoint(
    trace: Trace, plate: str = "data", skip: Sequence[str] = ()
) -> torch.Tensor:
    """Sum of every sample site's log-density (less those named in ``skip``), one value per
    (particle, data point)."""
    total = 0.0
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site) or name in skip:
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
    """log w_k(x_i) = log p(x_i, z_ik) - log q(z_ik | x_i), shape (num_particles, N).

    Discrete sites the guide marks for enumeration (``config_enumerate``) are summed out
    exactly: w_k = sum_y q(y | x) p(x, y, z_ky) / (q(y | x) q(z_ky | x, y)), one draw z_ky
    per value y (see ``trace_log_weights``)."""
    enumerated = poutine.enum(guide, first_available_dim=ENUM_DIM)
    traces = vectorized_traces(model, enumerated, num_particles, args, kwargs)
    return trace_log_weights(*traces, plate)


def trace_log_weights(
    model_trace: Trace, guide_trace: Trace, plate: str = "data"
) -> torch.Tensor:
    """The log importance weights of traced draws, one per (particle, data point). A guide
    site enumerated in parallel (``poutine.enum``) is summed over its values with weights
    q(y | x) / q(y | x) = 1: its own density is left out of log q and the weights are
    log-sum-exp'ed over the enumeration dimensions (left of the particle dimension)."""
    enumerated = [
        name
        for name, site in guide_trace.nodes.items()
        if site["type"] == "sample" and site["infer"].get("_enumerate_dim") is not None
    ]
    log_w = log_prob_per_datapoint(model_trace, plate) - log_prob_per_datapoint(
        guide_trace, plate, skip=enumerated
    )
    if enumerated:
        log_w = log_w.reshape(-1, *log_w.shape[-2:]).logsumexp(0)
    return log_w


def latent_log_prob(trace: Trace) -> torch.Tensor:
    """Sum of the log-densities of a trace's latent (unobserved) sample sites, one value per
    (particle, data point): log q(z | x) of a guide trace, log p(z) of a model trace."""
    first, *rest = latent_names(trace)
    total = trace.nodes[first]["log_prob"]
    for name in rest:
        total = total + trace.nodes[name]["log_prob"]
    return total
