"""How a run is executed: one process, or one of N processes launched by ``torchrun``.

``fit`` and ``pyro-vae evaluate`` ask a strategy for everything that differs between the two,
so they read the same for one process and for many (as Lightning Fabric's strategies do):

==================  ==========================  ===========================================
                    ``SingleProcess``           ``Torchrun`` (``torch.distributed``)
==================  ==========================  ===========================================
``shard(batch)``    the whole batch             rows [r B/N, (r+1) B/N) of the global batch
``all_sum(t)``      ``t``                       the sum over ranks (``all_reduce``)
``barrier()``       nothing                     every rank waits for the others
``seed(s)``         Pyro's seed ``s``           rank r's stream ``distributed.rank_seed``
``rng_state()``     this process's RNG state    every rank's, gathered (a collective)
``restore_rng``     the checkpoint's state      rank r's own, or a fresh derived stream
``svi(...)``        ``ModuleSVI`` (or a tensor  ``TensorSVI`` over the networks under
                    loss, see ``needs_tensor``) ``DistributedDataParallel``
``is_main``         True                        rank 0: it alone writes the run directory
==================  ==========================  ===========================================

``start(device)`` joins the process group when torchrun launched this process (once) and
returns the strategy. The evaluation's sharding needs only ``rank``, ``world_size`` and
``all_sum``: every strategy is an ``estimate.blocks.Shards``.
"""

from typing import Any, Dict, List, Optional, Tuple

import pyro
import torch
import torch.distributed as dist
from pyro.infer import SVI

from pyro_vae.config import Config
from pyro_vae.errors import ConfigError
from pyro_vae.infer.objectives import build_objective
from pyro_vae.run import checkpoint, distributed
from pyro_vae.run.svi import ModuleOptimizer, make_svi


class SingleProcess:
    """One process on one device: nothing to shard, reduce or wait for."""

    rank = 0
    world_size = 1

    def __init__(self, device: torch.device):
        self.device = device

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run directory and the evaluation report."""
        return self.rank == 0

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's rows of a global batch."""
        return batch

    def all_sum(self, value: torch.Tensor) -> torch.Tensor:
        """The sum of ``value`` over the processes."""
        return value

    def barrier(self) -> None:
        """Wait until every process gets here."""

    def seed(self, seed: int) -> None:
        """Seed this process's random streams for a fresh run."""
        pyro.set_rng_seed(distributed.rank_seed(seed, self.rank))

    def rng_state(self) -> Dict[str, Any]:
        """The checkpoint's record of the random streams (a collective under torchrun)."""
        return {"rng": checkpoint.rng_state()}

    def restore_rng(self, state: Dict[str, Any], seed: int) -> None:
        """Continue this process's stream from a checkpoint: its own recorded state when the
        checkpoint has one for this rank, else a fresh stream from (seed, rank, epoch).
        """
        ranks = state.get("rng_ranks") or [state["rng"]]
        if self.rank < len(ranks):
            checkpoint.set_rng_state(ranks[self.rank])
        else:
            pyro.set_rng_seed(distributed.rank_seed(seed, self.rank, state["epoch"]))

    def needs_tensor_loss(self, config: Config) -> bool:
        """Whether the step must return its loss as a device tensor: checked every
        ``check_every`` steps, or under bf16 autocast (and always under torchrun)."""
        return config.train.check_every > 1 or config.train.precision != "fp32"

    def svi(self, vae: torch.nn.Module, config: Config) -> Tuple[SVI, ModuleOptimizer]:
        """The ``SVI`` object ``fit`` steps and its optimizer, one Adam over the VAE's
        parameters (call it once the VAE is on its device)."""
        if not self.needs_tensor_loss(config):
            return make_svi(vae, config)
        optimizer = ModuleOptimizer(vae, config.train.lr)
        # torch.jit.trace cannot capture autocast's casts of parameters; under DDP the
        # compiled ELBO runs as is (its backward is autograd's, so DDP's hooks fire)
        eager = config.train.precision != "fp32"
        elbo = build_objective(config, eager=eager)
        return self._tensor_svi(vae, optimizer, elbo), optimizer

    def _tensor_svi(self, vae, optimizer, elbo) -> SVI:
        return distributed.tensor_svi(vae, optimizer, elbo)


class Torchrun(SingleProcess):
    """Rank ``rank`` of ``world_size`` processes in a ``torch.distributed`` process group."""

    def __init__(self, device: torch.device, rank: int, world_size: int):
        super().__init__(device)
        self.rank = rank
        self.world_size = world_size

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        b = batch.shape[0]
        if b % self.world_size:
            raise ConfigError(
                f"train.batch_size {b} is the global batch and must divide evenly over the "
                f"{self.world_size} processes; use a multiple of {self.world_size}"
            )
        per = b // self.world_size
        return batch[self.rank * per : (self.rank + 1) * per]

    def all_sum(self, value: torch.Tensor) -> torch.Tensor:
        value = value.clone()
        dist.all_reduce(value)
        return value

    def barrier(self) -> None:
        dist.barrier()

    def rng_state(self) -> Dict[str, Any]:
        """Every rank's state in rank order (``rng`` is rank 0's), restored on resume."""
        states: List[Optional[Dict]] = [None] * self.world_size
        dist.all_gather_object(states, checkpoint.rng_state())
        return {"rng": states[0], "rng_ranks": states}

    def needs_tensor_loss(self, config: Config) -> bool:
        return True

    def _tensor_svi(self, vae, optimizer, elbo) -> SVI:
        return distributed.tensor_svi(
            vae, optimizer, elbo, world_size=self.world_size, device=self.device
        )


def start(device: torch.device) -> SingleProcess:
    """The strategy of this process: ``Torchrun`` when torchrun launched it (joining the
    process group, once per process; a CUDA device becomes ``cuda:LOCAL_RANK``), else
    ``SingleProcess`` on ``device``."""
    if not distributed.launched():
        return SingleProcess(device)
    rank, world_size, device = distributed.join(device)
    return Torchrun(device, rank, world_size)
