"""What a trained VAE does with its latent space: the ELBO's two terms per data point, KL per
latent dimension, active units, rate and distortion.

* ELBO = reconstruction - KL, with reconstruction = E_q[log p(x | z)] and
  KL = E_q[log q(z | x) - log p(z)] (Monte Carlo over the guide's draws).
* rate = mean KL, distortion = -mean reconstruction (Alemi et al. 2018).
* active units (Burda et al. 2016): dimension d is active when Var_x(E_q[z_d | x]) > 0.01.
"""

from typing import Dict, Optional

import torch
from torch.distributions import Independent, Normal, kl_divergence

from .marginal import vectorized_traces
from .vae import LATENT, OBSERVED, VAE

ACTIVE_THRESHOLD = 0.01


@torch.no_grad()
def elbo_terms(
    vae: VAE, x: torch.Tensor, num_samples: int = 1, batch_size: int = 1000
) -> Dict[str, torch.Tensor]:
    """Per-data-point ``reconstruction``, ``kl`` and ``elbo`` (nats), averaged over
    ``num_samples`` guide draws each, from traces of the VAE's model and guide."""
    parts = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        model_trace, guide_trace = vectorized_traces(
            vae.model, vae.guide, num_samples, (xb,), {}
        )
        rec = model_trace.nodes[OBSERVED]["log_prob"].mean(0)
        kl = (
            guide_trace.nodes[LATENT]["log_prob"]
            - model_trace.nodes[LATENT]["log_prob"]
        ).mean(0)
        parts.append((rec, kl))
    rec = torch.cat([p[0] for p in parts])
    kl = torch.cat([p[1] for p in parts])
    return {"reconstruction": rec, "kl": kl, "elbo": rec - kl}


@torch.no_grad()
def posterior_means(vae: VAE, x: torch.Tensor, num_samples: int = 64) -> torch.Tensor:
    """E_q[z | x] per row: the guide's mean where it has one, else a Monte Carlo average."""
    q = vae.encoder(x)
    try:
        return q.mean
    except NotImplementedError:
        return q.sample((num_samples,)).mean(0)


@torch.no_grad()
def active_units(
    vae: VAE, x: torch.Tensor, threshold: float = ACTIVE_THRESHOLD
) -> Dict[str, object]:
    """Variance over the data of E_q[z_d | x] for each dimension d, and how many exceed
    ``threshold``."""
    variance = posterior_means(vae, x).var(0)
    return {"active_units": int((variance > threshold).sum()), "activity": variance}


@torch.no_grad()
def kl_per_dimension(vae: VAE, x: torch.Tensor) -> Optional[torch.Tensor]:
    """Mean over the data of KL(q(z_d | x) || p(z_d)) per latent dimension, in closed form.
    Defined when both guide and prior are diagonal Gaussians (the KL then splits over
    dimensions); ``None`` for other pairs."""
    q, p = vae.encoder(x), vae.prior()
    if all(
        isinstance(d, Independent) and isinstance(d.base_dist, Normal) for d in (q, p)
    ):
        return kl_divergence(q.base_dist, p.base_dist).mean(0)
    return None


def rate_distortion(terms: Dict[str, torch.Tensor]) -> Dict[str, float]:
    return {
        "rate": terms["kl"].mean().item(),
        "distortion": -terms["reconstruction"].mean().item(),
    }
