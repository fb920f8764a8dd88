"""Evaluate a trained run: importance-sampled log p(x), the bound ladder, and diagnostics."""

import dataclasses
import math
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import torch

from . import ais, amortization, checkpoint, distributed, rundir
from .config import Config, check_size, from_dict
from .data import Dataset, load
from .data_record import read as read_data_record
from .diagnostics import (
    active_units,
    elbo_terms,
    kl_per_dimension_with_method,
    mutual_information,
    rate_distortion,
)
from .errors import ConfigError, TrainingError
from .marginal import (
    KHAT_UNRELIABLE,
    ChunkWeights,
    MarginalEstimate,
    default_max_pairs,
    log_marginal_likelihood,
    worth_compiling,
)
from .process import forked_rng, prepare_heap
from .rundir import BEST_FILE, CHECKPOINT_FILE
from .train import resolve_device
from .vae import VAE, build

LADDER = (1, 10, 100, 1000)
# rows for the mutual information: it evaluates q at all pairs of them (an IAF guide inverts
# its flow, latent_dim passes, at each pair: about 2 minutes for 500 MNIST rows on one thread)
MI_POINTS = 500
METHODS = ("is", "ais", "both")  # log p(x) by importance sampling, AIS, or both


def load_run(
    run_dir: Path,
    device: str = "auto",
    best: bool = False,
    data_dir: Optional[str] = None,
    need_data: bool = True,
) -> Tuple[Config, VAE, Optional[Dataset]]:
    """Rebuild a run's VAE from its last checkpoint, or with ``best`` from the epoch with the
    highest validation ELBO (data sets with a validation split); the config is the saved one,
    with the data read from ``data_dir`` when given (the files moved since training).

    The data set is reloaded from where the run's config says; a run whose data cannot be
    reloaded (arrays given from Python) raises :class:`DataError`, unless ``need_data`` is
    False: then the data set is ``None`` and the network's shape comes from ``data.json``.

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
    record = read_data_record(Path(run_dir))
    data = load(config.data) if need_data or record is None else None
    shape = data.shape if data is not None else tuple(record["shape"])
    check_size(config, math.prod(shape))
    vae = build(config, shape)
    checkpoint.check_fits(path, state["model"], vae.state_dict())
    vae.load_state_dict(state["model"])
    return config, vae.to(dev).eval(), data


def _mean_stderr(stderr: torch.Tensor):
    """Monte Carlo standard error of a mean over data points (None when K = 1)."""
    if torch.isnan(stderr).any():
        return None
    return (stderr.pow(2).sum().sqrt() / stderr.numel()).item()


def khat_summary(khat: Optional[torch.Tensor]) -> Dict[str, Optional[float]]:
    """``khat_max``, ``khat_mean`` and ``khat_frac_above_0.7`` over the data points with a
    k-hat (all None when none has one: K < 50)."""
    finite = None if khat is None else khat[torch.isfinite(khat)]
    if finite is None or finite.numel() == 0:
        return {"khat_max": None, "khat_mean": None, "khat_frac_above_0.7": None}
    return {
        "khat_max": finite.max().item(),
        "khat_mean": finite.mean().item(),
        "khat_frac_above_0.7": (finite > KHAT_UNRELIABLE).double().mean().item(),
    }


def importance_sampled(
    vae: VAE,
    x: torch.Tensor,
    k: int,
    seed: int,
    ctx: distributed.Context,
    khat: bool = True,
) -> MarginalEstimate:
    """log p(x) at K = ``k`` per row, in blocks seeded by their index (see distributed.py),
    this rank's blocks computed here and the rows of all ranks gathered. With enough blocks
    to repay it (``marginal.worth_compiling``), every block's chunks run compiled (one
    ``ChunkWeights`` for all blocks); on the CPU the heap is prepared first (process.py).
    """
    block_size = distributed.default_block_size(k, x.device)
    weights = ChunkWeights(
        vae.model,
        vae.guide,
        compile=worth_compiling(
            x.shape[0] // block_size,
            min(block_size * k, default_max_pairs(x.device)),
            x.dtype,
        ),
    )
    if x.device.type == "cpu":
        prepare_heap()
    fields = distributed.blockwise(
        lambda xb: log_marginal_likelihood(
            vae.model, vae.guide, xb, num_samples=k, khat=khat, chunk_weights=weights
        ),
        x,
        seed,
        block_size,
        ctx,
    )
    return MarginalEstimate(**fields)


def evaluate(
    vae: VAE,
    x: torch.Tensor,
    num_samples: int = 1000,
    ladder: Sequence[int] = LADDER,
    seed: int = 0,
    ctx: Optional[distributed.Context] = None,
    method: str = "is",
    ais_options: Optional[Dict] = None,
) -> Dict:
    """Mean per-data-point log p(x) (K = ``num_samples``) with its standard error and the Pareto
    k-hat summary (points with k-hat > 0.7 have unreliable standard errors), IWAE_K for
    each K in ``ladder`` below ``num_samples``, ELBO terms, KL per dimension (and what kind of
    KL it is), active units with each dimension's activity and its standard error, and the
    mutual information I(x; z) under q over the first ``MI_POINTS`` rows (``None`` for guides
    without a density at any z). See diagnostics.py for the definitions.

    With ``method`` ``ais`` or ``both``, also ``ais_evaluation(vae, x, **ais_options)`` under
    ``"ais"``; with ``ais`` the K-sample IS estimate is skipped (its fields are None).

    The importance-sampling draws are a function of ``seed`` and each row's index alone, so the
    result is the same on one process and sharded over the ranks of ``ctx`` (every rank gets the
    whole report; AIS is not sharded: each rank runs it on every row, rank 0 reports).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got '{method}'")
    ctx = ctx or distributed.Context(device=x.device)
    estimate = (
        None if method == "ais" else importance_sampled(vae, x, num_samples, seed, ctx)
    )
    n = x.shape[0]
    iwae = {}
    for k in [k for k in ladder if k < num_samples]:
        bound = importance_sampled(vae, x, k, seed, ctx, khat=False)
        iwae[str(k)] = {
            "value": bound.log_marginal.mean().item(),
            "stderr": _mean_stderr(bound.stderr),
        }
    with forked_rng(x):
        torch.manual_seed(seed)
        terms = elbo_terms(vae, x)
        kl_dims, kl_dims_method = kl_per_dimension_with_method(vae, x)
        units = active_units(vae, x) if n >= 2 else None
        info = mutual_information(vae, x[:MI_POINTS]) if n >= 2 else None
    result = {
        "n": n,
        "num_samples": num_samples,
        "log_marginal": estimate and estimate.log_marginal.mean().item(),
        "log_marginal_stderr": estimate and _mean_stderr(estimate.stderr),
        "ess_mean": estimate and estimate.ess.mean().item(),
        **khat_summary(None if estimate is None else estimate.khat),
        "elbo": terms["elbo"].mean().item(),
        "reconstruction": terms["reconstruction"].mean().item(),
        "kl": terms["kl"].mean().item(),
        **rate_distortion(terms),
        "iwae": iwae,
        "active_units": _get(units, "active_units"),
        "activity": _get(units, "activity"),
        "activity_stderr": _get(units, "activity_stderr"),
        "kl_per_dim": None if kl_dims is None else kl_dims.tolist(),
        "kl_per_dim_method": kl_dims_method,
        "mutual_information": _get(info, "mutual_information"),
        "mutual_information_stderr": _get(info, "stderr"),
        "mutual_information_points": _get(info, "points"),
    }
    if method != "is":
        result["ais"] = ais_evaluation(vae, x, **(ais_options or {}))
    return result


def _get(result: Optional[Dict], key: str):
    """``result[key]`` as plain Python (lists for tensors); None without a result (N < 2, or a
    guide without a density at any z)."""
    if result is None:
        return None
    value = result[key]
    return value.tolist() if torch.is_tensor(value) else value


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
