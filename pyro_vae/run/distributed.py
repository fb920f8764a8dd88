"""Data-parallel training and evaluation on ``torch.distributed`` (launched by ``torchrun``):
joining the process group, per-rank seeds, and the SVI step under DDP.

``torchrun`` starts one process per device and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; without them a run is one process (rank 0 of 1) and nothing
here communicates. The process group uses NCCL on CUDA (gloo when processes share a GPU, which
NCCL refuses) and gloo on the CPU. After torchrun restarts failed workers (``--max-restarts``),
the new attempt rendezvouses under a store prefix of its own and ``pyro-vae train`` resumes from
the run's checkpoint.

Training (``fit``): ``train.batch_size`` is the *global* batch B. Every rank draws the same
seeded permutation (the family's ``epoch_order``) and takes rows [r B/N, (r+1) B/N) of each global
batch. The VAE's networks go under ``DistributedDataParallel`` through ``ELBOLoss``, an
``nn.Module`` whose forward is the ELBO's differentiable loss of the VAE's two Pyro programs
(``model`` and ``guide`` still register the same networks with ``pyro.module``, so SVI and the
optimizer see the very tensors DDP synchronises). DDP averages gradients over the N ranks while
the single-process loss is a sum over the B rows, so each rank's loss is multiplied by N:

    (1/N) sum_r d(N L_r)/d theta = d(sum_r L_r)/d theta = d L_batch / d theta,

the same step as one process on the whole batch. TorchScript-compiled ELBOs (``jit``) run
under DDP too: the graph runs under ``optimized_execution(False)``, so its backward pass is
autograd's and DDP's gradient hooks fire as in eager mode; under bf16 autocast ``jit`` is
switched off (a trace cannot capture autocast's casts of parameters). ``TensorSVI.step``
returns the loss as a device tensor, so the loop needs no host synchronisation per step
(``train.check_every``).

Random streams: rank r seeds torch, NumPy and Python with ``rank_seed(seed, r)`` (rank 0 keeps
``seed``, so a one-process run is unchanged); the checkpoint records every rank's state and a
resumed rank restores its own (a rank the checkpoint did not know starts a stream derived from
the seed, its rank and the epoch).

Evaluation: ranks take whole blocks of data points, each seeded by its index
(``estimate/blocks.py``), so a sharded evaluation equals a one-process one on the same kind of
device, draw for draw.

This module holds the mechanisms; ``strategy.py`` is what the training loop and the evaluation
command call.
"""

import os
from typing import Any, Optional, Tuple

import numpy as np
import pyro
import torch
import torch.distributed as dist
from pyro import poutine
from pyro.infer import SVI
from torch import nn

from pyro_vae.errors import ConfigError
from pyro_vae.run import finite_step

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def launched() -> bool:
    """Whether ``torchrun`` (or another launcher) set the torch.distributed environment."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def main_process() -> bool:
    """Whether this process is rank 0 (or not launched by torchrun at all)."""
    return int(os.environ.get("RANK", "0")) == 0


def restarted() -> bool:
    """Whether torchrun's elastic agent restarted this worker after a failure."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def join(device: torch.device) -> Tuple[int, int, torch.device]:
    """Join the process group torchrun set up (once per process); returns this process's rank,
    the number of processes, and its device (a CUDA device becomes ``cuda:LOCAL_RANK``).
    """
    missing = [k for k in ENV + ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE > 1 but {', '.join(missing)} is not set; launch with torchrun "
            f"(torchrun --nproc_per_node N --no-python pyro-vae train ...)"
        )
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # NCCL refuses two ranks on one GPU: processes sharing a GPU talk through gloo
        shared = (
            int(os.environ.get("LOCAL_WORLD_SIZE", "1")) > torch.cuda.device_count()
        )
        backend = "nccl" if device.type == "cuda" and not shared else "gloo"
        dist.init_process_group(
            backend, rank=rank, world_size=world, store=_attempt_store(rank, world)
        )
    return rank, world, device


def _attempt_store(rank: int, world: int) -> Optional[dist.Store]:
    """After an elastic restart, the rendezvous store under a prefix of its own.

    torchrun's static rendezvous keeps one TCP store across restarts, and the workers of the
    new attempt would read the dead workers' gloo addresses from it (connection refused); keys
    under ``attempt<N>/`` belong to attempt N alone. ``None`` (the env:// default) otherwise.
    """
    count = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if count == 0:
        return None
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world,
        is_master=rank == 0 and not agent,
        multi_tenant=True,
    )
    return dist.PrefixStore(f"attempt{count}/", store)


def teardown() -> None:
    """Leave the process group (no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int, epoch: int = 0) -> int:
    """The seed of rank ``rank``'s random stream: ``seed`` itself for rank 0 at the start
    (a one-process run is unchanged), else a SeedSequence hash of (seed, rank, epoch).
    """
    if rank == 0 and epoch == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1)[0])


class ELBOLoss(nn.Module):
    """``forward(*args)`` = ``scale`` times the ELBO's differentiable loss of ``vae.model`` and
    ``vae.guide`` on ``args``; the VAE is a submodule, so wrapping this module in DDP puts every
    network of the VAE under DDP while the programs stay plain Pyro (like Pyro's own
    ``ELBOModule``, which cannot see the networks behind bound methods)."""

    def __init__(self, vae: nn.Module, elbo: Any, scale: float = 1.0):
        super().__init__()
        self.vae = vae
        self.elbo = elbo
        self.scale = scale
        # the bound methods made once: a compiled (JIT) ELBO keys its graph on their ids
        self.programs = (vae.model, vae.guide)

    def forward(self, *args) -> torch.Tensor:
        loss = self.elbo.differentiable_loss(*self.programs, *args)
        return loss * self.scale if self.scale != 1.0 else loss


class TensorSVI(SVI):
    """``SVI`` whose ``step`` returns the loss as a tensor on the device: no ``.item()`` and
    hence no host synchronisation per step (``pyro.infer.SVI.step`` converts it to a float).
    """

    def step(self, *args, **kwargs) -> torch.Tensor:
        with poutine.trace(param_only=True) as capture:
            loss = self.loss_and_grads(self.model, self.guide, *args, **kwargs)
        params = {s["value"].unconstrained() for s in capture.trace.nodes.values()}
        self.optim(params)
        pyro.infer.util.zero_grads(params)
        return loss


def tensor_svi(
    vae: nn.Module,
    optimizer: pyro.optim.PyroOptim,
    elbo: Any,
    world_size: int = 1,
    device: Optional[torch.device] = None,
) -> TensorSVI:
    """A ``TensorSVI`` stepping ``vae`` with ``elbo``, its networks under DDP when
    ``world_size`` > 1; its step returns this rank's (unscaled) loss as a tensor."""
    if getattr(elbo, "dreg", False):
        raise ConfigError(
            "the DReG estimator (objective.dreg = true) is not a differentiable loss and cannot "
            "run under torchrun or with train.check_every > 1; use dreg = false there"
        )
    module: nn.Module = ELBOLoss(vae, elbo, float(world_size))
    if world_size > 1:
        ids = [device.index] if device is not None and device.type == "cuda" else None
        module = nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def loss_and_grads(model, guide, *args) -> torch.Tensor:
        loss = module(*args)
        loss.backward()
        if world_size > 1:  # every rank agrees on finiteness before the step
            return finite_step.agree(loss.detach() / world_size, optimizer.optimizer)
        return loss.detach() / world_size

    return TensorSVI(vae.model, vae.guide, optimizer, module, loss_and_grads)
