"""Evaluate a trained run: importance-sampled log p(x), the bound ladder, and diagnostics."""

from pathlib import Path
from typing import Dict, Sequence, Tuple

import torch

from . import checkpoint
from .config import Config, from_dict
from .data import Dataset, load
from .diagnostics import active_units, elbo_terms, kl_per_dimension, rate_distortion
from .marginal import log_marginal_likelihood
from .train import BEST_FILE, CHECKPOINT_FILE, resolve_device
from .vae import VAE, build

LADDER = (1, 10, 100, 1000)


def load_run(
    run_dir: Path, device: str = "auto", best: bool = False
) -> Tuple[Config, VAE, Dataset]:
    """Rebuild a run's VAE from its last checkpoint, or with ``best`` from the epoch with the
    highest validation ELBO (data sets with a validation split); the config is the saved one.
    """
    dev = resolve_device(device)
    state = checkpoint.load(
        Path(run_dir) / (BEST_FILE if best else CHECKPOINT_FILE), map_location=dev
    )
    config = from_dict(state["config"])
    data = load(config.data)
    vae = build(config, data.shape)
    vae.load_state_dict(state["model"])
    return config, vae.to(dev).eval(), data


def _mean_stderr(stderr: torch.Tensor):
    """Monte Carlo standard error of a mean over data points (None when K = 1)."""
    if torch.isnan(stderr).any():
        return None
    return (stderr.pow(2).sum().sqrt() / stderr.numel()).item()


def evaluate(
    vae: VAE, x: torch.Tensor, num_samples: int = 1000, ladder: Sequence[int] = LADDER
) -> Dict:
    """Mean per-data-point log p(x) (K = ``num_samples``) with its standard error, IWAE_K for
    each K in ``ladder`` below ``num_samples``, ELBO terms, KL per dimension, active units.
    """
    estimate = log_marginal_likelihood(vae.model, vae.guide, x, num_samples=num_samples)
    n = x.shape[0]
    iwae = {}
    for k in [k for k in ladder if k < num_samples]:
        bound = log_marginal_likelihood(vae.model, vae.guide, x, num_samples=k)
        iwae[str(k)] = {
            "value": bound.log_marginal.mean().item(),
            "stderr": _mean_stderr(bound.stderr),
        }
    terms = elbo_terms(vae, x)
    kl_dims = kl_per_dimension(vae, x)
    return {
        "n": n,
        "num_samples": num_samples,
        "log_marginal": estimate.log_marginal.mean().item(),
        "log_marginal_stderr": _mean_stderr(estimate.stderr),
        "ess_mean": estimate.ess.mean().item(),
        "elbo": terms["elbo"].mean().item(),
        "reconstruction": terms["reconstruction"].mean().item(),
        "kl": terms["kl"].mean().item(),
        **rate_distortion(terms),
        "iwae": iwae,
        "active_units": active_units(vae, x)["active_units"],
        "kl_per_dim": None if kl_dims is None else kl_dims.tolist(),
    }
