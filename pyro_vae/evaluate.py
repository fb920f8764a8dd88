"""Evaluate a trained run: importance-sampled log p(x), the bound ladder, and diagnostics."""

import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import torch

from . import ais, amortization, checkpoint
from .config import Config, from_dict
from .data import Dataset, load
from .diagnostics import active_units, elbo_terms, kl_per_dimension, rate_distortion
from .marginal import log_marginal_likelihood
from .train import BEST_FILE, CHECKPOINT_FILE, resolve_device
from .vae import VAE, build

LADDER = (1, 10, 100, 1000)
METHODS = ("is", "ais", "both")  # log p(x) by importance sampling, AIS, or both


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
    vae = build(config, data.data_dim)
    vae.load_state_dict(state["model"])
    return config, vae.to(dev).eval(), data


def _mean_stderr(stderr: torch.Tensor):
    """Monte Carlo standard error of a mean over data points (None when K = 1)."""
    if torch.isnan(stderr).any():
        return None
    return (stderr.pow(2).sum().sqrt() / stderr.numel()).item()


def evaluate(
    vae: VAE,
    x: torch.Tensor,
    num_samples: int = 1000,
    ladder: Sequence[int] = LADDER,
    method: str = "is",
    ais_options: Optional[Dict] = None,
) -> Dict:
    """Mean per-data-point log p(x) (K = ``num_samples``) with its standard error, IWAE_K for
    each K in ``ladder`` below ``num_samples``, ELBO terms, KL per dimension, active units.
    With ``method`` ``ais`` or ``both``, also ``ais_evaluation(vae, x, **ais_options)`` under
    ``"ais"``; with ``ais`` the K-sample IS estimate is skipped (its fields are None).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got '{method}'")
    estimate = None
    if method != "ais":
        estimate = log_marginal_likelihood(
            vae.model, vae.guide, x, num_samples=num_samples
        )
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
    result = {
        "n": n,
        "num_samples": num_samples,
        "log_marginal": estimate and estimate.log_marginal.mean().item(),
        "log_marginal_stderr": estimate and _mean_stderr(estimate.stderr),
        "ess_mean": estimate and estimate.ess.mean().item(),
        "elbo": terms["elbo"].mean().item(),
        "reconstruction": terms["reconstruction"].mean().item(),
        "kl": terms["kl"].mean().item(),
        **rate_distortion(terms),
        "iwae": iwae,
        "active_units": active_units(vae, x)["active_units"],
        "kl_per_dim": None if kl_dims is None else kl_dims.tolist(),
    }
    if method != "is":
        result["ais"] = ais_evaluation(vae, x, **(ais_options or {}))
    return result


def ais_evaluation(
    vae: VAE,
    x: torch.Tensor,
    num_steps: int = 500,
    num_chains: int = 16,
    leapfrog_steps: int = 5,
    amortization_gap: bool = False,
    bdmc_points: int = 0,
) -> Dict:
    """Mean AIS log p(x) from the guide (``ais.annealed_importance_sampling``) with its SE,
    acceptance rate, wall and CPU time; with ``bdmc_points``, forward and reverse AIS at the same
    settings on that many points simulated from the model (Grosse et al. 2015); with
    ``amortization_gap``, AIS - ELBO split into approximation and amortization gaps."""
    settings = dict(
        num_steps=num_steps, num_chains=num_chains, leapfrog_steps=leapfrog_steps
    )
    start, cpu_start = time.perf_counter(), time.process_time()
    est = ais.annealed_importance_sampling(vae.model, vae.guide, x, **settings)
    out = {
        **settings,
        "value": est.log_marginal.mean().item(),
        "stderr": ais.mean_stderr(est.stderr),
        "acceptance": est.acceptance.mean().item(),
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu_start,
    }
    if bdmc_points:
        xs, zs = ais.simulate(vae.model, bdmc_points, x.shape[-1], x.device, x.dtype)
        fwd, rev = ais.bdmc(vae.model, vae.guide, xs, zs, **settings)
        f, r = fwd.log_marginal.mean().item(), rev.log_marginal.mean().item()
        out["bdmc"] = {
            "n": bdmc_points,
            "forward": f,
            "forward_stderr": ais.mean_stderr(fwd.stderr),
            "reverse": r,
            "reverse_stderr": ais.mean_stderr(rev.stderr),
            "gap": r - f,
        }
    if amortization_gap:
        gaps = amortization.amortization_gap(vae.model, vae.guide, x)
        local, elbo = gaps["local_elbo"], gaps["elbo"]
        out["amortization"] = {
            "elbo": elbo.mean().item(),
            "local_elbo": local.mean().item(),
            "approximation_gap": (est.log_marginal - local).mean().item(),
            "amortization_gap": (local - elbo).mean().item(),
        }
    return out
