"""Evaluate a trained run: importance-sampled log p(x), the bound ladder, and diagnostics."""

import dataclasses
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import torch

from . import checkpoint, rundir
from .config import Config, check_size, from_dict
from .data import Dataset, load
from .diagnostics import active_units, elbo_terms, kl_per_dimension, rate_distortion
from .errors import ConfigError, TrainingError
from .marginal import log_marginal_likelihood
from .rundir import BEST_FILE, CHECKPOINT_FILE
from .train import resolve_device
from .vae import VAE, build

LADDER = (1, 10, 100, 1000)


def load_run(
    run_dir: Path,
    device: str = "auto",
    best: bool = False,
    data_dir: Optional[str] = None,
) -> Tuple[Config, VAE, Dataset]:
    """Rebuild a run's VAE from its last checkpoint, or with ``best`` from the epoch with the
    highest validation ELBO (data sets with a validation split); the config is the saved one,
    with the data read from ``data_dir`` when given (the files moved since training).

    The checkpoint is checked before use: its structure, its config, and that every parameter
    has the shape the config builds (one-line :class:`TrainingError` naming the file).
    """
    dev = resolve_device(device)
    rundir.settle(run_dir)  # a crash may have left best.pt / metrics.jsonl behind
    path = Path(run_dir) / (BEST_FILE if best else CHECKPOINT_FILE)
    if best and not path.is_file() and (Path(run_dir) / CHECKPOINT_FILE).is_file():
        raise TrainingError(
            f"'{run_dir}' has no {BEST_FILE}: it is written only for data sets with a "
            f"validation split; evaluate the last epoch without --best"
        )
    state = checkpoint.load(path, map_location=dev, need=("model", "config"))
    try:
        config = from_dict(state["config"])
    except ConfigError as err:
        raise TrainingError(
            f"checkpoint '{path}' holds an invalid config: {err}"
        ) from None
    if data_dir is not None:
        config = dataclasses.replace(
            config, data=dataclasses.replace(config.data, data_dir=data_dir)
        )
    data = load(config.data)
    check_size(config, data.data_dim)
    vae = build(config, data.data_dim)
    checkpoint.check_fits(path, state["model"], vae.state_dict())
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
