"""Evaluate a trained model: importance-sampled log p(x), the bound ladder, diagnostics, and AIS
on request: the report that ``pyro-vae evaluate`` writes as ``evaluation.json``."""

import time
from typing import Dict, Optional, Sequence

import torch

from pyro_vae.estimate import ais, amortization
from pyro_vae.estimate.bits import bits_per_dim, counts_bits
from pyro_vae.estimate.blocks import (
    ONE_PROCESS,
    Shards,
    blockwise,
    default_block_size,
)
from pyro_vae.estimate.budget import ais_sizes, check_ais_memory
from pyro_vae.estimate.classification import classification_error
from pyro_vae.estimate.diagnostics import (
    active_units,
    elbo_terms,
    kl_per_dimension_with_method,
    mutual_information,
    rate_distortion,
)
from pyro_vae.estimate.layer_diagnostics import joined_layers, layer_diagnostics
from pyro_vae.estimate.marginal import (
    ChunkWeights,
    MarginalEstimate,
    default_max_pairs,
    log_marginal_likelihood,
    worth_compiling,
)
from pyro_vae.estimate.pareto import KHAT_UNRELIABLE, khat_noise
from pyro_vae.models.vae import VAE
from pyro_vae.process import forked_rng, prepare_heap

LADDER = (1, 10, 100, 1000)
# rows for the mutual information: it evaluates q at all pairs of them (an IAF guide inverts
# its flow, latent_dim passes, at each pair: about 2 minutes for 500 MNIST rows on one thread)
MI_POINTS = 500
METHODS = ("is", "ais", "both")  # log p(x) by importance sampling, AIS, or both


def _mean_stderr(stderr: torch.Tensor):
    """Monte Carlo standard error of a mean over data points (None when K = 1)."""
    if torch.isnan(stderr).any():
        return None
    return (stderr.pow(2).sum().sqrt() / stderr.numel()).item()


def khat_summary(
    khat: Optional[torch.Tensor], num_samples: int
) -> Dict[str, Optional[float]]:
    """``khat_max``, ``khat_mean`` and ``khat_frac_above_0.7`` over the data points with a
    k-hat (all None when none has one: K < 50); ``khat_noise``, the fit's standard deviation
    at 0.7 for K = ``num_samples`` (``pareto.khat_noise``), and ``khat_near_0.7``, how many
    points lie within it of 0.7 (their side of the threshold is undecided)."""
    finite = None if khat is None else khat[torch.isfinite(khat)]
    if finite is None or finite.numel() == 0:
        return {
            "khat_max": None,
            "khat_mean": None,
            "khat_frac_above_0.7": None,
            "khat_noise": None,
            "khat_near_0.7": None,
        }
    noise = khat_noise(num_samples)
    return {
        "khat_max": finite.max().item(),
        "khat_mean": finite.mean().item(),
        "khat_frac_above_0.7": (finite > KHAT_UNRELIABLE).double().mean().item(),
        "khat_noise": noise,
        "khat_near_0.7": int(((finite - KHAT_UNRELIABLE).abs() <= noise).sum()),
    }


def importance_sampled(
    vae: VAE,
    x: torch.Tensor,
    k: int,
    seed: int,
    shards: Shards = ONE_PROCESS,
    khat: bool = True,
) -> MarginalEstimate:
    """log p(x) at K = ``k`` per row, in blocks seeded by their index (see blocks.py), this
    process's blocks computed here and the rows of all processes gathered. With enough blocks
    to repay it (``marginal.worth_compiling``), every block's chunks run compiled (one
    ``ChunkWeights`` for all blocks); on the CPU the heap is prepared first (process.py).
    """
    block_size = default_block_size(k, x.device)
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
    fields = blockwise(
        lambda xb: log_marginal_likelihood(
            vae.model, vae.guide, xb, num_samples=k, khat=khat, chunk_weights=weights
        ),
        x,
        seed,
        block_size,
        shards,
    )
    return MarginalEstimate(**fields)


def evaluate(
    vae: VAE,
    x: torch.Tensor,
    num_samples: int = 1000,
    ladder: Sequence[int] = LADDER,
    seed: int = 0,
    shards: Shards = ONE_PROCESS,
    method: str = "is",
    ais_options: Optional[Dict] = None,
    labels: Optional[torch.Tensor] = None,
) -> Dict:
    """Mean per-data-point log p(x) (K = ``num_samples``) with its standard error and the Pareto
    k-hat summary (points with k-hat > 0.7 have unreliable standard errors), IWAE_K for
    each K in ``ladder`` below ``num_samples``, ELBO terms, KL per dimension (and what kind of
    KL it is), active units with each dimension's activity and its standard error, and the
    mutual information I(x; z) under q over the first ``MI_POINTS`` rows (``None`` for guides
    without a density at any z), and under ``layers`` the diagnostics of every latent site
    (``layer_diagnostics.py``). See diagnostics.py for the definitions. A family with several latent
    sites (a hierarchical VAE) reports its layers' KL per dimension and activities joined in
    the model's order, and no mutual information.

    With ``method`` ``ais`` or ``both``, also ``ais_evaluation(vae, x, **ais_options)`` under
    ``"ais"``; with ``ais`` the K-sample IS estimate is skipped (its fields are None).

    A family with a class latent y (a discrete site it declares) gets log p(x) with y summed
    out exactly, and with ``labels`` the test error of q(y | x) under ``"classification"``.

    The importance-sampling draws are a function of ``seed`` and each row's index alone, so the
    result is the same on one process and sharded over the processes of ``shards`` (every rank gets the
    whole report; AIS is not sharded: each rank runs it on every row, rank 0 reports).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got '{method}'")
    if method != "is":  # before the other estimates spend their time
        check_ais_memory(vae, **ais_sizes(ais_options or {}), data_dim=x.shape[-1])
    estimate = (
        None
        if method == "ais"
        else importance_sampled(vae, x, num_samples, seed, shards)
    )
    n = x.shape[0]
    iwae = {}
    for k in [k for k in ladder if k < num_samples]:
        bound = importance_sampled(vae, x, k, seed, shards, khat=False)
        iwae[str(k)] = {
            "value": bound.log_marginal.mean().item(),
            "stderr": _mean_stderr(bound.stderr),
        }
    classes = [s for s in getattr(vae, "latent_sites", ()) if s.discrete]
    with forked_rng(x):
        torch.manual_seed(seed)
        terms = elbo_terms(vae, x)
        unconditional = getattr(vae, "unconditional", True)
        layers = layer_diagnostics(vae, x) if n >= 2 and unconditional else None
        if not unconditional:  # they read q(z | x), p(z) alone
            kl_dims, kl_dims_method, units, info = None, None, None, None
        elif len(vae.latent_sites) == 1:
            kl_dims, kl_dims_method = kl_per_dimension_with_method(vae, x)
            units = active_units(vae, x) if n >= 2 else None
            info = mutual_information(vae, x[:MI_POINTS]) if n >= 2 else None
        else:  # several latent sites: the per-layer figures, joined in the model's order
            kl_dims, kl_dims_method, units = joined_layers(layers)
            info = None
    result = {
        "n": n,
        "num_samples": num_samples,
        "log_marginal": estimate and estimate.log_marginal.mean().item(),
        "log_marginal_stderr": estimate and _mean_stderr(estimate.stderr),
        "ess_mean": estimate and estimate.ess.mean().item(),
        **khat_summary(None if estimate is None else estimate.khat, num_samples),
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
        "layers": layers,
    }
    if classes and labels is not None:
        result["classification"] = classification_error(vae, x, labels)
    if method != "is":
        result["ais"] = ais_evaluation(vae, x, **(ais_options or {}))
    if counts_bits(getattr(vae, "likelihood", None)):  # from IS, or AIS without it
        best = result["log_marginal"]
        best = result["ais"]["value"] if best is None else best
        result["bits_per_dim"] = bits_per_dim(
            best, getattr(vae, "target_dim", x.shape[-1])
        )
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
    check_ais_memory(vae, num_steps, num_chains, bdmc_points, x.shape[-1])
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
