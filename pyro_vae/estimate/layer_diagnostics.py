"""Diagnostics per latent layer, for any family, through traces: KL per layer and per
dimension, and active units per layer (a hierarchical family's z_1 .. z_L, or a VAE's one z).

For every latent site l of the model, with S draws of the guide per data point (the model
replayed against them)::

    KL_l     = E_q[log q(z_l | .) - log p(z_l | .)]        (Monte Carlo; sums to the ELBO's KL)
    KL_{l,d} = E_q[log q(z_{l,d} | .) - log p(z_{l,d} | .)]  where both conditionals factorize
               over dimensions (diagonal Gaussians: every z_l, l < L, of a hierarchical family),
               so that sum_d KL_{l,d} = KL_l; ``None`` otherwise (a mixture or flow prior on top)
    A_{l,d}  = Var_x(E_q[z_{l,d} | x])                      (Burda et al. 2016: active when > 0.01)

E_q[z_l | x] is the mean m of the S draws (z_l's marginal under q, which for bottom-up layers
above z_1 has no closed form); its Monte Carlo variance s^2 / S is estimated from the draws and
subtracted, as ``diagnostics.active_units`` does, so the activity is unbiased.
"""

import math
from typing import Dict, List, Optional, Tuple

import torch
from torch.distributions import Independent, Normal

from pyro_vae.estimate import diagnostics
from pyro_vae.infer.traces import vectorized_traces
from pyro_vae.models.family import Family, latent_names

ACTIVE_THRESHOLD = 0.01
DRAWS = 16  # guide draws per data point


def _per_dimension(fn) -> Optional[Normal]:
    """The per-dimension Normal of a diagonal Gaussian site, else None."""
    base = getattr(fn, "base_dist", None)
    if isinstance(fn, Independent) and fn.reinterpreted_batch_ndims == 1:
        if isinstance(base, Normal):
            return base
    return None


@torch.no_grad()
def layer_diagnostics(
    family: Family,
    x: torch.Tensor,
    num_samples: int = DRAWS,
    batch_size: int = 500,
    threshold: float = ACTIVE_THRESHOLD,
) -> Dict[str, Dict]:
    """Per latent site (model order): ``kl`` and its ``kl_stderr`` (over data points), ``kl_per_dim``
    (list, or None) and ``active_units`` with each dimension's ``activity`` (see above).
    """
    if num_samples < 2 or x.shape[0] < 2:
        raise ValueError("layer diagnostics need num_samples >= 2 and at least 2 rows")
    parts: Dict[str, Dict[str, List[torch.Tensor]]] = {}
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        model_trace, guide_trace = vectorized_traces(
            family.model, family.guide, num_samples, (xb,), {}
        )
        for name in latent_names(model_trace):
            p_site, q_site = model_trace.nodes[name], guide_trace.nodes[name]
            z = q_site["value"]
            entry = parts.setdefault(name, {"kl": [], "dims": [], "m": [], "v": []})
            entry["kl"].append((q_site["log_prob"] - p_site["log_prob"]).mean(0))
            q_d, p_d = _per_dimension(q_site["fn"]), _per_dimension(p_site["fn"])
            if q_d is not None and p_d is not None:
                entry["dims"].append((q_d.log_prob(z) - p_d.log_prob(z)).mean(0))
            entry["m"].append(z.mean(0))
            entry["v"].append(z.var(0) / num_samples)
    return {name: _summary(entry, threshold) for name, entry in parts.items()}


def _summary(entry: Dict[str, List[torch.Tensor]], threshold: float) -> Dict:
    kl = torch.cat(entry["kl"]).double()
    m, v = torch.cat(entry["m"]).double(), torch.cat(entry["v"]).double()
    n = m.shape[0]
    u = (m - m.mean(0)).pow(2) * (n / (n - 1)) - v
    activity = u.mean(0)
    dims = entry["dims"]
    complete = len(dims) == len(entry["kl"])
    return {
        "kl": kl.mean().item(),
        "kl_stderr": (kl.std() / math.sqrt(n)).item(),
        "kl_per_dim": torch.cat(dims).double().mean(0).tolist() if complete else None,
        "active_units": int((activity > threshold).sum()),
        "activity": activity.tolist(),
        "activity_stderr": (u.std(0) / math.sqrt(n)).tolist(),
    }


@torch.no_grad()
def site_means(
    family: Family, x: torch.Tensor, name: str, num_samples: int = 16
) -> torch.Tensor:
    """E_q[z | x] of latent site ``name`` per row of ``x``, a mean of ``num_samples`` draws."""
    means = []
    for xb in x.split(500):
        _, trace = vectorized_traces(family.model, family.guide, num_samples, (xb,), {})
        means.append(trace.nodes[name]["value"].mean(0))
    return torch.cat(means)


def joined_layers(layers: Optional[Dict[str, Dict]]):
    """The per-layer results joined in the model's site order, in the one-site report's
    fields: KL per dimension (None unless every layer has it) with a phrase saying what it
    is, and active units with the activities and their SEs."""
    if layers is None:
        return None, "not computed (fewer than 2 rows)", None
    names = list(layers)
    dims = [layers[n]["kl_per_dim"] for n in names]
    method = (
        f"per layer ({', '.join(names)}, joined), Monte Carlo, {DRAWS} draws per data point; "
        f"sums to each layer's KL"
    )
    if any(d is None for d in dims):
        dims = None
        method = "not defined for every layer (a prior without per-dimension marginals)"
    units = {
        "active_units": sum(layers[n]["active_units"] for n in names),
        "activity": [a for n in names for a in layers[n]["activity"]],
        "activity_stderr": [a for n in names for a in layers[n]["activity_stderr"]],
    }
    return (None if dims is None else torch.tensor(sum(dims, []))), method, units


@torch.no_grad()
def encode(
    family: Family, x: torch.Tensor, num_samples: int, mean_draws: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """E_q[z | x] per row and ``num_samples`` draws of z (shape (S, N, D)): of the one latent
    site (the guide's closed-form mean where it has one, ``diagnostics.posterior_means``), or
    of the top layer z_L of a family with several, its mean a mean of ``mean_draws`` draws.
    """
    if len(family.latent_sites) == 1:
        return diagnostics.posterior_means(family, x, mean_draws), family.encoder(
            x
        ).sample((num_samples,))
    top = family.latent_sites[-1].name
    _, trace = vectorized_traces(family.model, family.guide, num_samples, (x,), {})
    return site_means(family, x, top, mean_draws), trace.nodes[top]["value"]
