"""The check row for distributed execution: the gradient of one SVI step taken by two gloo
processes (``run.distributed.tensor_svi``: each rank its half of the batch, its loss times 2,
DDP averaging the gradients) equals the gradient of one process on the whole batch.

The model is the linear-Gaussian VAE with a mean-field guide whose scale is 1e-5, so the draws
z = mu(x) + 1e-5 eps barely depend on the noise and the two runs may draw their own: the
gradients then agree to about 1e-5 relative, while a rank that takes the wrong rows or a loss
not multiplied by the number of ranks changes them at order one. The two processes are forked
from this one (no import cost; the library's state is inherited) and meet through a file store.
"""

import multiprocessing
import os
import tempfile
from pathlib import Path
from typing import Dict, List

import torch
import torch.distributed as dist

from pyro_vae.checks.analytic import LinearGaussian
from pyro_vae.checks.analytic_models import linear_vae
from pyro_vae.checks.stats import CheckRow, within_tol
from pyro_vae.config import from_dict
from pyro_vae.infer.objectives import build_objective
from pyro_vae.infer.schedules import step_args
from pyro_vae.run import distributed
from pyro_vae.run.strategy import Torchrun
from pyro_vae.run.svi import ModuleOptimizer

WORLD = 2
ROWS = 100  # the global batch
REL_TOL = 1e-3  # of the largest gradient entry
TIMEOUT_S = 120


def distributed_checks(
    truth: LinearGaussian, x: torch.Tensor, generator: torch.Generator
) -> List[CheckRow]:
    """One row: max |2-process gradient - 1-process gradient| / max |1-process gradient|."""
    if not dist.is_available():
        return []
    truth, x = truth.to("cpu"), x.cpu()  # gloo on the CPU, whatever the check's device
    vae = linear_vae(truth, "diagonal")
    with torch.no_grad():
        vae.encoder.raw_scale.weight.zero_()
        vae.encoder.raw_scale.bias.fill_(-30.0)  # scale = MIN_SCALE = 1e-5
    batch = x[:ROWS]
    reference = _gradients(vae, batch, world_size=1)
    with tempfile.TemporaryDirectory() as tmp:
        ranks = _fork_ranks(vae, batch, Path(tmp))
        got = torch.load(Path(tmp) / "grads.pt") if ranks == [0, 0] else None
    scale = max(g.abs().max().item() for g in reference.values())
    if got is None:
        gap = float("inf")
    else:
        gap = max((got[k] - reference[k]).abs().max().item() for k in reference)
    return [
        within_tol(
            "distributed: 2-process gloo gradient vs 1 process, relative",
            gap / scale,
            0.0,
            REL_TOL,
        )
    ]


def _gradients(vae, batch: torch.Tensor, world_size: int) -> Dict[str, torch.Tensor]:
    """The gradients one step's backward pass leaves (all-reduced under DDP)."""
    config = from_dict({"objective": {"name": "trace", "jit": False}})
    vae.zero_grad(set_to_none=True)
    svi = distributed.tensor_svi(
        vae,
        ModuleOptimizer(vae, 1e-3),
        build_objective(config, eager=True),
        world_size=world_size,
    )
    svi.loss_and_grads(svi.model, svi.guide, *step_args(batch, 1.0, 1.0))
    return {n: p.grad.detach().clone() for n, p in vae.named_parameters()}


def _rank(rank: int, vae, batch: torch.Tensor, tmp: Path) -> None:
    """Rank ``rank``'s step on its shard (as ``Torchrun.shard`` takes it); rank 0 saves the
    gradients. Ends with ``os._exit`` (gloo's threads outlive the group: process.end_now).
    """
    status = 1
    try:
        store = dist.FileStore(str(tmp / "store"), WORLD)
        dist.init_process_group("gloo", store=store, rank=rank, world_size=WORLD)
        shard = Torchrun(torch.device("cpu"), rank, WORLD).shard(batch)
        grads = _gradients(vae, shard, WORLD)
        if rank == 0:
            torch.save(grads, tmp / "grads.pt")
        dist.destroy_process_group()
        status = 0
    finally:
        os._exit(status)


def _fork_ranks(vae, batch: torch.Tensor, tmp: Path) -> List[int]:
    """Fork WORLD processes running ``_rank``; their exit codes (None: timed out, killed)."""
    context = multiprocessing.get_context("fork")
    procs = [
        context.Process(target=_rank, args=(r, vae, batch, tmp)) for r in range(WORLD)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(TIMEOUT_S)
        if p.exitcode is None:
            p.kill()
    return [p.exitcode for p in procs]
