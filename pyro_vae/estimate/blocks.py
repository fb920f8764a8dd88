"""Evaluation in blocks of data points, each block's draws seeded by its index, so that an
evaluation gives the same numbers on one process and sharded over many.

Points are cut into blocks of ``block_size`` rows (a function of K and the device type only),
whose draws come from a generator seeded by (seed, block index); processes take whole blocks
round-robin, and the per-row results are gathered in order (a sum of zero-filled tensors:
exact). Who shares the blocks is a ``Shards`` object: this process's ``rank`` among
``world_size``, and ``all_sum``. One process (``ONE_PROCESS``) takes every block; the run
wing's torchrun strategy is the other kind.
"""

import dataclasses
from typing import Any, Callable, Dict, Protocol

import numpy as np
import torch

from pyro_vae.estimate.marginal import default_max_pairs
from pyro_vae.process import forked_rng


class Shards(Protocol):
    """The processes that share an evaluation: this one's ``rank`` among ``world_size``."""

    rank: int
    world_size: int

    def all_sum(self, value: torch.Tensor) -> torch.Tensor:
        """The sum of ``value`` over the processes."""


class OneProcess:
    """An evaluation in this process alone: it takes every block."""

    rank = 0
    world_size = 1

    def all_sum(self, value: torch.Tensor) -> torch.Tensor:
        return value


ONE_PROCESS = OneProcess()


def block_seed(seed: int, index: int) -> int:
    """The seed of evaluation block ``index``: a SeedSequence hash of (seed, index)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def default_block_size(num_samples: int, device: torch.device) -> int:
    """Rows per evaluation block: what ``log_marginal_likelihood`` would take at once."""
    max_pairs = default_max_pairs(device)
    return max(1, max_pairs // min(num_samples, max_pairs))


def blockwise(
    estimate: Callable[[torch.Tensor], Any],
    x: torch.Tensor,
    seed: int,
    block_size: int,
    shards: Shards = ONE_PROCESS,
) -> Dict[str, Any]:
    """Run ``estimate`` (returning a dataclass of per-row tensors) on this rank's blocks of
    ``x``, each block's draws seeded by (seed, block index), and gather every tensor field over
    all rows in order; other fields are the first block's. The global RNG is left as it
    was."""
    n = x.shape[0]
    blocks = list(range(0, n, block_size))
    mine = blocks[shards.rank :: shards.world_size]
    parts: Dict[int, Any] = {}
    with forked_rng(x):
        for start in mine:
            torch.manual_seed(block_seed(seed, start // block_size))
            parts[start] = estimate(x[start : start + block_size])
    if not parts:  # more ranks than blocks: keep the collective's shapes known
        with forked_rng(x):
            template = estimate(x[:1])
    else:
        template = next(iter(parts.values()))
    out: Dict[str, Any] = {}
    for f in dataclasses.fields(template):
        value = getattr(template, f.name)
        if not torch.is_tensor(value):
            out[f.name] = value
            continue
        full = torch.zeros((n,) + value.shape[1:], dtype=value.dtype, device=x.device)
        for start, part in parts.items():
            full[start : start + block_size] = getattr(part, f.name)
        out[f.name] = shards.all_sum(full)
    return out
